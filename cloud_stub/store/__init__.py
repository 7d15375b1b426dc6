"""Persistent state of the cloud stub: API keys, samples, explanations, heads, jobs, uploaded models, verification data.

One SQLAlchemy Core schema (:mod:`~cloud_stub.store.schema`) on SQLite (the embedded
default, WAL mode) or PostgreSQL, kept current by Alembic migrations
(:mod:`~cloud_stub.store.database`). Every write is one transaction; uploads carry an
idempotency key so a retried request is stored once; tensors are stored as
safetensors bytes, never pickles. :class:`Store` joins one part per concept, each
returning the typed records of :mod:`~cloud_stub.store.rows`.
"""

from __future__ import annotations

from sqlalchemy import func, select

from cloud_stub.store.database import Database
from cloud_stub.store.explanations import ExplanationStore
from cloud_stub.store.heads import HeadStore
from cloud_stub.store.jobs import JOB_STATUSES, MAX_ATTEMPTS, JobStore
from cloud_stub.store.keys import KeyStore, hash_api_key
from cloud_stub.store.models import ModelStore
from cloud_stub.store.rows import (
    ApiKeyRow,
    DatasetSummary,
    HeadRow,
    JobRow,
    ModelListRow,
    ModelRow,
    SampleUpload,
    VerificationDatasetRow,
)
from cloud_stub.store.samples import SampleStore
from cloud_stub.store.schema import metadata
from cloud_stub.store.verification_datasets import VerificationDatasetStore

__all__ = [
    "JOB_STATUSES",
    "MAX_ATTEMPTS",
    "ApiKeyRow",
    "DatasetSummary",
    "HeadRow",
    "JobRow",
    "ModelListRow",
    "ModelRow",
    "SampleUpload",
    "Store",
    "VerificationDatasetRow",
    "hash_api_key",
]


class Store(
    Database, KeyStore, SampleStore, ExplanationStore, HeadStore, JobStore, ModelStore, VerificationDatasetStore
):
    """The service's database: every table, on one engine, migrated to the newest schema when opened.

    Args:
        url: SQLAlchemy URL, ``sqlite:///file.db`` or ``postgresql+psycopg://...``.

    Raises:
        StoreError: The URL is malformed, or the database cannot be opened or migrated.

    Example:
        >>> import tempfile
        >>> store = Store(f"sqlite:///{tempfile.mkdtemp()}/cloud.db")
        >>> key = store.create_api_key("device-1")
        >>> store.check_api_key(key) is not None, store.check_api_key("esk_wrong")
        (True, None)
    """

    def count_rows(self, table: str) -> int:
        """Rows in one of the service's tables (for operators' checks and tests)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one())
