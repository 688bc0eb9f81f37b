"""Recording each outbox item's outcome the moment it is known, and marking a send in flight first.

A delivery round calls many targets side by side: an acknowledgement goes out over SMTP in
milliseconds while a helpdesk call in the same round takes seconds. Outcomes used to be recorded
together at the end of the round, so a ``kill -9`` in between sent every acknowledgement of the
round again on the next start (customers got the same mail up to 35 times in a campaign).

Now every outcome is written as soon as its call returns. Writes are grouped (group commit): outcomes
that arrive while a write is running go together in the next one, so a round of fast items still
costs a handful of transactions, not one per item. Notices to channels without an idempotency key
(SMTP, SMS) are sent one at a time per channel, each marked in flight (``outbox.inflight_at``) in
the same transaction that records the previous one's outcome: a crash can repeat at most the one
send that was in flight, and the restart says so (``Outbox.release_orphans``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .store.outbox import Outbox


class Settler:
    """Writes outcomes (``delivery.Settled``) as they come, grouped while a write is running."""

    def __init__(self, outbox: Outbox, max_attempts: int) -> None:
        self.outbox, self.max_attempts = outbox, max_attempts
        self.queue: list[Any] = []
        self.written: list[Any] = []
        self._lock = asyncio.Lock()

    def add(self, outcome: Any) -> None:
        """Queue an outcome; the next ``flush`` (anyone's) writes it."""
        self.queue.append(outcome)

    async def record(self, outcome: Any) -> None:
        """Write this outcome now (with whatever else is queued)."""
        self.queue.append(outcome)
        await self.flush()

    async def flush(self, inflight: Sequence[int] = ()) -> None:
        """Write what is queued, and mark ``inflight`` items as being sent, in one transaction."""
        async with self._lock:  # a caller that waited here finds its outcome written by the one before
            batch, self.queue = self.queue, []
            if not batch and not inflight:
                return
            try:
                await asyncio.to_thread(self.outbox.settle, batch, self.max_attempts, list(inflight))
            except BaseException:
                self.queue[:0] = batch  # not written: the round's last flush tries again
                raise
            self.written += batch
