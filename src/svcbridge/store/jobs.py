"""Job and timer rows: written in the transaction of the work that asks for them, claimed by a runner.

Claims work as in the outbox (``outbox.py``): a claim is a lease (``claimed_by``, ``claimed_until``),
so two replicas never run one job or fire one timer at the same time, and a claim that runs out (a
``kill -9``) makes the row due again. Finishing is fenced on the claim: the UPDATE that marks a row
done names the claim it holds, and when it matches nothing (the claim ran out and another runner
took the row, or the timer was moved meanwhile) the whole transaction, with the handler's effects,
is rolled back. So a job's or a timer's effects are recorded once even when its handler ran twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Table, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import clean_error
from ..models import utcnow
from ..work import WorkQueue
from . import schema as t
from .repo import Store


class LostClaim(Exception):
    """The row was taken by another runner or changed while its handler ran: its effects are dropped."""


def enqueue_job(
    conn: Connection,
    kind: str,
    key: str,
    ticket_id: int | None,
    data: dict[str, Any],
    now: datetime | None = None,
) -> bool:
    """Insert a pending job unless one of that kind and key exists (any status); True if inserted."""
    key = key[:300]
    q = select(t.jobs.c.id).where(t.jobs.c.kind == kind, t.jobs.c.key == key)
    if conn.execute(q).first():
        return False
    now = now or utcnow()
    row = {
        "kind": kind,
        "key": key,
        "ticket_id": ticket_id,
        "data": data,
        "status": "pending",
        "attempts": 0,
        "runs": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    try:
        with conn.begin_nested():  # another replica's runner may insert the same key at this moment
            conn.execute(insert(t.jobs).values(**row))
    except IntegrityError:
        return False
    return True


def schedule_timer(
    conn: Connection,
    scope: str,
    name: str,
    ticket_id: int | None,
    at: datetime,
    data: dict[str, Any],
    now: datetime | None = None,
) -> None:
    """Timer ``name`` of ``scope`` fires at ``at``: a new row, or the existing one moved (and armed).

    Setting it again at the time it already has changes nothing, fired or not: a hook that sets
    "warn 4 h after creation" on every message must not fire the warning again on each follow-up.
    """
    now = now or utcnow()
    where = and_(t.timers.c.scope == scope, t.timers.c.name == name)
    have = conn.execute(select(t.timers.c.due_at, t.timers.c.status).where(where)).first()
    if have is not None and have.status in ("pending", "fired") and have.due_at == at:
        return
    values = {
        "due_at": at,
        "next_attempt_at": at,
        "data": data,
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "fired_at": None,
        "late_s": None,
        "claimed_by": None,
        "claimed_until": None,
        "updated_at": now,
    }
    if have is not None and conn.execute(update(t.timers).where(where).values(**values)).rowcount:
        return
    row = {"scope": scope, "name": name, "ticket_id": ticket_id, "created_at": now, "runs": 0, **values}
    try:
        with conn.begin_nested():
            conn.execute(insert(t.timers).values(**row))
    except IntegrityError:  # inserted by another replica meanwhile: move that one
        conn.execute(update(t.timers).where(where).values(**values))


def cancel_timer(conn: Connection, scope: str, name: str, now: datetime | None = None) -> bool:
    """Cancel a pending timer; True when one was cancelled."""
    res = conn.execute(
        update(t.timers)
        .where(t.timers.c.scope == scope, t.timers.c.name == name, t.timers.c.status == "pending")
        .values(status="cancelled", claimed_by=None, claimed_until=None, updated_at=now or utcnow())
    )
    return bool(res.rowcount)


def write_work(conn: Connection, store: Store, work: WorkQueue, now: datetime | None = None) -> None:
    """The jobs and timers a hook or handler asked for, in the caller's transaction."""
    tid = work.ticket_id if work.ticket_id is not None else store.id_for_ref(work.ticket_ref)
    for j in work.jobs:
        enqueue_job(conn, j.kind, j.key, tid if j.ticket_ref == work.ticket_ref else None, j.data, now)
    for tm in work.timers:
        scope = tm.ticket_ref or ""
        if tm.at is None:
            cancel_timer(conn, scope, tm.name, now)
        else:
            owner = tid if tm.ticket_ref == work.ticket_ref else None
            schedule_timer(conn, scope, tm.name, owner, tm.at, tm.data, now)


class Rows:
    """Due / claim / finish / list for one of the two tables (jobs or timers)."""

    def __init__(self, store: Store, table: Table, worker_id: str) -> None:
        self.store, self.table, self.worker_id = store, table, worker_id
        # what a row's handler is looked up by: a job's kind, a timer's name
        self.name_col = "kind" if "kind" in table.c else "name"

    def due(self, limit: int, now: datetime, names: set[str] | None = None) -> list[dict[str, Any]]:
        c = self.table.c
        q = (
            select(self.table)
            .where(
                c.status == "pending",
                c.next_attempt_at <= now,
                or_(c.claimed_until.is_(None), c.claimed_until < now),
            )
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
        )
        if names is not None:  # only kinds some plugin registered: the others wait for theirs
            q = q.where(c[self.name_col].in_(sorted(names)))
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def claim(self, ids: list[int], now: datetime, lease_s: float) -> dict[int, datetime]:
        """Claim rows in one transaction; {id: claimed_until} of those this runner now holds."""
        if not ids:
            return {}
        c = self.table.c
        until = now + timedelta(seconds=lease_s)
        with self.store.tx() as conn:
            conn.execute(
                update(self.table)
                .where(
                    c.id.in_(ids),
                    c.status == "pending",
                    or_(c.claimed_until.is_(None), c.claimed_until < now),
                )
                .values(claimed_by=self.worker_id, claimed_until=until, runs=c.runs + 1)
            )
            got = conn.execute(
                select(c.id).where(c.id.in_(ids), c.claimed_by == self.worker_id, c.claimed_until == until)
            )
            return {int(r[0]): until for r in got}

    def finish(self, conn: Connection, row_id: int, until: datetime, **values: Any) -> None:
        """Record the outcome of a claimed row; raises ``LostClaim`` when the claim is not ours any more."""
        c = self.table.c
        res = conn.execute(
            update(self.table)
            .where(c.id == row_id, c.claimed_by == self.worker_id, c.claimed_until == until)
            .values(claimed_by=None, claimed_until=None, **values)
        )
        if res.rowcount != 1:
            raise LostClaim(f"{self.table.name} {row_id}")

    def release_orphans(self, host: str, alive: Any) -> int:
        """Free claims of dead processes on this host (``kill -9`` mid-run): due again at once."""
        c = self.table.c
        with self.store.tx() as conn:
            rows = conn.execute(
                select(c.id, c.claimed_by).where(
                    c.status == "pending", c.claimed_by.like(f"{host}:%"), c.claimed_until.is_not(None)
                )
            ).all()
            dead = [r[0] for r in rows if not alive(int(str(r[1]).rsplit(":", 1)[1]))]
            if dead:
                conn.execute(update(self.table).where(c.id.in_(dead)).values(claimed_until=None))
            return len(dead)

    def unpark(self) -> int:
        c = self.table.c
        with self.store.tx() as conn:
            res = conn.execute(
                update(self.table)
                .where(c.status == "parked")
                .values(status="pending", next_attempt_at=utcnow())
            )
            return int(res.rowcount)

    def park(self, conn: Connection, column: str, value: str, error: str, now: datetime) -> None:
        """Park every waiting row whose ``column`` is ``value`` (credentials refused for that kind);
        rows another handler is running now finish on their own."""
        c = self.table.c
        conn.execute(
            update(self.table)
            .where(
                c[column] == value,
                c.status == "pending",
                or_(c.claimed_until.is_(None), c.claimed_until < now),
            )
            .values(status="parked", last_error=clean_error(error), claimed_until=None, claimed_by=None)
        )

    def list(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        c = self.table.c
        q = select(self.table).order_by(c.id.desc()).limit(limit)
        if status:
            q = q.where(c.status == status)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def get(self, row_id: int) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            r = conn.execute(select(self.table).where(self.table.c.id == row_id)).mappings().first()
            return dict(r) if r else None

    def retry(self, row_id: int) -> bool:
        """A dead, parked or finished row runs again (by hand, after a fix)."""
        c = self.table.c
        with self.store.tx() as conn:
            res = conn.execute(
                update(self.table)
                .where(c.id == row_id, c.status != "pending")
                .values(
                    status="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                    claimed_until=None,
                    claimed_by=None,
                )
            )
            return res.rowcount == 1

    def counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(self.table.c.status, func.count()).group_by(self.table.c.status))
            return {r[0]: int(r[1]) for r in rows}

    def next_due_in(self, now: datetime, names: set[str]) -> float | None:
        """Seconds until the next row this runner can run is due (None: none waits); rows of kinds no
        plugin registers and rows another runner holds do not count (the daemon would spin on them)."""
        if not names:
            return None  # no plugin runs any: nothing this runner waits for (no query per idle second)
        c = self.table.c
        q = select(func.min(c.next_attempt_at)).where(
            c.status == "pending",
            c[self.name_col].in_(sorted(names)),
            or_(c.claimed_until.is_(None), c.claimed_until < now),
        )
        with self.store.engine.connect() as conn:
            nxt = conn.execute(q).scalar()
        if nxt is None:
            return None
        return max(0.0, (t.aware(nxt) - now).total_seconds())
