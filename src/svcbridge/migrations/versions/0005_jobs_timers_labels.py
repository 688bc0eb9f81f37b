"""durable jobs and timers; a ticket's labels and fault category

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

# the types as they are today, not imported from the app's schema (which moves on)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as b:
        b.add_column(sa.Column("labels", sa.JSON(), nullable=False, server_default="{}"))
        b.add_column(sa.Column("category", sa.String(100), nullable=True))
    op.create_table(
        "jobs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claimed_until", TS, nullable=True),
        sa.UniqueConstraint("kind", "key", name="uq_jobs_kind_key"),
    )
    op.create_index("ix_jobs_due", "jobs", ["status", "next_attempt_at"])
    op.create_index("ix_jobs_ticket", "jobs", ["ticket_id"])
    op.create_table(
        "timers",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("fired_at", TS, nullable=True),
        sa.Column("late_s", sa.Float(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claimed_until", TS, nullable=True),
        sa.UniqueConstraint("scope", "name", name="uq_timers_scope_name"),
    )
    op.create_index("ix_timers_due", "timers", ["status", "next_attempt_at"])
    op.create_index("ix_timers_ticket", "timers", ["ticket_id"])


def downgrade() -> None:
    op.drop_table("timers")
    op.drop_table("jobs")
    with op.batch_alter_table("tickets") as b:
        b.drop_column("category")
        b.drop_column("labels")
