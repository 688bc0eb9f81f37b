"""Replicas share the work: each source is leased to one replica at a time, spread across replicas.

Before this, every replica on a shared store polled every mailbox: the journal kept one copy, but
after-actions (move, delete, flag) could run twice, IMAP providers limit concurrent logins per
account, and every helpdesk status poll ran in every replica. Now each source (a mailbox, a Graph
folder, a sink's status poller: ``poll:<sink>``) is the lease ``source:<name>`` (``store/lease.py``):

- every replica writes a heartbeat (the lease ``replica:<holder>``) every third of
  ``[store] source_lease_ttl`` (7 s) and counts the live ones;
- it holds its fair share, ``ceil(sources / live replicas)``: it renews what it holds, takes free,
  expired or dead-held sources up to its share, and gives back one above it per round, so a replica
  that joins gets work and one that leaves (or dies) hands its sources over;
- a holder on this host whose process is gone (by pid and start time, ``lease.local_dead``) is
  recognised at once; one on another host when its lease runs out: failover within the TTL;
- a replica runs a source only while it holds its lease, and stops every source when it could not
  renew for half the TTL (the store unreachable): it stops before anyone else may take over
  (self-fencing);
- a source acts only while its lease is valid by this process's monotonic clock (``SourceLeases``:
  less than half the TTL since its last renewal began, else one UPDATE asks the store): before it
  journals a batch, before every upstream after-action (``IntakeContext.confirm_lease``: an IMAP
  move, delete or flag) and before it moves a checkpoint. A process paused past the TTL (SIGSTOP, a
  frozen VM) that resumes therefore stops without acting (``LeaseLost``) instead of acting once beside
  the new holder; the journal insert checks the lease again inside its own transaction, so its batch
  is never committed. Left open: a pause between the check and the command sent upstream (the server
  cannot check our lease); moves and deletes by UID are idempotent there and the journal's unique key
  stores each mail once;
- ``svcbridge run --once`` holds the leases of the sources it polls for its pass (``take_for_pass``):
  beside daemon replicas it leaves them the sources they hold (``app.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from collections.abc import Callable, Coroutine, Mapping
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, delete, select, update
from sqlalchemy.exc import IntegrityError

from .errors import LeaseLost
from .models import utcnow
from .store import lease
from .store import schema as t
from .store.repo import Store

log = structlog.get_logger("svcbridge.replicas")
HEARTBEAT = lease.HEARTBEAT
SOURCE = "source:"


class SourceLeases:
    """The source leases this process holds as its own monotonic clock knows them: the fence a source
    passes before it journals a batch or acts upstream (a move, delete or flag).

    A lease counts as valid for half its TTL after its last renewal (the monotonic time the renewing
    transaction began, never later): the other half is the margin for clock skew between hosts and
    for the action itself. Past it the store is asked (one UPDATE: still ours, not run out); if that
    fails the source gets ``LeaseLost`` and acts no more. The journal insert checks the same inside
    its own transaction (``fence``), so a batch fetched before a long pause is never committed."""

    def __init__(self, store: Store, holder: str, ttl: float) -> None:
        self.store, self.holder, self.ttl = store, holder, ttl
        self.renewed: dict[str, float] = {}  # source -> monotonic start of its last renewal
        self.taken: dict[str, float] = {}  # source -> monotonic time it was last taken anew (a gap)

    def mark(self, name: str, at: float, anew: bool = False) -> None:
        self.renewed[name] = at
        if anew or name not in self.taken:
            self.taken[name] = at

    def forget(self, name: str) -> None:
        self.renewed.pop(name, None)
        self.taken.pop(name, None)

    def fresh(self, name: str, began: float = math.inf) -> bool:
        """Held, renewed less than half the TTL ago, and not taken anew since ``began`` (a pass that
        began before a gap decided on what it read then: another holder may have acted meanwhile)."""
        at = self.renewed.get(name)
        return at is not None and time.monotonic() - at < self.ttl / 2 and self.taken.get(name, 0.0) <= began

    def fence(self, conn: Connection, name: str) -> None:
        """Inside the caller's transaction: extend this holder's lease of ``name`` if it has not run
        out, else raise ``LeaseLost`` (the transaction rolls back). One small UPDATE."""
        started = time.monotonic()
        now = utcnow()
        if not conn.execute(
            update(t.leases)
            .where(t.leases.c.name == SOURCE + name, t.leases.c.holder == self.holder)
            .where(t.leases.c.expires_at >= now)
            .values(expires_at=now + timedelta(seconds=self.ttl))
        ).rowcount:
            raise LeaseLost(f"the lease of source {name} was lost (paused or cut off past its TTL)")
        self.renewed[name] = started  # the commit that follows makes it true; a rollback leaves it early

    def renew(self, name: str) -> bool:
        """Extend the lease in the store if it is still ours without a gap; False when it is not."""
        try:
            with self.store.tx() as conn:
                self.fence(conn, name)
            return True
        except LeaseLost:
            return False

    async def confirm(self, name: str, began: float = math.inf) -> None:
        """Before journaling or an upstream action: return at once while the lease is fresh by the
        monotonic clock, else renew it in the store first; raise ``LeaseLost`` when it is gone."""
        if self.fresh(name, began):
            return
        if self.taken.get(name, 0.0) <= began and await asyncio.to_thread(self.renew, name):
            return
        log.warning("source_lease_lapsed_not_acting", source=name, holder=self.holder)
        raise LeaseLost(f"source {name}: this process no longer holds its lease; not acting")

    # -------------------------------------------------------------- one-shot passes (run --once)
    def take_for_pass(self, names: list[str]) -> tuple[list[str], dict[str, str]]:
        """Lease every source that is free, run out or held by a dead process; (taken, {source: the
        live holder it is left to})."""
        got: list[str] = []
        busy: dict[str, str] = {}
        for n in names:
            started = time.monotonic()
            who, _anew = lease.take(self.store, SOURCE + n, self.holder, self.ttl)
            if who is not None and lease.take_from_gone(self.store, SOURCE + n, self.holder, self.ttl):
                log.info("source_taken_from_gone_holder", source=n, previous=who)
                who = None
            if who is None:
                self.mark(n, started, anew=True)
                got.append(n)
            else:
                busy[n] = who
        return got, busy

    def renew_all(self, names: list[str]) -> None:
        """A long pass keeps its leases (every third of the TTL); one lost is forgotten (its source
        gets ``LeaseLost`` at its next fence)."""
        for n in names:
            if n in self.renewed and not self.renew(n):
                self.forget(n)

    def release_all(self, names: list[str]) -> None:
        # a lease not given back runs out by itself
        with contextlib.suppress(Exception), self.store.tx() as conn:
            conn.execute(
                delete(t.leases).where(
                    t.leases.c.name.in_([SOURCE + n for n in names]), t.leases.c.holder == self.holder
                )
            )
        for n in names:
            self.forget(n)


class Replicas:
    """This replica's heartbeat and the sources it holds (synchronous: run in a thread)."""

    def __init__(self, store: Store, holder: str, ttl: float = 10.0) -> None:
        self.store, self.holder, self.ttl = store, holder, ttl
        self.held: set[str] = set()
        self.leases = SourceLeases(store, holder, ttl)  # what the sources fence on (IntakeCtx)
        self.taken: set[str] = set()  # taken anew in the last round: a task still running restarts

    def round(self, names: list[str]) -> set[str]:
        """One heartbeat: renew, take and give back leases; the source names this replica holds now.

        The heartbeat and the renewal of every source held are one transaction (one UPDATE for all of
        them: 200 mailboxes must not cost 200 commits every few seconds); takes and gives happen only
        when the spread changes."""
        started = time.monotonic()  # before the renewal: the fence counts from no later than it
        self.taken = set()
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        with self.store.tx() as conn:
            lease.beat(conn, HEARTBEAT + self.holder, self.holder, self.ttl)
            conn.execute(
                update(t.leases)
                .where(
                    t.leases.c.holder == self.holder,
                    t.leases.c.name.like(SOURCE + "%"),
                    t.leases.c.expires_at >= now,
                )
                .values(expires_at=until)
            )
            rows = conn.execute(select(t.leases.c.name, t.leases.c.holder, t.leases.c.expires_at)).all()
        live = {
            r[0][len(HEARTBEAT) :]
            for r in rows
            if r[0].startswith(HEARTBEAT) and r[2] >= now and not lease.local_dead(r[1])
        } | {self.holder}
        owner = {r[0][len(SOURCE) :]: (r[1], r[2]) for r in rows if r[0].startswith(SOURCE)}
        share = math.ceil(len(names) / len(live)) if names else 0
        mine = [n for n in names if n in owner and owner[n][0] == self.holder and owner[n][1] >= now]
        # a replica with two sources more than the least busy live one gives one back (2-2-0 -> 2-1-1)
        counts = dict.fromkeys(live, 0)
        for n in names:
            h, until = owner.get(n, ("", now))
            if h in counts and until >= now:
                counts[h] += 1
        spare = 1 if len(mine) - min(counts.values()) >= 2 else 0
        keep: set[str] = set()
        released = False
        for n in mine:  # renewed above
            if len(keep) >= min(share, len(mine) - spare):  # give it back for a replica that joined
                self.leases.forget(n)  # first: its loop must not act on it once another may take it
                lease.release(self.store, SOURCE + n, self.holder)
                log.info("source_released", source=n, share=share, replicas=len(live))
                released = True
                continue
            keep.add(n)
        # free, run out or dead-held sources, in an order of this replica's own (spreads the takers);
        # none in a round that gave one back (it would take back what it gave, before the other could)
        free = (
            [n for n in names if n not in keep and self._takeable(owner.get(n), now)] if not released else []
        )
        free.sort(key=lambda n: zlib.crc32(f"{self.holder}|{n}".encode()))
        wanted = free[: max(share - len(keep), 0)]
        got: list[str] = []
        if wanted:  # one transaction for all of them: a daemon with 200 mailboxes starts in one commit
            try:
                got = self._take_all(wanted, owner, now)
            except IntegrityError:  # another replica inserted one of them meanwhile: one by one
                got = [
                    n for n in wanted if lease.acquire(self.store, SOURCE + n, self.holder, self.ttl) is None
                ]
            for n in got:
                keep.add(n)
                previous = owner.get(n, (None, now))[0]
                log.info("source_taken", source=n, previous=previous, share=share, replicas=len(live))
        self.taken = set(got)
        for n in keep:
            self.leases.mark(n, started, anew=n in self.taken)
        for n in set(self.leases.renewed) - keep:
            self.leases.forget(n)
        self.held = keep
        return keep

    def _take_all(self, wanted: list[str], owner: dict[str, tuple[str, Any]], now: Any) -> list[str]:
        got = []
        with self.store.tx() as conn:
            for n in wanted:
                holder = owner.get(n, (None, now))[0]
                if holder and holder != self.holder and lease.local_dead(holder):  # gone with kill -9
                    conn.execute(
                        delete(t.leases).where(t.leases.c.name == SOURCE + n, t.leases.c.holder == holder)
                    )
                if lease.take_in(conn, SOURCE + n, self.holder, self.ttl)[0] is None:
                    got.append(n)
        return got

    def _takeable(self, row: tuple[str, object] | None, now: object) -> bool:
        if row is None:
            return True
        holder, until = row
        return holder == self.holder or until < now or lease.local_dead(str(holder))  # type: ignore[operator]

    def leave(self) -> None:
        """A clean stop: every source and the heartbeat go back at once."""
        with contextlib.suppress(Exception):
            for n in self.held:
                self.leases.forget(n)
                lease.release(self.store, SOURCE + n, self.holder)
            lease.release(self.store, HEARTBEAT + self.holder, self.holder)
        self.held = set()


async def supervise(
    replicas: Replicas,
    loops: Mapping[str, Callable[[], Coroutine[Any, Any, None]]],
    stopping: asyncio.Event,
) -> None:
    """Run each source's loop only while this replica holds its lease; hand over on loss."""
    running: dict[str, asyncio.Task[None]] = {}
    last_ok = time.monotonic()
    names = sorted(loops)
    try:
        while not stopping.is_set():
            try:
                held = await asyncio.to_thread(replicas.round, names)
                last_ok = time.monotonic()
            except Exception as exc:  # the store is down: keep going until half the TTL, then stop
                log.error("source_leases_failed", error=f"{type(exc).__name__}: {exc}")
                held = set(running) if time.monotonic() - last_ok < replicas.ttl / 2 else set()
            # a lease taken anew while its loop still ran (this process was paused past the TTL and
            # nobody took it meanwhile): the loop restarts, it may hold a view from before the gap
            for n in sorted((set(running) - held) | (set(running) & replicas.taken)):
                running.pop(n).cancel()
                log.info("source_stopped", source=n)
            for n in sorted(held - set(running)):
                running[n] = asyncio.create_task(loops[n](), name=f"source:{n}")
            for n, task in list(running.items()):
                if task.done():  # a loop that ended by itself: start it again next round
                    running.pop(n)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=replicas.ttl / 3)
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        await asyncio.to_thread(replicas.leave)
