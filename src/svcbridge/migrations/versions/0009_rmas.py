"""RMAs: faulty parts back to the vendor, per ticket (issue 16)

Revision ID: 0009
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
# numeric order (store/db.py head_revision() takes the highest number as the head): 0007 -> 0009 -> 0011
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rmas",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("vendor", sa.String(100), nullable=False),
        sa.Column("number", sa.String(100), nullable=True),
        sa.Column("state", sa.String(30), nullable=False),
        sa.Column("parts", sa.JSON, nullable=False),
        sa.Column("asset", sa.JSON, nullable=False),
        sa.Column("fault", sa.Text, nullable=True),
        sa.Column("carrier", sa.String(100), nullable=True),
        sa.Column("tracking", sa.String(100), nullable=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("source_key", sa.String(300), nullable=True, unique=True),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_rmas_ticket", "rmas", ["ticket_id"])
    op.create_index("ix_rmas_vendor_number", "rmas", ["vendor", "number"])


def downgrade() -> None:
    op.drop_index("ix_rmas_vendor_number", "rmas")
    op.drop_index("ix_rmas_ticket", "rmas")
    op.drop_table("rmas")
