"""Gradient of a loss on ``z*(F)`` with respect to ``F`` by the implicit function theorem.

With ``z*(F) = argmin_z L_inv(F, z)`` and ``grad_z L_inv(F, z*) = 0``,

    dL/dF = -(d^2 L_inv / dz dF)^T  H^-1  dL/dz*,     H = d^2 L_inv / dz^2 at z*,

(paper App. C). ``L_inv`` is :func:`edge_sdk.inversion.inversion_loss`, the very
objective the inversion minimises. For ``L_inv = mean((F - E(G(z)))^2) + w mean(z^2)``
the mixed term is closed-form: ``(d^2 L_inv / dz dF)^T v = -(2/n) J v`` with ``J`` the
Jacobian of ``E o G`` at ``z*`` and ``n`` the feature size, one Jacobian-vector product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import jvp, vjp

from edge_sdk.crafting.solvers import HVP, InverseHVPSolver, SolveInfo
from edge_sdk.inversion import inversion_loss

__all__ = ["HessianKind", "ImplicitGradient", "implicit_feature_gradient", "inversion_hvp"]

HessianKind = Literal["exact", "gauss-newton"]


@dataclass
class ImplicitGradient:
    """Result of :func:`implicit_feature_gradient`.

    Attributes:
        feature_grad: ``dL/dF`` through ``z*(F)``, shape of the features.
        solution: ``H^-1 dL/dz*``, reusable as the next solve's ``init``.
        solve: Cost and accuracy of the inverse-Hessian solve.
    """

    feature_grad: torch.Tensor
    solution: torch.Tensor
    solve: SolveInfo


def inversion_hvp(
    features: torch.Tensor,
    latent: torch.Tensor,
    *,
    generator: nn.Module,
    encoder: nn.Module,
    latent_weight: float = 0.0,
    hessian: HessianKind = "gauss-newton",
) -> HVP:
    """Batched product with the per-sample Hessian blocks of ``L_inv`` in ``z``.

    ``"exact"`` differentiates twice (double backward); ``"gauss-newton"`` applies
    ``(2/n) J^T J + (2w/d) I``, always positive semi-definite, with one JVP and one VJP.
    """
    n = features[0].numel()
    d = latent.shape[1]
    features = features.detach()
    if hessian == "exact":
        z = latent.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = inversion_loss(features, z, generator=generator, encoder=encoder, latent_weight=latent_weight)
            (grad_z,) = torch.autograd.grad(loss.sum(), z, create_graph=True)

        def exact(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(grad_z, z, grad_outputs=v, retain_graph=True)
            return hv

        return exact
    if hessian != "gauss-newton":
        raise ValueError(f"hessian must be 'exact' or 'gauss-newton', got {hessian!r}")
    z0 = latent.detach()

    def decode(z: torch.Tensor) -> torch.Tensor:
        return encoder(generator(z))

    pullback = vjp(decode, z0)[1]

    def gauss_newton(v: torch.Tensor) -> torch.Tensor:
        jv = jvp(decode, (z0,), (v,))[1]
        (jtjv,) = pullback(jv)
        return (2.0 / n) * jtjv + (2.0 * latent_weight / d) * v

    return gauss_newton


def implicit_feature_gradient(
    features: torch.Tensor,
    latent: torch.Tensor,
    latent_grad: torch.Tensor,
    *,
    generator: nn.Module,
    encoder: nn.Module,
    solver: InverseHVPSolver,
    latent_weight: float = 0.0,
    hessian: HessianKind = "gauss-newton",
    init: torch.Tensor | None = None,
) -> ImplicitGradient:
    """``dL/dF`` for a loss ``L(z*(F))`` whose gradient at ``z*`` is ``latent_grad``.

    Args:
        features: Current features ``F`` ``(B, ...)``.
        latent: The inversion's answer ``z*(F)`` ``(B, d)``; the formula assumes it
            is stationary, so invert to convergence or accept the error.
        latent_grad: ``dL/dz`` at ``z*`` ``(B, d)``.
        generator: The generator, eval mode.
        encoder: The encoder, eval mode.
        solver: Inverse-HVP solver (:mod:`edge_sdk.crafting.solvers`).
        latent_weight: The ``w`` of the inversion objective.
        hessian: Which Hessian the solver inverts.
        init: Starting guess for ``H^-1 dL/dz*`` (the last solution, when warm-starting).

    Returns:
        The feature gradient and the solve record.
    """
    hvp = inversion_hvp(
        features, latent, generator=generator, encoder=encoder, latent_weight=latent_weight, hessian=hessian
    )
    solution, info = solver.solve(hvp, latent_grad.detach(), init)
    n = features[0].numel()
    jv = jvp(lambda z: encoder(generator(z)), (latent.detach(),), (solution,))[1]
    # (d^2 L / dz dF)^T v = -(2/n) J v, so dL/dF = -(-(2/n) J v) = (2/n) J v.
    return ImplicitGradient(feature_grad=(2.0 / n) * jv.detach(), solution=solution.detach(), solve=info)
