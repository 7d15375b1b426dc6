"""Typed records the store returns (never the stored blobs, which have their own getters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApiKeyRow",
    "DatasetSummary",
    "ExplanationSummary",
    "HeadRow",
    "JobRow",
    "ModelListRow",
    "ModelRow",
    "SampleUpload",
    "VerificationDatasetRow",
]


@dataclass(frozen=True)
class ApiKeyRow:
    """An API key's name and dates (the key itself is never stored)."""

    id: int
    name: str
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class SampleUpload:
    """Result of storing one batch of labelled features."""

    batch_id: int
    added: int
    total: int
    replayed: bool


@dataclass(frozen=True)
class DatasetSummary:
    """Samples, upload batches and label counts (label as text -> count) of a collected dataset."""

    dataset: str
    samples: int
    batches: int
    label_counts: dict[str, int]


@dataclass(frozen=True)
class ExplanationSummary(DatasetSummary):
    """A dataset's uploaded explanations: maps, batches, predicted-class counts, and maps per method."""

    methods: dict[str, int]


@dataclass(frozen=True)
class HeadRow:
    """A stored head without its weights; ``source`` is ``kit`` or ``trained``."""

    id: int
    source: str
    dataset: str | None
    val_accuracy: float | None
    train_samples: int | None
    val_samples: int | None
    job_id: int | None
    created_at: float


@dataclass(frozen=True)
class JobRow:
    """A head-training job; ``attempts`` counts the times a worker started it."""

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
    attempts: int
    api_key_id: int | None = None  # the key that queued it; None for jobs older than migration 0004


@dataclass(frozen=True)
class ModelListRow:
    """An uploaded model in a listing."""

    id: int
    name: str
    task: str
    sha256: str
    size_bytes: int
    status: str
    created_at: float


@dataclass(frozen=True)
class ModelRow:
    """An uploaded model's record: the checks at upload (``summary``) and the verification ``report``."""

    id: int
    name: str
    task: str
    sha256: str
    size_bytes: int
    summary: dict[str, Any]
    status: str
    report: dict[str, Any] | None
    api_key_id: int
    created_at: float
    attempts: int


@dataclass(frozen=True)
class VerificationDatasetRow:
    """An operator's registered verification dataset (without its bytes)."""

    id: int
    name: str
    sha256: str
    size_bytes: int
    summary: dict[str, Any]
    created_at: float
