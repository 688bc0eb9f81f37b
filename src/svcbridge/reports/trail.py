"""What the reports read: a month's tickets with their event trails, and each SLA target's outcome.

Only the trail counts (``received``, ``status_changed``, ``sla_met``, ``sla_breached``,
``survey_sent``, ``survey_reply``, ``followup_call`` ...), never a counter kept on the side, so a report
for any past month can be recomputed and gives the same numbers. A ticket belongs to the month in
which it was received (its ``received`` event, in the report's time zone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select

from ..models import Ticket, TicketEvent
from ..store import schema as t
from ..store.repo import Store

__all__ = ["FollowupCall", "Outcome", "followup_calls", "month_range", "month_tickets", "outcomes"]


def month_range(month: str, tz: str = "UTC") -> tuple[datetime, datetime]:
    """``YYYY-MM`` as [start, end) in UTC, the month's bounds taken in ``tz``."""
    try:
        year, mon = (int(x) for x in month.split("-"))
        zone = ZoneInfo(tz)
        start = datetime(year, mon, 1, tzinfo=zone)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"--month {month!r}: write YYYY-MM, e.g. 2026-03 (time zone {tz!r})") from exc
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def month_tickets(store: Store, month: str, customer: str | None = None, tz: str = "UTC") -> list[Ticket]:
    """Tickets received in ``month`` (of ``customer``), with their trails, oldest first."""
    start, end = month_range(month, tz)
    q = (
        select(t.events.c.ticket_id)
        .where(and_(t.events.c.type == "received", t.events.c.at >= start, t.events.c.at < end))
        .distinct()
    )
    with store.engine.connect() as conn:
        ids = {int(r[0]) for r in conn.execute(q)}
    found = store.get_tickets(ids)
    out = [x for x in found.values() if customer is None or x.customer == customer]
    return sorted(out, key=lambda x: (received_at(x), x.id))


def received_at(ticket: Ticket) -> datetime:
    return next((e.at for e in ticket.events if e.type == "received"), ticket.created_at)


@dataclass
class Outcome:
    """One SLA target of one ticket as the trail tells it."""

    ticket: str
    target: str
    status: str  # met | missed | open
    used_s: float | None = None
    allowed_s: float | None = None
    late_s: float | None = None
    deadline: str | None = None
    escalated: bool = False


def outcomes(ticket: Ticket, now: datetime) -> list[Outcome]:
    """Each target the ticket was promised: met on time, missed (breached or met late) or open."""
    met: dict[str, TicketEvent] = {}
    breached: dict[str, TicketEvent] = {}
    escalated: set[str] = set()
    for e in ticket.events:
        target = str(e.data.get("target", ""))
        if e.type == "sla_met":
            met[target] = e  # the last: a reopened ticket's resolution is recorded again
        elif e.type == "sla_breached":
            breached.setdefault(target, e)
        elif e.type == "sla_escalated":
            escalated.add(target)
    names = set(met) | set(breached) | {k.removesuffix("_by") for k in ticket.deadlines}
    out = []
    for name in sorted(names):
        m, b = met.get(name), breached.get(name)
        o = Outcome(ticket.ref, name, "open", escalated=name in escalated)
        if m is not None:
            o.used_s, o.allowed_s = m.data.get("used_s"), m.data.get("allowed_s")
            o.deadline = m.data.get("deadline")
            o.status = "met" if m.data.get("on_time") and b is None else "missed"
            if o.used_s is not None and o.allowed_s is not None:
                o.late_s = max(0.0, float(o.used_s) - float(o.allowed_s))
        elif b is not None:
            o.status, o.deadline = "missed", b.data.get("deadline")
        else:
            due = ticket.deadlines.get(f"{name}_by")
            o.deadline = due.isoformat() if due else None
            if due is not None and due <= now:  # past due, its timer not fired yet (daemon down)
                o.status = "missed"
        out.append(o)
    return out


@dataclass
class FollowupCall:
    ref: str
    customer: str | None
    contact: str
    resolved_at: str
    due_at: str
    status: str  # due | later | done
    outcomes: list[str] = field(default_factory=list)


def followup_calls(store: Store, now: datetime, due_only: bool = False) -> list[FollowupCall]:
    """The follow-up calls owed (``followup_due`` events of the last 60 days, written by the SLA engine
    when a ticket is resolved, at the contract's delay): due, later, or done (a ``followup_call``
    event after that resolution whose outcome is not ``no_answer``)."""
    since = now - timedelta(days=60)
    q = (
        select(t.events.c.ticket_id)
        .where(t.events.c.type == "followup_due", t.events.c.at >= since)
        .distinct()
    )
    with store.engine.connect() as conn:
        ids = {int(r[0]) for r in conn.execute(q)}
    calls = []
    for tk in sorted(store.get_tickets(ids).values(), key=lambda x: x.id):
        owed = [e for e in tk.events if e.type == "followup_due"]
        if not owed:
            continue
        last = owed[-1]
        resolved, due = str(last.data.get("resolved_at", "")), str(last.data.get("due_at", ""))
        done = [
            str(e.data.get("outcome")) for e in tk.events if e.type == "followup_call" and e.at >= last.at
        ]
        if any(o != "no_answer" for o in done):
            status = "done"
        else:
            status = "due" if due and datetime.fromisoformat(due) <= now else "later"
        if due_only and status != "due":
            continue
        contact = tk.contact.phone or tk.contact.email or ""
        calls.append(FollowupCall(tk.ref, tk.customer, contact, resolved, due, status, done))
    return calls


def share(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def count_by(items: list[Any], key: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        k = key(it)
        k = "-" if k in (None, "") else str(k)
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda x: (-x[1], x[0])))
