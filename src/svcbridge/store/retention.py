"""Retention, blob garbage collection and space given back (issue 19 item 2).

``purge`` removes, per kind and after its configured number of days (``[store.retention]``):

- ``raw``: raw messages of tickets that are closed AND fully delivered (every outbox row of the
  ticket done): the journal row stays (its status, hash and ticket: duplicate detection goes on
  working), its bytes go and ``purged_at`` says when;
- ``attachments``: the files of such tickets (rows and bytes; a ``files_removed`` trail entry names
  them), with the raw messages that carry the same bytes;
- ``duplicates``: journal rows of duplicates (their ``received_again`` trail entries stay);
- ``outbox``: delivered notification and update rows (create rows stay: they say which helpdesks hold
  the ticket, and follow-ups are routed by them);
- ``events``: bookkeeping trail entries (delivered, notified, received_again) of closed tickets.

Never anything undelivered or quarantined: a ticket with any outbox row not done is not "fully
delivered"; pending and quarantined journal rows, and pending, dead and parked outbox rows, are never
selected. ``dry_run`` counts what would go.

Blobs are freed by ``gc``: a blob no row references, older than a grace period (a writer puts its blobs
before its commit, so a young unreferenced blob may be about to be named). Blobs the purge just
unreferenced go at once (``drop_unreferenced``). On SQLite the freed pages are given back with
``PRAGMA incremental_vacuum`` (new stores are created with ``auto_vacuum=INCREMENTAL``; migration 0012
converts older ones).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, insert, select, update

from ..models import EventType, OutboxKind, utcnow
from ..storesettings import RetentionSettings
from . import rawstore
from . import schema as t
from .repo import Store

BOOKKEEPING = (EventType.DELIVERED, EventType.NOTIFIED, EventType.RECEIVED_AGAIN)
KINDS = ("raw", "attachments", "duplicates", "outbox", "events")


def closed_and_delivered(cutoff: datetime) -> Any:
    """Ticket ids that are closed, unchanged since ``cutoff``, with every outbox row done."""
    undelivered = exists().where(t.outbox.c.ticket_id == t.tickets.c.id, t.outbox.c.status != "done")
    return select(t.tickets.c.id).where(
        t.tickets.c.state == "closed", t.tickets.c.updated_at < cutoff, ~undelivered
    )


def _raw_rows(conn: Connection, where: Any) -> list[Any]:
    cols = (t.journal.c.id, t.journal.c.blob_ref, t.journal.c.blob_parts)
    return list(
        conn.execute(
            select(*cols).where(
                where,
                t.journal.c.status.in_(("processed", "duplicate")),
                t.journal.c.purged_at.is_(None),
            )
        ).mappings()
    )


def purge_raw(conn: Connection, where: Any, now: datetime) -> tuple[int, set[str]]:
    """Take the raw bytes off processed / duplicate journal rows matching ``where``; (rows, freed keys)."""
    rows = _raw_rows(conn, where)
    keys: set[str] = set()
    for r in rows:
        keys.update(rawstore.keys_of(r))
    ids = [r["id"] for r in rows]
    for i in range(0, len(ids), 500):
        conn.execute(
            update(t.journal)
            .where(t.journal.c.id.in_(ids[i : i + 500]))
            .values(raw=None, blob_ref=None, blob_parts=None, purged_at=now)
        )
    return len(ids), keys


def purge(store: Store, policy: RetentionSettings, *, dry_run: bool = False) -> dict[str, int]:
    """Apply the retention policy once; how many of each kind went (or would go, ``dry_run``)."""
    now = utcnow()
    days = {
        "raw": policy.raw_days,
        "attachments": policy.attachments_days,
        "duplicates": policy.duplicates_days,
        "outbox": policy.outbox_days,
        "events": policy.events_days,
    }
    counts = dict.fromkeys(KINDS, 0)
    freed: set[str] = set()
    with store.tx() as conn:
        for kind in KINDS:
            if not days[kind]:
                continue
            cutoff = now - timedelta(days=float(days[kind] or 0))
            n, keys = _purge_kind(conn, kind, cutoff, now, dry_run)
            counts[kind], freed = n, freed | keys
        if dry_run:
            conn.rollback()
    if not dry_run:
        counts["blobs_removed"] = drop_unreferenced(store, freed)
        vacuum(store)
    return counts


def _purge_kind(
    conn: Connection, kind: str, cutoff: datetime, now: datetime, dry: bool
) -> tuple[int, set[str]]:
    done_tickets = closed_and_delivered(cutoff)
    if kind == "raw":
        if dry:
            return len(_raw_rows(conn, t.journal.c.ticket_id.in_(done_tickets))), set()
        return purge_raw(conn, t.journal.c.ticket_id.in_(done_tickets), now)
    if kind == "attachments":
        rows = conn.execute(
            select(
                t.attachments.c.id,
                t.attachments.c.ticket_id,
                t.attachments.c.sha256,
                func.coalesce(t.attachments.c.original_name, t.attachments.c.safe_name),
            )
            .where(t.attachments.c.ticket_id.in_(done_tickets))
            .order_by(t.attachments.c.id)
        ).all()
        if dry or not rows:
            return len(rows), set()
        by_ticket: dict[int, list[str]] = {}
        for _aid, tid, _sha, name in rows:
            by_ticket.setdefault(int(tid), []).append(name)
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), 500):
            conn.execute(delete(t.attachments).where(t.attachments.c.id.in_(ids[i : i + 500])))
        tids = sorted(by_ticket)
        _, keys = purge_raw(conn, t.journal.c.ticket_id.in_(tids), now)  # the same bytes are in there
        conn.execute(
            insert(t.events),
            [
                {
                    "ticket_id": tid,
                    "type": "files_removed",
                    "at": now,
                    "actor": "svcbridge",
                    "data": {"reason": "retention", "files": names},
                    "journal_id": None,
                }
                for tid, names in by_ticket.items()
            ],
        )
        return len(rows), keys | {r[2] for r in rows}
    if kind == "duplicates":
        cols = (t.journal.c.id, t.journal.c.blob_ref, t.journal.c.blob_parts)
        cond = and_(t.journal.c.status == "duplicate", t.journal.c.processed_at < cutoff)
        dups = list(conn.execute(select(*cols).where(cond)).mappings())  # purged of bytes or not
        if dry or not dups:
            return len(dups), set()
        ids = [r["id"] for r in dups]
        keys = {k for r in dups for k in rawstore.keys_of(r)}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            conn.execute(update(t.events).where(t.events.c.journal_id.in_(chunk)).values(journal_id=None))
            conn.execute(delete(t.journal).where(t.journal.c.id.in_(chunk)))
        return len(ids), keys
    if kind == "outbox":
        cond = and_(
            t.outbox.c.status == "done",
            t.outbox.c.kind.in_((OutboxKind.NOTIFY, OutboxKind.UPDATE)),
            t.outbox.c.done_at < cutoff,
        )
        if dry:
            return int(conn.execute(select(func.count()).where(cond)).scalar_one()), set()
        return conn.execute(delete(t.outbox).where(cond)).rowcount, set()
    # events
    cond = and_(
        t.events.c.type.in_([str(e) for e in BOOKKEEPING]),
        t.events.c.at < cutoff,
        t.events.c.ticket_id.in_(done_tickets),
    )
    if dry:
        return int(conn.execute(select(func.count()).where(cond)).scalar_one()), set()
    return conn.execute(delete(t.events).where(cond)).rowcount, set()


# ---------------------------------------------------------------------------------------------- blobs
def referenced(conn: Connection) -> set[str]:
    """Every blob key a row names: journal raw blobs and parts, attachments kept as blobs."""
    out: set[str] = set()
    q = select(t.journal.c.blob_ref, t.journal.c.blob_parts).where(
        (t.journal.c.blob_ref.is_not(None)) | (t.journal.c.blob_parts.is_not(None))
    )
    for ref, parts in conn.execute(q.execution_options(yield_per=2000)):
        if ref:
            out.add(ref)
        out.update((parts or "").split())
    q2 = select(t.attachments.c.sha256).where(t.attachments.c.data.is_(None))
    out.update(r[0] for r in conn.execute(q2.execution_options(yield_per=2000)))
    return out


def drop_unreferenced(store: Store, keys: Iterable[str]) -> int:
    """Remove these blobs now unless a row still names them (the same file on another ticket)."""
    keys = set(keys)
    if not keys or store.blobs is None:
        return 0
    with store.engine.connect() as conn:
        still = referenced(conn)
    return sum(1 for k in keys - still if store.blobs.delete(k))


def gc(store: Store, grace_seconds: float, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove blobs no row names and nobody touched for ``grace_seconds``; (blobs, bytes)."""
    blobs = store.blobs
    if blobs is None:
        return 0, 0
    candidates = dict(blobs.keys(older_than=grace_seconds))  # listed before the rows are read
    with store.engine.connect() as conn:
        still = referenced(conn)
    n = size = 0
    limit = time.time() - grace_seconds
    for key, s in candidates.items():
        if key in still:
            continue
        modified = blobs.modified(key)
        if modified is None or modified > limit:  # gone, or touched since the listing (reused): keep
            continue
        if dry_run or blobs.delete(key):
            n, size = n + 1, size + s
    clean = getattr(blobs, "clean_tmp", None)
    if clean is not None and not dry_run:
        clean(grace_seconds)
    return n, size


def vacuum(store: Store) -> None:
    """SQLite: give the pages freed by deletes back to the file system (auto_vacuum=INCREMENTAL)."""
    if store.engine.dialect.name != "sqlite":
        return  # PostgreSQL: autovacuum reuses the space; VACUUM FULL is the operator's call
    raw = store.engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        assert dbapi is not None
        # executescript steps the pragma to its end; execute() frees one page per step, i.e. one
        dbapi.executescript("PRAGMA incremental_vacuum;")
    finally:
        raw.close()
