"""Model inversion from a prediction and its explanation (PredMI, ExpMI), GNIME's game, and map fidelity.

From the GNIME paper (``../shared/papers/gnime-inversion-resistant-explanations.md``):

- **PredMI** (Yang et al.): an inversion network from the prediction vector alone;
- **ExpMI** (Zhao et al.): from the prediction vector and the attribution map, a
  U-Net-style network (:class:`ExplanationInverter`);
- **GNIME** (Sec. 4, Alg. 1): the noise generator and an inversion network trained in
  turns: the inverter on clean and noised maps (Eq. 1), the generator to keep maps
  close while the inverter fails (Eq. 2, weight ``lam``).

Every network trains on public faces only (the attacker's and the defender's data);
attacks are scored on private faces by the evaluation harness's metrics. Fidelity: the
Spearman rank correlation of a noised map with its clean one, and the deletion curve
(Samek et al. 2017): the head's confidence in its answer as the pixels the map ranks
highest are blacked out first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edge_sdk.explanation_noise import ExplanationNoiseGenerator, normalise_maps, prediction_planes
from edge_sdk.explanations import KitClassifier, explain
from edge_sdk.kit.kit import Kit
from edge_sdk.kit.training import augment

__all__ = [
    "ExplanationData",
    "ExplanationInverter",
    "average_ranks",
    "deletion_curve",
    "explanation_data",
    "rank_correlation",
    "train_gnime",
    "train_inverter",
]

MapTransform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""What the device releases instead of a normalised map: ``(maps, probabilities) -> maps``."""


@dataclass
class ExplanationData:
    """Faces with the kit head's answer and its explanation.

    Attributes:
        images: ``(N, C, H, W)`` kit-normalised faces.
        maps: ``(N, H, W)`` attribution maps, each divided by its maximum.
        probabilities: ``(N, K)`` the head's class probabilities.
    """

    images: torch.Tensor
    maps: torch.Tensor
    probabilities: torch.Tensor


def explanation_data(kit: Kit, images: torch.Tensor, *, method: str, copies: int = 1, seed: int = 0) -> ExplanationData:
    """Explain ``images`` (and ``copies - 1`` augmented copies of them: shifts, flips, brightness)."""
    rng = torch.Generator().manual_seed(seed)
    batches = [images] + [augment(images, rng, max_shift=3, brightness=0.1)[0] for _ in range(copies - 1)]
    faces = torch.cat(batches)
    result = explain(kit, faces, method=method)
    return ExplanationData(images=faces, maps=normalise_maps(result.maps), probabilities=result.probabilities)


class ExplanationInverter(nn.Module):
    """``f_A(e, y) -> x``: a normalised map and a prediction vector to a face in ``[-1, 1]``.

    A U-Net from the map and ``K`` constant prediction planes (three halvings, bypass
    connections), the prediction vector appended again at the bottleneck, as ExpMI's
    network (the paper's Fig. 3). ``use_maps=False`` blanks the map: PredMI with the
    same capacity.

    Example:
        >>> inverter = ExplanationInverter(classes=3, channels=1)
        >>> inverter(torch.rand(2, 64, 64), torch.softmax(torch.randn(2, 3), 1)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, *, classes: int, channels: int, width: int = 16, use_maps: bool = True) -> None:
        super().__init__()
        self.use_maps = use_maps
        w = width

        def down(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))

        def up(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(nn.Conv2d(1 + classes, w, 3, 1, 1), nn.LeakyReLU(0.2))
        self.down1, self.down2, self.down3 = down(w, 2 * w), down(2 * w, 4 * w), down(4 * w, 4 * w)
        self.up3 = up(4 * w + classes, 4 * w)
        self.up2, self.up1 = up(8 * w, 2 * w), up(4 * w, w)
        self.head = nn.Sequential(nn.Conv2d(2 * w, channels, 3, 1, 1), nn.Tanh())

    def forward(self, maps: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
        if not self.use_maps:
            maps = torch.zeros_like(maps)
        s0 = self.stem(prediction_planes(maps, probabilities))
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        s3 = self.down3(s2)
        n, _, h, w = s3.shape
        bottom = torch.cat([s3, probabilities[:, :, None, None].expand(n, -1, h, w)], dim=1)
        u2 = self.up3(bottom)
        u1 = self.up2(torch.cat([u2, s2], dim=1))
        u0 = self.up1(torch.cat([u1, s1], dim=1))
        return self.head(torch.cat([u0, s0], dim=1))


def _reconstruction_loss(rebuilt: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(rebuilt, images)


def train_inverter(
    data: ExplanationData,
    *,
    released: MapTransform | None = None,
    use_maps: bool = True,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> ExplanationInverter:
    """Train an attacker's inversion network on public faces, from the maps the device releases.

    Args:
        data: Public faces with their answers and maps.
        released: What the device sends instead of a map (GNIME's generator, noise);
            the identity if ``None``. An attacker with the device's SDK applies it to
            its own public faces, so the attack adapts to the defence.
        use_maps: ``False`` trains PredMI (the prediction alone).
        steps: Adam steps (cosine decay).
        batch_size: Faces per step.
        lr: Adam learning rate.
        seed: Seed of initialisation and batches.
    """
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        inverter = ExplanationInverter(
            classes=data.probabilities.shape[1], channels=data.images.shape[1], use_maps=use_maps
        )
    optimizer = torch.optim.Adam(inverter.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    inverter.train()
    for _ in tqdm(range(steps), desc="inversion network", disable=not progress):
        idx = torch.randint(0, len(data.images), (batch_size,), generator=rng)
        maps, p = data.maps[idx], data.probabilities[idx]
        if released is not None:
            with torch.no_grad():
                maps = released(maps, p)
        loss = _reconstruction_loss(inverter(maps, p), data.images[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return inverter.eval()


def train_gnime(
    data: ExplanationData,
    *,
    lam: float = 1.0,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> ExplanationNoiseGenerator:
    """GNIME's two-player game (Alg. 1) on public faces; returns the noise generator.

    Each step: the inversion network learns from clean and noised maps (Eq. 1); the
    generator then minimises ``MSE(e, e_hat) - lam * MSE(x, f_INV(e_hat, y))`` (Eq. 2).
    """
    rng = torch.Generator().manual_seed(seed)
    classes, channels = data.probabilities.shape[1], data.images.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        generator = ExplanationNoiseGenerator(classes=classes)
        inverter = ExplanationInverter(classes=classes, channels=channels)
    opt_ng = torch.optim.Adam(generator.parameters(), lr=lr)
    opt_inv = torch.optim.Adam(inverter.parameters(), lr=lr)
    generator.train()
    inverter.train()
    for _ in tqdm(range(steps), desc="GNIME game", disable=not progress):
        idx = torch.randint(0, len(data.images), (batch_size,), generator=rng)
        maps, p, x = data.maps[idx], data.probabilities[idx], data.images[idx]
        with torch.no_grad():
            noised = generator(maps, p)
        loss_inv = _reconstruction_loss(inverter(maps, p), x) + _reconstruction_loss(inverter(noised, p), x)
        opt_inv.zero_grad(set_to_none=True)
        loss_inv.backward()
        opt_inv.step()
        for param in inverter.parameters():
            param.requires_grad_(False)
        noised = generator(maps, p)
        loss_ng = F.mse_loss(noised, maps) - lam * _reconstruction_loss(inverter(noised, p), x)
        opt_ng.zero_grad(set_to_none=True)
        loss_ng.backward()
        opt_ng.step()
        for param in inverter.parameters():
            param.requires_grad_(True)
    return generator.eval()


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks of each row's values, tied values given the mean of their ranks (as :func:`scipy.stats.rankdata`).

    Args:
        values: ``(N, P)`` rows of finite values.

    Returns:
        ``(N, P)`` float64 ranks ``1..P`` on the device of ``values``.
    """
    ranks = torch.empty(values.shape, dtype=torch.float64, device=values.device)
    for i, row in enumerate(values):
        ordered, order = row.sort()
        _, counts = torch.unique_consecutive(ordered, return_counts=True)
        mean_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
        ranks[i, order] = mean_rank.repeat_interleave(counts)
    return ranks


def rank_correlation(maps: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between each map and its counterpart.

    Pearson's correlation of the pixels' ranks, tied values given their mean rank
    (as :func:`scipy.stats.spearmanr`): Grad-CAM maps are zero wherever the class
    evidence is negative, about a third of their pixels.

    Args:
        maps: ``(N, H, W)`` maps.
        other: ``(N, H, W)`` maps to compare with.

    Returns:
        ``(N,)`` float32 correlations in ``[-1, 1]``; ``nan`` where either map is
        constant (an all-zero map ranks nothing) or holds a ``nan``. Average with
        :func:`torch.nanmean` and count the ``nan``.
    """
    a, b = maps.flatten(1), other.flatten(1)
    undefined = a.isnan().any(dim=1) | b.isnan().any(dim=1)
    a, b = average_ranks(a.nan_to_num()), average_ranks(b.nan_to_num())
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    scale = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(dim=1) / scale.clamp_min(1e-300)
    return torch.where((scale > 0) & ~undefined, correlation, torch.nan).float()


def deletion_curve(
    kit: Kit, images: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *, fractions: int = 20
) -> torch.Tensor:
    """The head's probability of ``target`` as the top-ranked pixels are blacked out, ``(N, fractions + 1)``.

    Step ``i`` blacks out the ``i / fractions`` share of pixels the map ranks highest
    (ties broken by position), every channel; a map that finds what the answer rests
    on makes the curve fall fast (a small area under it).
    """
    spec = kit.spec
    black = (0.0 - spec.mean) / spec.std
    n, _, h, w = images.shape
    order = maps.flatten(1).argsort(dim=1, descending=True)
    model = KitClassifier(kit).eval()
    curve = []
    with torch.no_grad():
        for i in range(fractions + 1):
            keep = torch.ones(n, h * w)
            keep.scatter_(1, order[:, : round(i * h * w / fractions)], 0.0)
            mask = keep.view(n, 1, h, w)
            erased = images * mask + black * (1 - mask)
            curve.append(model(erased).softmax(dim=1)[torch.arange(n), target])
    return torch.stack(curve, dim=1)
