"""Reading attachments back with their bytes: from the row (before migration 0012, or small ones) or
from the blob store by sha256 (``blobs.py``). A mixin of ``repo.Store``, kept apart for size."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, or_, select

from ..models import Attachment
from . import schema as t
from .blobs import BlobMissing, BlobStore
from .rows import attachment_model


class AttachmentReads:
    engine: Engine
    blobs: BlobStore | None

    def attachments_with_data(self, ticket_id: int, journal_id: int | None = None) -> list[Attachment]:
        """Attachments including their bytes: the whole ticket's, or only one journaled message's."""
        q = select(t.attachments).where(t.attachments.c.ticket_id == ticket_id).order_by(t.attachments.c.id)
        if journal_id is not None:
            q = q.where(t.attachments.c.journal_id == journal_id)
        with self.engine.connect() as conn:
            return [attachment_model(a, self._att_data(a)) for a in conn.execute(q).mappings()]

    def _att_data(self, a: Any) -> bytes | None:
        """An attachment's bytes: in its row (before 0012, or small), else the blob of its sha256."""
        if a["data"] is not None or self.blobs is None:
            return a["data"]
        data = self.blobs.get(a["sha256"])
        if data is None:
            name = a["safe_name"]
            raise BlobMissing(f"attachment blob {a['sha256']} ({name}) is missing from the blob store")
        return data

    def attachments_bulk(
        self, ticket_ids: set[int], journal_ids: set[int]
    ) -> tuple[dict[int, list[Attachment]], dict[int, list[Attachment]]]:
        """Attachments with bytes, by ticket (for creates) and by journal entry (for updates).

        A create carries the files of the message that opened the ticket only: a follow-up stored
        before the create reached the helpdesk posts its own files with its own update, so each file
        goes to the helpdesk once.
        """
        by_ticket: dict[int, list[Attachment]] = {i: [] for i in ticket_ids}
        by_journal: dict[int, list[Attachment]] = {i: [] for i in journal_ids}
        if not ticket_ids and not journal_ids:
            return by_ticket, by_journal
        cond = or_(t.attachments.c.ticket_id.in_(ticket_ids), t.attachments.c.journal_id.in_(journal_ids))
        with self.engine.connect() as conn:
            first: dict[int, int] = {}
            if ticket_ids:
                q = (
                    select(t.journal.c.ticket_id, func.min(t.journal.c.id))
                    .where(t.journal.c.ticket_id.in_(ticket_ids), t.journal.c.status == "processed")
                    .group_by(t.journal.c.ticket_id)
                )
                first = {int(r[0]): int(r[1]) for r in conn.execute(q)}
            for a in conn.execute(select(t.attachments).where(cond).order_by(t.attachments.c.id)).mappings():
                att = attachment_model(a, self._att_data(a))
                tid, jid = a["ticket_id"], a["journal_id"]
                if tid in by_ticket and (jid is None or tid not in first or jid == first[tid]):
                    by_ticket[a["ticket_id"]].append(att)
                if a["journal_id"] in by_journal:
                    by_journal[a["journal_id"]].append(att)
        return by_ticket, by_journal

    def attachment_data(self, ticket_id: int, safe_name: str) -> bytes | None:
        with self.engine.connect() as conn:
            a = (
                conn.execute(
                    select(t.attachments.c.data, t.attachments.c.sha256, t.attachments.c.safe_name).where(
                        t.attachments.c.ticket_id == ticket_id, t.attachments.c.safe_name == safe_name
                    )
                )
                .mappings()
                .first()
            )
        return self._att_data(a) if a is not None else None
