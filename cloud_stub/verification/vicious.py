"""Vicious and honest classifiers (vicious-classifiers paper, Algorithm 1), and decoders from outputs.

A vicious server trains its classifier F jointly with a decoder G that rebuilds the
input from F's logits: ``L_F = beta_C * CE + beta_R * (alpha * (1 - SSIM) + gamma * Huber)``,
G trained on the reconstruction term. ``beta_R = 0`` gives an honest model. The
verifier uses the same decoder training (:func:`train_output_decoder`) as a probe of
how much an uploaded model's outputs reveal about its inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cloud_stub.verification.networks import OutputDecoder, TaskClassifier
from cloud_stub.verification.tasks import ModelTask, TaskData, resolve_task
from edge_sdk.metrics import MahalanobisMetric, psnr, reconstruction_risk, ssim

__all__ = [
    "ViciousConfig",
    "ViciousModels",
    "augment_images",
    "classifier_outputs",
    "reconstruction_loss",
    "reconstruction_quality",
    "train_output_decoder",
    "train_vicious",
]


@dataclass(frozen=True)
class ViciousConfig:
    """Settings of Algorithm 1.

    Attributes:
        beta_c: Weight of the classification loss.
        beta_r: Weight of the reconstruction loss (0: honest model).
        alpha: Weight of ``1 - SSIM`` in the reconstruction loss.
        gamma: Weight of the Huber loss in the reconstruction loss.
        epochs: Passes over the training images; the best epoch on validation is kept.
        batch_size: Images per step.
        lr: Adam learning rate (paper: 1e-3).
        train_samples: Use the first this many training images (``None``: all).
        validation_fraction: Share of them held out for choosing the epoch.
        width: Base width of the classifier.
        seed: Seed of initialisation, split and batch order.
        augment: Random shifts (up to 1/16 of the side) and brightness/contrast jitter of
            the training images; lets a decoder trained on few images generalise.
        keep: ``"best"`` keeps the epoch with the lowest validation objective,
            ``"last"`` the final one (Algorithm 1 as printed: a fixed number of epochs).
    """

    beta_c: float = 1.0
    beta_r: float = 0.0
    alpha: float = 1.0
    gamma: float = 1.0
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    train_samples: int | None = None
    validation_fraction: float = 0.1
    width: int = 32
    seed: int = 0
    augment: bool = False
    keep: str = "best"

    def __post_init__(self) -> None:
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")

    @property
    def vicious(self) -> bool:
        """Whether the reconstruction term is on."""
        return self.beta_r > 0


@dataclass
class ViciousModels:
    """A classifier, the decoder trained with it, and the training record."""

    classifier: torch.nn.Module
    decoder: OutputDecoder
    config: ViciousConfig
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def reconstruction_loss(
    reconstructions: torch.Tensor, images: torch.Tensor, *, alpha: float, gamma: float
) -> torch.Tensor:
    """``alpha * (1 - SSIM) + gamma * Huber`` averaged over the batch (paper Eq. 3, as a loss)."""
    return alpha * (1 - ssim(reconstructions, images).mean()) + gamma * F.huber_loss(reconstructions, images)


def classifier_outputs(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *, batch_size: int = 512
) -> torch.Tensor:
    """The model's outputs (logits) without gradients; a torch module is put in eval mode."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def augment_images(images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to 1/16 of its side and jitter its contrast and brightness.

    Example:
        >>> x = torch.rand(4, 1, 16, 16)
        >>> augment_images(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 1, 16, 16])
    """
    n = len(images)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * (2 / 8)  # grid units: the side is 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    brightness = 0.2 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    return ((moved - mean) * contrast + mean + brightness).clamp(0, 1)


def _split(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    n_val = max(1, round(n * fraction))
    return order[n_val:], order[:n_val]


def train_vicious(
    task: str | ModelTask,
    config: ViciousConfig,
    *,
    data: TaskData | None = None,
    classifier: torch.nn.Module | None = None,
    progress: bool = False,
) -> ViciousModels:
    """Train F and G with Algorithm 1 on a task's training images.

    ``classifier`` is the network trained as F (images ``(B, C, S, S)`` in ``[0, 1]`` ->
    logits), freshly initialised by the caller; :class:`TaskClassifier` of
    ``config.width`` when omitted.

    Example:
        >>> from cloud_stub.verification.tasks import TaskData
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
        >>> data = TaskData(x, y, x[:16], y[:16])
        >>> models = train_vicious("fashion-mnist", ViciousConfig(beta_r=1.0, epochs=1, width=4), data=data)
        >>> models.decoder(classifier_outputs(models.classifier, x[:2])).shape
        torch.Size([2, 1, 28, 28])
    """
    spec = resolve_task(task)
    data = data or spec.loader()
    images, labels = data.train_images, data.train_labels
    if config.train_samples is not None:
        images, labels = images[: config.train_samples], labels[: config.train_samples]
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # seeded by the argument, the caller's state untouched
        torch.manual_seed(config.seed)
        train_idx, val_idx = _split(len(images), config.validation_fraction, generator)
        if classifier is None:
            classifier = TaskClassifier(input_shape=spec.input_shape, num_classes=spec.num_classes, width=config.width)
        decoder = OutputDecoder(num_classes=spec.num_classes, image_shape=spec.input_shape)
        opt_f = torch.optim.Adam(classifier.parameters(), lr=config.lr)
        opt_g = torch.optim.Adam(decoder.parameters(), lr=config.lr)
        best: tuple[float, int, dict[str, Any], dict[str, Any]] | None = None
        history: list[dict[str, float]] = []
        for epoch in tqdm(range(config.epochs), desc=f"train {task}", disable=not progress):
            classifier.train()
            decoder.train()
            perm = train_idx[torch.randperm(len(train_idx), generator=generator)]
            for start in range(0, len(perm), config.batch_size):
                idx = perm[start : start + config.batch_size]
                if len(idx) < 2:
                    continue
                x, y = images[idx], labels[idx]
                if config.augment:
                    x = augment_images(x, generator=generator)
                logits = classifier(x)
                loss = config.beta_c * F.cross_entropy(logits, y)
                if config.vicious:
                    # G's gradient of this sum is beta_R * dL_R/dG, exactly Algorithm 1's update of G.
                    loss = loss + config.beta_r * reconstruction_loss(
                        decoder(logits), x, alpha=config.alpha, gamma=config.gamma
                    )
                opt_f.zero_grad(set_to_none=True)
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_f.step()
                if config.vicious:
                    opt_g.step()
            classifier.eval()
            decoder.eval()
            with torch.no_grad():
                logits = classifier_outputs(classifier, images[val_idx])
                ce = float(F.cross_entropy(logits, labels[val_idx]))
                rec = float(
                    reconstruction_loss(decoder(logits), images[val_idx], alpha=config.alpha, gamma=config.gamma)
                )
                accuracy = float((logits.argmax(1) == labels[val_idx]).float().mean())
            objective = config.beta_c * ce + config.beta_r * rec
            history.append(
                {
                    "epoch": epoch,
                    "val_ce": ce,
                    "val_reconstruction": rec,
                    "val_accuracy": accuracy,
                    "val_objective": objective,
                }
            )
            if best is None or objective <= best[0] or config.keep == "last":
                best = (objective, epoch, copy.deepcopy(classifier.state_dict()), copy.deepcopy(decoder.state_dict()))
        assert best is not None
        classifier.load_state_dict(best[2])
        decoder.load_state_dict(best[3])
        return ViciousModels(classifier.eval(), decoder.eval(), config, best[1], history)


def train_output_decoder(
    outputs: torch.Tensor,
    images: torch.Tensor,
    *,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 2e-3,
    alpha: float = 1.0,
    gamma: float = 1.0,
    seed: int = 0,
) -> OutputDecoder:
    """Fit a decoder from fixed model outputs back to the images (the attacker's best effort).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.rand(32, 1, 28, 28, generator=g)
        >>> decoder = train_output_decoder(images.flatten(1)[:, :10], images, steps=5)
        >>> decoder(images.flatten(1)[:2, :10]).shape
        torch.Size([2, 1, 28, 28])
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded by the argument, the caller's state untouched
        torch.manual_seed(seed)  # the decoder's initial weights
        decoder = OutputDecoder(num_classes=outputs.shape[1], image_shape=tuple(images.shape[1:]))  # type: ignore[arg-type]
        optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
        decoder.train()
        for _ in range(steps):
            idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=generator)
            loss = reconstruction_loss(decoder(outputs[idx]), images[idx], alpha=alpha, gamma=gamma)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return decoder.eval()


def reconstruction_quality(
    decoder: torch.nn.Module, outputs: torch.Tensor, images: torch.Tensor, metric: MahalanobisMetric
) -> dict[str, float]:
    """PSNR (dB), SSIM and reconstruction risk R of a decoder on held-out (outputs, images)."""
    decoder.eval()
    with torch.no_grad():
        rebuilt = torch.cat([decoder(outputs[i : i + 512]) for i in range(0, len(outputs), 512)])
    return {
        "psnr": float(psnr(rebuilt, images).mean()),
        "ssim": float(ssim(rebuilt, images).mean()),
        "risk": reconstruction_risk(images, rebuilt, metric),
    }
