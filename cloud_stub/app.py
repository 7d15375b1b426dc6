"""The cloud stub's HTTP API (FastAPI): predict, collect, train heads, upload models, health.

Every endpoint but ``/health`` needs an API key in the ``X-API-Key`` header. Tensors
travel as safetensors or ``.npy`` bytes; uploaded models are ONNX bytes, parsed and
never executed or unpickled.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations
# at run time, and they name aliases local to create_app.
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

import edge_sdk
from cloud_stub.errors import ConflictError, ModelRejectedError, NotFoundError, StoreError
from cloud_stub.heads import ServedHead, head_from_bytes, head_to_bytes
from cloud_stub.limits import BodySizeLimit
from cloud_stub.settings import ServerSettings
from cloud_stub.store import Store
from cloud_stub.training import BackgroundWorker
from cloud_stub.uploads import check_onnx_model
from cloud_stub.verification.tasks import MODEL_TASKS
from edge_sdk.client.http import API_KEY_HEADER
from edge_sdk.client.payloads import (
    FEATURES_KEY,
    LABELS_KEY,
    PayloadFormatError,
    check_features,
    check_labels,
    decode_tensors,
)
from edge_sdk.errors import EdgeSDKError, NonFiniteError, TensorShapeError
from edge_sdk.kit import Kit, load_kit

__all__ = ["create_app"]

DATASET_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.\- ]{1,128}$"
IDEMPOTENCY_PATTERN = r"^[\x21-\x7e]{1,128}$"
MAX_ID = 2**31 - 1  # PostgreSQL INTEGER
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (PayloadFormatError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (TensorShapeError, 422),
    (NonFiniteError, 422),
    (ModelRejectedError, 422),
    (StoreError, 503),
]


class Health(BaseModel):
    status: str
    version: str


class KitInfo(BaseModel):
    name: str
    feature_shape: list[int]
    num_classes: int


class VersionInfo(BaseModel):
    service: str
    version: str
    kit: KitInfo
    active_head_id: int | None
    database: str
    max_batch: int


class PredictionOut(BaseModel):
    head_id: int
    labels: list[int]
    probabilities: list[list[float]]


class SamplesOut(BaseModel):
    dataset: str
    batch_id: int
    added: int
    total: int
    replayed: bool = Field(description="True when the Idempotency-Key matched an earlier upload (nothing stored)")


class DatasetOut(BaseModel):
    dataset: str
    samples: int
    batches: int
    label_counts: dict[str, int]


class TrainRequest(BaseModel):
    dataset: str = Field(pattern=DATASET_PATTERN)
    epochs: int = Field(default=40, ge=1, le=1000)
    seed: int = Field(default=0, ge=0, le=MAX_ID)
    validation_fraction: float = Field(default=0.2, ge=0.05, le=0.5)
    activate: bool = Field(default=True, description="Serve the new head as soon as it is trained")


class JobOut(BaseModel):
    id: int
    dataset: str
    status: str
    params: dict[str, Any]
    error: str | None
    head_id: int | None
    val_accuracy: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class HeadOut(BaseModel):
    id: int
    source: str
    dataset: str | None
    val_accuracy: float | None
    train_samples: int | None
    val_samples: int | None
    job_id: int | None
    created_at: float
    active: bool


class ModelOut(BaseModel):
    id: int
    name: str
    task: str
    sha256: str
    size_bytes: int
    status: str = Field(
        description="'unverified' (queued), 'verifying', 'verified' (report holds the verdict) or 'failed'"
    )
    summary: dict[str, Any]
    report: dict[str, Any] | None
    created_at: float
    replayed: bool = False


class ModelListItem(BaseModel):
    id: int
    name: str
    task: str
    sha256: str
    size_bytes: int
    status: str
    created_at: float


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _check_kit_matches(store: Store, kit: Kit) -> None:
    """A database holds heads of one feature shape; refuse to serve it with another kit."""
    arch = kit.architecture
    fingerprint = f"{kit.manifest.name}:{'x'.join(map(str, kit.feature_shape))}:{arch.num_classes}:{arch.head_width}"
    recorded = store.setdefault_service_value("kit", fingerprint)
    if recorded != fingerprint:
        raise StoreError(f"the database was created for kit {recorded}, not {fingerprint}; use another database")


def create_app(settings: ServerSettings | None = None, *, kit: Kit | None = None) -> FastAPI:
    """Build the service: open the store, load the kit and the served head.

    Args:
        settings: Server settings; ``ServerSettings.from_env()`` if omitted.
        kit: A loaded kit (tests); else ``settings.kit`` or the default kit is loaded.

    Raises:
        StoreError: The database cannot be opened or belongs to another kit.
        KitError: The kit cannot be loaded.
    """
    settings = settings or ServerSettings.from_env()
    kit = kit or load_kit(settings.kit)
    store = Store(settings.database_url)
    _check_kit_matches(store, kit)
    arch = kit.architecture
    if store.active_head_id() is None and kit.head is not None:
        store.initial_head(head_to_bytes(kit.head))
    active = store.active_head_id()
    served = ServedHead() if active is None else ServedHead(head_from_bytes(store.head_state(active), arch), active)
    worker = BackgroundWorker(
        store,
        arch=arch,
        served=served,
        threads=settings.torch_threads,
        verify_uploads=settings.verify_uploads,
        verify_budget=settings.verify_budget,
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
    app.state.store = store
    app.state.settings = settings
    app.state.served = served
    app.state.worker = worker

    def body_limit(path: str) -> int:
        return settings.max_model_bytes if path.startswith("/v1/models") else settings.max_request_bytes

    app.add_middleware(BodySizeLimit, limit_for=body_limit)

    @app.exception_handler(EdgeSDKError)
    async def _typed_error(_: Request, exc: Exception) -> JSONResponse:
        code = next((c for kind, c in _ERROR_STATUS if isinstance(exc, kind)), 400)
        return JSONResponse(status_code=code, content={"detail": str(exc)})

    @app.exception_handler(OperationalError)
    async def _database_error(_: Request, exc: Exception) -> JSONResponse:
        # Every write is one transaction, so a failed one stored nothing; say so.
        message = str(getattr(exc, "orig", exc)).lower()
        if "full" in message or "no space left" in message:
            return JSONResponse(status_code=507, content={"detail": "the server's storage is full; nothing was stored"})
        return JSONResponse(status_code=503, content={"detail": "the database is unavailable; nothing was stored"})

    api_key_header = APIKeyHeader(
        name=API_KEY_HEADER, auto_error=False, description="Key from `edge-cloud keys create`"
    )

    def require_key(key: Annotated[str | None, Security(api_key_header)]) -> int:
        unauthorized = {"WWW-Authenticate": "ApiKey"}
        if not key:
            raise HTTPException(401, f"missing API key in the {API_KEY_HEADER} header", headers=unauthorized)
        key_id = store.check_api_key(key)
        if key_id is None:
            raise HTTPException(401, "invalid or revoked API key", headers=unauthorized)
        return key_id

    KeyId = Annotated[int, Depends(require_key)]
    Body = Annotated[bytes, Depends(_raw_body)]
    DatasetName = Annotated[str, Path(pattern=DATASET_PATTERN, description="Letters, digits, '_', '.', '-'")]
    IdempotencyKey = Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_PATTERN,
            description="Repeat it when retrying an upload: the server stores the upload once",
        ),
    ]

    @app.get("/health", tags=["service"])
    def health() -> Health:
        """Liveness: answers without a key."""
        return Health(status="ok", version=edge_sdk.__version__)

    @app.get("/v1/version", tags=["service"])
    def version(_: KeyId) -> VersionInfo:
        """Service version, the kit it serves and the active head."""
        return VersionInfo(
            service="edge-feature-sdk cloud stub",
            version=edge_sdk.__version__,
            kit=KitInfo(name=kit.manifest.name, feature_shape=list(kit.feature_shape), num_classes=arch.num_classes),
            active_head_id=served.head_id,
            database=store.backend,
            max_batch=settings.max_batch,
        )

    @app.post(
        "/v1/predict",
        tags=["deployment"],
        openapi_extra=_BINARY_BODY,
        responses={
            400: {"description": "Body is not safetensors or .npy"},
            413: {"description": "Body too large"},
            422: {"description": "Wrong shape, dtype, batch size, or NaN"},
        },
    )
    def predict(_: KeyId, body: Body) -> PredictionOut:
        """Head outputs for a batch of crafted features (safetensors with 'features', or one .npy array)."""
        tensors = decode_tensors(body)
        if FEATURES_KEY not in tensors:
            raise PayloadFormatError(f"safetensors payload has no '{FEATURES_KEY}' tensor (got {sorted(tensors)})")
        features = check_features(tensors[FEATURES_KEY], kit.feature_shape, max_batch=settings.max_batch)
        served.refresh(store, arch)
        labels, probabilities, head_id = served.predict(features)
        return PredictionOut(head_id=head_id, labels=labels.tolist(), probabilities=probabilities.tolist())

    @app.post(
        "/v1/datasets/{dataset}/samples",
        tags=["development"],
        status_code=201,
        openapi_extra=_BINARY_BODY,
        responses={
            400: {"description": "Body is not safetensors"},
            409: {"description": "Idempotency-Key reused"},
            413: {"description": "Body too large"},
            422: {"description": "Wrong shape, dtype, labels, or NaN"},
        },
    )
    def collect(key_id: KeyId, dataset: DatasetName, body: Body, idempotency_key: IdempotencyKey = None) -> SamplesOut:
        """Store labelled crafted features (safetensors with 'features' and 'labels') for head training."""
        tensors = decode_tensors(body)
        missing = {FEATURES_KEY, LABELS_KEY} - set(tensors)
        if missing:
            raise PayloadFormatError(f"safetensors payload lacks {sorted(missing)} (got {sorted(tensors)})")
        features = check_features(tensors[FEATURES_KEY], kit.feature_shape, max_batch=settings.max_batch)
        labels = check_labels(tensors[LABELS_KEY], batch=len(features), num_classes=arch.num_classes)
        upload = store.add_samples(dataset, features, labels, api_key_id=key_id, idempotency_key=idempotency_key)
        return SamplesOut(
            dataset=dataset, batch_id=upload.batch_id, added=upload.added, total=upload.total, replayed=upload.replayed
        )

    @app.get("/v1/datasets/{dataset}", tags=["development"], responses={404: {"description": "No such dataset"}})
    def dataset_summary(_: KeyId, dataset: DatasetName) -> DatasetOut:
        """Samples, upload batches and label counts of a collected dataset."""
        return DatasetOut(**store.dataset_summary(dataset))

    @app.post("/v1/heads", tags=["development"], status_code=202, responses={404: {"description": "No such dataset"}})
    def train_head(_: KeyId, request: TrainRequest) -> JobOut:
        """Queue training of a new head on a collected dataset; poll the job for its validation accuracy."""
        store.dataset_summary(request.dataset)  # 404 now rather than a failed job later
        job_id = store.create_job(request.dataset, request.model_dump(exclude={"dataset"}))
        worker.submit(job_id)
        return JobOut(**store.job(job_id))

    @app.get("/v1/heads", tags=["development"])
    def list_heads(_: KeyId) -> list[HeadOut]:
        """Every head the service has stored; ``active`` marks the one that answers predictions."""
        return [HeadOut(**h, active=h["id"] == served.head_id) for h in store.list_heads()]

    @app.get("/v1/jobs/{job_id}", tags=["development"], responses={404: {"description": "No such job"}})
    def job(_: KeyId, job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> JobOut:
        """A training job: status, error, the head it produced and its validation accuracy."""
        return JobOut(**store.job(job_id))

    @app.post(
        "/v1/models",
        tags=["verification"],
        status_code=201,
        openapi_extra=_BINARY_BODY,
        responses={
            409: {"description": "Idempotency-Key reused"},
            413: {"description": "Model too large"},
            422: {"description": "Not a valid ONNX model for the task"},
        },
    )
    def upload_model(
        key_id: KeyId,
        body: Body,
        task: Annotated[
            str,
            Query(
                description=f"One of: {', '.join(MODEL_TASKS)}",
                pattern="^(" + "|".join(map(re.escape, MODEL_TASKS)) + ")$",
            ),
        ],
        name: Annotated[str, Query(pattern=MODEL_NAME_PATTERN)] = "model.onnx",
        idempotency_key: IdempotencyKey = None,
    ) -> ModelOut:
        """Upload an ONNX classifier; it is checked, stored, and verified in the background (poll its record)."""
        started = time.perf_counter()
        summary = check_onnx_model(body, task=task)
        summary["check_seconds"] = round(time.perf_counter() - started, 4)
        model_id, replayed = store.add_model(
            body, name=name, task=task, summary=summary, api_key_id=key_id, idempotency_key=idempotency_key
        )
        record = store.model(model_id)
        if worker.verify_uploads and not replayed:
            worker.submit_verification(model_id)
        return ModelOut(**record, replayed=replayed)

    @app.get("/v1/models", tags=["verification"])
    def list_models(_: KeyId) -> list[ModelListItem]:
        """Every uploaded model and its verification status."""
        return [ModelListItem(**m) for m in store.list_models()]

    @app.get("/v1/models/{model_id}", tags=["verification"], responses={404: {"description": "No such model"}})
    def model_report(_: KeyId, model_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ModelOut:
        """An uploaded model's record and verification report (null until verified)."""
        return ModelOut(**store.model(model_id))

    return app
