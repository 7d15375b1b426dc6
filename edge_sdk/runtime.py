"""On-device encoder runtime: onnxruntime for an exported ``.onnx`` file, torch otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from edge_sdk.errors import EdgeSDKError
from edge_sdk.kit.kit import Kit
from edge_sdk.sessions import cpu_session
from edge_sdk.validation import check_batch

__all__ = ["EncoderRuntime", "OnnxEncoder", "OnnxModelError", "TorchEncoder", "load_encoder"]


class OnnxModelError(EdgeSDKError):
    """An ONNX file is missing, unreadable, or does not fit the kit."""


class EncoderRuntime(Protocol):
    """Anything that turns a batch of preprocessed images into features."""

    backend: str

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, F, H, W)`` of images ``(B, C, S, S)``."""
        ...


class TorchEncoder:
    """The kit's torch encoder."""

    backend = "torch"

    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.kit.encode(images)


class OnnxEncoder:
    """An exported encoder run by onnxruntime's CPU provider, checked against the kit's shapes.

    Raises:
        OnnxModelError: The file is missing or not a loadable ONNX model, or its
            output does not have the kit's feature shape.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, kit: Kit) -> None:
        self.path, self.kit = Path(path), kit
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: no such ONNX file")
        try:
            self._session = cpu_session(self.path)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise OnnxModelError(f"{self.path}: not a loadable ONNX model ({str(exc)[:200]})") from exc
        self._input = self._session.get_inputs()[0].name
        probe = self._run(torch.zeros(2, *kit.architecture.image_shape))
        if tuple(probe.shape[1:]) != kit.feature_shape:
            raise OnnxModelError(
                f"{self.path}: outputs features of shape {tuple(probe.shape[1:])}, the kit needs {kit.feature_shape}"
            )

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        try:
            out = self._session.run(None, {self._input: images.numpy().astype(np.float32)})[0]
        except Exception as exc:
            raise OnnxModelError(f"{self.path}: inference failed ({str(exc)[:200]})") from exc
        return torch.from_numpy(np.ascontiguousarray(out))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(check_batch(images, self.kit.architecture.image_shape, name="images"))


def load_encoder(kit: Kit, onnx_path: str | Path | None = None) -> EncoderRuntime:
    """The kit's encoder in torch, or the exported one at ``onnx_path`` under onnxruntime.

    Example:
        >>> from edge_sdk.kit import load_kit
        >>> load_encoder(load_kit()).backend
        'torch'
    """
    return TorchEncoder(kit) if onnx_path is None else OnnxEncoder(onnx_path, kit)
