"""Crafting: release features from which an attacker rebuilds an average face (Crafter).

The pieces, one idea per module: :mod:`~edge_sdk.crafting.solvers` (inverse-Hessian-vector
products), :mod:`~edge_sdk.crafting.implicit` (the gradient through ``z*(F)``),
:mod:`~edge_sdk.crafting.crafter` (Alg. 1 and Crafter-z), :mod:`~edge_sdk.crafting.cache`
(the repeat cache against averaging) and :mod:`~edge_sdk.crafting.pii` (epsilon-PII).
"""

from edge_sdk.crafting.cache import CacheError, RepeatCache
from edge_sdk.crafting.crafter import PRESETS, Crafter, CrafterConfig, CraftResult, craft
from edge_sdk.crafting.implicit import ImplicitGradient, implicit_feature_gradient, inversion_hvp
from edge_sdk.crafting.pii import epsilon_pii
from edge_sdk.crafting.solvers import ConjugateGradientSolver, DenseSolver, NeumannSolver, make_solver

__all__ = [
    "PRESETS",
    "CacheError",
    "ConjugateGradientSolver",
    "CraftResult",
    "Crafter",
    "CrafterConfig",
    "DenseSolver",
    "ImplicitGradient",
    "NeumannSolver",
    "RepeatCache",
    "craft",
    "epsilon_pii",
    "implicit_feature_gradient",
    "inversion_hvp",
    "make_solver",
]
