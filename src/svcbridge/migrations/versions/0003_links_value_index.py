"""index links by value alone, so a batch looks up all its candidate links in one query

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_links_value", "links", ["value"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_links_value", table_name="links")
