"""blob store: journal size / blob_parts / purged_at, erasures; bytes moved out of the rows

Revision ID: 0012
Revises: 0011

Raw messages and attachment bytes move into the content-addressed blob store (store/blobs.py) when
the process running the migration has one (``svcbridge run`` and ``svcbridge db upgrade`` pass it);
otherwise the rows keep them, stay readable, and ``svcbridge store move-blobs`` moves them later.
"""

import sqlalchemy as sa
from alembic import context, op

# the types as they are today, not imported from the app's schema (which moves on)
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal") as b:
        b.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("blob_parts", sa.Text(), nullable=True))
        b.add_column(sa.Column("purged_at", TS, nullable=True))
    op.create_table(
        "erasures",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
    )
    blobs = context.config.attributes.get("blobs")
    if blobs is not None:
        from svcbridge.store.blobmove import move_out

        meta = sa.MetaData()
        journal = sa.Table(
            "journal",
            meta,
            sa.Column("id", Id, primary_key=True),
            sa.Column("raw", sa.LargeBinary),
            sa.Column("content_hash", sa.String(64)),
            sa.Column("blob_ref", sa.String(500)),
            sa.Column("size", sa.BigInteger),
            sa.Column("blob_parts", sa.Text),
        )
        attachments = sa.Table(
            "attachments",
            meta,
            sa.Column("id", Id, primary_key=True),
            sa.Column("sha256", sa.String(64)),
            sa.Column("data", sa.LargeBinary),
        )
        move_out(op.get_bind(), blobs, journal, attachments)


def downgrade() -> None:
    # bytes already in the blob store stay there: a downgraded store reads them with 0012's code only
    op.drop_table("erasures")
    with op.batch_alter_table("journal") as b:
        b.drop_column("purged_at")
        b.drop_column("blob_parts")
        b.drop_column("size")
