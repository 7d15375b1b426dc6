"""Training a kit from public faces (paper Sec. VI-A, App. M; docs/kit.md).

Three stages, each seeded: the encoder and pose head end to end on the head-pose
task (the deployment scenario), the generator as a WGAN-GP on augmented public
faces, and the amortizer on pairs ``(z, Enc(G(z)))``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edge_sdk.data.images import ImageSpec
from edge_sdk.data.orl import FaceSet
from edge_sdk.devices import resolve_device
from edge_sdk.kit.kit import Kit
from edge_sdk.kit.manifest import ComponentFile, KitManifest, TaskSpec
from edge_sdk.kit.models import (
    Amortizer,
    Architecture,
    Critic,
    Encoder,
    Generator,
    IntrapersonalSubspace,
    PoseHead,
    build_models,
    gradient_penalty,
)

__all__ = [
    "TrainingConfig",
    "TrainingLog",
    "augment",
    "fit_intrapersonal",
    "gradient_penalty",
    "train_generator",
    "train_kit",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of :func:`train_kit`; the defaults made the shipped kit.

    Attributes:
        seed: Seed of every random draw (initialisation, batches, augmentation, z).
        pose_epochs: Epochs of encoder+head training on the pose task.
        pose_batch_size: Batch size of the pose stage.
        pose_lr: Adam learning rate of the pose stage.
        gan_steps: Generator updates of the WGAN-GP.
        gan_batch_size: Batch size of the WGAN-GP.
        n_critic: Critic updates per generator update.
        gp_weight: Weight of the gradient penalty.
        gan_lr: Adam learning rate of generator and critic (betas 0.5, 0.9).
        amortizer_steps: Updates of the amortizer.
        amortizer_batch_size: Batch size of the amortizer stage.
        amortizer_lr: Adam learning rate of the amortizer.
        max_shift: Largest random translation in pixels for augmentation.
        brightness: Largest relative brightness/contrast change for augmentation.
    """

    seed: int = 0
    pose_epochs: int = 150
    pose_batch_size: int = 32
    pose_lr: float = 1e-3
    gan_steps: int = 2000
    gan_batch_size: int = 32
    n_critic: int = 5
    gp_weight: float = 10.0
    gan_lr: float = 2e-4
    amortizer_steps: int = 1500
    amortizer_batch_size: int = 64
    amortizer_lr: float = 1e-3
    max_shift: int = 4
    brightness: float = 0.1

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "seed" and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")


@dataclass
class TrainingLog:
    """Loss curves and timings of a training run."""

    pose_loss: list[float] = field(default_factory=list)
    pose_train_accuracy: list[float] = field(default_factory=list)
    critic_loss: list[float] = field(default_factory=list)
    generator_loss: list[float] = field(default_factory=list)
    amortizer_loss: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def augment(
    images: torch.Tensor, rng: torch.Generator, *, max_shift: int, brightness: float, flip: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip, translation and brightness/contrast change.

    Args:
        images: Batch ``(B, C, S, S)`` in model space ``[-1, 1]``.
        rng: Source of randomness.
        max_shift: Largest shift in pixels (edge pixels are replicated).
        brightness: Largest relative change of contrast and of brightness.
        flip: Whether to flip half of the batch.

    Returns:
        The augmented batch and a boolean mask of the flipped items.
    """
    b, _, h, w = images.shape
    flipped = torch.rand(b, generator=rng) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    out = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    if max_shift:
        padded = F.pad(out, (max_shift,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=rng)
        out = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    if brightness:
        scale = 1 + brightness * (2 * torch.rand(b, 1, 1, 1, generator=rng) - 1)
        shift = brightness * (2 * torch.rand(b, 1, 1, 1, generator=rng) - 1)
        out = (out * scale + shift).clamp(-1, 1)
    return out, flipped


def _batches(n: int, batch_size: int, rng: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=rng)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _train_pose(
    encoder: Encoder,
    head: PoseHead,
    data: FaceSet,
    cfg: TrainingConfig,
    rng: torch.Generator,
    log: TrainingLog,
    progress: bool,
) -> None:
    device = next(encoder.parameters()).device
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=cfg.pose_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.pose_epochs, 1))
    encoder.train()
    head.train()
    for _ in tqdm(range(cfg.pose_epochs), desc="pose: encoder+head", disable=not progress):
        correct = total = 0
        losses = []
        for idx in _batches(len(data), cfg.pose_batch_size, rng):
            x, flipped = augment(data.images[idx], rng, max_shift=cfg.max_shift, brightness=cfg.brightness)
            # A mirrored face turns the other way: swap the two side classes.
            y = torch.where(flipped, head.num_classes - 1 - data.pose[idx], data.pose[idx]).to(device)
            logits = head(encoder(x.to(device)))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
        sched.step()
        log.pose_loss.append(sum(losses) / len(losses))
        log.pose_train_accuracy.append(correct / total)
    encoder.eval()
    head.eval()


def _fit_intrapersonal(subspace: IntrapersonalSubspace, encoder: Encoder, public: FaceSet) -> None:
    """The intrapersonal subspace of the trained encoder's features of the public faces (no augmentation)."""
    device = next(encoder.parameters()).device
    with torch.no_grad():
        features = torch.cat([encoder(public.images[i : i + 64].to(device)).cpu() for i in range(0, len(public), 64)])
    subspace.cpu().fit(features, public.identity)


def fit_intrapersonal(kit: Kit, public: FaceSet) -> Kit:
    """A copy of ``kit`` with its intrapersonal subspace fitted to the public faces, as kit training does.

    For kits trained before the subspace was part of a kit; the other networks are kept.

    Args:
        kit: The kit (its encoder makes the features).
        public: Public faces with their people (``identity``), several pictures each.

    Raises:
        ValueError: Too few pictures per person for the architecture's rank.
    """
    subspace = IntrapersonalSubspace(kit.architecture)
    _fit_intrapersonal(subspace, kit.encoder, public)
    return replace(kit, intrapersonal=subspace.to(kit.device).eval())


def _train_gan(
    generator: Generator,
    critic: Critic,
    data: FaceSet,
    arch: Architecture,
    cfg: TrainingConfig,
    rng: torch.Generator,
    log: TrainingLog,
    progress: bool,
) -> None:
    device = next(generator.parameters()).device
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.9))
    generator.train()
    critic.train()
    n = len(data)

    def real_batch() -> torch.Tensor:
        idx = torch.randint(0, n, (cfg.gan_batch_size,), generator=rng)
        x, _ = augment(data.images[idx], rng, max_shift=cfg.max_shift, brightness=cfg.brightness)
        return x.to(device)

    def latent() -> torch.Tensor:
        return torch.randn(cfg.gan_batch_size, arch.latent_dim, generator=rng).to(device)

    bar = tqdm(range(cfg.gan_steps), desc="generator: WGAN-GP", disable=not progress)
    for _ in bar:
        for _ in range(cfg.n_critic):
            real = real_batch()
            with torch.no_grad():
                fake = generator(latent())
            wasserstein = critic(fake).mean() - critic(real).mean()
            loss_d = wasserstein + cfg.gp_weight * gradient_penalty(critic, real, fake, rng)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        loss_g = -critic(generator(latent())).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in critic.parameters():
            p.requires_grad_(True)
        log.critic_loss.append(loss_d.item())
        log.generator_loss.append(loss_g.item())
        bar.set_postfix(w_dist=f"{-wasserstein.item():.3f}")
    recalibrate_batchnorm(generator, lambda: latent())
    critic.eval()


def recalibrate_batchnorm(module: nn.Module, draw: Callable[[], torch.Tensor], *, batches: int = 32) -> None:
    """Replace running BN statistics by their exact average over ``batches`` inputs.

    The exponential moving average lags behind a generator that changed fast; eval
    mode (which inversion and crafting need for per-sample independence) should see
    statistics of the final weights.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    module.train()
    with torch.no_grad():
        for _ in range(batches):
            module(draw())
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    module.eval()


def _train_amortizer(
    amortizer: Amortizer,
    generator: Generator,
    encoder: Encoder,
    arch: Architecture,
    cfg: TrainingConfig,
    rng: torch.Generator,
    log: TrainingLog,
    progress: bool,
) -> None:
    opt = torch.optim.Adam(amortizer.parameters(), lr=cfg.amortizer_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.amortizer_steps, 1))
    amortizer.train()
    for _ in tqdm(range(cfg.amortizer_steps), desc="amortizer: F -> z", disable=not progress):
        z = torch.randn(cfg.amortizer_batch_size, arch.latent_dim, generator=rng).to(
            next(amortizer.parameters()).device
        )
        with torch.no_grad():
            features = encoder(generator(z))
        loss = F.mse_loss(amortizer(features), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log.amortizer_loss.append(loss.item())
    amortizer.eval()


def train_generator(
    public: FaceSet, *, architecture: Architecture, config: TrainingConfig | None = None, progress: bool = False
) -> Generator:
    """Train only a WGAN-GP generator (the kit's recipe) on public faces.

    The evaluation's A2 attacker uses it: an independently trained generator of
    another width or latent size than the kit's.

    Example:
        >>> from edge_sdk.data.orl import load_orl
        >>> arch = Architecture(latent_dim=16, generator_width=8, critic_width=8)
        >>> g = train_generator(load_orl("public"), architecture=arch, config=TrainingConfig(gan_steps=1))
        >>> g(torch.zeros(2, 16)).shape
        torch.Size([2, 1, 64, 64])
    """
    cfg = config or TrainingConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        models = build_models(architecture)
    generator, critic = models["generator"], models["critic"]
    rng = torch.Generator().manual_seed(cfg.seed * 1000 + 1)
    _train_gan(generator, critic, public, architecture, cfg, rng, TrainingLog(), progress)  # type: ignore[arg-type]
    for p in generator.parameters():
        p.requires_grad_(False)
    return generator.eval()  # type: ignore[return-value]


def train_kit(
    public: FaceSet,
    *,
    pose_train: FaceSet | None = None,
    architecture: Architecture | None = None,
    spec: ImageSpec | None = None,
    config: TrainingConfig | None = None,
    task: TaskSpec | None = None,
    name: str = "kit",
    data_description: str = "",
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[Kit, TrainingLog]:
    """Train every network of a kit from public faces.

    Args:
        public: Public faces for the generator (all of them, augmented).
        pose_train: Labelled faces for encoder+head; defaults to ``public``.
        architecture: Network sizes; the default kit's if omitted.
        spec: Image preprocessing recorded in the manifest.
        config: Training settings.
        task: The head's task, recorded in the manifest.
        name: Kit name for the manifest.
        data_description: Where the data came from, for the manifest.
        progress: Show progress bars.
        device: Where the networks train: ``"cpu"`` (the default) or ``"cuda[:N]"``.
            The data and the seeded draws (batches, augmentation, latents) stay on the
            CPU and batches are moved; Dropout draws from the device's generator, and
            a GPU's training is not bit-reproducible (cuDNN's backward passes).

    Returns:
        The kit (networks in eval mode on the CPU; manifest without files until
        saved) and the training log.

    Raises:
        ValueError: The public images do not have the architecture's shape, or hold
            too few pictures per person for the intrapersonal subspace's rank.
        DeviceUnavailableError: ``device`` is not available here.
    """
    where = resolve_device(device)
    arch = architecture or Architecture()
    spec = spec or ImageSpec(size=arch.image_size, channels=arch.channels)
    cfg = config or TrainingConfig()
    task = task or TaskSpec()
    pose_train = pose_train or public
    if tuple(public.images.shape[1:]) != arch.image_shape:
        raise ValueError(
            f"public images have shape {tuple(public.images.shape[1:])}, architecture needs {arch.image_shape}"
        )
    # Checked before hours of training, not at the last stage.
    IntrapersonalSubspace.require_dimensions(public.identity, rank=arch.intrapersonal_rank)
    with torch.random.fork_rng(devices=[]):  # seeded by the argument, the caller's state untouched
        torch.default_generator.manual_seed(cfg.seed)  # initial weights (built on the CPU); GPU generators untouched
        models = {name: network.to(where) for name, network in build_models(arch).items()}
        encoder, head = models["encoder"], models["head"]
        generator, critic, amortizer = models["generator"], models["critic"], models["amortizer"]
        log = TrainingLog()
        stages: list[tuple[str, Callable[[torch.Generator], None]]] = [
            ("pose", lambda rng: _train_pose(encoder, head, pose_train, cfg, rng, log, progress)),  # type: ignore[arg-type]
            ("gan", lambda rng: _train_gan(generator, critic, public, arch, cfg, rng, log, progress)),  # type: ignore[arg-type]
            ("amortizer", lambda rng: _train_amortizer(amortizer, generator, encoder, arch, cfg, rng, log, progress)),  # type: ignore[arg-type]
            ("intrapersonal", lambda rng: _fit_intrapersonal(models["intrapersonal"], encoder, public)),  # type: ignore[arg-type]
        ]
        for offset, (stage, run) in enumerate(stages):
            # One generator per stage, so a stage's draws do not depend on the settings of another.
            rng = torch.Generator().manual_seed(cfg.seed * 1000 + offset)
            start = time.perf_counter()
            run(rng)
            log.seconds[stage] = round(time.perf_counter() - start, 2)
        training: dict[str, Any] = {
            "data": data_description,
            "seed": cfg.seed,
            "config": asdict(cfg),
            "seconds": log.seconds,
            "torch_threads": torch.get_num_threads(),
            "device": str(where),
        }
        manifest = KitManifest(
            name=name,
            image=spec,
            architecture=arch,
            task=task,
            files={c: ComponentFile(path=f"{c}.safetensors", sha256="0" * 64) for c in models},
            training=training,
        )
        for network in models.values():
            network.cpu().eval()
        kit = Kit(manifest=manifest, **models)  # type: ignore[arg-type]
        return kit, log
