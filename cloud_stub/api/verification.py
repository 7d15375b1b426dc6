"""Routes tagged ``verification``: upload ONNX classifiers and read their verification reports."""

import re
import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from cloud_stub.api.dependencies import BINARY_BODY, Body, IdempotencyKey, KeyId, RecordId, StoreDep, WorkerDep
from cloud_stub.api.schemas import MODEL_NAME_PATTERN, ModelListItem, ModelOut
from cloud_stub.uploads import check_onnx_model
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
        409: {"description": "Idempotency-Key reused"},
        413: {"description": "Model too large"},
        422: {"description": "Not a valid ONNX model for the task"},
    },
)
def upload_model(
    key_id: KeyId,
    body: Body,
    task: TaskName,
    store: StoreDep,
    worker: WorkerDep,
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
    return ModelOut(**asdict(record), replayed=replayed)


@router.get("/v1/models")
def list_models(_: KeyId, store: StoreDep) -> list[ModelListItem]:
    """Every uploaded model and its verification status."""
    return [ModelListItem.model_validate(m, from_attributes=True) for m in store.list_models()]


@router.get("/v1/models/{model_id}", responses={404: {"description": "No such model"}})
def model_report(_: KeyId, model_id: RecordId, store: StoreDep) -> ModelOut:
    """An uploaded model's record and verification report (null until verified)."""
    return ModelOut.model_validate(store.model(model_id), from_attributes=True)
