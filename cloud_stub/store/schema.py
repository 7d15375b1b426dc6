"""The cloud stub's tables (SQLAlchemy Core), as the newest migration leaves them.

Changing a table here needs a migration in ``migrations/versions/``;
``tests/test_cloud_migrations.py`` checks that the two agree.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint

__all__ = [
    "api_keys",
    "explanation_batches",
    "heads",
    "metadata",
    "sample_batches",
    "service_state",
    "training_jobs",
    "uploaded_models",
    "verification_datasets",
]

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
explanation_batches = Table(
    "explanation_batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("dataset", String(64), nullable=False, index=True),
    Column("samples", Integer, nullable=False),
    Column("label_counts", Text, nullable=False),  # of the predicted classes the maps explain
    Column("method", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("idempotency_key", String(128)),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("api_key_id", "idempotency_key", name="uq_explanations_idempotency"),
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
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("api_key_id", Integer, ForeignKey("api_keys.id", name="fk_training_jobs_api_key"), index=True),
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
    Column("attempts", Integer, nullable=False, server_default="0"),
    UniqueConstraint("api_key_id", "idempotency_key", name="uq_models_idempotency"),
)
verification_datasets = Table(
    "verification_datasets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("summary", Text, nullable=False),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("api_key_id", "sha256", name="uq_verification_datasets_content"),
)
service_state = Table(
    "service_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
