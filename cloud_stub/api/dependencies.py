"""What the endpoints receive from the service: its store, settings, kit, served head, worker, the caller's key.

Each is a FastAPI dependency reading the objects :func:`cloud_stub.app.create_app`
puts on ``app.state``, so routers hold no state of their own and tests can override
any of them.
"""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request, Security
from fastapi.security import APIKeyHeader

from cloud_stub.api.schemas import DATASET_PATTERN, IDEMPOTENCY_PATTERN, MAX_ID
from cloud_stub.heads import ServedHead
from cloud_stub.quotas import KeyLimiter
from cloud_stub.settings import ServerSettings
from cloud_stub.store import Store
from cloud_stub.training import BackgroundWorker
from edge_sdk.client.http import API_KEY_HEADER
from edge_sdk.kit import Kit

__all__ = [
    "BINARY_BODY",
    "Body",
    "DatasetName",
    "IdempotencyKey",
    "KeyId",
    "KitDep",
    "LimiterDep",
    "RecordId",
    "ServedDep",
    "SettingsDep",
    "StoreDep",
    "WorkerDep",
    "require_key",
]

# OpenAPI for endpoints that read the raw body (tensors or ONNX bytes) themselves.
BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _store(request: Request) -> Store:
    return request.app.state.store


def _settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def _kit(request: Request) -> Kit:
    return request.app.state.kit


def _served(request: Request) -> ServedHead:
    return request.app.state.served


def _worker(request: Request) -> BackgroundWorker:
    return request.app.state.worker


def _limiter(request: Request) -> KeyLimiter:
    return request.app.state.limiter


async def _raw_body(request: Request) -> bytes:
    return await request.body()


StoreDep = Annotated[Store, Depends(_store)]
SettingsDep = Annotated[ServerSettings, Depends(_settings)]
KitDep = Annotated[Kit, Depends(_kit)]
ServedDep = Annotated[ServedHead, Depends(_served)]
WorkerDep = Annotated[BackgroundWorker, Depends(_worker)]
LimiterDep = Annotated[KeyLimiter, Depends(_limiter)]
Body = Annotated[bytes, Depends(_raw_body)]

_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Key from `edge-cloud keys create`")


def require_key(key: Annotated[str | None, Security(_api_key_header)], store: StoreDep, limiter: LimiterDep) -> int:
    """The id of the caller's valid API key, counted against its rate; 401 without one, 429 over the rate."""
    unauthorized = {"WWW-Authenticate": "ApiKey"}
    if not key:
        raise HTTPException(401, f"missing API key in the {API_KEY_HEADER} header", headers=unauthorized)
    key_id = store.check_api_key(key)
    if key_id is None:
        raise HTTPException(401, "invalid or revoked API key", headers=unauthorized)
    limiter.check_rate(key_id)
    return key_id


KeyId = Annotated[int, Depends(require_key)]
DatasetName = Annotated[str, Path(pattern=DATASET_PATTERN, description="Letters, digits, '_', '.', '-'")]
RecordId = Annotated[int, Path(ge=1, le=MAX_ID)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_PATTERN,
        description="Repeat it when retrying an upload: the server stores the upload once",
    ),
]
