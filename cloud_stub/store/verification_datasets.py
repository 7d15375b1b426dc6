"""Operators' own labelled images for verifying models of their tasks: stored as the uploaded ``.npz`` bytes."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from cloud_stub.errors import NotFoundError
from cloud_stub.store._base import StorePart, record
from cloud_stub.store.rows import VerificationDatasetRow
from cloud_stub.store.schema import verification_datasets

__all__ = ["VerificationDatasetStore"]

_LISTED = [c for c in verification_datasets.c if c.name not in ("payload", "api_key_id")]


class VerificationDatasetStore(StorePart):
    """The ``verification_datasets`` table."""

    def add_verification_dataset(
        self, payload: bytes, *, name: str, summary: dict[str, Any], api_key_id: int
    ) -> tuple[int, bool]:
        """Store a checked dataset; returns ``(id, replayed)``: the same bytes from the same key are stored once."""
        digest = hashlib.sha256(payload).hexdigest()
        try:
            with self.engine.begin() as conn:
                dataset_id = conn.execute(
                    insert(verification_datasets)
                    .values(
                        name=name,
                        sha256=digest,
                        size_bytes=len(payload),
                        payload=payload,
                        summary=json.dumps(summary),
                        api_key_id=api_key_id,
                        created_at=time.time(),
                    )
                    .returning(verification_datasets.c.id)
                ).scalar_one()
            return int(dataset_id), False
        except IntegrityError:
            with self.engine.connect() as conn:
                existing = conn.execute(
                    select(verification_datasets.c.id).where(
                        verification_datasets.c.api_key_id == api_key_id, verification_datasets.c.sha256 == digest
                    )
                ).scalar_one_or_none()
            if existing is None:  # pragma: no cover - the integrity error came from elsewhere
                raise
            return int(existing), True

    def verification_dataset(self, dataset_id: int, *, api_key_id: int | None = None) -> VerificationDatasetRow:
        """A registered dataset's record; with ``api_key_id``, only if that key registered it.

        Raises:
            NotFoundError: No such dataset (for that key).
        """
        query = select(*_LISTED).where(verification_datasets.c.id == dataset_id)
        if api_key_id is not None:
            query = query.where(verification_datasets.c.api_key_id == api_key_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f"no verification dataset {dataset_id}")
        return record(VerificationDatasetRow, row, summary=json.loads(row.summary))

    def verification_dataset_payload(self, dataset_id: int) -> bytes:
        """The registered ``.npz`` bytes.

        Raises:
            NotFoundError: No such dataset.
        """
        with self.engine.connect() as conn:
            data = conn.execute(
                select(verification_datasets.c.payload).where(verification_datasets.c.id == dataset_id)
            ).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no verification dataset {dataset_id}")
        return bytes(data)

    def list_verification_datasets(self, *, api_key_id: int) -> list[VerificationDatasetRow]:
        """The datasets one key registered, oldest first."""
        query = select(*_LISTED).where(verification_datasets.c.api_key_id == api_key_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(verification_datasets.c.id))
            return [record(VerificationDatasetRow, r, summary=json.loads(r.summary)) for r in rows]
