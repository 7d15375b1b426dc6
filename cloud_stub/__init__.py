"""The cloud side: serve the head on crafted features, collect them, train heads, take model uploads.

``create_app`` builds the FastAPI service (``edge-cloud serve`` runs it on uvicorn);
``Store`` is its SQLite/PostgreSQL storage. The HTTP client lives on the device side,
in :mod:`edge_sdk.client`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloud_stub.app import create_app
    from cloud_stub.errors import CloudStubError, ConflictError, ModelRejectedError, NotFoundError, StoreError
    from cloud_stub.settings import ServerSettings
    from cloud_stub.store import Store

__all__ = [
    "CloudStubError",
    "ConflictError",
    "ModelRejectedError",
    "NotFoundError",
    "ServerSettings",
    "Store",
    "StoreError",
    "create_app",
]

# Names are imported on first use: `edge-cloud` checks the 'server' extra before the
# store (SQLAlchemy) or the app (FastAPI) is loaded.
_HOME = {
    "CloudStubError": "cloud_stub.errors",
    "ConflictError": "cloud_stub.errors",
    "ModelRejectedError": "cloud_stub.errors",
    "NotFoundError": "cloud_stub.errors",
    "StoreError": "cloud_stub.errors",
    "ServerSettings": "cloud_stub.settings",
    "Store": "cloud_stub.store",
    "create_app": "cloud_stub.app",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'cloud_stub' has no attribute {name!r}")
