"""Crafting: release features from which an attacker rebuilds an average face (Crafter).

The pieces, one idea per module: :mod:`~edge_sdk.crafting.solvers` (inverse-Hessian-vector
products), :mod:`~edge_sdk.crafting.implicit` (the gradient through ``z*(F)``),
:mod:`~edge_sdk.crafting.losses` (privacy and utility losses),
:mod:`~edge_sdk.crafting.methods` (one class per algorithm: Alg. 1 and Crafter-z),
:mod:`~edge_sdk.crafting.config` (settings and presets), :mod:`~edge_sdk.crafting.crafter`
(what every method shares: order, shuffling, seeding, prior, diagnostics),
:mod:`~edge_sdk.crafting.cache` (the repeat cache against averaging) and
:mod:`~edge_sdk.crafting.pii` (epsilon-PII).
"""

from edge_sdk.crafting.cache import CacheError, RepeatCache
from edge_sdk.crafting.config import PRESETS, CrafterConfig
from edge_sdk.crafting.crafter import Crafter, CraftResult, craft
from edge_sdk.crafting.implicit import ImplicitGradient, implicit_feature_gradient, inversion_hvp
from edge_sdk.crafting.losses import CriticEMD, ExactEMD, FeatureDistance, HeadKL
from edge_sdk.crafting.methods import METHODS, CraftingMethod, FeatureSpaceCrafter, LatentSpaceCrafter
from edge_sdk.crafting.pii import epsilon_pii
from edge_sdk.crafting.solvers import ConjugateGradientSolver, DenseSolver, NeumannSolver, make_solver

__all__ = [
    "METHODS",
    "PRESETS",
    "CacheError",
    "ConjugateGradientSolver",
    "CraftResult",
    "Crafter",
    "CrafterConfig",
    "CraftingMethod",
    "CriticEMD",
    "DenseSolver",
    "ExactEMD",
    "FeatureDistance",
    "FeatureSpaceCrafter",
    "HeadKL",
    "ImplicitGradient",
    "LatentSpaceCrafter",
    "NeumannSolver",
    "RepeatCache",
    "craft",
    "epsilon_pii",
    "implicit_feature_gradient",
    "inversion_hvp",
    "make_solver",
]
