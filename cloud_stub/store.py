"""Persistent state of the cloud stub: API keys, collected samples, heads, jobs, uploaded models.

One SQLAlchemy Core schema on SQLite (the embedded default, WAL mode) or PostgreSQL.
Every write is one transaction; uploads carry an idempotency key so a retried
request is stored once; tensors are stored as safetensors bytes, never pickles.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Column,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from cloud_stub.errors import ConflictError, NotFoundError, StoreError
from edge_sdk.client.payloads import FEATURES_KEY, LABELS_KEY, decode_tensors, encode_tensors

__all__ = ["JOB_STATUSES", "SampleUpload", "Store", "hash_api_key"]

JOB_STATUSES = ("queued", "running", "succeeded", "failed")
_KEY_PREFIX = "esk_"

metadata = MetaData()
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)
sample_batches = Table(
    "sample_batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dataset", String(64), nullable=False, index=True),
    Column("samples", Integer, nullable=False),
    Column("label_counts", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("idempotency_key", String(128)),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("api_key_id", "idempotency_key", name="uq_samples_idempotency"),
)
heads = Table(
    "heads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(16), nullable=False),
    Column("dataset", String(64)),
    Column("state", LargeBinary, nullable=False),
    Column("val_accuracy", Float),
    Column("train_samples", Integer),
    Column("val_samples", Integer),
    Column("job_id", Integer),
    Column("created_at", Float, nullable=False),
)
training_jobs = Table(
    "training_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dataset", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", Text, nullable=False),
    Column("error", Text),
    Column("head_id", Integer),
    Column("val_accuracy", Float),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
)
uploaded_models = Table(
    "uploaded_models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("task", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("onnx", LargeBinary, nullable=False),
    Column("summary", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("report", Text),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("idempotency_key", String(128)),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("api_key_id", "idempotency_key", name="uq_models_idempotency"),
)
service_state = Table(
    "service_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def hash_api_key(key: str) -> str:
    """SHA-256 of a key: what is stored (keys are 256-bit random, so a fast hash suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class SampleUpload:
    """Result of storing one batch of labelled features."""

    batch_id: int
    added: int
    total: int
    replayed: bool


def _row(mapping: Any) -> dict[str, Any]:
    return dict(mapping._mapping)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run while one writer commits; busy_timeout makes concurrent
    # writers wait for the lock instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """The service's database.

    Args:
        url: SQLAlchemy URL, ``sqlite:///file.db`` or ``postgresql+psycopg://...``.

    Raises:
        StoreError: The URL is malformed or the database cannot be opened.

    Example:
        >>> import tempfile, os
        >>> store = Store(f"sqlite:///{tempfile.mkdtemp()}/cloud.db")
        >>> key = store.create_api_key("device-1")
        >>> store.check_api_key(key) is not None, store.check_api_key("esk_wrong")
        (True, None)
    """

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"not a database URL: {url!r}") from exc
        if parsed.get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"database must be sqlite or postgresql, got {parsed.get_backend_name()!r}")
        self.url = parsed
        options: dict[str, Any] = {"pool_pre_ping": True}
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise StoreError("use a file for SQLite (sqlite:///path.db): an in-memory database is lost on restart")
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        try:
            self.engine: Engine = create_engine(parsed, **options)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            metadata.create_all(self.engine)
        except (OperationalError, ImportError) as exc:
            raise StoreError(f"cannot open database {parsed.render_as_string(hide_password=True)}: {exc}") from exc

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.url.get_backend_name()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- API keys -------------------------------------------------------------------------------
    def create_api_key(self, name: str) -> str:
        """Issue a new key for ``name``; the key is returned once and only its hash is stored.

        Raises:
            ConflictError: A key with this name exists.
        """
        key = _KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(api_keys).values(name=name, key_hash=hash_api_key(key), created_at=time.time()))
        except IntegrityError as exc:
            raise ConflictError(f"an API key named {name!r} exists; revoke it or choose another name") from exc
        return key

    def check_api_key(self, key: str) -> int | None:
        """The key's id if it is valid and not revoked, else ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.id).where(api_keys.c.key_hash == hash_api_key(key), api_keys.c.revoked_at.is_(None))
            ).first()
        return None if row is None else int(row.id)

    def revoke_api_key(self, name: str) -> None:
        """Revoke the key named ``name``.

        Raises:
            NotFoundError: No active key has this name.
        """
        with self.engine.begin() as conn:
            done = conn.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            ).rowcount
        if not done:
            raise NotFoundError(f"no active API key named {name!r}")

    def list_api_keys(self) -> list[dict[str, Any]]:
        """Names and dates of every key (never the hashes)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at).order_by(
                    api_keys.c.id
                )
            ).all()
        return [_row(r) for r in rows]

    # --- collected samples ----------------------------------------------------------------------
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
                total = self._dataset_total(conn, dataset)
            return SampleUpload(batch_id=int(batch_id), added=len(labels), total=total, replayed=False)
        except IntegrityError:
            with self.engine.connect() as conn:
                first = conn.execute(
                    select(
                        sample_batches.c.id,
                        sample_batches.c.dataset,
                        sample_batches.c.payload_sha256,
                        sample_batches.c.samples,
                    ).where(
                        sample_batches.c.api_key_id == api_key_id,
                        sample_batches.c.idempotency_key == idempotency_key,
                    )
                ).first()
                if first is None:  # pragma: no cover - the integrity error came from elsewhere
                    raise
                if first.payload_sha256 != digest or first.dataset != dataset:
                    raise ConflictError(
                        f"Idempotency-Key {idempotency_key!r} was already used for a different upload"
                    ) from None
                total = self._dataset_total(conn, dataset)
            return SampleUpload(batch_id=int(first.id), added=int(first.samples), total=total, replayed=True)

    @staticmethod
    def _dataset_total(conn: Connection, dataset: str) -> int:
        total = conn.execute(
            select(func.coalesce(func.sum(sample_batches.c.samples), 0)).where(sample_batches.c.dataset == dataset)
        ).scalar_one()
        return int(total)

    def dataset_summary(self, dataset: str) -> dict[str, Any]:
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
        return {
            "dataset": dataset,
            "samples": sum(int(r.samples) for r in rows),
            "batches": len(rows),
            "label_counts": dict(sorted(labels.items())),
        }

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

    def count_rows(self, table: str) -> int:
        """Rows in one of the service's tables (for operators' checks and tests)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())

    # --- heads ----------------------------------------------------------------------------------
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
        with self.engine.begin() as conn:
            head_id = int(
                conn.execute(
                    insert(heads)
                    .values(
                        source=source,
                        dataset=dataset,
                        state=state,
                        val_accuracy=val_accuracy,
                        train_samples=train_samples,
                        val_samples=val_samples,
                        job_id=job_id,
                        created_at=time.time(),
                    )
                    .returning(heads.c.id)
                ).scalar_one()
            )
            if activate:
                self._set_state(conn, "active_head_id", str(head_id))
        return head_id

    def head_state(self, head_id: int) -> bytes:
        """Weights of a stored head.

        Raises:
            NotFoundError: No such head.
        """
        return self._blob(heads.c.state, heads.c.id, head_id, what="head")

    def list_heads(self) -> list[dict[str, Any]]:
        """Every stored head without its weights, oldest first."""
        cols = [c for c in heads.c if c.name != "state"]
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(select(*cols).order_by(heads.c.id)).all()]

    def active_head_id(self) -> int | None:
        """Id of the served head, ``None`` before the first start."""
        value = self.service_value("active_head_id")
        return None if value is None else int(value)

    def set_active_head(self, head_id: int) -> None:
        """Serve ``head_id`` from now on (and after a restart)."""
        with self.engine.begin() as conn:
            self._set_state(conn, "active_head_id", str(head_id))

    def service_value(self, key: str) -> str | None:
        """A value of the service's own key-value table."""
        with self.engine.connect() as conn:
            value = conn.execute(select(service_state.c.value).where(service_state.c.key == key)).scalar_one_or_none()
        return None if value is None else str(value)

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
                self._set_state(conn, "active_head_id", str(head_id))
            return head_id
        except IntegrityError:
            active = self.active_head_id()
            assert active is not None  # the conflicting row was committed
            return active

    def set_service_value(self, key: str, value: str) -> None:
        """Set a value of the service's own key-value table."""
        with self.engine.begin() as conn:
            self._set_state(conn, key, value)

    @staticmethod
    def _set_state(conn: Connection, key: str, value: str) -> None:
        if conn.execute(update(service_state).where(service_state.c.key == key).values(value=value)).rowcount == 0:
            conn.execute(insert(service_state).values(key=key, value=value))

    # --- training jobs --------------------------------------------------------------------------
    def create_job(self, dataset: str, params: dict[str, Any]) -> int:
        """Queue a head-training job."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    insert(training_jobs)
                    .values(dataset=dataset, status="queued", params=json.dumps(params), created_at=time.time())
                    .returning(training_jobs.c.id)
                ).scalar_one()
            )

    def job(self, job_id: int) -> dict[str, Any]:
        """A job's record, ``params`` decoded.

        Raises:
            NotFoundError: No such job.
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(training_jobs).where(training_jobs.c.id == job_id)).first()
        if row is None:
            raise NotFoundError(f"no training job {job_id}")
        record = _row(row)
        record["params"] = json.loads(record["params"])
        return record

    def update_job(self, job_id: int, **values: Any) -> None:
        """Set fields of a job (status, error, head_id, timestamps)."""
        if "status" in values and values["status"] not in JOB_STATUSES:
            raise ValueError(f"unknown job status {values['status']!r}")
        with self.engine.begin() as conn:
            conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(**values))

    def claim_job(self, job_id: int) -> bool:
        """Mark a queued job running; ``False`` if another worker (replica) claimed it first."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(training_jobs)
                .where(training_jobs.c.id == job_id, training_jobs.c.status == "queued")
                .values(status="running", started_at=time.time())
            ).rowcount
        return bool(claimed)

    def unfinished_jobs(self) -> list[int]:
        """Jobs queued or running (to resume after a restart), oldest first."""
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(training_jobs.c.id)
                .where(training_jobs.c.status.in_(("queued", "running")))
                .order_by(training_jobs.c.id)
            ).scalars()
            return [int(i) for i in ids]

    # --- uploaded models ------------------------------------------------------------------------
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
            with self.engine.connect() as conn:
                first = conn.execute(
                    select(uploaded_models.c.id, uploaded_models.c.sha256, uploaded_models.c.task).where(
                        uploaded_models.c.api_key_id == api_key_id,
                        uploaded_models.c.idempotency_key == idempotency_key,
                    )
                ).first()
            if first is None:  # pragma: no cover - the integrity error came from elsewhere
                raise
            if first.sha256 != digest or first.task != task:
                raise ConflictError(
                    f"Idempotency-Key {idempotency_key!r} was already used for a different model"
                ) from None
            return int(first.id), True

    def model(self, model_id: int) -> dict[str, Any]:
        """An uploaded model's record (without the ONNX bytes), JSON fields decoded.

        Raises:
            NotFoundError: No such model.
        """
        cols = [c for c in uploaded_models.c if c.name not in ("onnx", "idempotency_key")]
        with self.engine.connect() as conn:
            row = conn.execute(select(*cols).where(uploaded_models.c.id == model_id)).first()
        if row is None:
            raise NotFoundError(f"no uploaded model {model_id}")
        record = _row(row)
        record["summary"] = json.loads(record["summary"])
        record["report"] = None if record["report"] is None else json.loads(record["report"])
        return record

    def model_onnx(self, model_id: int) -> bytes:
        """The uploaded ONNX bytes.

        Raises:
            NotFoundError: No such model.
        """
        return self._blob(uploaded_models.c.onnx, uploaded_models.c.id, model_id, what="uploaded model")

    def _blob(self, column: Any, id_column: Any, ident: int, *, what: str) -> bytes:
        with self.engine.connect() as conn:
            data = conn.execute(select(column).where(id_column == ident)).scalar_one_or_none()
        if data is None:
            raise NotFoundError(f"no {what} {ident}")
        return bytes(data)

    def models_to_verify(self) -> list[int]:
        """Uploads not verified yet (including ones a stop interrupted), oldest first."""
        with self.engine.begin() as conn:
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
        """Mark an unverified upload as being verified; ``False`` if someone else has it."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(uploaded_models)
                .where(uploaded_models.c.id == model_id, uploaded_models.c.status == "unverified")
                .values(status="verifying")
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

    def list_models(self) -> list[dict[str, Any]]:
        """Every uploaded model's id, name, task, status and size, oldest first."""
        cols = [uploaded_models.c[n] for n in ("id", "name", "task", "sha256", "size_bytes", "status", "created_at")]
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(select(*cols).order_by(uploaded_models.c.id)).all()]
