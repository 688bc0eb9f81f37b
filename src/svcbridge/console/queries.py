"""Store reads and writes only the console needs: ticket search with filters and paging, attachments by
id, a quarantined message's raw bytes, the outbox by target and state, replaying a target's dead items.

Search terms are bound parameters with LIKE wildcards escaped: ``%`` or ``_`` typed by an operator are
plain characters, and nothing typed reaches SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import String, and_, cast, func, or_, select, update

from ..models import Ticket, utcnow
from ..store import schema as t
from ..store.repo import Store
from ..store.rows import ticket_from_row

PAGE = 50
MESSAGE_EVENTS = ("received", "message_received", "reopened")


@dataclass
class TicketQuery:
    text: str = ""
    state: str = ""
    priority: str = ""
    channel: str = ""
    source: str = ""
    breach: str = ""  # "1": open tickets the SLA engine recorded a breach on
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> TicketQuery:
        try:
            page = max(1, min(int(params.get("page", "1") or "1"), 100_000))
        except ValueError:
            page = 1
        return cls(
            text=(params.get("q") or "").strip()[:200],
            state=(params.get("state") or "")[:30],
            priority=(params.get("priority") or "")[:2],
            channel=(params.get("channel") or "")[:50],
            source=(params.get("source") or "")[:200],
            breach="1" if params.get("breach") == "1" else "",
            page=page,
        )


@dataclass
class TicketPage:
    tickets: list[Ticket]
    total: int
    page: int
    pages: int
    channels: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_tickets(store: Store, q: TicketQuery) -> TicketPage:
    cond = []
    if q.text:
        pat = _like(q.text.lower())
        cols = [
            t.tickets.c.ref,
            t.tickets.c.customer,
            t.tickets.c.contact_email,
            t.tickets.c.contact_phone,
            t.tickets.c.subject,
            t.tickets.c.description,
            cast(t.tickets.c.asset, String),
            cast(t.tickets.c.contact, String),
        ]
        cond.append(or_(*[func.lower(c).like(pat, escape="\\") for c in cols]))
    if q.state:
        cond.append(t.tickets.c.state == q.state)
    if q.priority.isdigit():
        cond.append(t.tickets.c.priority == int(q.priority))
    if q.channel:
        cond.append(t.tickets.c.channel == q.channel)
    if q.source:
        cond.append(t.tickets.c.source == q.source)
    if q.breach:
        # the SLA engine's sla_breached event (plugins/svcbridge_sla): portable, unlike comparing the
        # JSON deadlines column; a resolved or closed ticket is no longer "in breach"
        breached = select(t.events.c.id).where(
            t.events.c.ticket_id == t.tickets.c.id, t.events.c.type == "sla_breached"
        )
        cond.append(and_(breached.exists(), t.tickets.c.state.not_in(("resolved", "closed"))))
    where = and_(*cond) if cond else None
    base = select(t.tickets)
    count = select(func.count()).select_from(t.tickets)
    if where is not None:
        base, count = base.where(where), count.where(where)
    with store.engine.connect() as conn:
        total = int(conn.execute(count).scalar_one())
        pages = max(1, -(-total // PAGE))
        page = min(q.page, pages)
        rows = conn.execute(
            base.order_by(t.tickets.c.id.desc()).limit(PAGE).offset((page - 1) * PAGE)
        ).mappings()
        tickets = [ticket_from_row(r) for r in rows]
        channels = [
            r[0] for r in conn.execute(select(t.tickets.c.channel).distinct().order_by(t.tickets.c.channel))
        ]
        sources = [
            r[0]
            for r in conn.execute(select(t.tickets.c.source).distinct().order_by(t.tickets.c.source))
            if r[0]
        ]
    return TicketPage(tickets, total, page, pages, channels, sources)


def attachments(store: Store, ticket_id: int) -> list[dict[str, Any]]:
    cols = [c for c in t.attachments.c if c.name != "data"]
    q = select(*cols).where(t.attachments.c.ticket_id == ticket_id).order_by(t.attachments.c.id)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def attachment(store: Store, ticket_id: int, att_id: int) -> dict[str, Any] | None:
    q = select(t.attachments).where(t.attachments.c.ticket_id == ticket_id, t.attachments.c.id == att_id)
    with store.engine.connect() as conn:
        r = conn.execute(q).mappings().first()
    return dict(r) if r else None


def raw_message(store: Store, journal_id: int) -> bytes | None:
    raw = store.load_raws([journal_id]).get(journal_id)
    return raw.raw if raw is not None else None


def outbox_items(store: Store, target: str = "", status: str = "", limit: int = 200) -> list[dict[str, Any]]:
    q = select(t.outbox).order_by(t.outbox.c.id.desc()).limit(limit)
    if target:
        q = q.where(t.outbox.c.target == target)
    q = q.where(t.outbox.c.status == status) if status else q.where(t.outbox.c.status != "done")
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def outbox_item(store: Store, item_id: int) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        r = conn.execute(select(t.outbox).where(t.outbox.c.id == item_id)).mappings().first()
    return dict(r) if r else None


def replay_dead(store: Store, target: str) -> int:
    """Every dead item of ``target`` back to pending (same idempotency keys: nothing is sent twice)."""
    with store.tx() as conn:
        res = conn.execute(
            update(t.outbox)
            .where(t.outbox.c.target == target, t.outbox.c.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=utcnow(), claimed_until=None)
        )
        return int(res.rowcount)


def quarantine_page(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    return store.quarantine_list()[:limit]
