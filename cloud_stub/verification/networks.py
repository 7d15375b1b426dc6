"""Networks of the verification experiments: a task classifier F and a decoder G from its outputs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["OutputDecoder", "TaskClassifier"]


class TaskClassifier(nn.Module):
    """Small CNN ``image (B, C, S, S) in [0, 1] -> logits (B, classes)``; the same for both tasks."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, width: int = 32) -> None:
        super().__init__()
        channels, size, _ = input_shape
        if size % 4:
            raise ValueError(f"image size must be a multiple of 4, got {size}")
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(channels, w, 3, 1, 1),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, 1, 1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            # No adaptive pooling: 16 -> 7 cells would export as Gather/Where, which no
            # converter fine-tunes; flattening the (S/4)^2 grid exports as plain Flatten.
            nn.Flatten(),
            nn.Linear(2 * w * (size // 4) ** 2, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.2),
            nn.Linear(128, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class OutputDecoder(nn.Module):
    """Decoder ``outputs (B, classes) -> image (B, C, S, S)`` in ``[0, 1]`` (the attack model G)."""

    def __init__(self, *, num_classes: int, image_shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        channels, size, _ = image_shape
        if size % 4:
            raise ValueError(f"image size must be a multiple of 4, got {size}")
        self.start = size // 4
        self.width = width
        self.fc = nn.Sequential(nn.Linear(num_classes, 2 * width * self.start**2), nn.ReLU(inplace=True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1),
            nn.Sigmoid(),
        )

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(outputs).view(-1, 2 * self.width, self.start, self.start))
