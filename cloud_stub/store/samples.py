"""Collected labelled crafted features, stored per upload batch as safetensors bytes."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter

import numpy as np
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from cloud_stub.errors import ConflictError, NotFoundError
from cloud_stub.store._base import StorePart
from cloud_stub.store.rows import DatasetSummary, SampleUpload
from cloud_stub.store.schema import sample_batches
from edge_sdk.client.payloads import FEATURES_KEY, LABELS_KEY, decode_tensors, encode_tensors

__all__ = ["SampleStore"]


def _dataset_total(conn: Connection, dataset: str) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(sample_batches.c.samples), 0)).where(sample_batches.c.dataset == dataset)
    ).scalar_one()
    return int(total)


class SampleStore(StorePart):
    """The ``sample_batches`` table."""

    def add_samples(
        self, dataset: str, features: np.ndarray, labels: np.ndarray, *, api_key_id: int, idempotency_key: str | None
    ) -> SampleUpload:
        """Store one labelled batch in one transaction.

        A repeated ``idempotency_key`` (from the same API key) with the same bytes
        returns the first upload's record and stores nothing.

        Raises:
            ConflictError: The idempotency key was used before for different data.
        """
        payload = encode_tensors({FEATURES_KEY: features, LABELS_KEY: labels})
        digest = hashlib.sha256(payload).hexdigest()
        counts = json.dumps({str(k): v for k, v in sorted(Counter(labels.tolist()).items())})
        try:
            with self.engine.begin() as conn:
                batch_id = conn.execute(
                    insert(sample_batches)
                    .values(
                        dataset=dataset,
                        samples=len(labels),
                        label_counts=counts,
                        payload=payload,
                        payload_sha256=digest,
                        api_key_id=api_key_id,
                        idempotency_key=idempotency_key,
                        created_at=time.time(),
                    )
                    .returning(sample_batches.c.id)
                ).scalar_one()
                total = _dataset_total(conn, dataset)
            return SampleUpload(batch_id=int(batch_id), added=len(labels), total=total, replayed=False)
        except IntegrityError:
            return self._replayed_samples(dataset, digest, api_key_id=api_key_id, idempotency_key=idempotency_key)

    def _replayed_samples(
        self, dataset: str, digest: str, *, api_key_id: int, idempotency_key: str | None
    ) -> SampleUpload:
        with self.engine.connect() as conn:
            first = conn.execute(
                select(
                    sample_batches.c.id,
                    sample_batches.c.dataset,
                    sample_batches.c.payload_sha256,
                    sample_batches.c.samples,
                ).where(sample_batches.c.api_key_id == api_key_id, sample_batches.c.idempotency_key == idempotency_key)
            ).first()
            if first is None:  # pragma: no cover - the integrity error came from elsewhere
                raise ConflictError("the upload conflicts with stored data")
            if first.payload_sha256 != digest or first.dataset != dataset:
                raise ConflictError(f"Idempotency-Key {idempotency_key!r} was already used for a different upload")
            total = _dataset_total(conn, dataset)
        return SampleUpload(batch_id=int(first.id), added=int(first.samples), total=total, replayed=True)

    def dataset_summary(self, dataset: str) -> DatasetSummary:
        """Samples, batches and label counts of ``dataset``.

        Raises:
            NotFoundError: Nothing was collected under this name.
        """
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sample_batches.c.samples, sample_batches.c.label_counts).where(
                    sample_batches.c.dataset == dataset
                )
            ).all()
        if not rows:
            raise NotFoundError(f"no samples collected in dataset {dataset!r}")
        labels: Counter[str] = Counter()
        for row in rows:
            labels.update({k: int(v) for k, v in json.loads(row.label_counts).items()})
        return DatasetSummary(
            dataset=dataset,
            samples=sum(int(r.samples) for r in rows),
            batches=len(rows),
            label_counts=dict(sorted(labels.items())),
        )

    def load_dataset(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """Every feature and label of ``dataset``, in upload order.

        Raises:
            NotFoundError: Nothing was collected under this name.
        """
        with self.engine.connect() as conn:
            payloads = (
                conn.execute(
                    select(sample_batches.c.payload)
                    .where(sample_batches.c.dataset == dataset)
                    .order_by(sample_batches.c.id)
                )
                .scalars()
                .all()
            )
        if not payloads:
            raise NotFoundError(f"no samples collected in dataset {dataset!r}")
        decoded = [decode_tensors(bytes(p)) for p in payloads]
        return (np.concatenate([d[FEATURES_KEY] for d in decoded]), np.concatenate([d[LABELS_KEY] for d in decoded]))
