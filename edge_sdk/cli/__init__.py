"""The ``edge-sdk`` command line: one module per command, assembled in :mod:`edge_sdk.cli.root`.

``app`` and ``main`` are loaded on first use, so that command modules (and the cloud
stub's, which share :mod:`edge_sdk.cli._common`) import without a cycle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edge_sdk.cli import root

        return getattr(root, name)
    raise AttributeError(f"module 'edge_sdk.cli' has no attribute {name!r}")
