"""Image decoding and the kit's preprocessing: centre crop, resize, normalise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edge_sdk.errors import ImageLoadError

__all__ = ["ImageSpec", "load_image", "preprocess_image", "to_unit_range"]

# Decompression bombs: a 64x64 kit never needs more than this many pixels of input.
_MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class ImageSpec:
    """How raw pictures become the encoder's input tensor.

    Attributes:
        size: Side of the square model input in pixels.
        channels: 1 for grayscale, 3 for RGB.
        mean: Subtracted from pixels scaled to ``[0, 1]``.
        std: Divides the centred pixels; ``mean=0.5, std=0.5`` maps to ``[-1, 1]``,
            the range of the generator's ``tanh`` output.
    """

    size: int = 64
    channels: int = 1
    mean: float = 0.5
    std: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"image size must be at least 8, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if not self.std > 0:
            raise ValueError(f"std must be positive, got {self.std}")


def preprocess_image(image: Image.Image, spec: ImageSpec) -> torch.Tensor:
    """Centre-crop to a square, resize to ``spec.size`` and normalise.

    Args:
        image: A decoded PIL image of any mode and aspect ratio.
        spec: Target size, channels and normalisation.

    Returns:
        A float32 tensor of shape ``(channels, size, size)``.

    Example:
        >>> from PIL import Image
        >>> x = preprocess_image(Image.new("L", (92, 112), 255), ImageSpec())
        >>> tuple(x.shape), float(x.max())
        ((1, 64, 64), 1.0)
    """
    image = image.convert("L" if spec.channels == 1 else "RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return (torch.from_numpy(np.ascontiguousarray(array)) - spec.mean) / spec.std


def to_unit_range(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """Undo the normalisation: map model-space images back to ``[0, 1]`` pixels."""
    return (images * spec.std + spec.mean).clamp(0.0, 1.0)


def load_image(path: str | Path, spec: ImageSpec) -> torch.Tensor:
    """Decode one image file and preprocess it.

    Raises:
        ImageLoadError: The file is missing, empty, truncated, not an image, or
            larger than any face picture should be. The message names the file.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{path}: file is empty")
        with Image.open(path) as handle:
            if handle.width * handle.height > _MAX_PIXELS:
                raise ImageLoadError(f"{path}: {handle.width}x{handle.height} pixels is over the {_MAX_PIXELS} limit")
            handle.load()
            return preprocess_image(handle, spec)
    except ImageLoadError:
        raise
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{path}: not a readable image") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"{path}: corrupt or truncated image ({exc})") from exc
