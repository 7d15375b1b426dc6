"""Collected labelled crafted features, stored per upload batch as safetensors bytes; the per-batch helpers."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, Table, func, insert, select
from sqlalchemy.exc import IntegrityError

from cloud_stub.errors import ConflictError, NotFoundError
from cloud_stub.store._base import StorePart
from cloud_stub.store.rows import DatasetSummary, SampleUpload
from cloud_stub.store.schema import sample_batches
from edge_sdk.client.payloads import FEATURES_KEY, LABELS_KEY, decode_tensors, encode_tensors

__all__ = ["SampleStore", "add_batch", "batch_summary", "load_batches"]


def _dataset_total(conn: Connection, table: Table, dataset: str) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(table.c.samples), 0)).where(table.c.dataset == dataset)
    ).scalar_one()
    return int(total)


def add_batch(
    engine: Engine,
    table: Table,
    dataset: str,
    payload: bytes,
    labels: np.ndarray,
    *,
    api_key_id: int,
    idempotency_key: str | None,
    **columns: Any,
) -> SampleUpload:
    """Store one upload batch (safetensors ``payload``, its ``labels`` counted) in one transaction.

    ``table`` is one of the per-batch tables (``sample_batches``, ``explanation_batches``);
    ``columns`` fills its own columns. A repeated ``idempotency_key`` (from the same API
    key) with the same bytes returns the first upload's record and stores nothing.

    Raises:
        ConflictError: The idempotency key was used before for different data.
    """
    digest = hashlib.sha256(payload).hexdigest()
    counts = json.dumps({str(k): v for k, v in sorted(Counter(labels.tolist()).items())})
    try:
        with engine.begin() as conn:
            batch_id = conn.execute(
                insert(table)
                .values(
                    dataset=dataset,
                    samples=len(labels),
                    label_counts=counts,
                    payload=payload,
                    payload_sha256=digest,
                    api_key_id=api_key_id,
                    idempotency_key=idempotency_key,
                    created_at=time.time(),
                    **columns,
                )
                .returning(table.c.id)
            ).scalar_one()
            total = _dataset_total(conn, table, dataset)
        return SampleUpload(batch_id=int(batch_id), added=len(labels), total=total, replayed=False)
    except IntegrityError:
        return _replayed(
            engine, table, dataset, digest, api_key_id=api_key_id, idempotency_key=idempotency_key, columns=columns
        )


def _replayed(
    engine: Engine,
    table: Table,
    dataset: str,
    digest: str,
    *,
    api_key_id: int,
    idempotency_key: str | None,
    columns: dict[str, Any],
) -> SampleUpload:
    with engine.connect() as conn:
        first = conn.execute(
            select(
                table.c.id, table.c.dataset, table.c.payload_sha256, table.c.samples, *map(table.c.get, columns)
            ).where(table.c.api_key_id == api_key_id, table.c.idempotency_key == idempotency_key)
        ).first()
        if first is None:  # pragma: no cover - the integrity error came from elsewhere
            raise ConflictError("the upload conflicts with stored data")
        same_columns = all(getattr(first, name) == value for name, value in columns.items())
        if first.payload_sha256 != digest or first.dataset != dataset or not same_columns:
            raise ConflictError(f"Idempotency-Key {idempotency_key!r} was already used for a different upload")
        total = _dataset_total(conn, table, dataset)
    return SampleUpload(batch_id=int(first.id), added=int(first.samples), total=total, replayed=True)


def batch_summary(engine: Engine, table: Table, dataset: str, *, what: str) -> DatasetSummary:
    """Items, upload batches and label counts of ``dataset`` in a per-batch table.

    Raises:
        NotFoundError: Nothing was collected under this name (``what`` names the kind).
    """
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.samples, table.c.label_counts).where(table.c.dataset == dataset)).all()
    if not rows:
        raise NotFoundError(f"no {what} collected in dataset {dataset!r}")
    labels: Counter[str] = Counter()
    for row in rows:
        labels.update({k: int(v) for k, v in json.loads(row.label_counts).items()})
    return DatasetSummary(
        dataset=dataset,
        samples=sum(int(r.samples) for r in rows),
        batches=len(rows),
        label_counts=dict(sorted(labels.items())),
    )


def load_batches(engine: Engine, table: Table, dataset: str, *, what: str) -> list[dict[str, np.ndarray]]:
    """Every stored batch of ``dataset``, decoded, in upload order.

    Raises:
        NotFoundError: Nothing was collected under this name.
    """
    with engine.connect() as conn:
        payloads = (
            conn.execute(select(table.c.payload).where(table.c.dataset == dataset).order_by(table.c.id)).scalars().all()
        )
    if not payloads:
        raise NotFoundError(f"no {what} collected in dataset {dataset!r}")
    return [decode_tensors(bytes(p)) for p in payloads]


class SampleStore(StorePart):
    """The ``sample_batches`` table."""

    def add_samples(
        self, dataset: str, features: np.ndarray, labels: np.ndarray, *, api_key_id: int, idempotency_key: str | None
    ) -> SampleUpload:
        """Store one labelled batch in one transaction (:func:`add_batch`).

        Raises:
            ConflictError: The idempotency key was used before for different data.
        """
        payload = encode_tensors({FEATURES_KEY: features, LABELS_KEY: labels})
        return add_batch(
            self.engine,
            sample_batches,
            dataset,
            payload,
            labels,
            api_key_id=api_key_id,
            idempotency_key=idempotency_key,
        )

    def dataset_summary(self, dataset: str) -> DatasetSummary:
        """Samples, batches and label counts of ``dataset``.

        Raises:
            NotFoundError: Nothing was collected under this name.
        """
        return batch_summary(self.engine, sample_batches, dataset, what="samples")

    def load_dataset(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """Every feature and label of ``dataset``, in upload order.

        Raises:
            NotFoundError: Nothing was collected under this name.
        """
        decoded = load_batches(self.engine, sample_batches, dataset, what="samples")
        return (np.concatenate([d[FEATURES_KEY] for d in decoded]), np.concatenate([d[LABELS_KEY] for d in decoded]))
