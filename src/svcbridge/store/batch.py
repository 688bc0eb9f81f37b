"""The pipeline's store stage as set-based writes: a batch's rows collected per table, sent at the end.

The store stage used to run one to three statements per row (look up a link or an idempotency key,
then insert it), about twenty round trips through SQLAlchemy per message; that, not SQLite, was most
of the stage's time. ``BatchWriter`` collects the rows of every plan of the batch, then writes each
table with one executemany, in an order that satisfies the foreign keys (tickets first). It runs
inside the caller's single transaction, so nothing changes for crash safety: all or nothing.

Semantics kept from the row-by-row code:

- rows of one table are written in plan order, so event ids (the trail order) and outbox ids (the
  delivery order per ticket and target) are what they were;
- a link whose (system, kind, value) already exists, in the store or earlier in the batch, is skipped
  (first one wins); so is an outbox row whose idempotency key exists;
- the existence checks run inside the transaction, one query per 500 keys.
"""

from __future__ import annotations

import traceback as tb
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from ..errors import clean_error
from ..models import (
    Attachment,
    DeliveryResult,
    EventType,
    ExternalLink,
    OutboxKind,
    Ticket,
    TicketEvent,
    utcnow,
)
from . import schema as t

CHUNK = 500  # keys per IN (...) query: far below any bind-parameter limit

_UPD_TICKET = update(t.tickets).where(t.tickets.c.id == bindparam("tid")).values(updated_at=bindparam("at"))
_UPD_TICKET_STATE = (
    update(t.tickets)
    .where(t.tickets.c.id == bindparam("tid"))
    .values(updated_at=bindparam("at"), state=bindparam("st"))
)
MARK_JOURNAL = (  # one journal entry's outcome; repo.py uses it for single entries
    update(t.journal)
    .where(t.journal.c.id == bindparam("jid"))
    .values(
        status=bindparam("st"),
        ticket_id=bindparam("tid"),
        processed_at=bindparam("at"),
        attempts=t.journal.c.attempts + 1,
    )
)


def ticket_row(ticket: Ticket, source: str | None) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "ref": ticket.ref,
        "state": ticket.state.value,
        "channel": ticket.channel,
        "source": source,
        "subject": ticket.subject,
        "description": ticket.description,
        "contact": ticket.contact.model_dump(mode="json", exclude_none=True),
        "contact_email": ticket.contact.email,
        "contact_phone": ticket.contact.phone,
        "customer": ticket.customer,
        "asset": ticket.asset.model_dump(mode="json", exclude_none=True),
        "priority": int(ticket.priority),
        "fault_level": ticket.fault_level.value if ticket.fault_level else None,
        "sla_policy": ticket.sla_policy,
        "language": ticket.language,
        "deadlines": {k: v.isoformat() for k, v in ticket.deadlines.items()},
        "category": ticket.category,
        "labels": ticket.labels,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
    }


class BatchWriter:
    """Rows of one store-stage transaction, per table, flushed with one statement per table."""

    def __init__(self) -> None:
        self.now = utcnow()
        self.tickets: list[dict[str, Any]] = []
        self.touched: list[dict[str, Any]] = []
        self.fields: dict[int, dict[str, Any]] = {}  # ticket id -> changed columns (the last wins)
        self.reopened: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.attachments: list[dict[str, Any]] = []
        self.outbox: list[dict[str, Any]] = []
        self.marks: list[dict[str, Any]] = []
        self.quarantined: list[dict[str, Any]] = []
        self.creates: dict[int, set[str]] = {}  # ticket id -> sinks given a create row in this batch
        # idempotency key -> what an inline sink answered (contracts.InlineSink); its links and trail
        # entry are written only if the row itself is new, so a re-run cannot record them twice
        self.inline: dict[str, DeliveryResult] = {}
        self.inline_done: list[dict[str, Any]] = []  # inline deliveries written (log, metrics after commit)

    # ------------------------------------------------------------------ collecting
    def insert_ticket(self, ticket: Ticket, source: str | None) -> None:
        self.tickets.append(ticket_row(ticket, source))

    def touch_ticket(self, ticket_id: int, state: str | None = None) -> None:
        if state is None:
            self.touched.append({"tid": ticket_id, "at": utcnow()})
        else:
            self.reopened.append({"tid": ticket_id, "at": utcnow(), "st": state})

    def set_ticket_fields(self, ticket_id: int, values: dict[str, Any]) -> None:
        """Columns a follow-up's hooks changed (``changes.column_values``), written after the inserts."""
        self.fields[ticket_id] = values

    def add_event(self, ticket_id: int, ev: TicketEvent, journal_id: int | None = None) -> None:
        self.events.append(
            {
                "ticket_id": ticket_id,
                "type": ev.type,
                "at": ev.at,
                "actor": ev.actor,
                "data": ev.data,
                "journal_id": journal_id,
            }
        )

    def add_link(self, ticket_id: int, link: ExternalLink) -> None:
        row = {"ticket_id": ticket_id, "system": link.system, "kind": link.kind, "value": link.value}
        self.links.append(row)

    def add_attachment(self, ticket_id: int, att: Attachment, journal_id: int | None) -> None:
        self.attachments.append({"ticket_id": ticket_id, "journal_id": journal_id, **att.model_dump()})

    def enqueue(
        self,
        ticket_id: int,
        kind: str,
        target: str,
        key: str,
        payload: dict[str, Any],
        done: DeliveryResult | None = None,
    ) -> None:
        """Queue an outbox row; with ``done`` (an inline sink's answer) it is written as delivered."""
        if kind == OutboxKind.CREATE:
            self.creates.setdefault(ticket_id, set()).add(target)
        key = key[:255]
        self.outbox.append(
            {
                "ticket_id": ticket_id,
                "kind": kind,
                "target": target,
                "idempotency_key": key,
                "payload": payload,
                "status": "pending" if done is None else "done",
                "attempts": 0,
                "next_attempt_at": self.now,
                "created_at": self.now,
                "done_at": None if done is None else self.now,
            }
        )
        if done is not None:
            self.inline[key] = done

    def delivered(self, ticket_id: int, target: str, kind: str, result: DeliveryResult, **data: Any) -> None:
        """The links a target returned and its ``delivered`` / ``notified`` trail entry."""
        for link in result.links:
            self.add_link(ticket_id, link)
        data = {"target": target, "kind": kind, **data}
        if result.detail:
            data["detail"] = result.detail
        done = EventType.NOTIFIED if kind == OutboxKind.NOTIFY else EventType.DELIVERED
        self.add_event(ticket_id, TicketEvent(type=done, at=self.now, data=data))

    def mark_journal(self, journal_id: int, status: str, ticket_id: int | None) -> None:
        self.marks.append({"jid": journal_id, "st": status, "tid": ticket_id, "at": self.now})

    def quarantine(self, journal_id: int, stage: str, plugin: str | None, exc: BaseException) -> None:
        self.mark_journal(journal_id, "quarantined", None)
        self.quarantined.append(
            {
                "journal_id": journal_id,
                "stage": stage,
                "plugin": plugin,
                "error": clean_error(f"{type(exc).__name__}: {exc}"),
                "traceback": clean_error("".join(tb.format_exception(exc))[-8000:], 8000),
                "at": self.now,
                "resolved": False,
            }
        )

    def sinks_of(self, conn: Connection, ticket_id: int) -> list[str]:
        """Sinks holding this ticket: create rows stored, or queued earlier in this batch."""
        q = select(t.outbox.c.target).where(
            t.outbox.c.ticket_id == ticket_id, t.outbox.c.kind == OutboxKind.CREATE
        )
        return sorted({r[0] for r in conn.execute(q)} | self.creates.get(ticket_id, set()))

    # ------------------------------------------------------------------ writing
    def flush(self, conn: Connection) -> None:
        """Write everything collected, in foreign-key order; one statement per table."""
        # outbox rows first decided (a SELECT of keys), so an inline delivery's links and trail entry
        # join this flush only when its row is new
        rows = self._new_outbox(conn)
        for r in rows:
            done = self.inline.get(r["idempotency_key"])
            if done is not None:
                self.delivered(r["ticket_id"], r["target"], r["kind"], done, inline=True)
                self.inline_done.append(r)
        if self.tickets:
            conn.execute(insert(t.tickets), self.tickets)
        if self.touched:
            conn.execute(_UPD_TICKET, self.touched)
        if self.reopened:
            conn.execute(_UPD_TICKET_STATE, self.reopened)
        for tid, values in self.fields.items():  # rare (a hook changed a follow-up's ticket): one each
            conn.execute(update(t.tickets).where(t.tickets.c.id == tid).values(**values))
        if self.events:
            conn.execute(insert(t.events), self.events)
        links = self._new_links(conn)
        if links:
            conn.execute(insert(t.links), links)
        if self.attachments:
            conn.execute(insert(t.attachments), self.attachments)
        if rows:
            conn.execute(insert(t.outbox), rows)
        if self.quarantined:
            conn.execute(insert(t.quarantine), self.quarantined)
        if self.marks:
            conn.execute(MARK_JOURNAL, self.marks)

    def _new_links(self, conn: Connection) -> list[dict[str, Any]]:
        keys = {(r["system"], r["kind"], r["value"]) for r in self.links}
        stored: set[tuple[str, str, str]] = set()
        values = sorted({k[2] for k in keys})
        for i in range(0, len(values), CHUNK):
            q = select(t.links.c.system, t.links.c.kind, t.links.c.value).where(
                t.links.c.value.in_(values[i : i + CHUNK])
            )
            stored.update((r[0], r[1], r[2]) for r in conn.execute(q))
        out = []
        for r in self.links:
            k = (r["system"], r["kind"], r["value"])
            if k not in stored:
                stored.add(k)
                out.append(r)
        return out

    def _new_outbox(self, conn: Connection) -> list[dict[str, Any]]:
        keys = sorted({r["idempotency_key"] for r in self.outbox})
        stored: set[str] = set()
        for i in range(0, len(keys), CHUNK):
            q = select(t.outbox.c.idempotency_key).where(t.outbox.c.idempotency_key.in_(keys[i : i + CHUNK]))
            stored.update(r[0] for r in conn.execute(q))
        out = []
        for r in self.outbox:
            if r["idempotency_key"] not in stored:
                stored.add(r["idempotency_key"])
                out.append(r)
        return out
