"""Explanations devices upload with their predictions, kept per upload batch like features.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "explanation_batches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("label_counts", sa.Text, nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("api_key_id", "idempotency_key", name="uq_explanations_idempotency"),
    )
    op.create_index("ix_explanation_batches_dataset", "explanation_batches", ["dataset"])


def downgrade() -> None:
    op.drop_index("ix_explanation_batches_dataset", table_name="explanation_batches")
    op.drop_table("explanation_batches")
