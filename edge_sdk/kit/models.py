"""The networks of a kit, sized to run on two CPU cores.

Shapes follow the Crafter paper (App. H) scaled down: a two-stage convolutional
encoder ``(C, S, S) -> (F, S/4, S/4)`` like the first layers of ResNet-18, a pose head
on the features, a DCGAN generator (latent about 100), a WGAN-GP critic without
normalisation layers (the gradient penalty needs per-sample gradients), and an
amortizer ``feature -> latent`` (paper Table XIII).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = [
    "Amortizer",
    "Architecture",
    "Critic",
    "Encoder",
    "Generator",
    "IntrapersonalSubspace",
    "PoseHead",
    "build_models",
    "gradient_penalty",
]


@dataclass(frozen=True)
class Architecture:
    """Sizes that determine every network of a kit.

    Attributes:
        image_size: Side of the square input; a power of two, at least 16.
        channels: Image channels.
        feature_channels: Channels ``F`` of the released feature ``(F, S/4, S/4)``.
        encoder_width: Channels of the encoder's first convolution.
        latent_dim: Size of the generator's latent ``z``.
        generator_width: DCGAN base width of the generator.
        critic_width: Base width of the WGAN-GP critic.
        amortizer_width: Base width of the amortizer.
        head_width: Base width of the pose head.
        num_classes: Classes of the head's task.
        intrapersonal_rank: Dimensions of the kit's :class:`IntrapersonalSubspace`.
    """

    image_size: int = 64
    channels: int = 1
    feature_channels: int = 32
    encoder_width: int = 16
    latent_dim: int = 100
    generator_width: int = 32
    critic_width: int = 16
    amortizer_width: int = 64
    head_width: int = 64
    num_classes: int = 3
    intrapersonal_rank: int = 16

    def __post_init__(self) -> None:
        size = self.image_size
        if size < 16 or size & (size - 1):
            raise ValueError(f"image_size must be a power of two >= 16, got {size}")
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.intrapersonal_rank > math.prod(self.feature_shape):
            raise ValueError(
                f"intrapersonal_rank {self.intrapersonal_rank} exceeds the feature size {math.prod(self.feature_shape)}"
            )

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Shape ``(F, H, W)`` of one encoder feature."""
        side = self.image_size // 4
        return (self.feature_channels, side, side)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, S, S)`` of one model-space image."""
        return (self.channels, self.image_size, self.image_size)


class Encoder(nn.Module):
    """Image ``(B, C, S, S)`` to feature ``(B, F, S/4, S/4)``; the part that runs on the device."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        w = arch.encoder_width
        self.net = nn.Sequential(
            nn.Conv2d(arch.channels, w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            # Linear output: the released feature is not clipped at zero, which keeps
            # the inversion landscape smooth for the attacker and the crafter alike.
            nn.Conv2d(2 * w, arch.feature_channels, 4, 2, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class PoseHead(nn.Module):
    """Downstream head ``f``: feature to class logits (the cloud's task)."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.num_classes = arch.num_classes
        w = arch.head_width
        self.net = nn.Sequential(
            nn.Conv2d(arch.feature_channels, w, 3, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.3),
            nn.Linear(2 * w, arch.num_classes),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class Generator(nn.Module):
    """DCGAN generator ``z (B, d) -> image (B, C, S, S)`` in ``[-1, 1]``."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        ups = int(math.log2(arch.image_size // 4))
        top = arch.generator_width * 2 ** (ups - 1)
        self.top = top
        self.project = nn.Sequential(
            nn.Linear(arch.latent_dim, top * 16, bias=False),
            nn.BatchNorm1d(top * 16),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        width = top
        for _ in range(ups - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, arch.channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(z.shape[0], self.top, 4, 4))


class Critic(nn.Module):
    """WGAN-GP critic ``image -> score``; no batch norm, so the penalty is per sample."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        downs = int(math.log2(arch.image_size // 4))
        layers: list[nn.Module] = []
        width_in, width = arch.channels, arch.critic_width
        for _ in range(downs):
            layers += [nn.Conv2d(width_in, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            width_in, width = width, width * 2
        layers += [nn.Conv2d(width_in, 1, 4, 1, 0), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)


class Amortizer(nn.Module):
    """Feature ``(B, F, H, W) -> latent (B, d)``: a warm start for the inversion (paper App. M)."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        w = arch.amortizer_width
        downs = int(math.log2(arch.feature_shape[1] // 4))
        layers: list[nn.Module] = [
            nn.Conv2d(arch.feature_channels, w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = w
        for _ in range(downs):
            layers += [
                nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
                nn.BatchNorm2d(2 * width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
        layers += [
            nn.Conv2d(width, 4 * w, 4, 1, 0),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * w, arch.latent_dim, 1),
            nn.Flatten(),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class IntrapersonalSubspace(nn.Module):
    """How one person's features vary (pose, expression, light), learned on public people.

    The intrapersonal subspace of Moghaddam, Jebara and Pentland ("Bayesian face
    recognition", Pattern Recognition 33, 2000): the top principal directions of the
    features of public faces around their own person's mean: the directions along
    which pictures of one person vary most. It is not free of identity: people's
    means differ along these directions too (the principal directions of the residuals
    are not orthogonal to them), so coordinates in it still tell people apart, less
    than the whole feature does. ``forward`` gives a feature's coordinates in it.

    Buffers:
        basis: ``(D, rank)`` orthonormal columns, ``D = F * H * W`` of the feature.
        variance: ``(rank,)`` variance of the public residuals along each column.

    Example:
        >>> arch = Architecture(image_size=16, feature_channels=2, intrapersonal_rank=3)
        >>> subspace = IntrapersonalSubspace(arch)
        >>> gen = torch.Generator().manual_seed(0)
        >>> _ = subspace.fit(torch.randn(12, 2, 4, 4, generator=gen), torch.arange(4).repeat(3))
        >>> subspace(torch.randn(5, 2, 4, 4)).shape
        torch.Size([5, 3])
    """

    basis: torch.Tensor
    variance: torch.Tensor

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.register_buffer("basis", torch.zeros(math.prod(arch.feature_shape), arch.intrapersonal_rank))
        self.register_buffer("variance", torch.zeros(arch.intrapersonal_rank))

    @property
    def rank(self) -> int:
        """Dimensions of the subspace."""
        return int(self.basis.shape[1])

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (a built subspace is all zeros)."""
        return bool((self.variance > 0).any())

    def fit(self, features: torch.Tensor, identity: torch.Tensor) -> IntrapersonalSubspace:
        """Fit in place to public features ``(N, F, H, W)`` of people ``identity`` ``(N,)``; returns itself.

        Raises:
            ValueError: Fewer residual dimensions (faces minus people) than the rank,
                or shapes that do not match.
        """
        flat = features.detach().flatten(1).double()
        identity = identity.to(flat.device)
        if flat.shape[1] != self.basis.shape[0] or identity.shape != (flat.shape[0],):
            raise ValueError(
                f"features {tuple(features.shape)} and identity {tuple(identity.shape)} do not fit a subspace "
                f"of {self.basis.shape[0]} dimensions"
            )
        people, index = torch.unique(identity, return_inverse=True)
        self.require_dimensions(identity, rank=self.rank)
        means = torch.zeros(len(people), flat.shape[1], dtype=flat.dtype, device=flat.device).index_add_(0, index, flat)
        means /= torch.bincount(index, minlength=len(people)).unsqueeze(1)
        residuals = flat - means[index]
        _, singular, vh = torch.linalg.svd(residuals, full_matrices=False)
        # A fixed sign per direction (largest entry positive), so a refit gives the same buffers.
        signs = torch.sign(vh[: self.rank].gather(1, vh[: self.rank].abs().argmax(1, keepdim=True)))
        self.basis.copy_((vh[: self.rank] * signs).T.to(self.basis.dtype))
        self.variance.copy_((singular[: self.rank] ** 2 / (flat.shape[0] - len(people))).to(self.variance.dtype))
        return self

    @staticmethod
    def require_dimensions(identity: torch.Tensor, *, rank: int) -> None:
        """Check that faces of people ``identity`` ``(N,)`` give at least ``rank`` intrapersonal dimensions.

        Raises:
            ValueError: ``N`` minus the number of people is below ``rank``.
        """
        faces, people = len(identity), len(identity.unique())
        if faces - people < rank:
            raise ValueError(
                f"{faces} faces of {people} people give {faces - people} intrapersonal dimensions, "
                f"fewer than the rank {rank}"
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Coordinates ``(B, rank)`` of features ``(B, F, H, W)`` in the subspace."""
        return features.flatten(1) @ self.basis


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad D(x_hat)|| - 1)^2]`` on random interpolates (Gulrajani et al. 2017).

    Args:
        critic: ``D``, images ``(B, C, H, W)`` to scores ``(B, 1)``.
        real: Images ``(B, C, H, W)``.
        fake: Images of the same shape.
        rng: Draws the interpolation weights (one per pair).

    Returns:
        The scalar penalty, differentiable in the critic's parameters.
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=rng).to(real)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def build_models(arch: Architecture) -> dict[str, nn.Module]:
    """Fresh, untrained networks for every kit component, keyed by component name."""
    return {
        "encoder": Encoder(arch),
        "head": PoseHead(arch),
        "generator": Generator(arch),
        "critic": Critic(arch),
        "amortizer": Amortizer(arch),
        "intrapersonal": IntrapersonalSubspace(arch),
    }
