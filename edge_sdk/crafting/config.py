"""Crafting settings: :class:`CrafterConfig` and the named presets (``edge-sdk craft --preset``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from edge_sdk.crafting.losses import HeadLoss
from edge_sdk.crafting.methods import METHODS

__all__ = ["PRESETS", "CrafterConfig", "Method", "Solver"]

Method = Literal["crafter", "crafter-z", "answer-only"]

Solver = Literal["cg", "neumann", "dense"]
FeatureOptimizer = Literal["adam", "normalized"]
Hessian = Literal["gauss-newton", "exact"]
PrivacyLossName = Literal["critic", "emd"]
CriticInit = Literal["fresh", "kit"]
Utility = Literal["feature", "head", "intrapersonal"]

# Validation tables of CrafterConfig; the method's choices are the registry's (METHODS).
_COUNTS = ("steps", "inversion_steps", "inner_steps", "solver_iterations", "critic_steps", "final_inversion_steps")
_RATES = ("lr", "inner_lr", "critic_lr", "neumann_alpha", "latent_lr")
_WEIGHTS = ("beta", "damping", "latent_weight", "gp_weight", "head_weight", "head_margin")
_CHOICES: dict[str, tuple[str, ...]] = {
    "solver": get_args(Solver),
    "feature_optimizer": get_args(FeatureOptimizer),
    "hessian": get_args(Hessian),
    "privacy_loss": get_args(PrivacyLossName),
    "critic_init": get_args(CriticInit),
    "utility": get_args(Utility),
    "head_loss": get_args(HeadLoss),
}


@dataclass(frozen=True)
class CrafterConfig:
    """Settings of one crafting call.

    The defaults release ``Enc(G(z))`` with ``z`` started at a fresh prior latent and
    pulled towards the public prior while the kit head's answers stay those of the
    raw feature (Crafter-z with head utility, 100 Adam steps of lr 0.05, ``beta = 1``,
    ``latent_noise = 1``). They were chosen as the configuration that held every attack
    of the evaluation harness (adaptive and repeated-release ones included) nearest
    chance while keeping the head's answers. Beyond that answer the release keeps
    little for new heads on tasks the kit never saw; :meth:`answer_only` releases the
    answer alone with the same privacy. The measured privacy and utility of every
    preset, new heads on unseen tasks included, are in ``benchmarks/results/``
    (``benchmarks/frontier.py``, ``benchmarks/evaluation.py``,
    ``benchmarks/crafting.py``), summarised in ``benchmarks/RESULTS.md``.

    Attributes:
        method: ``"crafter-z"`` (the default) optimises the latent and releases
            ``Enc(G(z))`` (paper App. F): the release lies on the generator's range,
            so nothing off it is left for a decoder to read; ``"crafter"`` optimises
            the features themselves through the implicit gradient (paper Alg. 1,
            :meth:`feature`).
        beta: Weight of the utility loss (see ``utility``) against the privacy loss;
            larger keeps the release closer to what the raw feature gives.
        steps: Feature (``"crafter"``) or latent (``"crafter-z"``) updates.
        lr: Step size of the features: for ``"normalized"``, the first step's length
            as a fraction of ``||F0_i||`` (then cosine decay); for ``"adam"``, Adam's rate.
        feature_optimizer: ``"normalized"``: per-sample normalised gradient steps with
            momentum, which keep the implicit gradient's direction; ``"adam"``: the
            paper's Adam, whose per-coordinate scaling spends distortion on coordinates
            that barely matter (more distortion for the same privacy).
        inversion_steps: Adam steps of the first inversion, from the amortizer's guess.
        inner_steps: Adam steps re-solving ``z*`` after each feature update (warm start).
        inner_lr: Adam learning rate of the inversion.
        latent_weight: Gaussian-prior weight of the inversion objective.
        solver: Inverse-Hessian-vector solver: ``"cg"``, ``"neumann"`` or ``"dense"``.
        solver_iterations: CG iterations or Neumann terms.
        neumann_alpha: Neumann step ``alpha`` (paper: 0.001).
        damping: Added to the Hessian's diagonal in the solve.
        warm_start_solver: Start each solve from the previous step's solution (CG).
        hessian: ``"gauss-newton"`` (PSD, no double backward) or ``"exact"``.
        privacy_loss: ``"critic"``: the paper's neural estimate of the EMD, a WGAN-GP
            critic trained against the prior as the features move; ``"emd"``: the
            exact EMD between the batch's reconstructions and the prior faces,
            solved by optimal transport at every step (no critic to train).
        critic_steps: Critic updates per feature update (``n_critic``).
        critic_lr: Adam learning rate of the critic (betas 0.5, 0.9).
        gp_weight: Gradient-penalty weight of the critic.
        critic_init: ``"fresh"`` (seeded new critic per call) or ``"kit"`` (start from
            the kit's WGAN critic).
        prior_samples: Number of public prior faces ``G(z_r)``.
        shuffle: Shuffle the batch before crafting (paper Sec. V-A).
        final_inversion_steps: Steps of the attacker's inversion measured for the
            diagnostics (epsilon-PII) after crafting.
        latent_lr: Adam learning rate of ``z`` for ``"crafter-z"`` (paper: 0.005).
        latent_noise: For ``"crafter-z"``, the share ``m`` of fresh prior noise in the
            starting latent, ``z0 = sqrt(1 - m^2) z*(F0) + m eps`` (a unit Gaussian
            again, ``eps`` seeded by the batch): 1 (the default) starts at a fresh
            prior face, so the release keeps of the person only what the utility loss
            asks for (with head utility: the head's answers); 0 starts at the
            attacker's inversion ``z*(F0)`` (paper App. F), which keeps more of the
            face for new heads and for a decoder (the trade is measured by
            ``benchmarks/evaluation.py --latent-noise`` and ``benchmarks/head_training.py``).
        utility: What ``beta`` weighs: ``"head"`` (the default), the KL divergence
            from the kit head's class distribution on the raw features to that on the
            released ones (the head's answers are kept while the feature may move far
            from ``F0``; needs a kit with a head); ``"feature"``, the relative
            distortion ``||F_i - F0_i|| / ||F0_i||`` (task agnostic, but a decoder
            reads the person through a small distortion); ``"intrapersonal"``, the
            relative distance of the release's coordinates in the kit's intrapersonal
            subspace (how pictures of one person differ: pose, expression, light;
            fitted on public people) plus ``head_weight`` times the head's term
            (``head_loss``): the
            release keeps what new heads on tasks nobody declared read, while where
            people differ is pulled to the prior (needs a kit with that subspace).
        head_weight: Weight of the head's term within the ``"intrapersonal"`` utility.
        head_loss: The head's term: ``"kl"``, the KL divergence of its class
            distributions (keeps the distribution); ``"hinge"``, the multi-class hinge
            ``max(0, max_{c != y} l_c - l_y + head_margin)`` on the release's logits
            ``l``, ``y`` the head's answer on the raw feature (Crammer and Singer
            2001): zero once the answer is kept, so the rest of the feature is left to
            the intrapersonal coordinates and the privacy loss.
        head_margin: The hinge's margin, in logits: with 0 a kept answer may sit on the
            decision boundary, where another runtime's rounding can flip it.
        intrapersonal_rank: With the ``"intrapersonal"`` utility, keep only the first
            (largest-variance) this many directions of the kit's subspace; all of them
            when ``None``. Fewer directions keep less of what separates people too.
        seed: Seed; with the batch content it fixes every random draw.
    """

    method: Method = "crafter-z"
    beta: float = 1.0
    steps: int = 100
    lr: float = 0.05
    feature_optimizer: FeatureOptimizer = "normalized"
    inversion_steps: int = 30
    inner_steps: int = 3
    inner_lr: float = 0.05
    latent_weight: float = 0.0
    solver: Solver = "cg"
    solver_iterations: int = 4
    neumann_alpha: float = 1e-3
    damping: float = 1e-4
    warm_start_solver: bool = True
    hessian: Hessian = "gauss-newton"
    privacy_loss: PrivacyLossName = "emd"
    critic_steps: int = 5
    critic_lr: float = 2e-4
    gp_weight: float = 10.0
    critic_init: CriticInit = "fresh"
    prior_samples: int = 64
    shuffle: bool = True
    final_inversion_steps: int = 50
    latent_lr: float = 0.05
    latent_noise: float = 1.0
    utility: Utility = "head"
    head_weight: float = 0.0
    head_loss: HeadLoss = "kl"
    head_margin: float = 0.0
    intrapersonal_rank: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in _COUNTS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in _RATES:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in _WEIGHTS:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.latent_noise <= 1.0:
            raise ValueError(f"latent_noise must be in [0, 1], got {self.latent_noise}")
        if self.prior_samples < 2:
            raise ValueError(f"prior_samples must be >= 2, got {self.prior_samples}")
        for name, choices in {**_CHOICES, "method": tuple(METHODS)}.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")
        self._check_intrapersonal_settings()

    def _check_intrapersonal_settings(self) -> None:
        """Settings of the intrapersonal utility are refused with another one, which would ignore them."""
        if self.head_margin > 0 and self.head_loss != "hinge":
            raise ValueError(f"head_margin is the margin of head_loss='hinge', not {self.head_loss!r}")
        if self.utility == "intrapersonal":
            if self.intrapersonal_rank is not None and self.intrapersonal_rank < 1:
                raise ValueError(f"intrapersonal_rank must be >= 1, got {self.intrapersonal_rank}")
            if self.head_loss != "kl" and self.head_weight == 0:
                raise ValueError(f"head_loss={self.head_loss!r} weighs nothing with head_weight=0")
            return
        if self.head_weight > 0:
            raise ValueError(f"head_weight weighs the head's term within utility='intrapersonal', not {self.utility!r}")
        if self.head_loss != "kl":
            raise ValueError(f"head_loss applies to utility='intrapersonal', not {self.utility!r}")
        if self.intrapersonal_rank is not None:
            raise ValueError(f"intrapersonal_rank applies to utility='intrapersonal', not {self.utility!r}")

    @classmethod
    def paper(cls, **overrides: Any) -> CrafterConfig:
        """The paper's settings: 500 feature steps, Neumann with alpha 0.001 and 150 terms,
        a 600-step inversion, 10 critic steps, beta 1 on the feature distance (Alg. 1-2, App. G)."""
        base = cls(
            method="crafter",
            utility="feature",
            steps=500,
            solver="neumann",
            solver_iterations=150,
            neumann_alpha=1e-3,
            damping=0.0,
            hessian="exact",
            inversion_steps=600,
            inner_steps=100,
            critic_steps=10,
            lr=0.01,
            feature_optimizer="adam",
            privacy_loss="critic",
            beta=1.0,
            warm_start_solver=False,
        )
        return replace(base, **overrides)

    @classmethod
    def feature(cls, **overrides: Any) -> CrafterConfig:
        """Crafter in feature space (paper Alg. 1) keeping features near ``F0``, tuned for speed.

        Per-sample normalised gradient steps, 4 warm-started CG iterations on the
        Gauss-Newton Hessian, the exact EMD to the prior, ``beta = 0.2`` on the
        relative distortion (measured choices: ``benchmarks/RESULTS.md``). It defeats the
        white-box GAN inversion it simulates but not a decoder trained on public
        ``(Enc(X'), X')`` pairs, which still recognises the person through its small
        distortion (``edge-sdk evaluate --preset feature``).
        """
        base = cls(method="crafter", utility="feature", beta=0.2, steps=30, latent_lr=0.005)
        return replace(base, **overrides)

    @classmethod
    def answer_only(cls, **overrides: Any) -> CrafterConfig:
        """Release the kit head's answer alone, shaped as a feature (``method="answer-only"``).

        Nothing is optimised: each face's release is the feature of the public prior
        face the head puts in the same class most confidently. It keeps exactly the head's
        answer; what new heads learn from it is measured beside the crafted releases
        (``benchmarks/frontier.py``).
        """
        return replace(cls(method="answer-only"), **overrides)

    @classmethod
    def intrapersonal(cls, **overrides: Any) -> CrafterConfig:
        """Crafter-z that keeps how the picture differs from others of the same person, and the head's answer.

        The latent starts at a fresh prior face and is pulled to the prior while the
        release keeps the raw feature's coordinates in the kit's intrapersonal subspace
        (pose, expression, light: :class:`~edge_sdk.kit.models.IntrapersonalSubspace`):
        useful to new heads on tasks nobody declared, the rest left to the prior. A
        hinge on the kit head's logits (``head_weight=0.1``, ``head_loss="hinge"``)
        keeps its answers and pulls nothing once they are kept. The kept coordinates
        still carry some identity (people's means differ along them too). Measured
        beside every other release in ``benchmarks/frontier.py``.
        """
        return replace(cls(utility="intrapersonal", beta=1.0, head_weight=0.1, head_loss="hinge"), **overrides)


PRESETS: dict[str, Callable[..., CrafterConfig]] = {
    "default": CrafterConfig,
    "feature": CrafterConfig.feature,
    "paper": CrafterConfig.paper,
    "answer-only": CrafterConfig.answer_only,
    "intrapersonal": CrafterConfig.intrapersonal,
}
"""Named crafting configurations (``edge-sdk craft --preset NAME``); each takes overrides."""
