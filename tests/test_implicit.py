"""The implicit feature gradient against finite differences, unrolled differentiation and exact Hessians.

Everything runs in float64 on a tiny kit; the inner problem is solved by Newton's
method to machine precision so that the IFT's stationarity assumption holds.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian, jacobian

from conftest import make_tiny_kit
from edge_sdk.crafting.implicit import implicit_feature_gradient, inversion_hvp
from edge_sdk.crafting.solvers import ConjugateGradientSolver, DenseSolver, NeumannSolver, dense_blocks
from edge_sdk.inversion import inversion_loss
from edge_sdk.kit import Kit

WEIGHT = 0.01  # Gaussian-prior weight: keeps the tiny problem strongly convex near z*


def _smooth(module: nn.Module) -> None:
    """Swap (Leaky)ReLU for Softplus: finite differences and Newton need a C^2 objective."""
    for name, child in module.named_children():
        if isinstance(child, (nn.ReLU, nn.LeakyReLU)):
            setattr(module, name, nn.Softplus(beta=2.0))
        else:
            _smooth(child)


@pytest.fixture
def kit64() -> Kit:
    kit = make_tiny_kit(seed=5)
    for module in kit.components().values():
        _smooth(module)
        module.double()
    with torch.no_grad():  # larger weights: the data term, not the prior, shapes the Hessian
        for module in (kit.generator, kit.encoder):
            for p in module.parameters():
                if p.dim() > 1:
                    p.mul_(3.0)
    return kit


def _loss(kit: Kit, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return inversion_loss(f, z, generator=kit.generator, encoder=kit.encoder, latent_weight=WEIGHT)


def newton_inversion(kit: Kit, features: torch.Tensor, start: torch.Tensor, iters: int = 30) -> torch.Tensor:
    z = start.clone()
    for _ in range(iters):
        zz = z.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(_loss(kit, features, zz).sum(), zz)
        hvp = inversion_hvp(
            features, z, generator=kit.generator, encoder=kit.encoder, latent_weight=WEIGHT, hessian="exact"
        )
        blocks = dense_blocks(hvp, z)
        z = z - torch.linalg.solve(blocks, grad.unsqueeze(-1)).squeeze(-1)
        if grad.abs().max() < 1e-13:
            break
    return z.detach()


def _problem(kit: Kit, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    z_true = 0.5 * torch.randn(batch, kit.architecture.latent_dim, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        features = kit.encoder(kit.generator(z_true))
    features = features + 0.01 * torch.randn(features.shape, generator=gen, dtype=torch.float64)
    z_star = newton_inversion(kit, features, z_true)
    return (
        features,
        z_star,
        gen.manual_seed(11) and torch.randn(batch, kit.architecture.latent_dim, generator=gen, dtype=torch.float64),
    )


def _outer(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for the privacy loss on z*: its gradient is c + sin(z)."""
    return (c * z).sum() - torch.cos(z).sum()


def test_newton_reaches_a_stationary_point(kit64: Kit) -> None:
    features, z_star, _ = _problem(kit64)
    zz = z_star.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_loss(kit64, features, zz).sum(), zz)
    assert grad.abs().max() < 1e-12


@pytest.mark.parametrize("hessian_kind", ["exact", "gauss-newton"])
def test_hvps_match_autograd_hessians_and_jacobians(kit64: Kit, hessian_kind: str) -> None:
    features, z_star, _ = _problem(kit64, batch=1)
    hvp = inversion_hvp(
        features, z_star, generator=kit64.generator, encoder=kit64.encoder, latent_weight=WEIGHT, hessian=hessian_kind
    )  # type: ignore[arg-type]
    ours = dense_blocks(hvp, z_star)[0]
    d = z_star.shape[1]
    if hessian_kind == "exact":
        reference = hessian(lambda z: _loss(kit64, features, z[None]).sum(), z_star[0])
    else:
        jac = jacobian(lambda z: kit64.encoder(kit64.generator(z[None])).flatten(), z_star[0])
        reference = (2.0 / features[0].numel()) * jac.T @ jac + (2.0 * WEIGHT / d) * torch.eye(d, dtype=torch.float64)
    assert torch.allclose(ours, reference, atol=1e-10)


def test_implicit_gradient_matches_central_finite_differences(kit64: Kit) -> None:
    features, z_star, c = _problem(kit64)
    zz = z_star.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_outer(zz, c), zz)
    result = implicit_feature_gradient(
        features,
        z_star,
        g,
        generator=kit64.generator,
        encoder=kit64.encoder,
        solver=DenseSolver(),
        latent_weight=WEIGHT,
        hessian="exact",
    )
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        direction = torch.randn(features.shape, generator=gen, dtype=torch.float64)
        eps = 1e-5
        plus = newton_inversion(kit64, features + eps * direction, z_star)
        minus = newton_inversion(kit64, features - eps * direction, z_star)
        numeric = (_outer(plus, c) - _outer(minus, c)) / (2 * eps)
        analytic = (result.feature_grad * direction).sum()
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-10)


def test_implicit_gradient_matches_unrolled_differentiation(kit64: Kit) -> None:
    # Gradient descent started at z*(F) and differentiated through K steps tends to the
    # implicit gradient as K grows (it is the Neumann series with alpha = step size).
    features, z_star, c = _problem(kit64, batch=1)
    hvp = inversion_hvp(
        features, z_star, generator=kit64.generator, encoder=kit64.encoder, latent_weight=WEIGHT, hessian="exact"
    )
    eigen = torch.linalg.eigvalsh(dense_blocks(hvp, z_star)[0])
    step = 1.0 / eigen.max().item()
    f = features.clone().requires_grad_(True)
    z = z_star.clone().requires_grad_(True)
    for _ in range(int(12 * eigen.max() / eigen.min()) + 50):
        (grad,) = torch.autograd.grad(_loss(kit64, f, z).sum(), z, create_graph=True)
        z = z - step * grad
    (unrolled,) = torch.autograd.grad(_outer(z, c), f)
    zz = z_star.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_outer(zz, c), zz)
    implicit = implicit_feature_gradient(
        features,
        z_star,
        g,
        generator=kit64.generator,
        encoder=kit64.encoder,
        solver=DenseSolver(),
        latent_weight=WEIGHT,
        hessian="exact",
    ).feature_grad
    assert torch.allclose(unrolled, implicit, rtol=1e-4, atol=1e-8 * implicit.abs().max().item())


def test_every_solver_gives_the_dense_implicit_gradient(kit64: Kit) -> None:
    features, z_star, c = _problem(kit64)
    zz = z_star.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_outer(zz, c), zz)
    kwargs = {"generator": kit64.generator, "encoder": kit64.encoder, "latent_weight": WEIGHT, "hessian": "exact"}
    reference = implicit_feature_gradient(features, z_star, g, solver=DenseSolver(), **kwargs).feature_grad  # type: ignore[arg-type]
    hvp = inversion_hvp(features, z_star, **kwargs)  # type: ignore[arg-type]
    lam_max = torch.linalg.eigvalsh(dense_blocks(hvp, z_star)).max().item()
    for solver in (
        ConjugateGradientSolver(max_iter=z_star.shape[1], tol=0.0),
        NeumannSolver(alpha=1.0 / lam_max, terms=3000),
    ):
        ours = implicit_feature_gradient(features, z_star, g, solver=solver, **kwargs).feature_grad  # type: ignore[arg-type]
        assert torch.allclose(ours, reference, rtol=1e-6, atol=1e-9 * reference.abs().max().item()), solver
