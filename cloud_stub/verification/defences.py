"""Output defences for a classifier's released probabilities (vicious paper App. I; SSD paper).

Each maps a batch of softmax outputs ``(B, C)`` to released outputs ``(B, C)`` that
still sum to 1: rounding to k digits, top-k, argmax only, Gaussian or Laplace noise,
and SSD (Stealthy Shield Defense) in closed form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

__all__ = [
    "SSD",
    "argmax_only",
    "noisy",
    "round_digits",
    "ssd_project",
    "top_k",
]


def _renormalise(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp_min(0)
    total = p.sum(dim=1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(total > 0, p / total.clamp_min(1e-30), uniform)


def round_digits(p: torch.Tensor, digits: int) -> torch.Tensor:
    """Release each probability rounded to ``digits`` decimals.

    Example:
        >>> round_digits(torch.tensor([[0.876523, 0.123477]]), 2)
        tensor([[0.8800, 0.1200]])
    """
    scale = 10.0**digits
    return torch.round(p * scale) / scale


def top_k(p: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest probabilities, zero the rest, renormalise."""
    values, index = p.topk(k, dim=1)
    return _renormalise(torch.zeros_like(p).scatter(1, index, values))


def argmax_only(p: torch.Tensor) -> torch.Tensor:
    """One-hot of the predicted class: only the label leaves."""
    return torch.zeros_like(p).scatter(1, p.argmax(dim=1, keepdim=True), 1.0)


def noisy(p: torch.Tensor, scale: float, *, kind: str = "gaussian", seed: int = 0) -> torch.Tensor:
    """Add zero-mean Gaussian (std ``scale``) or Laplace (scale ``scale``) noise, clip, renormalise."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale
    elif kind == "laplace":
        uniform = torch.rand(p.shape, generator=generator, dtype=torch.float64) - 0.5
        noise = (-scale * torch.sign(uniform) * torch.log1p(-2 * uniform.abs())).to(p.dtype)
    else:
        raise ValueError(f"kind must be 'gaussian' or 'laplace', got {kind!r}")
    return _renormalise(p + noise)


def _weight(f: torch.Tensor, q: torch.Tensor, half: torch.Tensor, *, lower: bool) -> torch.Tensor:
    """Solve ``sum max(0, w q - f) = half`` (lower) or ``sum max(0, f - w q) = half`` (upper) per row.

    Both sides are monotone and piecewise linear in ``w`` with breakpoints ``r = f / q``:
    the active indices form a prefix (lower) or suffix (upper) of ``r`` sorted, so each
    candidate prefix/suffix gives ``w`` in closed form and the consistent one is kept.
    """
    r = f / q
    r_sorted, order = r.sort(dim=1)
    f_s, q_s = f.gather(1, order), q.gather(1, order)
    inf = torch.full_like(r_sorted[:, :1], float("inf"))
    if lower:
        w = (f_s.cumsum(1) + half) / q_s.cumsum(1)  # first j+1 indices active
        low, high = r_sorted, torch.cat([r_sorted[:, 1:], inf], dim=1)
    else:
        f_suffix, q_suffix = f_s.flip(1).cumsum(1).flip(1), q_s.flip(1).cumsum(1).flip(1)
        w = (f_suffix - half) / q_suffix  # indices j.. active
        low, high = torch.cat([-inf, r_sorted[:, :-1]], dim=1), r_sorted
    tolerance = 1e-12 * (1 + r_sorted.abs().amax(dim=1, keepdim=True))
    valid = (w >= low - tolerance) & (w <= high + tolerance)
    first = valid.to(torch.int8).argmax(dim=1, keepdim=True)
    return w.gather(1, first)


def ssd_project(f: torch.Tensor, q: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``argmin_p KL(p || q)`` over the simplex with ``||p - f||_1 <= delta``, row by row, in closed form.

    Args:
        f: ``(B, C)`` released-to-be probabilities.
        q: ``(B, C)`` target distributions (strictly positive).
        delta: ``(B,)`` L1 budgets.

    Returns:
        ``q`` where it is within budget; otherwise ``p_i = min(max(f_i, w_A q_i), w_B q_i)``
        with ``w_A < 1 < w_B`` moving exactly ``delta / 2`` of mass up and down.

    Example:
        >>> f = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
        >>> q = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
        >>> p = ssd_project(f, q, torch.tensor([0.2], dtype=torch.float64))
        >>> round(float(p.sum()), 12), round(float((p - f).abs().sum()), 12)
        (1.0, 0.2)
    """
    f, q = f.double(), q.double()
    delta = delta.double().reshape(-1, 1)
    half = delta / 2
    w_a = _weight(f, q, half, lower=True)
    w_b = _weight(f, q, half, lower=False)
    projected = torch.minimum(torch.maximum(f, w_a * q), w_b * q)
    within = (q - f).abs().sum(dim=1, keepdim=True) <= delta
    return torch.where(within, q, projected)


@dataclass
class SSD:
    """Stealthy Shield Defense: pull each output towards its sampled class's average output.

    Attributes:
        class_means: ``(C, C)`` table; row ``y`` is the mean softmax output over
            validation samples of class ``y``.
        eps: Budget factor: ``delta = eps * H(f)`` (entropy in nats).
        temperature: Sampling ``y`` from ``f ** (1 / T)`` normalised.
        secret: Mixed into the per-query seed; identical queries give identical outputs.
    """

    class_means: torch.Tensor
    eps: float = 0.5
    temperature: float = 0.1
    secret: bytes = b"edge-sdk-ssd"

    @classmethod
    def fit(cls, probabilities: torch.Tensor, labels: torch.Tensor, **options: object) -> SSD:
        """Build the table from validation outputs and their labels."""
        classes = probabilities.shape[1]
        table = torch.stack(
            [
                probabilities[labels == y].mean(dim=0) if (labels == y).any() else torch.full((classes,), 1.0 / classes)
                for y in range(classes)
            ]
        )
        return cls(class_means=table.double().clamp_min(1e-12), **options)  # type: ignore[arg-type]

    def _sample_classes(self, f: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(torch.log(f.clamp_min(1e-30)) / self.temperature, dim=1)
        classes = []
        for row, w in zip(f, weights, strict=True):
            digest = hashlib.sha256(self.secret + row.numpy().tobytes()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
            classes.append(int(torch.multinomial(w, 1, generator=generator)))
        return torch.tensor(classes)

    def __call__(self, probabilities: torch.Tensor) -> torch.Tensor:
        f = probabilities.double()
        q = self.class_means[self._sample_classes(f)]
        entropy = -(f * torch.log(f.clamp_min(1e-30))).sum(dim=1)
        return ssd_project(f, q, self.eps * entropy).to(probabilities.dtype)
