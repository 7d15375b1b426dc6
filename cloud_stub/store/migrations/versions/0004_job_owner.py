"""Record which key queued each training job, so that a key's queued work can be bounded.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        # Jobs queued before this revision have no owner (NULL).
        batch.add_column(sa.Column("api_key_id", sa.Integer, nullable=True))
        batch.create_foreign_key("fk_training_jobs_api_key", "api_keys", ["api_key_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_constraint("fk_training_jobs_api_key", type_="foreignkey")
        batch.drop_column("api_key_id")
