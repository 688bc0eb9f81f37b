"""Named leases in the store: one holder at a time, for a limited time, taken over when it runs out.

Several svcbridge processes may share one store (replicas on PostgreSQL; on SQLite a daemon beside
``svcbridge ingest`` from an MTA or a ``run --once`` from cron). Sources, webhooks and outbox delivery
are safe to run in all of them (the journal is unique on source and id, outbox items are claimed). The
pipeline is not: threading and duplicate checks read what is stored, so two processes working on the
journal at once could each make a ticket of the same conversation. The pipeline therefore runs in
the holder of the ``pipeline`` lease only (``pipeline.py``):

- ``acquire`` takes the lease when it is free or expired, renews it when already held, and otherwise
  names the holder. The other processes keep intake and delivery going and try again later.
- ``renew`` runs inside the transaction that stores a batch (fencing): a holder that lost its lease
  while it worked (paused longer than the lease, then another took over) cannot commit that batch;
  its entries stay pending for the new holder.
- A holder is ``host:pid:started:role-token``. On start, leases of dead processes on this host are
  released (``release_orphans``; a live pid that started at another time is a reused pid, so the
  holder is dead too), so a daemon restarted after ``kill -9`` does not wait for its old lease to run
  out; a holder on another host is waited out (``[pipeline] lease_ttl``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..models import utcnow
from . import schema as t
from .repo import Store

HOST = socket.gethostname()


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc); "" where there is no /proc.

    With the pid it tells a live holder from a dead one whose pid was reused: a daemon that is PID 1
    in a container and restarts after a crash is PID 1 again, on the same host name.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def new_holder(role: str = "oneshot") -> str:
    """``host:pid:started:role-token``, unique to this process and object (two apps in one process differ).

    ``role`` is ``daemon`` for ``svcbridge run`` and ``oneshot`` for a command that processes and exits
    (``ingest``, ``run --once``, ``quarantine retry``): a one-shot command that finds a daemon holding
    the lease leaves the work to it, one that finds another one-shot waits for it (``is_daemon``).
    """
    pid = os.getpid()
    return f"{HOST}:{pid}:{_started(pid)}:{role}-{uuid.uuid4().hex[:8]}"


def is_daemon(holder: str | None) -> bool:
    return bool(holder) and str(holder).rsplit(":", 1)[-1].startswith("daemon-")


def _take(conn: Connection, name: str, holder: str, ttl: float) -> tuple[str | None, bool]:
    now = utcnow()
    until = now + timedelta(seconds=ttl)
    lease = t.leases.c
    kept = conn.execute(  # held without a gap: ours and not run out
        update(t.leases)
        .where(lease.name == name, lease.holder == holder, lease.expires_at >= now)
        .values(expires_at=until)
    ).rowcount
    if kept:
        return None, False
    taken = conn.execute(
        update(t.leases)
        .where(lease.name == name, or_(lease.holder == holder, lease.expires_at < now))
        .values(holder=holder, expires_at=until)
    ).rowcount
    if taken:
        return None, True
    current = conn.execute(select(lease.holder).where(lease.name == name)).scalar()
    if current is not None:
        return str(current), False
    conn.execute(insert(t.leases).values(name=name, holder=holder, expires_at=until))
    return None, True


def beat(conn: Connection, name: str, holder: str, ttl: float) -> None:
    """Inside the caller's transaction: write ``holder``'s own lease ``name`` (a heartbeat nobody else
    takes), inserting it the first time."""
    until = utcnow() + timedelta(seconds=ttl)
    if not conn.execute(
        update(t.leases).where(t.leases.c.name == name).values(holder=holder, expires_at=until)
    ).rowcount:
        conn.execute(insert(t.leases).values(name=name, holder=holder, expires_at=until))


take_in = _take  # inside the caller's transaction (replicas.py takes many sources in one)


def take(store: Store, name: str, holder: str, ttl: float) -> tuple[str | None, bool]:
    """Take or renew lease ``name``: (None when ``holder`` has it now, else who has it; whether it was
    taken anew rather than renewed without a gap). Taken anew means another process may have held it
    in between: what the holder decided before on what it read then may be stale."""
    try:
        with store.tx() as conn:
            return _take(conn, name, holder, ttl)
    except IntegrityError:  # another process inserted the row at the same moment: it won
        with store.engine.connect() as conn:
            current = conn.execute(select(t.leases.c.holder).where(t.leases.c.name == name)).scalar()
        return (str(current) if current is not None else "another process"), False


def acquire(store: Store, name: str, holder: str, ttl: float) -> str | None:
    """Take or renew lease ``name``: None when ``holder`` has it now, else who has it."""
    return take(store, name, holder, ttl)[0]


def renew(conn: Connection, name: str, holder: str, ttl: float) -> bool:
    """Inside the caller's transaction: extend ``holder``'s lease; False when it is not theirs any more."""
    until = utcnow() + timedelta(seconds=ttl)
    lease = t.leases.c
    return bool(
        conn.execute(
            update(t.leases).where(lease.name == name, lease.holder == holder).values(expires_at=until)
        ).rowcount
    )


def release(store: Store, name: str, holder: str) -> None:
    """Give the lease back (a clean stop), so another process need not wait for it to run out."""
    with store.tx() as conn:
        conn.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder))


HEARTBEAT = "replica:"  # + holder: a daemon's heartbeat (replicas.py), renewed every third of its TTL


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_dead(holder: str, alive: Callable[[int], bool] = pid_alive) -> bool:
    """``holder`` is a process of this host that is gone (its pid dead, or reused by a later process)."""
    parts = str(holder).split(":")
    if parts[0] != HOST or len(parts) < 2 or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2] if len(parts) > 3 else ""
    return not alive(pid) or bool(started and _started(pid) not in ("", started))


def take_from_gone(store: Store, name: str, holder: str, ttl: float) -> bool:
    """Take lease ``name`` from a holder known to be gone before its lease runs out: a process of this
    host that died (``local_dead``), or a daemon whose heartbeat ran out (it beats every few seconds;
    the lease itself may last a minute). True when ``holder`` has it now."""
    with store.tx() as conn:
        current = conn.execute(select(t.leases.c.holder).where(t.leases.c.name == name)).scalar()
        if current is None or current == holder:
            return False
        gone = local_dead(str(current))
        if not gone:
            beat = conn.execute(
                select(t.leases.c.expires_at).where(t.leases.c.name == HEARTBEAT + str(current))
            ).scalar()
            gone = beat is not None and beat < utcnow()
        if not gone:
            return False
        until = utcnow() + timedelta(seconds=ttl)
        return bool(
            conn.execute(
                update(t.leases)
                .where(t.leases.c.name == name, t.leases.c.holder == current)
                .values(holder=holder, expires_at=until)
            ).rowcount
        )


def release_orphans(store: Store, alive: Callable[[int], bool]) -> int:
    """Release leases held by dead processes of this host; how many."""
    with store.tx() as conn:
        rows = conn.execute(select(t.leases.c.name, t.leases.c.holder)).all()  # a handful at most
        dead = []
        for name, holder in rows:
            parts = str(holder).split(":")
            if parts[0] != HOST or len(parts) < 2 or not parts[1].isdigit():
                continue
            pid, started = int(parts[1]), parts[2] if len(parts) > 3 else ""
            if not alive(pid) or (started and _started(pid) not in ("", started)):
                dead.append((name, holder))
        for name, holder in dead:
            conn.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder))
        return len(dead)
