"""Typed errors raised by the SDK.

Every error a user can trigger with bad input is a :class:`ValueError` subclass with
a message that names the offending file, field or shape, so callers can catch one
family (``except EdgeSDKError``) or a precise case.
"""

from __future__ import annotations

__all__ = [
    "CloudRequestError",
    "CloudUnavailableError",
    "EdgeSDKError",
    "EmptyInputError",
    "FeatureFileError",
    "ImageLoadError",
    "KitChecksumError",
    "KitError",
    "KitFileMissingError",
    "KitManifestError",
    "KitNotFoundError",
    "KitWeightsError",
    "LabelFileError",
    "NonFiniteError",
    "OutputWriteError",
    "TensorShapeError",
]


class EdgeSDKError(ValueError):
    """Base class of every error the SDK raises for bad input."""


class ImageLoadError(EdgeSDKError):
    """An image file is missing, empty, corrupt or not an image."""


class EmptyInputError(EdgeSDKError):
    """A folder or batch holds no usable image."""


class KitError(EdgeSDKError):
    """A kit (weights plus manifest) cannot be used."""


class KitNotFoundError(KitError):
    """The kit folder or its manifest does not exist."""


class KitManifestError(KitError):
    """The kit manifest is not valid JSON or breaks the manifest schema."""


class KitFileMissingError(KitError):
    """A weights file named by the manifest is missing."""


class KitWeightsError(KitError):
    """A weights file is unreadable or its tensors do not fit the architecture."""


class KitChecksumError(KitError):
    """A weights file's SHA-256 differs from the one recorded in the manifest."""


class TensorShapeError(EdgeSDKError):
    """A tensor has the wrong rank, shape or dtype for the kit."""


class NonFiniteError(EdgeSDKError):
    """A tensor holds NaN or infinite values."""


class OutputWriteError(EdgeSDKError):
    """An output file could not be written (full disk, no permission); nothing partial is left."""


class LabelFileError(EdgeSDKError):
    """A labels CSV is missing, malformed, or lacks a label for an image."""


class FeatureFileError(EdgeSDKError):
    """A feature file is not a valid ``.npz`` written by the SDK."""


class CloudRequestError(EdgeSDKError):
    """The cloud service refused a request (4xx, or a 5xx that retries did not clear)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class CloudUnavailableError(EdgeSDKError):
    """The cloud service could not be reached or kept timing out after every retry."""
