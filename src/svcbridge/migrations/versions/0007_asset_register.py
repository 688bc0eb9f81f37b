"""asset register: assets, asset_parts, asset_exclusions, asset_answers (issue 14)

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
# numeric order (store/db.py head_revision() takes the highest number as the head): 0006 -> 0007 -> 0011
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("vendor", sa.String(100), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("model_key", sa.String(200), nullable=True),
        sa.Column("product_line", sa.String(100), nullable=True),
        sa.Column("customer", sa.String(300), nullable=True),
        sa.Column("site", sa.String(300), nullable=True),
        sa.Column("region", sa.String(100), nullable=True),
        sa.Column("contract", sa.String(100), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("invoice_date", sa.Date, nullable=True),
        sa.Column("production_date", sa.Date, nullable=True),
        sa.Column("contacts", sa.JSON, nullable=False),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_assets_model_key", "assets", ["model_key"])
    op.create_index("ix_assets_customer", "assets", ["customer"])
    op.create_table(
        "asset_parts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("serial", sa.String(64), sa.ForeignKey("assets.serial"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("category", sa.String(50), nullable=False),
        sa.Column("part_number", sa.String(100), nullable=False),
        sa.Column("part_serial", sa.String(100), nullable=True),
        sa.Column("installed", sa.Date, nullable=True),
        sa.Column("replaced_from", sa.String(100), nullable=True),
        sa.Column("paid_repair", sa.Boolean, nullable=False),
    )
    op.create_index("ix_asset_parts_serial", "asset_parts", ["serial", "position"])
    op.create_table(
        "asset_exclusions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("serial", sa.String(64), sa.ForeignKey("assets.serial"), nullable=False),
        sa.Column("part", sa.String(50), nullable=True),
        sa.Column("reason", sa.String(50), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("ticket_ref", sa.String(40), nullable=True),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_asset_exclusions_serial", "asset_exclusions", ["serial"])
    op.create_table(
        "asset_answers",
        sa.Column("system", sa.String(100), primary_key=True),
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("asset_answers")
    op.drop_index("ix_asset_exclusions_serial", "asset_exclusions")
    op.drop_table("asset_exclusions")
    op.drop_index("ix_asset_parts_serial", "asset_parts")
    op.drop_table("asset_parts")
    op.drop_index("ix_assets_customer", "assets")
    op.drop_index("ix_assets_model_key", "assets")
    op.drop_table("assets")
