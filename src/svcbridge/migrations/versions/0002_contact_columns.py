"""indexed contact e-mail and phone on tickets

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
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.add_column(sa.Column("contact_email", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("contact_phone", sa.String(length=32), nullable=True))
        batch_op.create_index("ix_tickets_contact_email", ["contact_email"], unique=False)
        batch_op.create_index("ix_tickets_contact_phone", ["contact_phone"], unique=False)
    # backfill from the JSON copy
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, contact FROM tickets")).fetchall()
    import json

    for tid, contact in rows:
        c = json.loads(contact) if isinstance(contact, str) else (contact or {})
        conn.execute(
            sa.text("UPDATE tickets SET contact_email = :e, contact_phone = :p WHERE id = :i"),
            {"e": c.get("email"), "p": c.get("phone"), "i": tid},
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch_op:
        batch_op.drop_index("ix_tickets_contact_phone")
        batch_op.drop_index("ix_tickets_contact_email")
        batch_op.drop_column("contact_phone")
        batch_op.drop_column("contact_email")
