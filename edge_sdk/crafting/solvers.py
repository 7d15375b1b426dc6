"""Inverse-Hessian-vector products for block-diagonal Hessians.

The inversion separates over the batch (``z_i`` depends only on ``F_i``), so the
Hessian of ``sum_i L_inv(F_i, z_i)`` is block-diagonal with one ``d x d`` block per
sample. Every solver here takes a batched product ``hvp(V)`` that applies each
sample's block to its own row of ``V`` (shape ``(B, d)``), and solves
``(H_i + damping * I) x_i = g_i`` for every row at once, with per-sample step sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

__all__ = [
    "HVP",
    "ConjugateGradientSolver",
    "DenseSolver",
    "InverseHVPSolver",
    "NeumannSolver",
    "SolveInfo",
    "make_solver",
]

HVP = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolveInfo:
    """What a solve cost and how well it did.

    Attributes:
        hvps: Batched Hessian-vector products used.
        residual: Per-sample relative residual ``||(H + damping I) x - g|| / ||g||``
            when the solver tracks it (CG), else ``None``.
    """

    hvps: int
    residual: torch.Tensor | None = field(default=None)


class InverseHVPSolver(Protocol):
    """Solves ``(H + damping I) x = g`` per sample, given a batched ``hvp``."""

    def solve(self, hvp: HVP, rhs: torch.Tensor, init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolveInfo]:
        """Return ``x`` of the shape of ``rhs`` ``(B, d)`` and the solve record.

        ``init`` is a starting guess (the previous solution when the system changes
        slowly); solvers that cannot use one ignore it.
        """
        ...


@dataclass(frozen=True)
class NeumannSolver:
    """Truncated Neumann series ``H^-1 g ~ alpha * sum_{j<=terms} (I - alpha H)^j g`` (paper Alg. 2).

    Converges only when ``alpha < 2 / lambda_max(H)``; the paper uses ``alpha=0.001``
    and 150 terms, which for a well-conditioned problem still leaves most of the
    inverse unapplied along small-curvature directions.

    Example:
        >>> H = torch.diag(torch.tensor([1.0, 2.0]))
        >>> x, _ = NeumannSolver(alpha=0.4, terms=200).solve(lambda v: v @ H, torch.ones(1, 2))
        >>> x.round(decimals=4).tolist()
        [[1.0, 0.5]]
    """

    alpha: float = 1e-3
    terms: int = 150
    damping: float = 0.0

    def solve(self, hvp: HVP, rhs: torch.Tensor, init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolveInfo]:
        if not self.alpha > 0 or self.terms < 0:
            raise ValueError(f"Neumann needs alpha > 0 and terms >= 0, got {self.alpha}, {self.terms}")
        v = rhs.clone()
        total = rhs.clone()
        for _ in range(self.terms):
            v = v - self.alpha * (hvp(v) + self.damping * v)
            total = total + v
        return self.alpha * total, SolveInfo(hvps=self.terms)


@dataclass(frozen=True)
class ConjugateGradientSolver:
    """Batched conjugate gradient with per-sample step sizes.

    With ``init``, the residual of the starting guess costs one product, counted
    in ``max_iter``. A sample stops updating when its relative residual falls under ``tol`` or when
    it meets non-positive curvature (an indefinite exact Hessian away from a
    minimum); use ``damping`` or the Gauss-Newton Hessian to keep blocks positive.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x, info = ConjugateGradientSolver(max_iter=2).solve(lambda v: v @ A, torch.tensor([[1.0, 2.0]]))
        >>> torch.allclose(x @ A, torch.tensor([[1.0, 2.0]]), atol=1e-5), info.hvps
        (True, 2)
    """

    max_iter: int = 10
    tol: float = 1e-4
    damping: float = 0.0

    def solve(self, hvp: HVP, rhs: torch.Tensor, init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolveInfo]:
        if self.max_iter < 1:
            raise ValueError(f"CG needs max_iter >= 1, got {self.max_iter}")

        def apply(v: torch.Tensor) -> torch.Tensor:
            return hvp(v) + self.damping * v

        used = 0
        if init is None:
            x = torch.zeros_like(rhs)
            r = rhs.clone()
        else:
            x = init.detach().clone()
            r = rhs - apply(x)
            used += 1
        p = r.clone()
        rs = (r * r).sum(1)
        norm_rhs = rhs.norm(dim=1).clamp_min(torch.finfo(rhs.dtype).tiny)
        active = (rs.sqrt() / norm_rhs) > self.tol
        while used < self.max_iter:
            if not bool(active.any()):
                break
            hp = apply(p)
            used += 1
            curvature = (p * hp).sum(1)
            active = active & (curvature > 0)
            step = torch.where(active, rs / curvature.where(active, torch.ones_like(curvature)), 0.0)
            x = x + step[:, None] * p
            r = r - step[:, None] * hp
            rs_new = (r * r).sum(1)
            active = active & ((rs_new.sqrt() / norm_rhs) > self.tol)
            beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), 0.0)
            p = r + beta[:, None] * p
            rs = rs_new
        return x, SolveInfo(hvps=used, residual=rs.sqrt() / norm_rhs)


@dataclass(frozen=True)
class DenseSolver:
    """Exact solve: build each ``d x d`` block with ``d`` batched products, then factorise.

    ``d`` products per call: the reference for tests, and viable for a latent of about
    100 when exactness matters more than time.
    """

    damping: float = 0.0

    def solve(self, hvp: HVP, rhs: torch.Tensor, init: torch.Tensor | None = None) -> tuple[torch.Tensor, SolveInfo]:
        hessian = dense_blocks(hvp, rhs)
        eye = torch.eye(rhs.shape[1], dtype=rhs.dtype, device=rhs.device)
        x = torch.linalg.solve(hessian + self.damping * eye, rhs.unsqueeze(-1)).squeeze(-1)
        return x, SolveInfo(hvps=rhs.shape[1], residual=torch.zeros(rhs.shape[0], dtype=rhs.dtype))


def dense_blocks(hvp: HVP, like: torch.Tensor) -> torch.Tensor:
    """The ``(B, d, d)`` Hessian blocks, column ``k`` from ``hvp`` of the ``k``-th basis vector."""
    dim = like.shape[1]
    columns = []
    for k in range(dim):
        basis = torch.zeros_like(like)
        basis[:, k] = 1.0
        columns.append(hvp(basis))
    blocks = torch.stack(columns, dim=2)
    return (blocks + blocks.transpose(1, 2)) / 2  # symmetric up to round-off


def make_solver(
    name: str, *, iterations: int = 10, alpha: float = 1e-3, damping: float = 0.0, tol: float = 1e-4
) -> InverseHVPSolver:
    """Solver by name: ``"cg"``, ``"neumann"`` (``iterations`` terms) or ``"dense"``."""
    if name == "cg":
        return ConjugateGradientSolver(max_iter=iterations, tol=tol, damping=damping)
    if name == "neumann":
        return NeumannSolver(alpha=alpha, terms=iterations, damping=damping)
    if name == "dense":
        return DenseSolver(damping=damping)
    raise ValueError(f"unknown solver {name!r}; choose 'cg', 'neumann' or 'dense'")
