"""The pipeline lease as one object: taken before a drain, kept during a batch, checked inside the
batch's commit (fencing), given back on a clean stop. Built on the named leases of ``lease.py``,
which says why only one process at a time may run the pipeline on a store.

The store is asked only when it has to be: the holder renews when a third of ``lease_ttl`` has
passed (every batch commit renews it as well), so an idle daemon draining once a second writes no
row per second; a process that does not hold it asks every time, to take over as soon as it may.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from sqlalchemy import Connection

from ..errors import PipelineBusy, StoreUnavailable
from . import lease
from .repo import Store

log = structlog.get_logger("svcbridge.pipeline")
NAME = "pipeline"  # the store lease whose holder alone runs the pipeline


class PipelineLease:
    def __init__(self, store: Store, ttl: float, holder: str | None = None) -> None:
        self.store, self.ttl = store, ttl
        self.holder = holder or lease.new_holder()  # daemon.serve names a daemon's
        self.busy_with: str | None = "?"  # who held the lease when we last asked (logged on change)
        self.checked_until = 0.0  # monotonic: until then take() answers from memory
        self.held_since = 0.0  # monotonic: when this process last took the lease anew (not renewed)
        self.batch_began = 0.0  # monotonic: when the batch being stored began its decisions

    @property
    def runs_here(self) -> bool:
        """This process held the lease when it last asked (a replica without it: False)."""
        return self.busy_with is None

    def take(self) -> str | None:
        """Take or renew the lease: None when this process may run the pipeline, else who has it."""
        now = time.monotonic()
        if self.busy_with is None and now < self.checked_until:
            return None
        who, anew = lease.take(self.store, NAME, self.holder, self.ttl)
        if who is not None and lease.take_from_gone(self.store, NAME, self.holder, self.ttl):
            # its holder died (kill -9 here, or its heartbeat ran out): no need to wait lease_ttl
            log.info("pipeline_lease_taken_from_gone_holder", previous=who, holder=self.holder)
            who, anew = None, True
        if anew:  # a gap: a batch begun before this must not commit (fence)
            self.held_since = now
        self.checked_until = now + self.ttl / 3 if who is None else 0.0
        if who != self.busy_with:  # one line per change, not one per wake-up
            if who is None:
                log.info("pipeline_lease_taken", holder=self.holder)
            else:
                log.info("pipeline_lease_held_elsewhere", holder=who, waiting=self.holder)
            self.busy_with = who
        return who

    def forget(self) -> None:
        """Ask the store on the next take, not the memory (a batch was refused)."""
        self.checked_until = 0.0

    async def wait(self, seconds: float) -> str | None:
        """``take``, retried for up to ``seconds`` while a one-shot command holds the lease (a daemon
        holding it is not waited for: it processes the journal itself)."""
        deadline = time.monotonic() + seconds
        while True:
            who = await asyncio.to_thread(self.take)
            if who is None or lease.is_daemon(who) or time.monotonic() >= deadline:
                return who
            await asyncio.sleep(0.1)

    def begin_batch(self) -> None:
        """A batch begins its decisions: what it reads from here on must still hold at its commit."""
        self.batch_began = time.monotonic()

    async def keep(self) -> None:
        """During a batch: renew when a third of lease_ttl has passed (a slow plugin must not let it
        run out, or two processes would take it from each other batch after batch)."""
        if time.monotonic() >= self.checked_until and await asyncio.to_thread(self.take) is not None:
            raise PipelineBusy("the pipeline lease was taken over during the batch; it stays pending")

    def fence(self, conn: Connection) -> None:
        """In the commit's transaction: this process still holds the lease, renewed without a gap
        since the batch began. A process that lost it while it worked (paused past lease_ttl) must
        not commit what it decided on a stale view of the store; nor one that took it anew meanwhile
        (another holder may have stored what its checks did not see). Raises ``PipelineBusy``."""
        if not lease.renew(conn, NAME, self.holder, self.ttl):
            raise PipelineBusy("the pipeline lease was taken over; the batch stays pending")
        if self.held_since >= self.batch_began:
            # the lease ran out during the batch and was taken again: another process may have
            # stored tickets this batch's threading and duplicate checks did not see
            raise PipelineBusy("the pipeline lease was lost and taken again during the batch; read again")

    def release(self) -> None:
        """A clean stop: the lease goes back (if this process held it), so no one waits lease_ttl."""
        if self.busy_with is None:  # held (or last held) by this process
            self.busy_with, self.checked_until = "?", 0.0
            try:
                lease.release(self.store, NAME, self.holder)
            except StoreUnavailable as exc:  # it runs out by itself (lease_ttl)
                log.warning("pipeline_lease_not_released", error=str(exc))
