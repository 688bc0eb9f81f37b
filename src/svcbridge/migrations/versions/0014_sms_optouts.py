"""SMS opt-out register in the store: sms_optouts

Revision ID: 0014
Revises: 0013

Who said STOP was kept in a SQLite file in the data_dir of the replica that processed the message
(<data_dir>/sms-optout.db): another replica did not see it and sent the next SMS anyway. The
svcbridge_sms plugin imports such a file into this table on first use and renames it.
"""

import sqlalchemy as sa
from alembic import op

# the types as they are today, not imported from the app's schema (which moves on)
TS = sa.DateTime(timezone=True)

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_optouts",
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("word", sa.String(40), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sms_optouts")
