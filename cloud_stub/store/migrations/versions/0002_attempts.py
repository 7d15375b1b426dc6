"""Count the starts of each training job and verification, so that one that keeps failing is not retried forever.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("training_jobs", "uploaded_models"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("training_jobs", "uploaded_models"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("attempts")
