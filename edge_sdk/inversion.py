"""White-box GAN inversion: the attacker's best response ``z*(F) = argmin_z L_inv(F, z)``.

Crafting simulates this attacker and differentiates through its answer (implicit
function theorem), so the objective below is the single definition both sides use:
the gradient is taken of exactly the function the inversion minimises
(docs/design.md, "Crafting", on the official code's mismatch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

__all__ = ["InversionResult", "inversion_loss", "invert"]


def inversion_loss(
    features: torch.Tensor,
    latent: torch.Tensor,
    *,
    generator: nn.Module,
    encoder: nn.Module,
    latent_weight: float = 0.0,
) -> torch.Tensor:
    """Per-sample inversion objective ``mean((F - Enc(G(z)))^2) + w * mean(z^2)``.

    Each sample's loss depends only on its own ``F_i`` and ``z_i`` (networks in eval
    mode), so the problem separates over the batch and ``loss.sum()`` gives every
    sample its own gradient whatever the batch size.

    Args:
        features: Target features ``(B, F, H, W)``.
        latent: Latents ``(B, d)``.
        generator: ``z -> image``, in eval mode.
        encoder: ``image -> feature``, in eval mode.
        latent_weight: Weight of the Gaussian-prior term on ``z`` (0 = the paper's
            plain feature distance; a small value keeps ``z`` in the generator's range).

    Returns:
        Loss per sample, shape ``(B,)``.
    """
    residual = encoder(generator(latent)) - features
    loss = residual.pow(2).flatten(1).mean(dim=1)
    if latent_weight:
        loss = loss + latent_weight * latent.pow(2).mean(dim=1)
    return loss


@dataclass
class InversionResult:
    """Outcome of :func:`invert`.

    Attributes:
        latent: Best-response latents ``(B, d)``, detached.
        loss: Final per-sample inversion loss ``(B,)``.
        initial_loss: Per-sample loss at the starting point ``(B,)``.
        history: Mean loss after each step.
    """

    latent: torch.Tensor
    loss: torch.Tensor
    initial_loss: torch.Tensor
    history: list[float] = field(default_factory=list)


def invert(
    features: torch.Tensor,
    *,
    generator: nn.Module,
    encoder: nn.Module,
    amortizer: nn.Module | None = None,
    init: torch.Tensor | None = None,
    steps: int = 100,
    lr: float = 0.05,
    optimizer: Literal["adam", "sgd"] = "adam",
    momentum: float = 0.9,
    latent_weight: float = 0.0,
    seed: int = 0,
) -> InversionResult:
    """Find ``z*(F)`` by gradient descent on :func:`inversion_loss`.

    The start is ``init`` if given, else the amortizer's guess ``Amor(F)``, else
    ``N(0, I)`` drawn from ``seed``. Only ``z`` is optimised; no network gradient
    is accumulated.

    Args:
        features: Features to invert ``(B, F, H, W)``.
        generator: The generator, in eval mode.
        encoder: The encoder, in eval mode.
        amortizer: Optional ``feature -> z`` network for the warm start.
        init: Explicit starting latents ``(B, d)``; overrides the amortizer.
        steps: Optimisation steps (0 returns the start).
        lr: Step size.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``; the paper's attacker).
        momentum: Momentum of ``"sgd"``.
        latent_weight: See :func:`inversion_loss`.
        seed: Seed of the random start when neither ``init`` nor ``amortizer`` is given.

    Returns:
        The latents and the loss record.

    Example:
        >>> from edge_sdk.kit import load_kit
        >>> from edge_sdk.data.orl import load_orl
        >>> kit = load_kit()
        >>> feats = kit.encode(load_orl("private-test").images[:4])
        >>> result = invert(feats, generator=kit.generator, encoder=kit.encoder,
        ...                 amortizer=kit.amortizer, steps=20)
        >>> bool(result.loss.mean() < result.initial_loss.mean())
        True
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    features = features.detach()
    if init is not None:
        start = init.detach().clone()
    elif amortizer is not None:
        with torch.no_grad():
            start = amortizer(features)
    else:
        rng = torch.Generator().manual_seed(seed)
        dim = _latent_dim(generator)
        start = torch.randn(features.shape[0], dim, generator=rng).to(features)
    latent = start.clone().requires_grad_(True)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam([latent], lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD([latent], lr=lr, momentum=momentum)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")

    def objective(z: torch.Tensor) -> torch.Tensor:
        return inversion_loss(features, z, generator=generator, encoder=encoder, latent_weight=latent_weight)

    with torch.no_grad():
        initial = objective(latent)
    history: list[float] = []
    for _ in range(steps):
        loss = objective(latent)
        (grad,) = torch.autograd.grad(loss.sum(), latent)
        latent.grad = grad
        opt.step()
        history.append(loss.detach().mean().item())
    with torch.no_grad():
        final = objective(latent)
    return InversionResult(latent=latent.detach(), loss=final, initial_loss=initial, history=history)


def _latent_dim(generator: nn.Module) -> int:
    first = next(m for m in generator.modules() if isinstance(m, nn.Linear))
    return int(first.in_features)
