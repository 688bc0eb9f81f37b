"""The store: journal, tickets and their trail, quarantine, checkpoints.

All methods are synchronous and each is one short transaction; async callers run them in a thread
(``asyncio.to_thread``) so a busy SQLite lock never blocks the event loop. Outbox transitions live in
``store/outbox.py``.
"""

from __future__ import annotations

import traceback as tb
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from ..contracts import SubmitResult
from ..errors import StoreUnavailable, clean_error
from ..faults import fault
from ..models import (
    Attachment,
    ExternalLink,
    RawMessage,
    Ticket,
    TicketEvent,
    utcnow,
)
from . import rawstore
from . import schema as t
from .attachments import AttachmentReads
from .batch import MARK_JOURNAL, ticket_row
from .blobs import BlobMissing, BlobStore, Chunks, ensure
from .recent import RecentRaws
from .rows import attachment_model, journal_row, ticket_from_row
from .surveys import awaiting_survey

# Statements built once; values go in as parameters, so SQLAlchemy reuses the compiled form instead of
# building a fresh statement with literal bind values on every call (the hot path's main CPU cost).
Fence = Callable[[Connection], None]  # runs first in the journal's transaction; raises to refuse it
_INS_TICKET = insert(t.tickets)
_INS_EVENT = insert(t.events)
_INS_LINK = insert(t.links)
_INS_ATT = insert(t.attachments)
_SEL_LINK = select(t.links.c.ticket_id).where(
    t.links.c.system == bindparam("s"), t.links.c.kind == bindparam("k"), t.links.c.value == bindparam("v")
)


class Store(AttachmentReads):
    """One engine, one ticket prefix, the blob store; safe to share between threads."""

    def __init__(self, engine: Engine, prefix: str = "SB", blobs: BlobStore | None = None) -> None:
        self.engine = engine
        self.prefix = prefix
        # raw messages and attachment bytes (blobs.py); None keeps them in the rows (tests, tools)
        self.blobs = blobs
        self.recent = RecentRaws()  # what this process just journaled, for the pipeline (recent.py)

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction; database outages surface as StoreUnavailable."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (IntegrityError, DataError):
            raise  # this row's fault (a unique key, a value the column refuses), not the store's
        except (OperationalError, DBAPIError) as exc:
            raise StoreUnavailable(f"store unavailable: {exc.orig!r}") from exc

    def ref_for(self, ticket_id: int) -> str:
        return f"{self.prefix}-{ticket_id:06d}"

    def id_for_ref(self, ref: str | None) -> int | None:
        """The ticket id a reference of this store's prefix names (None for another prefix or none)."""
        head, _, num = (ref or "").rpartition("-")
        return int(num) if head == self.prefix and num.isdigit() else None

    # ------------------------------------------------------------------ journal
    def journal_insert(self, raw: RawMessage, fence: Fence | None = None) -> SubmitResult:
        """Commit a raw message; an existing (source, external_id) returns ``new=False``. ``fence``
        runs first in the same transaction (the source's lease still held, ``replicas.py``)."""
        row = journal_row(raw)
        items = self._put_raw(row, raw)
        try:
            with self.tx() as conn:
                if fence is not None:
                    fence(conn)
                jid = conn.execute(insert(t.journal).values(**row)).inserted_primary_key[0]  # type: ignore[index]
            self._ensure(items)
            if raw.raw:
                self.recent.put(raw.content_hash, raw.raw)
            return SubmitResult(int(jid), True)
        except IntegrityError:
            with self.engine.connect() as conn:
                existing = conn.execute(
                    select(t.journal.c.id).where(
                        t.journal.c.source == raw.source, t.journal.c.external_id == raw.external_id
                    )
                ).scalar_one()
            return SubmitResult(int(existing), False)

    def journal_insert_many(self, raws: list[RawMessage], fence: Fence | None = None) -> list[SubmitResult]:
        """Journal several messages in one transaction; existing (source, external_id) are not new.
        ``fence`` runs first in that transaction (the source's lease still held, ``replicas.py``)."""
        keys = [(r.source, r.external_id) for r in raws]
        try:
            return self._insert_many(raws, keys, fence)
        except IntegrityError:  # another replica journaled one of them meanwhile: go one by one
            return [self.journal_insert(r, fence) for r in raws]

    def _put_raw(self, row: dict[str, Any], raw: RawMessage) -> dict[str, Chunks]:
        """The row's stored form; its blobs on disk before the journal commit that names them."""
        items = rawstore.stored_row(self.blobs, row, raw.raw, raw.content_hash)
        if items and self.blobs is not None:
            self.blobs.put_many(items)
            fault("after_blobs")  # crash tests: blobs on disk, the journal row not yet committed
        return items

    def _ensure(self, items: dict[str, Chunks]) -> None:
        if items and self.blobs is not None:
            ensure(self.blobs, items, items)

    def _insert_many(
        self, raws: list[RawMessage], keys: list[tuple[str, str]], fence: Fence | None = None
    ) -> list[SubmitResult]:
        prepared: dict[tuple[str, str], dict[str, Any]] = {}
        items: dict[str, Chunks] = {}
        for r in raws:  # the same message twice in one batch is journaled once
            if (r.source, r.external_id) not in prepared:
                row = prepared[(r.source, r.external_id)] = journal_row(r)
                items.update(rawstore.stored_row(self.blobs, row, r.raw, r.content_hash))
        if items and self.blobs is not None:  # blobs first: a crash leaves orphans, never a dangling row
            self.blobs.put_many(items)
            fault("after_blobs")
        with self.tx() as conn:
            if fence is not None:
                fence(conn)
            existing = self._journal_ids(conn, keys)
            seen = {k for k in prepared if k not in existing}
            rows = [row for k, row in prepared.items() if k in seen]
            if rows:
                conn.execute(insert(t.journal), rows)
            ids = self._journal_ids(conn, keys)
        self._ensure(items)
        for r in raws:
            if r.raw and (r.source, r.external_id) in seen:
                self.recent.put(r.content_hash, r.raw)
        new_keys = set(seen)
        out = []
        for k in keys:
            out.append(SubmitResult(ids[k], k in new_keys))
            new_keys.discard(k)
        return out

    @staticmethod
    def _journal_ids(conn: Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        for source in {k[0] for k in keys}:
            ext = [k[1] for k in keys if k[0] == source]
            q = select(t.journal.c.id, t.journal.c.external_id).where(
                t.journal.c.source == source, t.journal.c.external_id.in_(ext)
            )
            found.update({(source, r[1]): int(r[0]) for r in conn.execute(q)})
        return found

    def pending_journal(
        self, limit: int = 200, max_bytes: int | None = None, exclude: list[int] | None = None
    ) -> list[int]:
        """The oldest pending entries (but ``exclude``: the batch being stored while the next is read):
        at most ``limit``, and no more than ``max_bytes`` of raw message (but always the first one),
        so a backlog of large mails makes smaller batches, not a larger process: a batch is held in
        memory several times over (raw, parsed, pickled to the workers)."""
        size = func.coalesce(t.journal.c.size, func.length(t.journal.c.raw), 0)
        q = select(t.journal.c.id, size).where(t.journal.c.status == "pending")
        if exclude:
            q = q.where(t.journal.c.id.not_in(exclude))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(t.journal.c.id).limit(limit))
            ids: list[int] = []
            total = 0
            for jid, size in rows:
                total += int(size)
                if ids and max_bytes is not None and total > max_bytes:
                    break
                ids.append(int(jid))
            return ids

    def count_pending(self, conn: Connection, ids: list[int]) -> int:
        """How many of these journal entries are pending (inside the caller's transaction)."""
        n = 0
        unique = sorted(set(ids))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            q = select(func.count()).where(t.journal.c.id.in_(chunk), t.journal.c.status == "pending")
            n += int(conn.execute(q).scalar() or 0)
        return n

    def load_raw(self, journal_id: int) -> RawMessage:
        return self.load_raws([journal_id])[journal_id]

    def load_raws(self, ids: list[int]) -> dict[int, RawMessage]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.journal).where(t.journal.c.id.in_(ids))).mappings().all()
        out = {}
        for r in rows:
            meta = dict(r["meta"] or {})
            held = r["raw"] is not None or r["blob_ref"] is not None  # not purged or erased meanwhile
            data = self.recent.take(r["content_hash"], r["size"]) if held else None
            hashed = data is not None  # the very bytes hashed when they were journaled
            if data is None:
                try:
                    data = rawstore.load(self.blobs, r)
                except BlobMissing as exc:  # quarantined by the parser with this reason, never guessed at
                    data, meta["fetch_error"] = None, str(exc)
            msg = out[int(r["id"])] = RawMessage(
                channel=r["channel"],
                source=r["source"],
                external_id=r["external_id"],
                received_at=r["received_at"],
                raw=data,
                blob_ref=r["blob_ref"],
                metadata=meta,
            )
            if hashed:
                msg.__dict__["content_hash"] = r["content_hash"]
            else:
                _ = msg.content_hash  # hashed here, in a loader thread, not later in the event loop's
        return out

    def journal_row(self, journal_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(t.journal).where(t.journal.c.id == journal_id)).mappings().first()
        return dict(r) if r else None

    def mark_journal(self, conn: Connection, journal_id: int, status: str, ticket_id: int | None) -> None:
        conn.execute(MARK_JOURNAL, {"jid": journal_id, "st": status, "tid": ticket_id, "at": utcnow()})

    def journal_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.journal.c.status, func.count()).group_by(t.journal.c.status))
            return {r[0]: int(r[1]) for r in rows}

    # ------------------------------------------------------------------ quarantine
    def quarantine(self, journal_id: int, stage: str, plugin: str | None, exc: BaseException) -> None:
        """Park a message that failed a stage, with the reason; the next message goes on."""
        with self.tx() as conn:
            self.quarantine_row(conn, journal_id, stage, plugin, exc)

    def quarantine_row(
        self, conn: Connection, journal_id: int, stage: str, plugin: str | None, exc: BaseException
    ) -> None:
        self.mark_journal(conn, journal_id, "quarantined", None)
        conn.execute(
            insert(t.quarantine).values(
                journal_id=journal_id,
                stage=stage,
                plugin=plugin,
                error=clean_error(f"{type(exc).__name__}: {exc}"),
                traceback=clean_error("".join(tb.format_exception(exc))[-8000:], 8000),
                at=utcnow(),
                resolved=False,
            )
        )

    def quarantine_list(self, include_resolved: bool = False) -> list[dict[str, Any]]:
        q = (
            select(t.quarantine, t.journal.c.source, t.journal.c.external_id, t.journal.c.channel)
            .join(t.journal, t.journal.c.id == t.quarantine.c.journal_id)
            .order_by(t.quarantine.c.id)
        )
        if not include_resolved:
            q = q.where(t.quarantine.c.resolved.is_(False))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def quarantine_get(self, qid: int) -> dict[str, Any] | None:
        rows = [r for r in self.quarantine_list(include_resolved=True) if r["id"] == qid]
        return rows[0] if rows else None

    def quarantine_release(self, qid: int, action: str) -> int:
        """``retry`` puts the journal entry back to pending; ``drop`` marks it dropped. Returns journal id."""
        with self.tx() as conn:
            row = conn.execute(select(t.quarantine).where(t.quarantine.c.id == qid)).mappings().first()
            if row is None or row["resolved"]:
                raise KeyError(f"no open quarantine entry {qid}")
            conn.execute(update(t.quarantine).where(t.quarantine.c.id == qid).values(resolved=True))
            status = "pending" if action == "retry" else "dropped"
            conn.execute(update(t.journal).where(t.journal.c.id == row["journal_id"]).values(status=status))
            return int(row["journal_id"])

    # ------------------------------------------------------------------ tickets
    def allocate_ticket_id(self) -> int:
        """Next ticket number, committed on its own (gaps allowed, duplicates impossible)."""
        return self.allocate_ticket_ids(1)[0]

    def allocate_ticket_ids(self, n: int) -> list[int]:
        """Reserve n consecutive ticket numbers in one short transaction."""
        with self.tx() as conn:
            got = conn.execute(
                update(t.counters)
                .where(t.counters.c.name == "ticket")
                .values(value=t.counters.c.value + n)
                .returning(t.counters.c.value)
            ).scalar()
            if got is None:
                start = conn.execute(select(func.coalesce(func.max(t.tickets.c.id), 0))).scalar_one()
                got = int(start) + n
                conn.execute(insert(t.counters).values(name="ticket", value=got))
            return list(range(int(got) - n + 1, int(got) + 1))

    def insert_ticket(self, conn: Connection, ticket: Ticket, source: str | None) -> None:
        conn.execute(_INS_TICKET, ticket_row(ticket, source))

    def update_ticket(self, conn: Connection, ticket_id: int, **values: Any) -> None:
        values["updated_at"] = utcnow()
        if "deadlines" in values:
            found = values["deadlines"]  # datetimes, or already ISO text (changes.column_values)
            values["deadlines"] = {k: v if isinstance(v, str) else v.isoformat() for k, v in found.items()}
        conn.execute(update(t.tickets).where(t.tickets.c.id == ticket_id).values(**values))

    def sinks_of(self, conn: Connection, ticket_id: int) -> list[str]:
        """The sinks this ticket was sent to (its outbox create rows), sorted."""
        q = select(t.outbox.c.target).where(t.outbox.c.ticket_id == ticket_id, t.outbox.c.kind == "create")
        return sorted({r[0] for r in conn.execute(q)})

    def add_event(
        self, conn: Connection, ticket_id: int, ev: TicketEvent, journal_id: int | None = None
    ) -> None:
        row = {"ticket_id": ticket_id, "type": ev.type, "at": ev.at, "actor": ev.actor, "data": ev.data}
        conn.execute(_INS_EVENT, {**row, "journal_id": journal_id})

    def add_link(self, conn: Connection, ticket_id: int, link: ExternalLink) -> bool:
        """Record a link unless that (system, kind, value) is already known; True if inserted."""
        if conn.execute(_SEL_LINK, {"s": link.system, "k": link.kind, "v": link.value}).first():
            return False
        conn.execute(
            _INS_LINK, {"ticket_id": ticket_id, "system": link.system, "kind": link.kind, "value": link.value}
        )
        return True

    def add_attachment(
        self, conn: Connection, ticket_id: int, att: Attachment, journal_id: int | None
    ) -> None:
        conn.execute(_INS_ATT, {"ticket_id": ticket_id, "journal_id": journal_id, **att.model_dump()})

    def get_ticket(
        self, key: int | str, *, full: bool = True, conn: Connection | None = None
    ) -> Ticket | None:
        """Load a ticket by id or public reference, with its trail, links and attachment metadata."""
        if conn is None:
            with self.engine.connect() as c:
                return self.get_ticket(key, full=full, conn=c)
        col = t.tickets.c.ref if isinstance(key, str) else t.tickets.c.id
        r = conn.execute(select(t.tickets).where(col == key)).mappings().first()
        if r is None:
            return None
        if full:
            return self.get_tickets({int(r["id"])})[int(r["id"])]
        return ticket_from_row(r)

    def get_tickets(self, ids: set[int], events: bool = True) -> dict[int, Ticket]:
        """Several tickets with links, attachment metadata and (unless ``events=False``) their trail."""
        if not ids:
            return {}
        with self.engine.connect() as conn:
            out = {
                int(r["id"]): ticket_from_row(r)
                for r in conn.execute(select(t.tickets).where(t.tickets.c.id.in_(ids))).mappings()
            }
            evq = select(t.events).where(t.events.c.ticket_id.in_(ids)).order_by(t.events.c.id)
            for e in conn.execute(evq).mappings() if events else ():
                out[int(e["ticket_id"])].events.append(
                    TicketEvent(type=e["type"], at=e["at"], actor=e["actor"], data=e["data"] or {})
                )
            for x in conn.execute(
                select(t.links).where(t.links.c.ticket_id.in_(ids)).order_by(t.links.c.id)
            ).mappings():
                out[int(x["ticket_id"])].links.append(
                    ExternalLink(system=x["system"], kind=x["kind"], value=x["value"])
                )
            q = select(*[c for c in t.attachments.c if c.name != "data"]).where(
                t.attachments.c.ticket_id.in_(ids)
            )
            for a in conn.execute(q.order_by(t.attachments.c.id)).mappings():
                out[int(a["ticket_id"])].attachments.append(attachment_model(a))
        return out

    def list_tickets(self, state: str | None = None, limit: int = 100) -> list[Ticket]:
        q = select(t.tickets).order_by(t.tickets.c.id.desc()).limit(limit)
        if state:
            q = q.where(t.tickets.c.state == state)
        with self.engine.connect() as conn:
            return [ticket_from_row(r) for r in conn.execute(q).mappings()]

    def count_tickets(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.tickets)).scalar_one())

    # ------------------------------------------------------------------ TicketLookup
    def by_ref(self, ref: str) -> Ticket | None:
        return self.get_ticket(ref, full=False)

    def by_link(self, system: str, kind: str, value: str) -> Ticket | None:
        with self.engine.connect() as conn:
            tid = conn.execute(_SEL_LINK, {"s": system, "k": kind, "v": value}).scalar()
            return self.get_ticket(int(tid), full=False, conn=conn) if tid is not None else None

    def open_by_contact(
        self, *, email: str | None = None, phone: str | None = None, channel: str | None = None
    ) -> Ticket | None:
        """The most recent ticket of this contact that is not resolved or closed."""
        if not email and not phone:
            return None
        q = select(t.tickets).where(t.tickets.c.state.not_in(("resolved", "closed")))
        q = (
            q.where(t.tickets.c.contact_email == email)
            if email
            else q.where(t.tickets.c.contact_phone == phone)
        )
        if channel:
            q = q.where(t.tickets.c.channel == channel)
        with self.engine.connect() as conn:
            r = conn.execute(q.order_by(t.tickets.c.id.desc()).limit(1)).mappings().first()
        return ticket_from_row(r) if r else None

    def awaiting_survey(
        self, *, email: str | None = None, phone: str | None = None, since: datetime
    ) -> Ticket | None:
        tid = awaiting_survey(self.engine, email=email, phone=phone, since=since)  # store/surveys.py
        return self.get_ticket(tid) if tid is not None else None

    def journal_seen(self, content_hash: str, exclude_journal_id: int | None = None) -> int | None:
        q = select(t.journal.c.ticket_id).where(
            t.journal.c.content_hash == content_hash,
            t.journal.c.status.in_(("processed", "duplicate")),
            t.journal.c.ticket_id.is_not(None),
        )
        if exclude_journal_id is not None:
            q = q.where(t.journal.c.id != exclude_journal_id)
        with self.engine.connect() as conn:
            tid = conn.execute(q.limit(1)).scalar()
        return int(tid) if tid is not None else None

    def links_by_values(self, values: set[str]) -> dict[tuple[str, str, str], int]:
        """Every link whose value is one of ``values``: (system, kind, value) -> ticket id."""
        out: dict[tuple[str, str, str], int] = {}
        vals = sorted(values)
        with self.engine.connect() as conn:
            for i in range(0, len(vals), 500):  # stay far below any bind-parameter limit
                q = select(t.links.c.system, t.links.c.kind, t.links.c.value, t.links.c.ticket_id).where(
                    t.links.c.value.in_(vals[i : i + 500])
                )
                out.update({(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(q)})
        return out

    def journal_seen_many(self, hashes: set[str]) -> dict[str, int]:
        """Ticket ids of already processed journal entries, by content hash (one query per batch)."""
        if not hashes:
            return {}
        q = select(t.journal.c.content_hash, t.journal.c.ticket_id).where(
            t.journal.c.content_hash.in_(hashes),
            t.journal.c.status.in_(("processed", "duplicate")),
            t.journal.c.ticket_id.is_not(None),
        )
        with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(q)}

    # ------------------------------------------------------------------ checkpoints, idempotent updates
    def get_checkpoint(self, source: str, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.checkpoints.c.value).where(
                    t.checkpoints.c.source == source, t.checkpoints.c.key == key
                )
            ).scalar()

    def set_checkpoint(self, source: str, key: str, value: str) -> None:
        with self.tx() as conn:
            n = conn.execute(
                update(t.checkpoints)
                .where(t.checkpoints.c.source == source, t.checkpoints.c.key == key)
                .values(value=value, updated_at=utcnow())
            ).rowcount
            if not n:
                conn.execute(
                    insert(t.checkpoints).values(source=source, key=key, value=value, updated_at=utcnow())
                )

    def seen_update(self, conn: Connection, system: str, event_id: str) -> bool:
        """Record an external event id; True when it was already recorded (a redelivery)."""
        if conn.execute(
            select(t.seen_updates.c.event_id).where(
                t.seen_updates.c.system == system, t.seen_updates.c.event_id == event_id
            )
        ).first():
            return True
        conn.execute(insert(t.seen_updates).values(system=system, event_id=event_id, at=utcnow()))
        return False
