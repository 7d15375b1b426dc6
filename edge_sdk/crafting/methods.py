"""Crafting methods: one class per algorithm, each a loop of small named steps.

:class:`FeatureSpaceCrafter` is the paper's Alg. 1: it moves the features themselves,
differentiating the privacy loss through the attacker's inversion ``z*(F)`` with the
implicit function theorem (:mod:`edge_sdk.crafting.implicit`). :class:`LatentSpaceCrafter`
is Crafter-z (paper App. F): it moves a latent ``z`` and releases ``Enc(G(z))``.

What every method shares (canonical order, shuffling, seeding, the prior, the losses,
the repeat cache, diagnostics) is done by :class:`~edge_sdk.crafting.crafter.Crafter`,
which hands a method one :class:`CraftingProblem`. A new method is one more subclass of
:class:`CraftingMethod` registered in :data:`METHODS`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from edge_sdk.crafting.implicit import implicit_feature_gradient
from edge_sdk.crafting.losses import PrivacyLoss, UtilityLoss
from edge_sdk.crafting.solvers import make_solver
from edge_sdk.errors import KitError
from edge_sdk.inversion import inversion_loss, invert
from edge_sdk.kit.kit import Kit

if TYPE_CHECKING:
    from edge_sdk.crafting.config import CrafterConfig

__all__ = [
    "METHODS",
    "AnswerOnlyRelease",
    "CraftingMethod",
    "CraftingOutcome",
    "CraftingProblem",
    "FeatureSpaceCrafter",
    "LatentSpaceCrafter",
]


@dataclass
class CraftingProblem:
    """One batch to craft, in crafting (shuffled) order, with the losses fitted to it.

    Attributes:
        raw: Raw features ``F0``, shape ``(B, *feature_shape)``.
        z_raw: The attacker's inversion ``z*(F0)``, shape ``(B, latent_dim)``.
        privacy: Distance of reconstructions to the prior, refitted every step.
        utility: What the release keeps of ``F0``.
        rng: The batch's generator (seeded by the config seed and the batch content).
        progress: Optional callback ``progress(step, total)`` after each step.
    """

    raw: torch.Tensor
    z_raw: torch.Tensor
    privacy: PrivacyLoss
    utility: UtilityLoss
    rng: torch.Generator
    progress: Callable[[int, int], None] | None = None


@dataclass
class CraftingOutcome:
    """What a method released and where the attacker's inversion of it lands.

    Attributes:
        crafted: Released features, crafting order, shape of ``raw``.
        z_final: The attacker's inversion of the release (for epsilon-PII); ``None`` if not asked for.
        utility_curve: The utility loss at every step.
        loop_seconds: Time of the step loop alone.
    """

    crafted: torch.Tensor
    z_final: torch.Tensor | None
    utility_curve: list[float] = field(default_factory=list)
    loop_seconds: float = 0.0


class CraftingMethod(ABC):
    """An algorithm that turns raw features into released ones, step by step.

    Args:
        kit: Generator, encoder and amortizer simulate the attacker.
        config: Crafting settings (each method reads its own fields).
    """

    name: ClassVar[str]
    iterative: ClassVar[bool] = True
    """Whether the method runs ``config.steps`` steps (and reports per-step curves)."""

    def __init__(self, kit: Kit, config: CrafterConfig) -> None:
        self.kit, self.config = kit, config

    @property
    def reads_attacker_start(self) -> bool:
        """Whether the release depends on the attacker's inversion ``z*(F0)`` (``problem.z_raw``)."""
        return True

    def invert(self, features: torch.Tensor, start: torch.Tensor | None, steps: int) -> torch.Tensor:
        """The attacker's inversion ``z*(F)``: Adam from ``start`` (the amortizer's guess if ``None``)."""
        cfg = self.config
        return invert(
            features,
            generator=self.kit.generator,
            encoder=self.kit.encoder,
            amortizer=self.kit.amortizer,
            init=start,
            steps=steps,
            lr=cfg.inner_lr,
            latent_weight=cfg.latent_weight,
        ).latent

    def craft(self, problem: CraftingProblem, *, final_inversion: bool = True) -> CraftingOutcome:
        """Run ``config.steps`` steps on ``problem`` and release (and invert the release if ``final_inversion``)."""
        start = time.perf_counter()
        self.begin(problem)
        curve = []
        for step in range(self.config.steps):
            curve.append(self.step(problem, step))
            if problem.progress is not None:
                problem.progress(step + 1, self.config.steps)
        crafted = self.release()
        loop_seconds = time.perf_counter() - start
        z_final = self.final_inversion(crafted) if final_inversion else None
        return CraftingOutcome(crafted, z_final, curve, loop_seconds)

    @abstractmethod
    def begin(self, problem: CraftingProblem) -> None:
        """Set up the variables the steps move."""

    @abstractmethod
    def step(self, problem: CraftingProblem, step: int) -> float:
        """One update; returns the utility loss it saw."""

    @abstractmethod
    def release(self) -> torch.Tensor:
        """The features to release, crafting order."""

    @abstractmethod
    def final_inversion(self, crafted: torch.Tensor) -> torch.Tensor:
        """The attacker's latent for the release, as the diagnostics measure it."""


class FeatureSpaceCrafter(CraftingMethod):
    """Crafter in feature space (paper Alg. 1): move ``F`` along the implicit gradient of the privacy loss.

    Each step re-solves the attacker's ``z*(F)`` with a few warm-started Adam steps,
    fits the privacy loss to ``G(z*)``, carries its gradient to ``F`` through
    ``-(dL_inv/dz dF)^T H^{-1}`` (``config.solver``), adds ``beta`` times the utility
    gradient and moves ``F`` (per-sample normalised steps with momentum, or Adam).
    """

    name = "crafter"

    def begin(self, problem: CraftingProblem) -> None:
        cfg = self.config
        self.feats = problem.raw.clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.feats], lr=cfg.lr) if cfg.feature_optimizer == "adam" else None
        self.momentum = torch.zeros_like(problem.raw)
        self.raw_norm = problem.raw.flatten(1).norm(dim=1).clamp_min(1e-6)
        self.solver = make_solver(
            cfg.solver, iterations=cfg.solver_iterations, alpha=cfg.neumann_alpha, damping=cfg.damping
        )
        # The attacker's latent keeps one Adam state across feature steps, so its step
        # sizes settle as z* converges (a fresh Adam would restart with full-size sign
        # steps after every feature update).
        self.z_param = problem.z_raw.clone().requires_grad_(True)
        self.inner_optimizer = torch.optim.Adam([self.z_param], lr=cfg.inner_lr)
        self.z = problem.z_raw
        self.warm: torch.Tensor | None = None

    def step(self, problem: CraftingProblem, step: int) -> float:
        if step:
            self._track_attacker()
        gradient = self._privacy_gradient(problem)
        utility = problem.utility(self.feats)
        (utility_gradient,) = torch.autograd.grad(self.config.beta * utility, self.feats)
        self._move_features(gradient + utility_gradient, step)
        return utility.item()

    def _track_attacker(self) -> None:
        """Warm-started Adam steps re-solving ``z*(F)`` for the moved features."""
        for _ in range(self.config.inner_steps):
            loss = inversion_loss(
                self.feats.detach(),
                self.z_param,
                generator=self.kit.generator,
                encoder=self.kit.encoder,
                latent_weight=self.config.latent_weight,
            )
            (self.z_param.grad,) = torch.autograd.grad(loss.sum(), self.z_param)
            self.inner_optimizer.step()
        self.z = self.z_param.detach().clone()

    def _privacy_gradient(self, problem: CraftingProblem) -> torch.Tensor:
        """The privacy loss's gradient in ``F`` through ``z*(F)`` (implicit function theorem)."""
        cfg, G = self.config, self.kit.generator
        with torch.no_grad():
            reconstructions = G(self.z)
        objective = problem.privacy.fit(reconstructions)
        z_var = self.z.detach().requires_grad_(True)
        (grad_z,) = torch.autograd.grad(objective(G(z_var)), z_var)
        implicit = implicit_feature_gradient(
            self.feats.detach(),
            self.z,
            grad_z,
            generator=G,
            encoder=self.kit.encoder,
            solver=self.solver,
            latent_weight=cfg.latent_weight,
            hessian=cfg.hessian,
            init=self.warm,
        )
        self.warm = implicit.solution if cfg.warm_start_solver else None
        return implicit.feature_grad

    def _move_features(self, gradient: torch.Tensor, step: int) -> None:
        """Adam, or a per-sample normalised step with momentum and a cosine-decaying length.

        The normalised step keeps the gradient's direction (Adam's per-coordinate
        scaling does not); its length is a fraction of each raw feature's norm.
        """
        cfg = self.config
        if self.optimizer is not None:
            self.feats.grad = gradient
            self.optimizer.step()
            return
        self.momentum = 0.8 * self.momentum + gradient
        length = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(cfg.steps, 1)))
        norms = self.momentum.flatten(1).norm(dim=1).clamp_min(1e-20)
        per_sample = (-1,) + (1,) * (self.momentum.dim() - 1)
        with torch.no_grad():
            self.feats -= (length * self.raw_norm / norms).view(per_sample) * self.momentum

    def release(self) -> torch.Tensor:
        return self.feats.detach()

    def final_inversion(self, crafted: torch.Tensor) -> torch.Tensor:
        return self.invert(crafted, self.z, self.config.final_inversion_steps)


class LatentSpaceCrafter(CraftingMethod):
    """Crafter-z (paper App. F): move a latent ``z`` by Adam and release ``Enc(G(z))``.

    The release lies on the generator's range, so nothing off it is left for a
    decoder to read. ``z`` starts at ``sqrt(1 - m^2) z*(F0) + m eps`` with
    ``m = config.latent_noise`` (``m = 0``: the attacker's inversion, as the paper).
    """

    name = "crafter-z"

    @property
    def reads_attacker_start(self) -> bool:
        return self.config.latent_noise < 1  # at 1 the start is fresh noise alone

    def begin(self, problem: CraftingProblem) -> None:
        z = problem.z_raw.clone()
        m = self.config.latent_noise
        if m > 0:  # drawn only then: latent_noise=0 keeps the paper's random stream
            z = math.sqrt(1 - m * m) * z + m * torch.randn(z.shape, generator=problem.rng).to(z)
        self.z = z.requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.z], lr=self.config.latent_lr)

    def step(self, problem: CraftingProblem, step: int) -> float:
        G = self.kit.generator
        with torch.no_grad():
            reconstructions = G(self.z)
        objective = problem.privacy.fit(reconstructions)
        images = G(self.z)
        utility = problem.utility(self.kit.encoder(images))
        loss = objective(images) + self.config.beta * utility
        (self.z.grad,) = torch.autograd.grad(loss, self.z)
        self.optimizer.step()
        return utility.item()

    def release(self) -> torch.Tensor:
        with torch.no_grad():
            return self.kit.encoder(self.kit.generator(self.z))

    def final_inversion(self, crafted: torch.Tensor) -> torch.Tensor:
        # From the amortizer, as the attacker starts on a release it has never seen.
        return self.invert(crafted, None, self.config.inversion_steps)


class AnswerOnlyRelease(CraftingMethod):
    """Release the kit head's answer alone, as a feature: one public prior face's feature per class.

    ``F_i = Enc(G(z_c))`` with ``c = head(F0_i)`` and ``z_c`` the draw, among
    ``4 * prior_samples`` public prior latents seeded by ``config.seed``, that the head
    puts in class ``c`` most confidently: everything of the face but the head's answer
    is dropped, the head still answers ``c``, and the release keeps the feature shape,
    so the cloud's heads and every attack read it as they read crafted features. The
    simplest private release, and the baseline of the development scenario
    (``edge_sdk.evaluation.development``): its privacy comes from the answer's few bits.

    Raises:
        KitError: The kit has no head.
    """

    name = "answer-only"
    iterative = False

    def __init__(self, kit: Kit, config: CrafterConfig) -> None:
        super().__init__(kit, config)
        self._prototypes: torch.Tensor | None = None

    @property
    def reads_attacker_start(self) -> bool:
        return False

    def craft(self, problem: CraftingProblem, *, final_inversion: bool = True) -> CraftingOutcome:
        start = time.perf_counter()
        self.begin(problem)
        crafted = self.release()
        z_final = self.final_inversion(crafted) if final_inversion else None
        return CraftingOutcome(crafted, z_final, [], time.perf_counter() - start)

    def begin(self, problem: CraftingProblem) -> None:
        head = self.kit.head
        if head is None:
            raise KitError("answer-only release needs a kit with a head")
        with torch.no_grad():
            self.released = self.class_prototypes()[head(problem.raw).argmax(1)]

    def class_prototypes(self) -> torch.Tensor:
        """``(K, *feature_shape)``: per class, the feature of the prior draw the head deems most likely of it.

        Drawn once per method object (they depend only on the kit and ``config.seed``).
        """
        assert self.kit.head is not None
        if self._prototypes is not None:
            return self._prototypes
        gen = torch.Generator().manual_seed(self.config.seed)
        z = torch.randn(4 * self.config.prior_samples, self.kit.architecture.latent_dim, generator=gen)
        features = self.kit.encoder(self.kit.generator(z.to(self.kit.device)))
        self._prototypes = features[self.kit.head(features).softmax(1).argmax(0)]
        return self._prototypes

    def step(self, problem: CraftingProblem, step: int) -> float:
        return 0.0

    def release(self) -> torch.Tensor:
        return self.released

    def final_inversion(self, crafted: torch.Tensor) -> torch.Tensor:
        return self.invert(crafted, None, self.config.inversion_steps)


METHODS: dict[str, type[CraftingMethod]] = {
    FeatureSpaceCrafter.name: FeatureSpaceCrafter,
    LatentSpaceCrafter.name: LatentSpaceCrafter,
    AnswerOnlyRelease.name: AnswerOnlyRelease,
}
"""Crafting methods by ``CrafterConfig.method``."""
