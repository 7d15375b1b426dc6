"""Each inverse-HVP solver against an exact solve of the same block-diagonal system."""

from __future__ import annotations

import pytest
import torch

from edge_sdk.crafting.solvers import (
    ConjugateGradientSolver,
    DenseSolver,
    NeumannSolver,
    dense_blocks,
    make_solver,
)


def _spd_blocks(batch: int = 3, dim: int = 6, cond: float = 20.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(batch, dim, dim, generator=gen, dtype=torch.float64))
    eigen = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), dim, dtype=torch.float64)
    return q @ torch.diag_embed(eigen.expand(batch, dim)) @ q.transpose(1, 2)


def _hvp(blocks: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda v: torch.einsum("bij,bj->bi", blocks, v)


@pytest.fixture
def system() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    blocks = _spd_blocks()
    rhs = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = torch.linalg.solve(blocks, rhs.unsqueeze(-1)).squeeze(-1)
    return blocks, rhs, exact


def test_cg_is_exact_after_d_iterations(system: tuple[torch.Tensor, ...]) -> None:
    blocks, rhs, exact = system
    x, info = ConjugateGradientSolver(max_iter=6, tol=0.0).solve(_hvp(blocks), rhs)
    assert torch.allclose(x, exact, atol=1e-9)
    assert info.hvps == 6 and info.residual is not None and info.residual.max() < 1e-8


def test_cg_stops_early_per_sample_at_tolerance(system: tuple[torch.Tensor, ...]) -> None:
    blocks, rhs, exact = system
    x, info = ConjugateGradientSolver(max_iter=50, tol=1e-6).solve(_hvp(blocks), rhs)
    assert info.hvps <= 6
    assert torch.allclose(x, exact, atol=1e-5)


def test_neumann_converges_to_the_inverse_when_alpha_is_small_enough(system: tuple[torch.Tensor, ...]) -> None:
    blocks, rhs, exact = system
    lam_max = torch.linalg.eigvalsh(blocks).max().item()
    x, info = NeumannSolver(alpha=1.0 / lam_max, terms=600).solve(_hvp(blocks), rhs)
    assert info.hvps == 600
    assert torch.allclose(x, exact, atol=1e-8)


def test_neumann_with_the_papers_settings_is_far_from_the_inverse(system: tuple[torch.Tensor, ...]) -> None:
    # alpha=0.001, 150 terms applies at most 0.15 of the inverse along unit curvature:
    # the reason the product's default solver is CG.
    blocks, rhs, exact = system
    x, _ = NeumannSolver(alpha=1e-3, terms=150).solve(_hvp(blocks), rhs)
    assert (x - exact).norm() / exact.norm() > 0.5


def test_dense_solver_and_blocks_match_the_matrices(system: tuple[torch.Tensor, ...]) -> None:
    blocks, rhs, exact = system
    assert torch.allclose(dense_blocks(_hvp(blocks), rhs), blocks, atol=1e-12)
    x, info = DenseSolver().solve(_hvp(blocks), rhs)
    assert torch.allclose(x, exact, atol=1e-10) and info.hvps == 6


def test_damping_solves_the_shifted_system(system: tuple[torch.Tensor, ...]) -> None:
    blocks, rhs, _ = system
    shifted = torch.linalg.solve(blocks + 0.5 * torch.eye(6, dtype=torch.float64), rhs.unsqueeze(-1)).squeeze(-1)
    for solver in (DenseSolver(damping=0.5), ConjugateGradientSolver(max_iter=6, tol=0.0, damping=0.5)):
        x, _ = solver.solve(_hvp(blocks), rhs)
        assert torch.allclose(x, shifted, atol=1e-9), type(solver).__name__


def test_cg_freezes_a_sample_with_negative_curvature() -> None:
    blocks = torch.stack([torch.eye(2, dtype=torch.float64), -torch.eye(2, dtype=torch.float64)])
    rhs = torch.ones(2, 2, dtype=torch.float64)
    x, _ = ConjugateGradientSolver(max_iter=5).solve(_hvp(blocks), rhs)
    assert torch.allclose(x[0], rhs[0]) and torch.equal(x[1], torch.zeros(2, dtype=torch.float64))


def test_make_solver_by_name() -> None:
    assert isinstance(make_solver("cg", iterations=3), ConjugateGradientSolver)
    assert make_solver("neumann", iterations=7, alpha=0.01) == NeumannSolver(alpha=0.01, terms=7)
    assert isinstance(make_solver("dense"), DenseSolver)
    with pytest.raises(ValueError, match="unknown solver"):
        make_solver("lbfgs")


def test_cg_warm_start_from_the_solution_costs_one_product(system: tuple[torch.Tensor, ...]) -> None:
    blocks, rhs, exact = system
    x, info = ConjugateGradientSolver(max_iter=6, tol=1e-8).solve(_hvp(blocks), rhs, exact)
    assert info.hvps == 1 and torch.allclose(x, exact, atol=1e-10)
    # Truncated CG (as in crafting) ends much closer to the solution from a nearby start.
    near = exact + 1e-3 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cold, _ = ConjugateGradientSolver(max_iter=2, tol=0.0).solve(_hvp(blocks), rhs)
    warm, _ = ConjugateGradientSolver(max_iter=2, tol=0.0).solve(_hvp(blocks), rhs, near)
    assert (warm - exact).norm() < 0.1 * (cold - exact).norm()
