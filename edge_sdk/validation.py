"""Checks on tensors that cross the SDK's boundary (images in, features in or out)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from edge_sdk.errors import NonFiniteError, TensorShapeError

__all__ = ["check_batch"]


def check_batch(tensor: object, shape: Sequence[int], *, name: str) -> torch.Tensor:
    """Check that ``tensor`` is a finite float batch of items of shape ``shape``.

    Args:
        tensor: Candidate batch ``(B, *shape)``; a single item ``shape`` is refused
            so that a batch axis is never guessed.
        shape: Expected shape of one item.
        name: What the tensor is, for the error message ("images", "features").

    Returns:
        The tensor as float32.

    Raises:
        TensorShapeError: Not a tensor, not floating point, or the wrong shape.
        NonFiniteError: It holds NaN or infinity.

    Example:
        >>> check_batch(torch.zeros(2, 1, 4, 4), (1, 4, 4), name="images").shape
        torch.Size([2, 1, 4, 4])
    """
    if not isinstance(tensor, torch.Tensor):
        raise TensorShapeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TensorShapeError(f"{name} must be floating point, got {tensor.dtype}")
    expected = tuple(int(s) for s in shape)
    if tensor.dim() != len(expected) + 1 or tuple(tensor.shape[1:]) != expected:
        raise TensorShapeError(
            f"{name} must have shape (batch, {', '.join(map(str, expected))}), got {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0:
        raise TensorShapeError(f"{name} batch is empty")
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).flatten(1).any(dim=1).sum())
        raise NonFiniteError(f"{name} hold NaN or infinite values in {bad} of {tensor.shape[0]} items")
    return tensor.float()
