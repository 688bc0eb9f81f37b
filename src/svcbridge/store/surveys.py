"""The read-only query behind ``TicketLookup.awaiting_survey``: which of a contact's finished tickets
waits for an answer to its satisfaction survey.

An SMS has no In-Reply-To: a bare "5" from the customer's number after the survey "reply 1-5" would
otherwise become a new ticket (threading by open conversation finds only open tickets). The survey's
trail entries are the truth: a ``notified`` event whose ``data.template`` is ``survey`` (written when the
outbox sent it) and the ``survey_reply`` the SLA engine records. Only the contact's resolved/closed
tickets with one of those events since ``since`` are read, newest first; the template is checked here in
Python because JSON paths differ between SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select

from . import schema as t

__all__ = ["awaiting_survey"]


def awaiting_survey(
    engine: Engine, *, email: str | None = None, phone: str | None = None, since: datetime
) -> int | None:
    """The id of the ticket ``TicketLookup.awaiting_survey`` answers with, or None."""
    if not email and not phone:
        return None
    who = t.tickets.c.contact_email == email if email else t.tickets.c.contact_phone == phone
    q = (
        select(t.events.c.ticket_id, t.events.c.type, t.events.c.data)
        .join(t.tickets, t.tickets.c.id == t.events.c.ticket_id)
        .where(
            who,
            t.tickets.c.state.in_(("resolved", "closed")),
            t.events.c.type.in_(("notified", "survey_reply")),
            t.events.c.at >= since,
        )
        .order_by(t.events.c.ticket_id.desc(), t.events.c.id.desc())
    )
    answered: set[int] = set()
    decided: set[int] = set()
    with engine.connect() as conn:
        for tid, kind, data in conn.execute(q):
            if tid in decided:
                continue
            if kind == "survey_reply":  # newest first: an answer after the latest survey closes it
                answered.add(tid)
            elif (data or {}).get("template") == "survey":
                decided.add(tid)  # the latest survey of this ticket decides it
                if tid not in answered:
                    return int(tid)
    return None
