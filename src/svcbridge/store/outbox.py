"""Outbox rows: written in the pipeline's transaction, claimed and settled by the delivery workers.

Order is kept per (ticket, target): an item is due only when no earlier item of the same ticket for
the same target is still pending or parked. A claim is a lease (``claimed_until``) so two workers or two
replicas never send one item at the same time; an expired claim (crash) makes the item due again, and
the sink's idempotency key / reconcile make that resend harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, or_, select, update

from ..errors import clean_error
from ..models import DeliveryResult, Notification, OutboxKind, Target, Ticket, utcnow
from . import schema as t
from .batch import BatchWriter
from .repo import Store

OPEN = ("pending", "parked")


# every done item of a round gets the same values: one UPDATE ... WHERE id IN (...), not one per row
_DONE = (
    update(t.outbox)
    .where(t.outbox.c.id.in_(bindparam("oids", expanding=True)))
    .values(status="done", done_at=bindparam("at"), claimed_until=None, last_error=None, inflight_at=None)
)
_FAILED = (
    update(t.outbox)
    .where(t.outbox.c.id == bindparam("oid"))
    .values(
        attempts=bindparam("att"),
        status=bindparam("st"),
        last_error=bindparam("err"),
        next_attempt_at=bindparam("nxt"),
        claimed_until=None,
        inflight_at=None,
    )
)
_RELEASE = (
    update(t.outbox)
    .where(t.outbox.c.id == bindparam("oid"))
    .values(next_attempt_at=bindparam("nxt"), claimed_until=None, inflight_at=None)
)
_INFLIGHT = (
    update(t.outbox)
    .where(t.outbox.c.id.in_(bindparam("oids", expanding=True)))
    .values(inflight_at=bindparam("at"))
)
_SEL_KEY = select(t.outbox.c.id).where(t.outbox.c.idempotency_key == bindparam("k"))
_INS = insert(t.outbox)


def enqueue(
    conn: Connection, ticket_id: int, kind: str, target: str, key: str, payload: dict[str, Any]
) -> bool:
    """Insert an outbox row unless its idempotency key exists; True if inserted."""
    key = key[:255]
    if conn.execute(_SEL_KEY, {"k": key}).first():
        return False
    now = utcnow()
    row = {"ticket_id": ticket_id, "kind": kind, "target": target, "idempotency_key": key, "payload": payload}
    conn.execute(_INS, {**row, "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now})
    return True


def notification_rows(
    ticket: Ticket, notes: list[Notification], scope: str
) -> list[tuple[Target, str, dict[str, Any]]]:
    """(target, idempotency key, payload) per notification; the key makes a re-run unable to send twice."""
    return [
        (
            Target.notify(n.channel),
            f"{ticket.ref}:{scope}:{n.template}:{n.channel}:{n.to}",
            {"notification": n.model_dump(mode="json")},
        )
        for n in notes
    ]


def enqueue_notifications(conn: Connection, ticket: Ticket, notes: list[Notification], scope: str) -> None:
    """Outbox rows for notifications (see ``notification_rows``), each unless its key exists."""
    for target, key, payload in notification_rows(ticket, notes, scope):
        enqueue(conn, ticket.id, OutboxKind.NOTIFY, target, key, payload)


# what a delivery round reads of a due item; the bookkeeping columns (claims, errors, timestamps
# but created_at) stay in the database: each datetime costs a conversion per row and round
DUE_COLUMNS = tuple(
    t.outbox.c[name]
    for name in ("id", "ticket_id", "kind", "target", "idempotency_key", "payload", "attempts", "created_at")
)


class Outbox:
    def __init__(self, store: Store, worker_id: str = "w") -> None:
        self.store = store
        self.worker_id = worker_id

    def due(self, limit: int = 50, now: datetime | None = None) -> list[dict[str, Any]]:
        now = now or utcnow()
        earlier = t.outbox.alias("earlier")
        blocked = (
            select(earlier.c.id)
            .where(
                earlier.c.ticket_id == t.outbox.c.ticket_id,
                earlier.c.target == t.outbox.c.target,
                earlier.c.id < t.outbox.c.id,
                earlier.c.status.in_(OPEN),
            )
            .exists()
        )
        q = (
            select(*DUE_COLUMNS)
            .where(
                t.outbox.c.status == "pending",
                t.outbox.c.next_attempt_at <= now,
                or_(t.outbox.c.claimed_until.is_(None), t.outbox.c.claimed_until < now),
                ~blocked,
            )
            # due first, then oldest: the order of the (status, next_attempt_at) index, so the query
            # stops after `limit` rows instead of sorting every pending row (a backlog of thousands
            # cost ~15 ms per round on SQLite). Order per (ticket, target) comes from `blocked`.
            .order_by(t.outbox.c.next_attempt_at, t.outbox.c.id)
            .limit(limit)
        )
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def claim_many(self, ids: list[int], lease_s: float = 300.0) -> set[int]:
        """Claim items in one transaction; returns the ids this worker now holds."""
        if not ids:
            return set()
        now = utcnow()
        until = now + timedelta(seconds=lease_s)
        with self.store.tx() as conn:
            conn.execute(
                update(t.outbox)
                .where(
                    t.outbox.c.id.in_(ids),
                    t.outbox.c.status == "pending",
                    or_(t.outbox.c.claimed_until.is_(None), t.outbox.c.claimed_until < now),
                )
                .values(claimed_by=self.worker_id, claimed_until=until)
            )
            got = conn.execute(
                select(t.outbox.c.id).where(
                    t.outbox.c.id.in_(ids),
                    t.outbox.c.claimed_by == self.worker_id,
                    t.outbox.c.claimed_until == until,
                )
            )
            return {int(r[0]) for r in got}

    def settle(self, outcomes: list[Any], max_attempts: int, inflight: list[int] | None = None) -> None:
        """Record outcomes in one transaction (done, retry, dead, release, parked), and mark the
        ``inflight`` items as being sent now (``settler.py``).

        Every kind of outcome is one parameterised statement run for all its rows (executemany).
        """
        if not outcomes and not inflight:
            return
        now = utcnow()
        by: dict[str, list[Any]] = {}
        for o in outcomes:
            by.setdefault(o.status, []).append(o)
        with self.store.tx() as conn:
            if inflight:
                conn.execute(_INFLIGHT, {"oids": inflight, "at": now})
            if done := by.get("done"):
                conn.execute(_DONE, {"oids": [o.row["id"] for o in done], "at": now})
                # the links targets returned and the trail entries: one statement per table
                w = BatchWriter()
                for o in done:
                    self._done_event(w, o.row, o.result or DeliveryResult())
                w.flush(conn)
            rows = [
                {
                    "oid": o.row["id"],
                    "att": o.row["attempts"] + 1,
                    "st": "dead"
                    if o.status == "dead" or o.row["attempts"] + 1 >= max_attempts
                    else "pending",
                    "err": clean_error(o.error),
                    "nxt": now + timedelta(seconds=o.delay),
                }
                for o in by.get("retry", []) + by.get("dead", [])
            ]
            if rows:
                conn.execute(_FAILED, rows)
            if release := by.get("release"):
                conn.execute(
                    _RELEASE, [{"oid": o.row["id"], "nxt": now + timedelta(seconds=o.delay)} for o in release]
                )
            for o in by.get("parked", []):  # credentials refused: park everything pending for that target
                conn.execute(
                    update(t.outbox)
                    .where(t.outbox.c.target == o.row["target"], t.outbox.c.status == "pending")
                    .values(status="parked", last_error=clean_error(o.error), claimed_until=None)
                )

    @staticmethod
    def _done_event(w: BatchWriter, row: dict[str, Any], result: DeliveryResult) -> None:
        """Queue the links a target returned and the ``delivered``/``notified`` event."""
        data: dict[str, Any] = {"outbox_id": row["id"]}
        if row["kind"] == OutboxKind.NOTIFY:
            data["template"] = row["payload"].get("notification", {}).get("template")
        w.delivered(row["ticket_id"], row["target"], row["kind"], result, **data)

    def park_target(self, target: str, error: str) -> int:
        """Credentials refused: park every pending item of that target (no retry storm)."""
        with self.store.tx() as conn:
            return int(
                conn.execute(
                    update(t.outbox)
                    .where(t.outbox.c.target == target, t.outbox.c.status == "pending")
                    .values(status="parked", last_error=clean_error(error), claimed_until=None)
                ).rowcount
            )

    def unpark(self, target: str | None = None) -> int:
        """Parked items go back to pending (on start-up after a config fix, or by hand)."""
        cond = [t.outbox.c.status == "parked"]
        if target:
            cond.append(t.outbox.c.target == target)
        with self.store.tx() as conn:
            return int(
                conn.execute(
                    update(t.outbox).where(and_(*cond)).values(status="pending", next_attempt_at=utcnow())
                ).rowcount
            )

    def release_orphans(self, host: str, alive: Any) -> list[int]:
        """Free claims of dead processes on this host (a ``kill -9`` mid-delivery); ``alive(pid)``.

        Returns the items that were marked in flight when their process died: their send may have
        happened (the caller says so); they go out again, once.
        """
        with self.store.tx() as conn:
            rows = conn.execute(
                select(t.outbox.c.id, t.outbox.c.claimed_by, t.outbox.c.inflight_at).where(
                    t.outbox.c.status == "pending",
                    t.outbox.c.claimed_by.like(f"{host}:%"),
                    t.outbox.c.claimed_until.is_not(None),
                )
            ).all()
            dead = [r for r in rows if not alive(int(r[1].rsplit(":", 1)[1]))]
            if dead:
                conn.execute(
                    update(t.outbox)
                    .where(t.outbox.c.id.in_([r[0] for r in dead]))
                    .values(claimed_until=None, inflight_at=None)
                )
            return [int(r[0]) for r in dead if r[2] is not None]

    def replay(self, item_id: int) -> bool:
        with self.store.tx() as conn:
            return (
                conn.execute(
                    update(t.outbox)
                    .where(t.outbox.c.id == item_id, t.outbox.c.status.in_(("dead", "parked", "done")))
                    .values(status="pending", attempts=0, next_attempt_at=utcnow(), claimed_until=None)
                ).rowcount
                == 1
            )

    def recent_notifications(self, since: datetime) -> list[tuple[datetime, dict[str, Any]]]:
        """(done_at, notification) of every notify item finished since `since` (rate-limit seed)."""
        q = select(t.outbox.c.done_at, t.outbox.c.payload).where(
            t.outbox.c.kind == OutboxKind.NOTIFY, t.outbox.c.status == "done", t.outbox.c.done_at >= since
        )
        with self.store.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [(r.done_at, (r.payload or {}).get("notification") or {}) for r in rows if r.done_at]

    def list(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        q = select(t.outbox).order_by(t.outbox.c.id).limit(limit)
        if status:
            q = q.where(t.outbox.c.status == status)
        with self.store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(t.outbox.c.status, func.count()).group_by(t.outbox.c.status))
            return {r[0]: int(r[1]) for r in rows}

    def next_due_in(self) -> float | None:
        with self.store.engine.connect() as conn:
            nxt = conn.execute(
                select(func.min(t.outbox.c.next_attempt_at)).where(t.outbox.c.status == "pending")
            ).scalar()
        if nxt is None:
            return None
        return max(0.0, (t.aware(nxt) - utcnow()).total_seconds())
