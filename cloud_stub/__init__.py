"""The cloud side: serve the head on crafted features, collect them, train heads, take model uploads.

``create_app`` builds the FastAPI service (``edge-sdk cloud serve`` runs it on uvicorn);
``Store`` is its SQLite/PostgreSQL storage. The HTTP client lives on the device side,
in :mod:`edge_sdk.client`.
"""

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


def __getattr__(name: str) -> object:
    # create_app needs FastAPI (the 'server' extra); import it only when asked for.
    if name == "create_app":
        from cloud_stub.app import create_app

        return create_app
    raise AttributeError(name)
