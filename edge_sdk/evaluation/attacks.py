"""Attacks on released features: rebuild the face a feature came from.

Each attack maps features ``(B, F, H, W)`` to images in the kit's normalisation
``(B, C, S, S)`` (docs/evaluation.md; Crafter paper Sec. V-A and App. G):

* :class:`WhiteBoxInversion`: GAN inversion ``G(argmin_z ||F - Enc(G(z))||^2)`` with
  the attacker's generator (the kit's, or another one for A2), from a random start
  (the paper's SGD with momentum) or from the amortizer's guess;
* :class:`DecoderAttack`: a black-box decoder ``F -> image`` trained on public
  ``(Enc(X'), X')`` pairs (:func:`train_feature_decoder`), and, for A1, trained on
  on pairs of the attacker's own public images crafted through the SDK
  (:func:`adapt_decoder`);
* :class:`HybridAttack`: the decoder's output refined by pixel optimisation of the
  feature loss;
* :func:`adapt_generator`: A1 against the white-box attacker: fine-tune the
  generator with RMSProp so that inverting crafted public features gives the faces.

A3 (averaging repeated releases) lives in :mod:`edge_sdk.evaluation.harness`, since
it is about how features are obtained, not how they are inverted.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from edge_sdk.inversion import invert
from edge_sdk.kit.training import augment

__all__ = [
    "Attack",
    "DecoderAttack",
    "FeatureDecoder",
    "HybridAttack",
    "WhiteBoxInversion",
    "adapt_decoder",
    "adapt_generator",
    "train_feature_decoder",
]


class Attack(Protocol):
    """Anything that rebuilds images from features."""

    name: str

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, S, S)`` in the kit's normalisation."""
        ...


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(features[i : i + batch_size]) for i in range(0, len(features), batch_size)])


@dataclass
class WhiteBoxInversion:
    """White-box GAN inversion: ``G(z*)`` with ``z* = argmin_z ||F - Enc(G(z))||^2``.

    Args:
        name: Label in reports.
        generator: The attacker's generator (eval mode).
        encoder: The device's encoder (white-box: the attacker has it).
        amortizer: Start from ``Amor(F)`` if given, else from ``N(0, I)``.
        steps: Optimiser steps (paper App. G: 600).
        lr: Step size (paper: 5e-3 with SGD).
        optimizer: ``"sgd"`` (with momentum 0.9, the paper's) or ``"adam"``.
        seed: Seed of the random start.
        batch_size: Features inverted together (the problem separates per sample).
    """

    name: str
    generator: nn.Module
    encoder: nn.Module
    amortizer: nn.Module | None = None
    steps: int = 600
    lr: float = 5e-3
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: int = 0
    batch_size: int = 80

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """``G(z*(F))`` per feature."""

        def one(f: torch.Tensor) -> torch.Tensor:
            result = invert(
                f,
                generator=self.generator,
                encoder=self.encoder,
                amortizer=self.amortizer,
                steps=self.steps,
                lr=self.lr,
                optimizer=self.optimizer,
                seed=self.seed,
            )
            with torch.no_grad():
                return self.generator(result.latent)

        return _batched(one, features, self.batch_size)


class FeatureDecoder(nn.Module):
    """Black-box attack network ``feature (B, F, H, W) -> image (B, C, S, S)`` in ``[-1, 1]``.

    Convolutions at the feature's resolution, then one transposed convolution per
    doubling up to the image size.

    Example:
        >>> decoder = FeatureDecoder(feature_channels=32, feature_size=16, channels=1, image_size=64)
        >>> decoder(torch.zeros(2, 32, 16, 16)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(
        self, *, feature_channels: int, feature_size: int, channels: int, image_size: int, width: int = 64
    ) -> None:
        super().__init__()
        ups = round(math.log2(image_size / feature_size))
        if feature_size * 2**ups != image_size:
            raise ValueError(f"image size {image_size} is not the feature size {feature_size} times a power of 2")
        layers: list[nn.Module] = [
            nn.Conv2d(feature_channels, width, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(inplace=True),
        ]
        w = width
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(w, w // 2, 4, 2, 1), nn.BatchNorm2d(w // 2), nn.ReLU(inplace=True)]
            w //= 2
        layers += [nn.Conv2d(w, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def _fit_decoder(
    decoder: FeatureDecoder,
    pairs: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    desc: str,
    progress: bool,
) -> FeatureDecoder:
    optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    decoder.train()
    for _ in tqdm(range(steps), desc=desc, disable=not progress):
        features, images = pairs()
        rebuilt = decoder(features)
        loss = F.mse_loss(rebuilt, images) + F.l1_loss(rebuilt, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return decoder.eval()


def train_feature_decoder(
    encoder: nn.Module,
    public_images: torch.Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> FeatureDecoder:
    """Train the black-box decoder on public ``(Enc(X'), X')`` pairs, augmented.

    Args:
        encoder: The device's encoder (the attacker can query it on its own images).
        public_images: The attacker's public faces, kit-normalised ``(N, C, S, S)``.
        steps: Adam steps.
        batch_size: Pairs per step.
        lr: Adam learning rate (cosine decay).
        seed: Seed of initialisation, batches and augmentation.

    Example:
        >>> from edge_sdk.kit import load_kit
        >>> from edge_sdk.data.orl import load_orl
        >>> kit = load_kit()
        >>> decoder = train_feature_decoder(kit.encoder, load_orl("public").images, steps=2)
        >>> decoder(kit.encode(load_orl("private-test").images[:3])).shape
        torch.Size([3, 1, 64, 64])
    """
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            shape = encoder(public_images[:1]).shape
        decoder = FeatureDecoder(
            feature_channels=shape[1],
            feature_size=shape[-1],
            channels=public_images.shape[1],
            image_size=public_images.shape[-1],
        )
    encoder.eval()

    def pairs() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(public_images), (batch_size,), generator=rng)
        x, _ = augment(public_images[idx], rng, max_shift=4, brightness=0.1)
        with torch.no_grad():
            return encoder(x), x

    return _fit_decoder(decoder, pairs, steps=steps, lr=lr, desc="attack decoder", progress=progress)


def adapt_decoder(
    decoder: FeatureDecoder,
    crafted_features: torch.Tensor,
    images: torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    progress: bool = False,
) -> FeatureDecoder:
    """A1: keep training a copy of the decoder on (crafted feature, image) pairs of public faces.

    The attacker crafts its own public images through the SDK (it has the device),
    so it knows which face every crafted feature came from.
    """
    if len(crafted_features) != len(images):
        raise ValueError(f"{len(crafted_features)} crafted features for {len(images)} images")
    rng = torch.Generator().manual_seed(seed)
    adapted = copy.deepcopy(decoder)

    def pairs() -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(images), (batch_size,), generator=rng)
        return crafted_features[idx], images[idx]

    return _fit_decoder(adapted, pairs, steps=steps, lr=lr, desc="A1: adapt decoder", progress=progress)


def adapt_generator(
    generator: nn.Module,
    encoder: nn.Module,
    amortizer: nn.Module | None,
    crafted_features: torch.Tensor,
    images: torch.Tensor,
    *,
    steps: int = 200,
    batch_size: int = 32,
    lr: float = 1e-3,
    inversion_steps: int = 20,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """A1 white-box: fine-tune a copy of G (RMSProp) so that inverting crafted features gives the faces.

    Each step inverts a batch of crafted public features with the current generator
    (amortizer start, Adam), then moves G so that ``G(z*)`` matches the true images.
    """
    if len(crafted_features) != len(images):
        raise ValueError(f"{len(crafted_features)} crafted features for {len(images)} images")
    rng = torch.Generator().manual_seed(seed)
    adapted = copy.deepcopy(generator).eval()  # eval: frozen BN statistics, per-sample inversion
    for p in adapted.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.RMSprop(adapted.parameters(), lr=lr)
    for _ in tqdm(range(steps), desc="A1: adapt generator", disable=not progress):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=rng)
        z = invert(
            crafted_features[idx],
            generator=adapted,
            encoder=encoder,
            amortizer=amortizer,
            steps=inversion_steps,
            lr=0.05,
            optimizer="adam",
        ).latent
        loss = F.mse_loss(adapted(z), images[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for p in adapted.parameters():
        p.requires_grad_(False)
    return adapted.eval()


@dataclass
class DecoderAttack:
    """Black-box attack: the decoder's output."""

    name: str
    decoder: FeatureDecoder
    batch_size: int = 256

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """``decoder(F)`` per feature."""
        with torch.no_grad():
            return _batched(self.decoder.eval(), features, self.batch_size)


@dataclass
class HybridAttack:
    """Hybrid attack: the decoder's output, refined in pixel space to match the feature.

    Minimises ``||Enc(x) - F||^2`` over the image ``x`` with Adam from ``decoder(F)``
    (reference setup: 150 iterations, lr 5e-3), keeping ``x`` in ``[-1, 1]``.
    """

    name: str
    decoder: FeatureDecoder
    encoder: nn.Module
    steps: int = 150
    lr: float = 5e-3
    batch_size: int = 80

    def reconstruct(self, features: torch.Tensor) -> torch.Tensor:
        """Refined reconstructions per feature."""

        def one(f: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                start = self.decoder.eval()(f)
            # Optimise an unconstrained variable whose tanh is the image: stays in range.
            u = torch.atanh(start.clamp(-0.999, 0.999)).requires_grad_(True)
            optimizer = torch.optim.Adam([u], lr=self.lr)
            for _ in range(self.steps):
                loss = (self.encoder(torch.tanh(u)) - f).pow(2).flatten(1).mean(1).sum()
                (u.grad,) = torch.autograd.grad(loss, u)  # no gradient into the encoder's weights
                optimizer.step()
            return torch.tanh(u).detach()

        return _batched(one, features, self.batch_size)
