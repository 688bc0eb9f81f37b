"""Erasing a person (``svcbridge contacts erase ADDRESS``): a request under data-protection law.

What goes: the raw messages of the person's tickets and of their messages on other tickets (journal
bytes and the blobs no one else references), those tickets' and messages' attachments, the contact data
on the tickets (name, address, phone, labels, subject, description), the text of their trail entries,
the payloads of delivered notices and updates, message-id links, quarantined mails that name the
address. What stays is an anonymous trail: the tickets (state, dates, category, helpdesk links), the
types and times of their events, one ``erased`` event per ticket naming who did it, and an ``erasures``
row with who, when, what counts and the address only as a salted HMAC (so "was X erased?" can be
answered by someone who knows X, and the row itself names no one).

Refused while the person's tickets have undelivered outbox rows (a helpdesk would get the erased data,
or nothing): deliver first, or ``force`` drops those rows. Copies the helpdesks already hold are not
svcbridge's to erase: the helpdesk links are returned so the operator can follow up there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from ..models import EventType, OutboxKind, utcnow
from . import rawstore
from . import schema as t
from .repo import Store
from .retention import drop_unreferenced, purge_raw, vacuum

ERASED = "[erased]"
TEXT_EVENTS = (
    EventType.RECEIVED,
    EventType.MESSAGE_RECEIVED,
    EventType.RECEIVED_AGAIN,
    EventType.AGENT_REPLY,
    EventType.INTERNAL_NOTE,
    EventType.REOPENED,
    "ticket_updated",
    "files_removed",
)


class ErasureRefused(Exception):
    """The person's tickets have undelivered outbox rows (ids in ``pending``)."""

    def __init__(self, pending: list[int]) -> None:
        super().__init__(f"undelivered outbox rows {pending[:20]}: deliver them first, or use --force")
        self.pending = pending


def subject_hash(address: str, salt: bytes | None = None) -> str:
    """``salt$hmac``: identifies the person only to someone who already knows the address."""
    salt = salt if salt is not None else os.urandom(16)
    mac = hmac.new(salt, address.strip().lower().encode(), hashlib.sha256).hexdigest()
    return f"{salt.hex()}${mac[:40]}"


def was_erased(store: Store, address: str) -> bool:
    with store.engine.connect() as conn:
        for (h,) in conn.execute(select(t.erasures.c.subject_hash)):
            salt, _, _ = h.partition("$")
            if hmac.compare_digest(subject_hash(address, bytes.fromhex(salt)), h):
                return True
    return False


def erase(
    store: Store, address: str, by: str, *, force: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Erase ``address`` (an e-mail address or a phone number); counts and the helpdesk links to follow."""
    who = address.strip().lower()
    if not who:
        raise ValueError("an address or phone number is needed")
    now = utcnow()
    with store.tx() as conn:
        col = func.lower(t.tickets.c.contact_email) if "@" in who else t.tickets.c.contact_phone
        tids = [int(r[0]) for r in conn.execute(select(t.tickets.c.id).where(col == who))]
        # their messages on other tickets: events whose actor is the address
        ev = select(t.events.c.id, t.events.c.ticket_id, t.events.c.journal_id).where(
            func.lower(t.events.c.actor) == who
        )
        their = conn.execute(ev).all()
        jids = sorted({int(j) for _, _, j in their if j is not None})
        pending = [
            int(r[0])
            for r in conn.execute(
                select(t.outbox.c.id).where(t.outbox.c.ticket_id.in_(tids), t.outbox.c.status != "done")
            )
        ]
        if pending and not force:
            raise ErasureRefused(pending)
        quarantined = _quarantined_naming(store, conn, who)
        counts: dict[str, Any] = {
            "tickets": len(tids),
            "messages_elsewhere": len(jids),
            "quarantined": len(quarantined),
            "undelivered_dropped": len(pending),
        }
        links = [
            {"ticket": store.ref_for(int(r[0])), "system": r[1], "kind": r[2], "value": r[3]}
            for r in conn.execute(
                select(t.links.c.ticket_id, t.links.c.system, t.links.c.kind, t.links.c.value).where(
                    t.links.c.ticket_id.in_(tids), t.links.c.system != "email"
                )
            )
        ]
        if dry_run:
            conn.rollback()
            return {**counts, "helpdesk_links": links}
        freed: set[str] = set()
        where = or_(
            t.journal.c.ticket_id.in_(tids), t.journal.c.id.in_(jids), t.journal.c.id.in_(quarantined)
        )
        counts["raw_messages"], keys = purge_raw(conn, where, now)
        conn.execute(update(t.journal).where(where).values(meta={}))  # source metadata names them too
        freed |= keys
        freed |= _erase_quarantined(conn, quarantined, now)
        att = select(t.attachments.c.id, t.attachments.c.sha256).where(
            or_(t.attachments.c.ticket_id.in_(tids), t.attachments.c.journal_id.in_(jids))
        )
        rows = conn.execute(att).all()
        freed |= {r[1] for r in rows}
        counts["attachments"] = len(rows)
        conn.execute(delete(t.attachments).where(t.attachments.c.id.in_([r[0] for r in rows])))
        conn.execute(
            update(t.tickets)
            .where(t.tickets.c.id.in_(tids))
            .values(
                subject=ERASED,
                description="",
                contact={},
                contact_email=None,
                contact_phone=None,
                labels={},
                updated_at=now,
            )
        )
        # their tickets: every entry's data but state changes (a delivery's detail names the address
        # too); their messages on other tickets: the text entries
        conn.execute(
            update(t.events)
            .where(t.events.c.ticket_id.in_(tids), t.events.c.type != EventType.STATUS_CHANGED)
            .values(data={"erased": True})
        )
        text_ev = [str(e) for e in TEXT_EVENTS]
        conn.execute(
            update(t.events)
            .where(t.events.c.id.in_([e[0] for e in their]), t.events.c.type.in_(text_ev))
            .values(data={"erased": True})
        )
        conn.execute(update(t.events).where(func.lower(t.events.c.actor) == who).values(actor="erased"))
        conn.execute(delete(t.outbox).where(t.outbox.c.id.in_(pending)))
        conn.execute(
            delete(t.outbox).where(
                t.outbox.c.ticket_id.in_(tids), t.outbox.c.kind.in_((OutboxKind.NOTIFY, OutboxKind.UPDATE))
            )
        )
        conn.execute(update(t.outbox).where(t.outbox.c.ticket_id.in_(tids)).values(payload={}))
        conn.execute(delete(t.links).where(t.links.c.ticket_id.in_(tids), t.links.c.system == "email"))
        if tids:
            conn.execute(
                insert(t.events),
                [
                    {
                        "ticket_id": tid,
                        "type": "erased",
                        "at": now,
                        "actor": by,
                        "data": {"by": by, "reason": "erasure request"},
                        "journal_id": None,
                    }
                    for tid in tids
                ],
            )
        conn.execute(insert(t.erasures).values(at=now, by=by, subject_hash=subject_hash(who), counts=counts))
    counts["blobs_removed"] = drop_unreferenced(store, freed)
    vacuum(store)
    return {**counts, "helpdesk_links": links}


def _quarantined_naming(store: Store, conn: Connection, who: str) -> list[int]:
    """Open quarantined journal rows whose raw message names the address (no ticket to find them by)."""
    q = (
        select(t.journal)
        .join(t.quarantine, t.quarantine.c.journal_id == t.journal.c.id)
        .where(t.quarantine.c.resolved.is_(False), t.journal.c.status == "quarantined")
    )
    found = []
    needle = who.encode()
    for r in conn.execute(q).mappings():
        try:
            data = rawstore.load(store.blobs, r) or b""
        except LookupError:
            data = b""
        if needle in data.lower():
            found.append(int(r["id"]))
    return found


def _erase_quarantined(conn: Connection, jids: list[int], now: Any) -> set[str]:
    """Quarantined rows lose their bytes and their entry is resolved as dropped (nothing to retry)."""
    if not jids:
        return set()
    cols = (t.journal.c.id, t.journal.c.blob_ref, t.journal.c.blob_parts)
    keys = {
        k
        for r in conn.execute(select(*cols).where(t.journal.c.id.in_(jids))).mappings()
        for k in rawstore.keys_of(r)
    }
    conn.execute(
        update(t.journal)
        .where(t.journal.c.id.in_(jids))
        .values(raw=None, blob_ref=None, blob_parts=None, purged_at=now, status="dropped")
    )
    conn.execute(
        update(t.quarantine)
        .where(t.quarantine.c.journal_id.in_(jids))
        .values(resolved=True, error=ERASED, traceback=None)
    )
    return keys
