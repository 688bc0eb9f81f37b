"""index finished outbox items by time, so the start-up seed of the auto-mail limiter reads only its window

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_done", "outbox", ["status", "done_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_done", table_name="outbox")
