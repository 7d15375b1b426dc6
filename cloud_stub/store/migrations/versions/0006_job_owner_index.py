"""Index the key that queued each training job: the per-key bound on queued jobs reads by it.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_training_jobs_api_key_id", "training_jobs", ["api_key_id"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_api_key_id", table_name="training_jobs")
