"""Request and response bodies of the cloud stub's HTTP API (pydantic models, in the OpenAPI schema)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from cloud_stub.store.rows import SampleUpload

__all__ = [
    "DATASET_PATTERN",
    "EXPLANATION_METHOD_PATTERN",
    "IDEMPOTENCY_PATTERN",
    "MAX_ID",
    "MODEL_NAME_PATTERN",
    "DatasetOut",
    "ExplanationsOut",
    "HeadOut",
    "Health",
    "JobOut",
    "KitInfo",
    "ModelListItem",
    "ModelOut",
    "PredictionOut",
    "SamplesOut",
    "TrainRequest",
    "VerificationDatasetOut",
    "VersionInfo",
]

DATASET_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
EXPLANATION_METHOD_PATTERN = r"^[a-z0-9][a-z0-9+_.-]{0,31}$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.\- ]{1,128}$"
IDEMPOTENCY_PATTERN = r"^[\x21-\x7e]{1,128}$"
MAX_ID = 2**31 - 1  # PostgreSQL INTEGER


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

    @classmethod
    def from_upload(cls, dataset: str, upload: SampleUpload) -> SamplesOut:
        """The response for one stored batch (of features or of explanations)."""
        return cls(
            dataset=dataset, batch_id=upload.batch_id, added=upload.added, total=upload.total, replayed=upload.replayed
        )


class DatasetOut(BaseModel):
    dataset: str
    samples: int
    batches: int
    label_counts: dict[str, int]


class ExplanationsOut(DatasetOut):
    methods: dict[str, int] = Field(description="Maps per method (with any defence after '+')")


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
    attempts: int = Field(description="Times a worker started the job (bounded; see the store)")


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
    attempts: int = Field(description="Times a worker started verifying the model (bounded)")
    replayed: bool = False


class ModelListItem(BaseModel):
    id: int
    name: str
    task: str
    sha256: str
    size_bytes: int
    status: str
    created_at: float


class VerificationDatasetOut(BaseModel):
    id: int
    name: str
    sha256: str
    size_bytes: int
    summary: dict[str, Any] = Field(
        description="What the verifier will use: images, classes, item shape, and the train / held-out split"
    )
    created_at: float
    replayed: bool = False
