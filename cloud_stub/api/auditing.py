"""Routes tagged ``auditing``: explanations devices send with their predictions, kept for audits."""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.
from typing import Annotated

from fastapi import APIRouter, Query

from cloud_stub.api.dependencies import (
    BINARY_BODY,
    Body,
    DatasetName,
    IdempotencyKey,
    KeyId,
    KitDep,
    SettingsDep,
    StoreDep,
)
from cloud_stub.api.schemas import EXPLANATION_METHOD_PATTERN, ExplanationsOut, SamplesOut
from edge_sdk.client.payloads import (
    MAPS_KEY,
    PREDICTED_KEY,
    PROBABILITIES_KEY,
    check_features,
    check_labels,
    check_probabilities,
    decode_tensors,
)

__all__ = ["router"]

router = APIRouter(tags=["auditing"])

Method = Annotated[
    str,
    Query(
        pattern=EXPLANATION_METHOD_PATTERN,
        description="How the maps were made, as `edge-sdk explain` names it (grad, grad-cam, "
        "integrated-gradients), a defence after '+' (grad-cam+gnime)",
    ),
]


@router.post(
    "/v1/datasets/{dataset}/explanations",
    status_code=201,
    openapi_extra=BINARY_BODY,
    responses={
        400: {"description": "Body is not safetensors"},
        409: {"description": "Idempotency-Key reused"},
        413: {"description": "Body too large"},
        422: {"description": "Wrong shape, dtype, classes, probabilities, or NaN"},
    },
)
def collect_explanations(
    key_id: KeyId,
    dataset: DatasetName,
    body: Body,
    method: Method,
    kit: KitDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SamplesOut:
    """Store attribution maps with the predictions they explain.

    Safetensors with 'maps' (B, H, W) float32 in the kit's image frame, 'predicted' (B,)
    integer classes and optionally 'probabilities' (B, classes). The same checks and
    limits as features: body size, batch size, finite values, idempotent retries.
    """
    tensors = decode_tensors(body, required=(MAPS_KEY, PREDICTED_KEY))
    side = kit.architecture.image_size
    maps = check_features(tensors[MAPS_KEY], (side, side), max_batch=settings.max_batch, name="maps")
    classes = kit.architecture.num_classes
    predicted = check_labels(tensors[PREDICTED_KEY], batch=len(maps), num_classes=classes, name="predicted")
    probabilities = None
    if PROBABILITIES_KEY in tensors:
        probabilities = check_probabilities(tensors[PROBABILITIES_KEY], batch=len(maps), num_classes=classes)
    upload = store.add_explanations(
        dataset,
        maps,
        predicted,
        probabilities=probabilities,
        method=method,
        api_key_id=key_id,
        idempotency_key=idempotency_key,
    )
    return SamplesOut.from_upload(dataset, upload)


@router.get("/v1/datasets/{dataset}/explanations", responses={404: {"description": "No such dataset"}})
def explanation_summary(_: KeyId, dataset: DatasetName, store: StoreDep) -> ExplanationsOut:
    """Maps, upload batches, predicted-class counts and maps per method of the explanations uploaded to a dataset."""
    return ExplanationsOut.model_validate(store.explanation_summary(dataset), from_attributes=True)
