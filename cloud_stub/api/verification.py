"""Routes tagged ``verification``: register verification data, upload ONNX classifiers, read their reports."""

import re
import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from cloud_stub.api.dependencies import (
    BINARY_BODY,
    Body,
    IdempotencyKey,
    KeyId,
    LimiterDep,
    RecordId,
    StoreDep,
    WorkerDep,
)
from cloud_stub.api.schemas import MAX_ID, MODEL_NAME_PATTERN, ModelListItem, ModelOut, VerificationDatasetOut
from cloud_stub.errors import ModelRejectedError
from cloud_stub.uploads import DATASET_TASK_PREFIX, UploadTask
from cloud_stub.verification.tasks import MODEL_TASKS

__all__ = ["router"]

router = APIRouter(tags=["verification"])

TaskName = Annotated[
    str,
    Query(
        description=f"One of: {', '.join(MODEL_TASKS)}",
        pattern="^(" + "|".join(map(re.escape, MODEL_TASKS)) + ")$",
    ),
]


@router.post(
    "/v1/models",
    status_code=201,
    openapi_extra=BINARY_BODY,
    responses={
        403: {"description": "The key stores as many models as its quota allows"},
        404: {"description": "No such verification dataset"},
        409: {"description": "Idempotency-Key reused"},
        413: {"description": "Model too large"},
        422: {"description": "Not an ONNX classifier the verifier can run on the task, with the reason"},
        429: {"description": "Too many requests or verifications waiting for this key; see Retry-After"},
    },
)
def upload_model(
    key_id: KeyId,
    body: Body,
    store: StoreDep,
    worker: WorkerDep,
    limiter: LimiterDep,
    task: TaskName | None = None,
    dataset: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="A registered verification dataset, instead of a task")
    ] = None,
    name: Annotated[str, Query(pattern=MODEL_NAME_PATTERN)] = "model.onnx",
    idempotency_key: IdempotencyKey = None,
) -> ModelOut:
    """Upload an ONNX classifier for a built-in task or a registered dataset.

    It is run on a probe batch of the task's images first, in a worker process under
    the server's memory and time limits (refused with 422 and the reason if the
    verifier cannot run it or it breaks a limit), stored, and verified in the
    background (poll its record).
    """
    if (task is None) == (dataset is None):
        raise ModelRejectedError("name a built-in task (task=...) or a registered verification dataset (dataset=...)")
    if dataset is not None:
        store.verification_dataset(dataset, api_key_id=key_id)  # a key verifies on the datasets it registered
    task_name = task if task is not None else f"{DATASET_TASK_PREFIX}{dataset}"
    stored = store.replayed_model(body, task=task_name, api_key_id=key_id, idempotency_key=idempotency_key)
    if stored is not None:  # a retry of an upload that was stored: no check, no quota
        return ModelOut(**asdict(store.model(stored)), replayed=True)
    limiter.check_upload(key_id, store, verified=worker.verify_uploads)
    started = time.perf_counter()
    summary = worker.check_upload(body, UploadTask.from_store(task_name, store))
    summary["check_seconds"] = round(time.perf_counter() - started, 4)
    limiter.check_upload(key_id, store, verified=worker.verify_uploads)  # again: others may have stored meanwhile
    model_id, replayed = store.add_model(
        body, name=name, task=task_name, summary=summary, api_key_id=key_id, idempotency_key=idempotency_key
    )
    record = store.model(model_id)
    if worker.verify_uploads and not replayed:
        worker.submit_verification(model_id)
    return ModelOut(**asdict(record), replayed=replayed)


@router.post(
    "/v1/verification-datasets",
    status_code=201,
    openapi_extra=BINARY_BODY,
    responses={
        413: {"description": "Dataset too large"},
        422: {"description": "Not an .npz of images and labels the verifier can use, with what it needs"},
    },
)
def register_verification_dataset(
    key_id: KeyId,
    body: Body,
    store: StoreDep,
    worker: WorkerDep,
    name: Annotated[str, Query(pattern=MODEL_NAME_PATTERN)] = "dataset.npz",
) -> VerificationDatasetOut:
    """Register an operator's own labelled images (an ``.npz`` with ``images`` and ``labels``) to verify models on.

    Registered once, it is named by this key's uploads with ``dataset=ID`` (other keys
    do not see it); the same bytes from the same key are stored once.
    """
    summary = worker.describe_dataset(body, name)
    dataset_id, replayed = store.add_verification_dataset(body, name=name, summary=summary, api_key_id=key_id)
    return VerificationDatasetOut(**asdict(store.verification_dataset(dataset_id)), replayed=replayed)


@router.get("/v1/verification-datasets")
def list_verification_datasets(key_id: KeyId, store: StoreDep) -> list[VerificationDatasetOut]:
    """The verification datasets this key registered."""
    return [VerificationDatasetOut(**asdict(d)) for d in store.list_verification_datasets(api_key_id=key_id)]


@router.get("/v1/models")
def list_models(_: KeyId, store: StoreDep) -> list[ModelListItem]:
    """Every uploaded model and its verification status."""
    return [ModelListItem.model_validate(m, from_attributes=True) for m in store.list_models()]


@router.get("/v1/models/{model_id}", responses={404: {"description": "No such model"}})
def model_report(_: KeyId, model_id: RecordId, store: StoreDep) -> ModelOut:
    """An uploaded model's record and verification report (null until verified)."""
    return ModelOut.model_validate(store.model(model_id), from_attributes=True)
