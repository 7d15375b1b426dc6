"""Figures for reports: image grids (Pillow) and loss curves (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["image_grid", "plot_curves", "pyplot", "save_attribution_overlays", "save_figure", "save_image_rows"]


def image_grid(images: torch.Tensor, *, columns: int, pad: int = 2, scale: int = 2) -> Image.Image:
    """Tile images ``(N, C, H, W)`` in ``[0, 1]`` into one picture, ``columns`` per row."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = images[i].detach().cpu().permute(1, 2, 0).numpy()
    array = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(array[..., 0] if c == 1 else array)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def save_image_rows(rows: Sequence[tuple[str, torch.Tensor]], path: str | Path, *, scale: int = 2) -> Path:
    """Save labelled rows of images (each ``(N, C, H, W)`` in ``[0, 1]``) as one PNG."""
    label_width = 110
    grids = [image_grid(images, columns=images.shape[0], scale=scale) for _, images in rows]
    width = label_width + max(g.width for g in grids)
    canvas = Image.new("L", (width, sum(g.height for g in grids)), 255)
    draw = ImageDraw.Draw(canvas)
    y = 0
    for (label, _), grid in zip(rows, grids, strict=True):
        canvas.paste(grid.convert("L"), (label_width, y))
        draw.text((4, y + grid.height // 2 - 5), label, fill=0)
        y += grid.height
    path = Path(path)
    canvas.save(path)
    return path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, save as PNG and close a matplotlib figure."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def plot_curves(curves: Mapping[str, Sequence[float]], path: str | Path, *, title: str = "") -> Path:
    """One subplot per named curve, saved as PNG."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], curves.items(), strict=True):
        ax.plot(np.arange(1, len(values) + 1), values, linewidth=0.8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_attribution_overlays(
    images: torch.Tensor, maps: torch.Tensor, labels: Sequence[str], path: str | Path, *, columns: int = 8
) -> Path:
    """Faces ``(N, C, H, W)`` in ``[0, 1]`` with their attribution maps ``(N, H, W)`` over them, as one PNG.

    Each map is scaled to its own maximum and drawn half-transparent (``inferno``);
    each face is titled with ``labels[i]`` (the class explained).
    """
    plt = pyplot()
    n = len(images)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        face = images[i].detach().cpu().permute(1, 2, 0).numpy()
        ax.imshow(face[..., 0] if face.shape[-1] == 1 else face, cmap="gray", vmin=0, vmax=1)
        heat = maps[i].detach().cpu().numpy()
        ax.imshow(heat / max(float(heat.max()), 1e-12), cmap="inferno", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(labels[i], fontsize=8)
    return save_figure(fig, path)
