"""Routes tagged ``development``: collect labelled crafted features and train new heads on them."""

from dataclasses import asdict

from fastapi import APIRouter

from cloud_stub.api.dependencies import (
    BINARY_BODY,
    Body,
    DatasetName,
    IdempotencyKey,
    KeyId,
    KitDep,
    LimiterDep,
    RecordId,
    ServedDep,
    SettingsDep,
    StoreDep,
    WorkerDep,
)
from cloud_stub.api.schemas import DatasetOut, HeadOut, JobOut, SamplesOut, TrainRequest
from edge_sdk.client.payloads import (
    FEATURES_KEY,
    LABELS_KEY,
    check_features,
    check_labels,
    decode_tensors,
)

__all__ = ["router"]

router = APIRouter(tags=["development"])


@router.post(
    "/v1/datasets/{dataset}/samples",
    status_code=201,
    openapi_extra=BINARY_BODY,
    responses={
        400: {"description": "Body is not safetensors"},
        409: {"description": "Idempotency-Key reused"},
        413: {"description": "Body too large"},
        422: {"description": "Wrong shape, dtype, labels, or NaN"},
    },
)
def collect(
    key_id: KeyId,
    dataset: DatasetName,
    body: Body,
    kit: KitDep,
    store: StoreDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> SamplesOut:
    """Store labelled crafted features (safetensors with 'features' and 'labels') for head training."""
    tensors = decode_tensors(body, required=(FEATURES_KEY, LABELS_KEY))
    features = check_features(tensors[FEATURES_KEY], kit.feature_shape, max_batch=settings.max_batch)
    labels = check_labels(tensors[LABELS_KEY], batch=len(features), num_classes=kit.architecture.num_classes)
    upload = store.add_samples(dataset, features, labels, api_key_id=key_id, idempotency_key=idempotency_key)
    return SamplesOut.from_upload(dataset, upload)


@router.get("/v1/datasets/{dataset}", responses={404: {"description": "No such dataset"}})
def dataset_summary(_: KeyId, dataset: DatasetName, store: StoreDep) -> DatasetOut:
    """Samples, upload batches and label counts of a collected dataset."""
    return DatasetOut.model_validate(store.dataset_summary(dataset), from_attributes=True)


@router.post(
    "/v1/heads",
    status_code=202,
    responses={
        404: {"description": "No such dataset"},
        429: {"description": "Too many requests or jobs waiting for this key; see Retry-After"},
    },
)
def train_head(key_id: KeyId, request: TrainRequest, store: StoreDep, worker: WorkerDep, limiter: LimiterDep) -> JobOut:
    """Queue training of a new head on a collected dataset; poll the job for its validation accuracy."""
    store.dataset_summary(request.dataset)  # 404 now rather than a failed job later
    limiter.check_job(key_id, store, verified=worker.verify_uploads)
    job_id = store.create_job(request.dataset, request.model_dump(exclude={"dataset"}), api_key_id=key_id)
    queued = JobOut.model_validate(store.job(job_id), from_attributes=True)  # as created, before a worker claims it
    worker.submit(job_id)
    return queued


@router.get("/v1/heads")
def list_heads(_: KeyId, store: StoreDep, served: ServedDep) -> list[HeadOut]:
    """Every head the service has stored; ``active`` marks the one that answers predictions."""
    return [HeadOut(**asdict(h), active=h.id == served.head_id) for h in store.list_heads()]


@router.get("/v1/jobs/{job_id}", responses={404: {"description": "No such job"}})
def job(_: KeyId, job_id: RecordId, store: StoreDep) -> JobOut:
    """A training job: status, error, the head it produced and its validation accuracy."""
    return JobOut.model_validate(store.job(job_id), from_attributes=True)
