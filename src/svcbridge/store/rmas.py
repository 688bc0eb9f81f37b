"""The RMAs of the store (``svcbridge.rma.RmaBook``): open, read, move, each in one transaction.

A move writes, together: the row's new state (and number, carrier, tracking when given), a ``rma``
ticket event with time, source, from and to, the ticket's ``rma`` label (one line per RMA) and the
note to its helpdesks (``changes.record``, origin ``rma:<id>:<state>``: the outbox key names the
transition, so a repeated move can never send the note twice), and the ``rma.reminder`` timer moved or
cancelled. A vendor's or mailbox's own event id (``key``) is recorded in ``seen_updates`` under the
system ``rma``: the same report read twice changes nothing.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import changes
from ..models import Notification, Ticket, TicketEvent, utcnow
from ..rma import Rma, RmaPart, RmaState, rma_can_move
from ..work import TicketChange, WorkQueue
from . import outbox as ob
from . import schema as t
from .jobs import write_work
from .repo import Store

REMINDER = "rma.reminder"
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # controls and line breaks of any kind
CustomerNotices = Callable[[Rma, RmaState | None, Ticket], list[Notification]]


class _Raced(Exception):
    """The row's state changed under a move: its transaction is rolled back and the move judged again."""


class RmaStore:
    """``svcbridge.RmaBook`` over the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # set by a plugin at startup (svcbridge_rma: [plugins.rma.customer]): what the customer is told
        # of a transition; its notifications are written with the transition, sent once by the outbox
        self.customer_notices: CustomerNotices | None = None

    # ------------------------------------------------------------------ reading
    def _rma(self, conn: Connection, row: Any) -> Rma:
        row = {"carrier": None, "tracking": None, **dict(row)}
        return Rma(
            id=row["id"],
            ticket_ref=self.store.ref_for(int(row["ticket_id"])),
            vendor=row["vendor"],
            number=row["number"],
            state=RmaState(row["state"]),
            parts=[RmaPart(**p) for p in row["parts"] or []],
            asset=row["asset"] or {},
            fault=row["fault"],
            carrier=row["carrier"],
            tracking=row["tracking"],
            source=row["source"],
            data=row["data"] or {},
            created_at=t.aware(row["created_at"]),
            updated_at=t.aware(row["updated_at"]),
        )

    def _select(self, *where: Any, limit: int = 200) -> builtins.list[Rma]:
        with self.store.engine.connect() as conn:
            q = select(t.rmas).where(*where).order_by(t.rmas.c.id).limit(limit)
            return [self._rma(conn, r) for r in conn.execute(q).mappings()]

    def get(self, rma_id: int) -> Rma | None:
        found = self._select(t.rmas.c.id == rma_id)
        return found[0] if found else None

    def find(self, vendor: str, number: str) -> Rma | None:
        found = self._select(t.rmas.c.vendor == vendor.upper(), t.rmas.c.number == number)
        return found[-1] if found else None

    def by_ticket(self, ticket_ref: str) -> builtins.list[Rma]:
        tid = self.store.id_for_ref(ticket_ref)
        return [] if tid is None else self._select(t.rmas.c.ticket_id == tid)

    def list(
        self, state: RmaState | None = None, vendor: str | None = None, limit: int = 200
    ) -> builtins.list[Rma]:
        where = [t.rmas.c.state == state.value] if state else []
        where += [t.rmas.c.vendor == vendor.upper()] if vendor else []
        return self._select(*where, limit=limit)

    def stale(self, before: datetime) -> builtins.list[Rma]:
        """Open RMAs the vendor has not moved since ``before`` (the reminder's question)."""
        final = [s.value for s in RmaState if s.is_final]
        return self._select(t.rmas.c.state.not_in(final), t.rmas.c.updated_at < before, limit=1000)

    # ------------------------------------------------------------------ writing
    def open(
        self,
        ticket_ref: str,
        vendor: str,
        parts: builtins.list[RmaPart],
        *,
        fault: str | None = None,
        number: str | None = None,
        source: str = "cli",
        source_key: str | None = None,
        remind_after: timedelta | None = None,
    ) -> Rma:
        if not parts:
            raise ValueError("an RMA needs at least one part")
        ticket = self.store.get_ticket(ticket_ref, full=False)
        if ticket is None:
            raise LookupError(f"no ticket {ticket_ref}")
        if source_key:
            with self.store.engine.connect() as conn:
                row = conn.execute(select(t.rmas).where(t.rmas.c.source_key == source_key)).mappings().first()
                if row is not None:
                    return self._rma(conn, row)
        now = utcnow()
        values = {
            "ticket_id": ticket.id,
            "vendor": vendor.upper(),
            "number": number,
            "state": RmaState.REQUESTED.value,
            "parts": [p.model_dump(exclude_none=True) for p in parts],
            "asset": ticket.asset.model_dump(mode="json", exclude_none=True),
            "fault": fault,
            "source": source,
            "source_key": source_key,
            "data": {},
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.store.tx() as conn:
                key = conn.execute(insert(t.rmas).values(**values)).inserted_primary_key
                rma_id = int(key[0]) if key else 0
                rma = self._rma(conn, {**values, "id": rma_id})
                self._record(conn, ticket.id, rma, None, source, now, None, remind_after)
        except IntegrityError:  # the same source_key opened it concurrently: that one stands
            if source_key is None:
                raise
            return self.open(ticket_ref, vendor, parts, source_key=source_key)
        return rma

    def move(
        self,
        rma_id: int,
        state: RmaState,
        *,
        source: str,
        number: str | None = None,
        carrier: str | None = None,
        tracking: str | None = None,
        note: str | None = None,
        key: str | None = None,
        at: datetime | None = None,
        remind_after: timedelta | None = None,
    ) -> Rma | None:
        """Apply a transition; ``None`` when ``key`` was seen or nothing changes (same state and
        details); ``ValueError`` for a move the lifecycle forbids."""
        at = at or utcnow()
        for _ in range(5):
            try:
                return self._move_once(
                    rma_id, state, source, number, carrier, tracking, note, key, at, remind_after
                )
            except _Raced:  # another writer moved it between our read and our write: judge again
                continue
        raise ValueError(f"RMA {rma_id}: moved by others meanwhile, try again")

    def _move_once(
        self,
        rma_id: int,
        state: RmaState,
        source: str,
        number: str | None,
        carrier: str | None,
        tracking: str | None,
        note: str | None,
        key: str | None,
        at: datetime,
        remind_after: timedelta | None,
    ) -> Rma | None:
        with self.store.tx() as conn:
            row = (
                conn.execute(select(t.rmas).where(t.rmas.c.id == rma_id).with_for_update()).mappings().first()
            )
            if row is None:
                raise LookupError(f"no RMA {rma_id}")
            if key and self.store.seen_update(conn, "rma", f"{rma_id}:{key}"):
                return None
            old = RmaState(row["state"])
            extra = {k: v for k, v in (("number", number), ("carrier", carrier), ("tracking", tracking)) if v}
            for k, v in extra.items():  # the columns hold 100 (PostgreSQL refuses more: a DataError)
                if len(v) > 100 or _BREAKS.search(v):
                    raise ValueError(f"RMA {rma_id}: {k} must be 1-100 characters on one line")
            if state == old:
                if not any(row[k] != v for k, v in extra.items()):
                    return None  # the vendor said again what we know
            elif not rma_can_move(old, state):
                raise ValueError(f"RMA {rma_id}: {old.value} -> {state.value} is not allowed")
            values = {"state": state.value, "updated_at": at, **extra}
            # compare-and-set: FOR UPDATE is a no-op on SQLite, where the row was read without a lock,
            # so a move judged on a state another writer has just left must not overwrite it
            done = conn.execute(
                update(t.rmas).where(t.rmas.c.id == rma_id, t.rmas.c.state == old.value).values(**values)
            )
            if done.rowcount != 1:
                raise _Raced
            rma = self._rma(conn, {**row, **values})
            self._record(conn, int(row["ticket_id"]), rma, old, source, at, note, remind_after)
            return rma

    def send(self, rma_id: int, notes: builtins.list[Notification], purpose: str) -> bool:
        """Queue mails for an RMA (the request to the vendor's mailbox, a notice to the customer) in the
        outbox, once per ``purpose`` and address (the outbox key), with a ``rma_mail`` event; False when
        they were queued before."""
        rma = self.get(rma_id)
        if rma is None:
            raise LookupError(f"no RMA {rma_id}")
        with self.store.tx() as conn:
            ticket = self.store.get_ticket(rma.ticket_ref, full=False, conn=conn)
            assert ticket is not None
            if self.store.seen_update(conn, "rma-mail", f"{rma_id}:{purpose}"):
                return False
            ob.enqueue_notifications(conn, ticket, notes, f"rma:{rma_id}:{purpose}")
            data = {"rma": rma_id, "purpose": purpose, "to": [n.to for n in notes]}
            self.store.add_event(conn, ticket.id, TicketEvent(type="rma_mail", actor="rma", data=data))
        return True

    def _record(
        self,
        conn: Connection,
        ticket_id: int,
        rma: Rma,
        old: RmaState | None,
        source: str,
        at: datetime,
        note: str | None,
        remind_after: timedelta | None,
    ) -> None:
        data = {
            "rma": rma.id,
            "vendor": rma.vendor,
            "number": rma.number,
            "from": old.value if old else None,
            "to": rma.state.value,
            "source": source,
            "at": at.isoformat(),
            "carrier": rma.carrier,
            "tracking": rma.tracking,
        }
        self.store.add_event(conn, ticket_id, TicketEvent(type="rma", at=at, actor=source, data=data))
        ticket = self.store.get_ticket(ticket_id, full=False, conn=conn)
        assert ticket is not None
        lines = dict(ticket.labels.get("rma") or {})
        lines[str(rma.id)] = rma.summary()
        verb = "opened" if old is None else f"{old.value} -> {rma.state.value}"
        text = f"{rma.summary()}\n{verb} ({source}, {at.isoformat(timespec='seconds')})"
        if note:
            text += "\n" + note
        change = TicketChange(labels={"rma": lines}, note=text)
        origin = f"rma:{rma.id}:{rma.state.value}:{rma.number or ''}:{rma.tracking or ''}"
        changes.record(conn, self.store, ticket, change, plugin="rma", origin=origin)
        if self.customer_notices is not None:
            notes = self.customer_notices(rma, old, ticket)
            if notes:
                ob.enqueue_notifications(conn, ticket, notes, f"rma:{rma.id}:{rma.state.value}:customer")
        work = WorkQueue(ticket.ref, ticket_id)
        open_left = any(
            RmaState(r["state"]).is_final is False
            for r in conn.execute(select(t.rmas.c.state).where(t.rmas.c.ticket_id == ticket_id)).mappings()
        )
        if remind_after is not None and open_left:
            work.schedule(REMINDER, at + remind_after, {"rma": rma.id})
        elif not open_left:
            work.cancel(REMINDER)
        if work:
            write_work(conn, self.store, work, at)
