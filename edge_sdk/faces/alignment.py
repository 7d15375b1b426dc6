"""Face alignment: five landmarks -> similarity transform -> the kit's canonical square crop.

The transform is the least-squares similarity (rotation, uniform scale, translation;
no reflection) of Umeyama, "Least-squares estimation of transformation parameters
between two point patterns", IEEE TPAMI 13(4), 1991, the estimate
``skimage.transform.SimilarityTransform`` makes and the tests compare against.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["ORL_TEMPLATE", "align_face", "resize_picture", "similarity_transform", "warp_similarity"]

# Where the five landmarks (right eye, left eye, nose tip, right and left mouth
# corner) sit in the canonical crop, as fractions of its side. The mean YuNet
# landmarks of the 200 public ORL faces in the kit's former centre-crop frame
# (92x92 square of the 92x112 picture), mirrored and averaged so the template is
# left-right symmetric: kits trained on centre-cropped ORL and on aligned faces see
# faces at the same place and size.
ORL_TEMPLATE: tuple[tuple[float, float], ...] = (
    (0.3233, 0.4580),
    (0.6767, 0.4580),
    (0.5000, 0.6617),
    (0.3495, 0.8118),
    (0.6505, 0.8118),
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The similarity mapping ``source`` points onto ``target`` in least squares (Umeyama).

    Args:
        source: ``(K, 2)`` points, ``K >= 2``.
        target: ``(K, 2)`` points.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``target ~= source @ M[:, :2].T + M[:, 2]``.

    Raises:
        ValueError: Shapes differ, fewer than two points, or the source points coincide.

    Example:
        >>> import numpy as np
        >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> np.round(similarity_transform(src, 2 * src + 3), 6).tolist()
        [[2.0, 0.0, 3.0], [0.0, 2.0, 3.0]]
    """
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need two (K, 2) point sets with K >= 2, got {source.shape} and {target.shape}")
    src_mean, dst_mean = source.mean(0), target.mean(0)
    src, dst = source - src_mean, target - dst_mean
    src_var = float((src**2).sum() / len(src))
    if src_var <= 1e-12:
        raise ValueError("source points coincide; no similarity is defined")
    covariance = dst.T @ src / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0  # a reflection fits better; take the best proper rotation instead
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign) / src_var)
    linear = scale * rotation
    return np.concatenate([linear, (dst_mean - linear @ src_mean)[:, None]], axis=1)


def resize_picture(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, C)`` float32 to ``size = (width, height)`` with Pillow's bilinear filter.

    Pillow widens the filter when shrinking, so downscaled pictures do not alias.
    """
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(picture[:, :, c]), "F").resize(size, Image.Resampling.BILINEAR))
        for c in range(picture.shape[2])
    ]
    return np.stack(channels, axis=2)


def warp_similarity(picture: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample ``picture`` through the similarity ``matrix`` onto a ``size = (width, height)`` canvas.

    Pixels outside the picture repeat its nearest edge. When the transform shrinks,
    the picture is first resized with an antialiasing filter, so the canvas does not
    alias.

    Args:
        picture: ``(H, W, C)`` float32.
        matrix: ``(2, 3)`` similarity from picture to canvas coordinates, continuous
            coordinates on both sides (pixel ``i`` covers ``[i, i + 1]``).
        size: Canvas ``(width, height)``, pixels.

    Returns:
        ``(height, width, C)`` float32.
    """
    if picture.ndim != 3:
        raise ValueError(f"picture must be (H, W, C), got shape {picture.shape}")
    matrix = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 1.0:
        height, width = picture.shape[:2]
        factor = max(scale, 1.0 / max(height, width))
        shrunk = resize_picture(
            picture.astype(np.float32), (max(1, round(width * factor)), max(1, round(height * factor)))
        )
        ratio = np.array([width / shrunk.shape[1], height / shrunk.shape[0]])
        matrix = np.concatenate([matrix[:, :2] * ratio[None, :], matrix[:, 2:]], axis=1)
        picture = shrunk
    # Canvas pixel (u, v) samples the picture at inverse(M) @ (u + 0.5, v + 0.5, 1).
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    height, width = picture.shape[:2]
    grid_u, grid_v = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5)
    xy = np.stack([grid_u, grid_v, np.ones_like(grid_u)], axis=-1) @ inverse.T
    # grid_sample with align_corners=False maps -1 and 1 to the picture's outer edges
    normalised = np.stack([2 * xy[..., 0] / width - 1, 2 * xy[..., 1] / height - 1], axis=-1)
    source = torch.from_numpy(np.ascontiguousarray(picture.transpose(2, 0, 1), dtype=np.float32))[None]
    grid = torch.from_numpy(normalised.astype(np.float32))[None]
    canvas = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return canvas[0].permute(1, 2, 0).numpy().astype(np.float32, copy=False)


def align_face(
    picture: np.ndarray,
    landmarks: np.ndarray,
    *,
    size: int,
    template: tuple[tuple[float, float], ...] | np.ndarray = ORL_TEMPLATE,
) -> np.ndarray:
    """Warp the face with ``landmarks`` onto the canonical ``size`` x ``size`` crop.

    Args:
        picture: ``(H, W, C)`` float32.
        landmarks: ``(5, 2)`` ``(x, y)`` in ``picture``, pixels, continuous coordinates
            (pixel ``i`` covers ``[i, i + 1]``), YuNet's order.
        size: Side of the crop, pixels.
        template: ``(5, 2)`` landmark positions in the crop as fractions of its side.

    Returns:
        ``(size, size, C)`` float32 crop (see :func:`warp_similarity` for the borders).

    Raises:
        ValueError: Bad shapes, or landmarks that coincide.
    """
    target = np.asarray(template, np.float64) * size
    return warp_similarity(picture, similarity_transform(landmarks, target), (size, size))
