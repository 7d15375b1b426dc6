"""Stored heads, which one is served, and the service's own key-value state."""

from __future__ import annotations

import time

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud_stub.errors import NotFoundError
from cloud_stub.store._base import StorePart, record
from cloud_stub.store.rows import HeadRow
from cloud_stub.store.schema import heads, service_state

__all__ = ["HeadStore"]


def _set_state(conn: Connection, key: str, value: str) -> None:
    if conn.execute(update(service_state).where(service_state.c.key == key).values(value=value)).rowcount == 0:
        conn.execute(insert(service_state).values(key=key, value=value))


class HeadStore(StorePart):
    """The ``heads`` and ``service_state`` tables."""

    def add_head(
        self,
        state: bytes,
        *,
        source: str,
        dataset: str | None = None,
        val_accuracy: float | None = None,
        train_samples: int | None = None,
        val_samples: int | None = None,
        job_id: int | None = None,
        activate: bool = False,
    ) -> int:
        """Store a head's weights (safetensors bytes); optionally make it the served head."""
        values = {
            "source": source,
            "dataset": dataset,
            "state": state,
            "val_accuracy": val_accuracy,
            "train_samples": train_samples,
            "val_samples": val_samples,
            "job_id": job_id,
        }
        with self.engine.begin() as conn:
            head_id = int(
                conn.execute(insert(heads).values(**values, created_at=time.time()).returning(heads.c.id)).scalar_one()
            )
            if activate:
                _set_state(conn, "active_head_id", str(head_id))
        return head_id

    def head_state(self, head_id: int) -> bytes:
        """Weights of a stored head.

        Raises:
            NotFoundError: No such head.
        """
        with self.engine.connect() as conn:
            data = conn.execute(select(heads.c.state).where(heads.c.id == head_id)).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no head {head_id}")
        return bytes(data)

    def list_heads(self) -> list[HeadRow]:
        """Every stored head without its weights, oldest first."""
        columns = [c for c in heads.c if c.name != "state"]
        with self.engine.connect() as conn:
            return [record(HeadRow, r) for r in conn.execute(select(*columns).order_by(heads.c.id)).all()]

    def active_head_id(self) -> int | None:
        """Id of the served head, ``None`` before the first start."""
        value = self.service_value("active_head_id")
        return None if value is None else int(value)

    def set_active_head(self, head_id: int) -> None:
        """Serve ``head_id`` from now on (and after a restart)."""
        self.set_service_value("active_head_id", str(head_id))

    def initial_head(self, state: bytes) -> int:
        """Store the kit's head and serve it, unless a head is already served; return the served id.

        The active-head row is created in the same transaction as the head, so two
        replicas starting together on an empty database store one head, not two.
        """
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(service_state).values(key="active_head_id", value="0"))
                head_id = int(
                    conn.execute(
                        insert(heads).values(source="kit", state=state, created_at=time.time()).returning(heads.c.id)
                    ).scalar_one()
                )
                _set_state(conn, "active_head_id", str(head_id))
            return head_id
        except IntegrityError:
            active = self.active_head_id()
            assert active is not None  # the conflicting row was committed
            return active

    def service_value(self, key: str) -> str | None:
        """A value of the service's own key-value table."""
        with self.engine.connect() as conn:
            value = conn.execute(select(service_state.c.value).where(service_state.c.key == key)).scalar_one_or_none()
        return None if value is None else str(value)

    def set_service_value(self, key: str, value: str) -> None:
        """Set a value of the service's own key-value table."""
        with self.engine.begin() as conn:
            _set_state(conn, key, value)

    def setdefault_service_value(self, key: str, value: str) -> str:
        """Set ``key`` unless it is set; return the stored value (safe when replicas race)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(service_state).values(key=key, value=value))
            return value
        except IntegrityError:
            stored = self.service_value(key)
            assert stored is not None  # the conflicting row was committed
            return stored
