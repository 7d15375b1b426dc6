"""Typed errors of the cloud stub; the app maps each to one HTTP status."""

from __future__ import annotations

from edge_sdk.errors import EdgeSDKError

__all__ = [
    "CloudStubError",
    "ConflictError",
    "ModelRejectedError",
    "NonFiniteOutputsError",
    "NotFoundError",
    "StoreError",
]


class CloudStubError(EdgeSDKError):
    """Base class of the cloud stub's errors."""


class NotFoundError(CloudStubError):
    """The dataset, job, head or model asked for does not exist."""


class ConflictError(CloudStubError):
    """The request is well formed but cannot be done in the current state (too few samples)."""


class ModelRejectedError(CloudStubError):
    """An uploaded model is not a valid ONNX model the verifier accepts."""


class NonFiniteOutputsError(ModelRejectedError):
    """A classifier returns NaN or infinite scores on images of its task, so what they carry cannot be measured."""


class StoreError(CloudStubError):
    """The database URL is unusable or the database cannot be reached."""
