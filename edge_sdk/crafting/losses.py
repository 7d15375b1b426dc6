"""Privacy and utility losses of crafting, one definition each.

Privacy losses measure how far the attacker's reconstructions ``G(z*(F))`` are from
the public prior faces (the Crafter paper's EMD term, Eq. 7-8): :class:`ExactEMD`
solves the optimal transport exactly at every step, :class:`CriticEMD` is the paper's
neural estimate, a WGAN-GP critic trained against the prior as the release moves.
Each is *fitted* to the current reconstructions once per step and returns the
differentiable objective of that step.

Utility losses measure what the release keeps of the raw feature ``F0``:
:class:`FeatureDistance` (relative distortion, task agnostic), :class:`HeadKL`
(the kit head's answers) and :class:`IntrapersonalDistance` (how the face differs
from other pictures of the same person: pose, expression, light).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, get_args

import torch
from torch import nn

from edge_sdk.crafting.pii import image_cost, transport_plan
from edge_sdk.kit.models import IntrapersonalSubspace, gradient_penalty

__all__ = [
    "CriticEMD",
    "ExactEMD",
    "FeatureDistance",
    "HeadHinge",
    "HeadKL",
    "HeadLoss",
    "IntrapersonalDistance",
    "PrivacyLoss",
    "UtilityLoss",
]


Objective = Callable[[torch.Tensor], torch.Tensor]


class PrivacyLoss(Protocol):
    """Distance from reconstructions to the prior, refitted at every crafting step."""

    curve: list[float]
    """One figure per step: the exact EMD or the critic's Wasserstein estimate."""

    def fit(self, reconstructions: torch.Tensor) -> Objective:
        """Fit to this step's reconstructions ``(B, C, H, W)``; return ``x -> scalar loss`` to minimise."""
        ...


class ExactEMD:
    """Exact earth mover's distance to the prior: the optimal plan, solved by POT at every step.

    The returned objective is ``sum_ij P_ij c(x_i, prior_j)`` with the plan ``P``
    held fixed, whose gradient in ``x`` is the EMD's (envelope theorem).

    Args:
        prior: Public prior faces ``G(z_r)``, shape ``(M, C, H, W)``.
    """

    def __init__(self, prior: torch.Tensor) -> None:
        self.prior = prior
        self.curve: list[float] = []

    def fit(self, reconstructions: torch.Tensor) -> Objective:
        plan, emd = transport_plan(reconstructions, self.prior)
        self.curve.append(emd)
        return lambda x: (plan * image_cost(x, self.prior)).sum()


class CriticEMD:
    """The paper's neural EMD: a WGAN-GP critic trained against the prior as the release moves (Alg. 1).

    Args:
        prior: Public prior faces ``G(z_r)``, shape ``(M, C, H, W)``.
        critic: ``D``, trained in place (Adam, lr ``lr``, betas 0.5/0.9).
        steps: Critic updates per fit (``n_critic``).
        lr: Adam learning rate of the critic.
        gp_weight: Weight of the gradient penalty.
        rng: Draws the prior batches and the penalty's interpolates.
    """

    def __init__(
        self,
        prior: torch.Tensor,
        critic: nn.Module,
        *,
        steps: int,
        lr: float,
        gp_weight: float,
        rng: torch.Generator,
    ) -> None:
        self.prior, self.critic, self.steps, self.gp_weight, self.rng = prior, critic, steps, gp_weight, rng
        self.optimizer = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.5, 0.9))
        self.curve: list[float] = []

    def fit(self, reconstructions: torch.Tensor) -> Objective:
        estimate = 0.0
        for _ in range(self.steps):
            estimate = self._critic_step(reconstructions)
        self.curve.append(estimate)
        return lambda x: -self.critic(x).mean()

    def _critic_step(self, reconstructions: torch.Tensor) -> float:
        """One WGAN-GP update of the critic; returns its Wasserstein estimate before the update."""
        batch = reconstructions.shape[0]
        real = self.prior[torch.randint(0, self.prior.shape[0], (batch,), generator=self.rng)]
        wasserstein = self.critic(real).mean() - self.critic(reconstructions).mean()
        loss = -wasserstein + self.gp_weight * gradient_penalty(self.critic, real, reconstructions, self.rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return wasserstein.item()


class UtilityLoss(Protocol):
    """What the release keeps of the raw features, as a loss (0 when nothing is lost)."""

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch of released features (shape of the raw ones); a scalar."""
        ...


class FeatureDistance:
    """Mean relative distortion ``||F_i - F0_i|| / ||F0_i||``: beta's scale does not depend on the kit.

    A tiny constant under the square root keeps the gradient finite where ``F = F0``
    (the feature-space crafter starts there); the reported figure is
    :func:`edge_sdk.metrics.relative_distortion`.

    Args:
        raw: The raw features ``F0``, shape ``(B, ...)``.
    """

    def __init__(self, raw: torch.Tensor) -> None:
        self.raw = raw
        self.raw_norm = raw.flatten(1).norm(dim=1).clamp_min(1e-6)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        distance = (features - self.raw).flatten(1).pow(2).sum(1).add(1e-12).sqrt()
        return (distance / self.raw_norm).mean()


class HeadKL:
    """Mean ``KL(head(F0) || head(F))``: the head's class distribution on the raw features is kept.

    Args:
        head: The kit head, features to class logits ``(B, K)``.
        raw: The raw features ``F0``, shape ``(B, ...)``.
    """

    def __init__(self, head: nn.Module, raw: torch.Tensor) -> None:
        self.head = head
        with torch.no_grad():
            self.raw_log_p = torch.log_softmax(head(raw), dim=1)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(self.head(features), dim=1)
        return (self.raw_log_p.exp() * (self.raw_log_p - log_p)).sum(dim=1).mean()


class HeadHinge:
    """Mean multi-class hinge ``max(0, max_{c != y} l_c - l_y + margin)``: the head's answer ``y`` on ``F0`` is kept.

    Zero for every release the head answers as it did on the raw feature by at least
    ``margin`` logits, so unlike :class:`HeadKL` it pulls nothing once the answer is
    kept (Crammer and Singer 2001).

    Args:
        head: The kit head, features to class logits ``(B, K)``.
        raw: The raw features ``F0``, shape ``(B, ...)``.
        margin: Logits by which the answer must lead, ``>= 0``.

    Raises:
        ValueError: A negative margin.
    """

    def __init__(self, head: nn.Module, raw: torch.Tensor, *, margin: float = 0.0) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.head = head
        self.margin = margin
        with torch.no_grad():
            self.answer = head(raw).argmax(dim=1, keepdim=True)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.head(features)
        own = logits.gather(1, self.answer)[:, 0]
        other = logits.scatter(1, self.answer, float("-inf")).amax(dim=1)
        return torch.relu(other - own + self.margin).mean()


HeadLoss = Literal["kl", "hinge"]
"""The head's terms within :class:`IntrapersonalDistance` (``CrafterConfig.head_loss``)."""


class IntrapersonalDistance:
    """Mean ``||P(F_i) - P(F0_i)|| / ||F0_i||``, ``P`` the kit's intrapersonal subspace, plus the head's term.

    Keeps the directions along which pictures of one person vary most (pose,
    expression, light: :class:`~edge_sdk.kit.models.IntrapersonalSubspace`, fitted on
    public people) and leaves the rest of the feature to the privacy loss. People's
    means differ along those directions too, so the kept coordinates still carry some
    identity (measured: ``benchmarks/frontier.py``). With ``head`` given,
    ``head_weight`` times the head's term (:data:`HeadLoss`: its KL divergence, or
    the hinge on its answer) is added so the kit head's answers are kept too.

    Args:
        subspace: The kit's intrapersonal subspace.
        raw: The raw features ``F0``, shape ``(B, ...)``.
        head: The kit head, or ``None``.
        head_weight: Weight of the head's term.
        head_loss: The head's term: ``"kl"`` (:class:`HeadKL`) or ``"hinge"`` (:class:`HeadHinge`).
        head_margin: The hinge's margin in logits.
        rank: Keep only the subspace's first ``rank`` (largest-variance) directions; all when ``None``.

    Raises:
        ValueError: ``rank`` outside ``1 .. subspace.rank``, or an unknown ``head_loss``.
    """

    def __init__(
        self,
        subspace: IntrapersonalSubspace,
        raw: torch.Tensor,
        *,
        head: nn.Module | None = None,
        head_weight: float,
        head_loss: HeadLoss = "kl",
        head_margin: float = 0.0,
        rank: int | None = None,
    ) -> None:
        if rank is not None and not 1 <= rank <= subspace.rank:
            raise ValueError(f"rank must be between 1 and the subspace's {subspace.rank}, got {rank}")
        if head_loss not in get_args(HeadLoss):
            raise ValueError(f"head_loss must be one of {', '.join(map(repr, get_args(HeadLoss)))}, got {head_loss!r}")
        self.subspace = subspace
        self.rank = subspace.rank if rank is None else rank
        with torch.no_grad():
            self.raw_coordinates = subspace(raw)[:, : self.rank]
        self.raw_norm = raw.flatten(1).norm(dim=1).clamp_min(1e-6)
        self.head_term: HeadKL | HeadHinge | None = None
        if head is not None and head_weight > 0:
            self.head_term = HeadKL(head, raw) if head_loss == "kl" else HeadHinge(head, raw, margin=head_margin)
        self.head_weight = head_weight

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        distance = (self.subspace(features)[:, : self.rank] - self.raw_coordinates).pow(2).sum(1).add(1e-12).sqrt()
        loss = (distance / self.raw_norm).mean()
        return loss + self.head_weight * self.head_term(features) if self.head_term is not None else loss
