"""Uploaded ONNX models and their verification: stored as bytes, never executed here."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud_stub.errors import ConflictError, NotFoundError
from cloud_stub.store._base import StorePart, record
from cloud_stub.store.jobs import MAX_ATTEMPTS
from cloud_stub.store.rows import ModelListRow, ModelRow
from cloud_stub.store.schema import uploaded_models

__all__ = ["ModelStore"]


class ModelStore(StorePart):
    """The ``uploaded_models`` table."""

    def add_model(
        self,
        onnx_bytes: bytes,
        *,
        name: str,
        task: str,
        summary: dict[str, Any],
        api_key_id: int,
        idempotency_key: str | None,
    ) -> tuple[int, bool]:
        """Store an uploaded ONNX model as ``unverified``; returns ``(id, replayed)``.

        Raises:
            ConflictError: The idempotency key was used before for another model.
        """
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        try:
            with self.engine.begin() as conn:
                model_id = conn.execute(
                    insert(uploaded_models)
                    .values(
                        name=name,
                        task=task,
                        sha256=digest,
                        size_bytes=len(onnx_bytes),
                        onnx=onnx_bytes,
                        summary=json.dumps(summary),
                        status="unverified",
                        api_key_id=api_key_id,
                        idempotency_key=idempotency_key,
                        created_at=time.time(),
                    )
                    .returning(uploaded_models.c.id)
                ).scalar_one()
            return int(model_id), False
        except IntegrityError:
            first = self.replayed_model(onnx_bytes, task=task, api_key_id=api_key_id, idempotency_key=idempotency_key)
            if first is None:  # pragma: no cover - the integrity error came from elsewhere
                raise
            return first, True

    def replayed_model(
        self, onnx_bytes: bytes, *, task: str, api_key_id: int, idempotency_key: str | None
    ) -> int | None:
        """The id of the model this key already stored under this idempotency key, if any.

        Raises:
            ConflictError: The idempotency key was used before for another model or task.
        """
        if idempotency_key is None:
            return None
        with self.engine.connect() as conn:
            first = conn.execute(
                select(uploaded_models.c.id, uploaded_models.c.sha256, uploaded_models.c.task).where(
                    uploaded_models.c.api_key_id == api_key_id,
                    uploaded_models.c.idempotency_key == idempotency_key,
                )
            ).first()
        if first is None:
            return None
        if first.sha256 != hashlib.sha256(onnx_bytes).hexdigest() or first.task != task:
            raise ConflictError(f"Idempotency-Key {idempotency_key!r} was already used for a different model")
        return int(first.id)

    def model(self, model_id: int) -> ModelRow:
        """An uploaded model's record (without the ONNX bytes).

        Raises:
            NotFoundError: No such model.
        """
        columns = [c for c in uploaded_models.c if c.name not in ("onnx", "idempotency_key")]
        with self.engine.connect() as conn:
            row = conn.execute(select(*columns).where(uploaded_models.c.id == model_id)).first()
        if row is None:
            raise NotFoundError(f"no uploaded model {model_id}")
        report = None if row.report is None else json.loads(row.report)
        return record(ModelRow, row, summary=json.loads(row.summary), report=report)

    def model_onnx(self, model_id: int) -> bytes:
        """The uploaded ONNX bytes.

        Raises:
            NotFoundError: No such model.
        """
        with self.engine.connect() as conn:
            data = conn.execute(
                select(uploaded_models.c.onnx).where(uploaded_models.c.id == model_id)
            ).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no uploaded model {model_id}")
        return bytes(data)

    def model_counts(self, api_key_id: int) -> tuple[int, int]:
        """A key's uploads: ``(stored, waiting)``, waiting meaning not verified yet (unverified or verifying)."""
        owned = uploaded_models.c.api_key_id == api_key_id
        waiting = uploaded_models.c.status.in_(("unverified", "verifying"))
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.count().filter(waiting)).select_from(uploaded_models).where(owned)
            ).one()
        return int(row[0]), int(row[1])

    def models_to_verify(self) -> list[int]:
        """Uploads not verified yet, oldest first, including ones a stop interrupted.

        One whose verification was interrupted for the :data:`MAX_ATTEMPTS`-th time is
        marked failed instead, with the reason in its report.
        """
        reason = {"error": f"the service stopped while verifying this model, {MAX_ATTEMPTS} times; not started again"}
        with self.engine.begin() as conn:
            conn.execute(
                update(uploaded_models)
                .where(uploaded_models.c.status == "verifying", uploaded_models.c.attempts >= MAX_ATTEMPTS)
                .values(status="failed", report=json.dumps(reason))
            )
            conn.execute(
                update(uploaded_models).where(uploaded_models.c.status == "verifying").values(status="unverified")
            )
            ids = conn.execute(
                select(uploaded_models.c.id)
                .where(uploaded_models.c.status == "unverified")
                .order_by(uploaded_models.c.id)
            ).scalars()
            return [int(i) for i in ids]

    def claim_model(self, model_id: int) -> bool:
        """Mark an unverified upload as being verified and count the attempt; ``False`` if someone else has it."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(uploaded_models)
                .where(uploaded_models.c.id == model_id, uploaded_models.c.status == "unverified")
                .values(status="verifying", attempts=uploaded_models.c.attempts + 1)
            ).rowcount
        return bool(claimed)

    def set_model_report(self, model_id: int, *, status: str, report: dict[str, Any]) -> None:
        """Record a verification's outcome (``verified`` or ``failed``) and its report."""
        if status not in ("verified", "failed"):
            raise ValueError(f"unknown model status {status!r}")
        with self.engine.begin() as conn:
            conn.execute(
                update(uploaded_models)
                .where(uploaded_models.c.id == model_id)
                .values(status=status, report=json.dumps(report))
            )

    def list_models(self) -> list[ModelListRow]:
        """Every uploaded model's id, name, task, status and size, oldest first."""
        columns = [uploaded_models.c[n] for n in ("id", "name", "task", "sha256", "size_bytes", "status", "created_at")]
        with self.engine.connect() as conn:
            return [record(ModelListRow, r) for r in conn.execute(select(*columns).order_by(uploaded_models.c.id))]
