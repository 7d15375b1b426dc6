"""The cloud stub's HTTP API (FastAPI): predict, collect, train heads, upload models, health.

Every endpoint but ``/health`` needs an API key in the ``X-API-Key`` header. Tensors
travel as safetensors or ``.npy`` bytes; uploaded models are ONNX bytes, parsed and
never executed or unpickled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

import edge_sdk
from cloud_stub.api import ROUTERS
from cloud_stub.errors import ConflictError, ModelRejectedError, NotFoundError, StoreError
from cloud_stub.heads import ServedHead, head_from_bytes, head_to_bytes
from cloud_stub.isolation import JobLimitError, JobLimits, RunnerClosedError
from cloud_stub.limits import BodySizeLimit
from cloud_stub.quotas import KeyLimiter, QuotaExceededError, RateLimitedError, RateStorageError
from cloud_stub.settings import ServerSettings
from cloud_stub.store import Store
from cloud_stub.training import BackgroundWorker, ServerBusyError
from cloud_stub.verification.operator_data import OperatorDataError
from cloud_stub.verification.tasks import TaskDataError
from edge_sdk.client.payloads import PayloadFormatError
from edge_sdk.errors import EdgeSDKError, NonFiniteError, TensorShapeError
from edge_sdk.kit import Kit, load_kit

__all__ = ["create_app"]

_ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (PayloadFormatError, 400),
    (QuotaExceededError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (TensorShapeError, 422),
    (NonFiniteError, 422),
    (ModelRejectedError, 422),
    (OperatorDataError, 422),
    (JobLimitError, 422),  # at upload: the model asks for more memory or time than a check may use
    (RateLimitedError, 429),
    (ServerBusyError, 503),
    (RunnerClosedError, 503),  # the server is stopping
    (RateStorageError, 503),
    (StoreError, 503),
    (TaskDataError, 503),  # a built-in task's data is not installed on the server
]


def _check_kit_matches(store: Store, kit: Kit) -> None:
    """A database holds heads of one feature shape; refuse to serve it with another kit."""
    arch = kit.architecture
    fingerprint = f"{kit.manifest.name}:{'x'.join(map(str, kit.feature_shape))}:{arch.num_classes}:{arch.head_width}"
    recorded = store.setdefault_service_value("kit", fingerprint)
    if recorded != fingerprint:
        raise StoreError(f"the database was created for kit {recorded}, not {fingerprint}; use another database")


def _served_head(store: Store, kit: Kit) -> ServedHead:
    """The head that answers predictions: the database's active one, else the kit's, stored as the first."""
    if store.active_head_id() is None and kit.head is not None:
        store.initial_head(head_to_bytes(kit.head))
    active = store.active_head_id()
    if active is None:
        return ServedHead()
    return ServedHead(head_from_bytes(store.head_state(active), kit.architecture), active)


async def _typed_error(_: Request, exc: Exception) -> JSONResponse:
    code = next((c for kind, c in _ERROR_STATUS if isinstance(exc, kind)), 400)
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(status_code=code, content={"detail": str(exc)}, headers=headers)


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    # Every write is one transaction, so a failed one stored nothing; say so.
    message = str(getattr(exc, "orig", exc)).lower()
    if "full" in message or "no space left" in message:
        return JSONResponse(status_code=507, content={"detail": "the server's storage is full; nothing was stored"})
    return JSONResponse(status_code=503, content={"detail": "the database is unavailable; nothing was stored"})


def create_app(settings: ServerSettings | None = None, *, kit: Kit | None = None) -> FastAPI:
    """Build the service: open the store, load the kit and the served head, mount the routers.

    Args:
        settings: Server settings; read from ``EDGE_CLOUD_*`` variables if omitted.
        kit: A loaded kit (tests); else ``settings.kit`` or the default kit is loaded.

    Raises:
        StoreError: The database cannot be opened or belongs to another kit.
        KitError: The kit cannot be loaded.
    """
    settings = settings or ServerSettings()
    kit = kit or load_kit(settings.kit)
    store = Store(settings.database_url)
    _check_kit_matches(store, kit)
    served = _served_head(store, kit)
    worker = BackgroundWorker(
        store,
        arch=kit.architecture,
        served=served,
        verify_uploads=settings.verify_uploads,
        verify_budget=settings.verify_budget,
        reference_cache=settings.reference_cache,
        job_limits=JobLimits(
            memory_mib=settings.job_memory_mib, seconds=settings.job_seconds, threads=settings.torch_threads
        ),
        check_limits=JobLimits(memory_mib=settings.job_memory_mib, seconds=settings.check_seconds),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        worker.start()
        yield
        worker.stop()
        store.dispose()

    app = FastAPI(
        title="edge-feature-sdk cloud stub",
        version=edge_sdk.__version__,
        description="Serves the head on crafted features, collects labelled crafted features, trains heads, "
        "and stores uploaded ONNX models for verification.",
        lifespan=lifespan,
    )
    app.state.store, app.state.settings, app.state.kit = store, settings, kit
    app.state.served, app.state.worker = served, worker
    app.state.limiter = KeyLimiter(
        rate=settings.rate_limit,
        max_models=settings.max_models_per_key,
        max_pending=settings.max_pending_per_key,
        storage_uri=settings.rate_limit_storage,
    )

    def body_limit(path: str) -> int:
        uploads = ("/v1/models", "/v1/verification-datasets")
        return settings.max_model_bytes if path.startswith(uploads) else settings.max_request_bytes

    app.add_middleware(BodySizeLimit, limit_for=body_limit, max_inflight_bytes=settings.max_inflight_bytes)
    app.add_exception_handler(EdgeSDKError, _typed_error)
    app.add_exception_handler(OperationalError, _database_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
