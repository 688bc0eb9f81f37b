"""Outbox delivery: at-least-once, idempotent, ordered per ticket, with a circuit breaker per target.

Failure meaning comes from the exception a sink or notifier raises (``svcbridge.errors``):

- ``NotReady`` / any other exception: retry with exponential backoff and jitter (tenacity's wait
  strategy), waiting at least ``retry_after`` when the peer sent Retry-After; dead letter after
  ``outbox.max_attempts``.
- ``AuthFailed``: park every pending item of that target and raise an alert; no retry storm. Parked
  items return to pending on the next start (after the credentials were fixed) or by ``outbox replay``.
- ``PermanentError``: dead-letter that item, the others go on.

Before a retry the sink's ``reconcile`` is asked whether the remote side already has the ticket (the
crash-after-remote-commit case), so a retry never makes a second one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
import tenacity

from . import metrics
from .contracts import Notifier, Sink
from .errors import AuthFailed, NotReady, PermanentError, clean_error
from .faults import fault
from .models import DeliveryItem, DeliveryResult, OutboxKind, Target, utcnow
from .settings import OutboxSettings
from .settler import Settler
from .store.outbox import Outbox
from .store.repo import Store

log = structlog.get_logger("svcbridge.delivery")
CALL_TIMEOUT = 120.0
NO_TARGET_HINT = {
    OutboxKind.NOTIFY: "no notifier for this channel: configure its outbound side "
    "(e.g. [plugins.email.outbound]) or [notifications] fallback_channels, or see `svcbridge plugins` "
    "for a failed plugin; the items are parked until the next start (or `svcbridge outbox replay`)",
    "": "no sink of this name: check [routing] and `svcbridge plugins`; the items wait",
}


@dataclass
class Breaker:
    """Opens after `threshold` consecutive failures for `cooldown` s; then lets one trial through."""

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None

    def allow(self) -> float:
        """0 when a call may go out, else seconds until the breaker half-opens."""
        if self.opened_at is None:
            return 0.0
        left = self.cooldown - (time.monotonic() - self.opened_at)
        return max(0.0, left)

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> bool:
        """Record a failure; True when this one opened the breaker."""
        self.failures += 1
        if self.failures >= self.threshold:
            was_closed = self.opened_at is None
            self.opened_at = time.monotonic()
            return was_closed
        return False


# Addresses that are machines: automatic mail to them only feeds loops (RFC 3834 section 2).
NEVER_AUTO = re.compile(
    r"^(mailer-daemon|postmaster|noreply|no-reply|do-not-reply|donotreply|abuse|root)@", re.I
)


class RecipientLimiter:
    """Per-recipient sliding windows for automatic notifications.

    Counted in memory, and seeded at start from the outbox's own record of what went out in the
    longest window (``seed``), so a daemon in a crash-restart loop cannot mail an autoresponder
    again and again. The seed also counts messages that were suppressed: after a restart the limit
    is, if anything, stricter, which is the safe side for loop protection.
    """

    PRUNE_EVERY = 1000  # calls between sweeps of recipients with nothing left in the longest window

    def __init__(self, limits: dict[int, int]) -> None:
        self.limits = sorted((minutes * 60.0, n) for minutes, n in limits.items())
        self.sent: dict[str, deque[float]] = {}
        self._calls = 0

    @property
    def horizon(self) -> float:
        """Seconds of history that matter (the longest window)."""
        return self.limits[-1][0] if self.limits else 0.0

    @staticmethod
    def key(notification: dict[str, Any]) -> str:
        return f"{notification.get('channel')}:{str(notification.get('to') or '').lower()}"

    def seed(self, key: str, ages: list[float], now: float | None = None) -> None:
        """Count messages sent `ages` seconds ago (oldest first after sorting) for `key`."""
        now = time.monotonic() if now is None else now
        q = self.sent.setdefault(key, deque())
        for age in sorted((a for a in ages if 0 <= a <= self.horizon), reverse=True):
            q.append(now - age)

    def allow(self, key: str, now: float | None = None, count: bool = True) -> str | None:
        """None when one more may go now (and count it, unless ``count=False``), else why not."""
        now = time.monotonic() if now is None else now
        horizon = self.horizon
        self._calls += 1
        if self._calls % self.PRUNE_EVERY == 0:
            # one entry per recipient ever seen would grow with the customer base for as long as the
            # daemon runs; a recipient whose last message left the longest window counts nothing
            for k in [k for k, v in self.sent.items() if not v or now - v[-1] > horizon]:
                del self.sent[k]
        q = self.sent.setdefault(key, deque())
        while q and now - q[0] > horizon:
            q.popleft()
        for window, n in self.limits:
            if sum(1 for t in q if now - t <= window) >= n:
                return f"more than {n} automatic messages in {int(window // 60)} min"
        if count:
            q.append(now)
        return None


@dataclass
class Settled:
    """The outcome of one outbox item in a round: done | retry | dead | parked | release."""

    row: dict[str, Any]
    status: str
    result: DeliveryResult | None = None
    error: str = ""
    delay: float = 0.0


@dataclass
class Delivery:
    store: Store
    cfg: OutboxSettings
    sinks: dict[str, Sink]
    notifiers: dict[str, Notifier]
    worker_id: str = "w"
    breakers: dict[str, Breaker] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outbox = Outbox(self.store, self.worker_id)
        self.limiter = RecipientLimiter(self.cfg.auto_limits)
        self._seed_limiter()
        # "full jitter" exponential backoff: uniform(initial, initial * 2**attempt), capped
        self._wait = tenacity.wait_random_exponential(
            multiplier=self.cfg.backoff_initial, max=self.cfg.backoff_max, min=self.cfg.backoff_initial
        )

    def _seed_limiter(self) -> None:
        """What the outbox says went out automatically in the longest window counts against it."""
        if not self.limiter.horizon:
            return
        now = utcnow()
        ages: dict[str, list[float]] = {}
        since = now - timedelta(seconds=self.limiter.horizon)
        for done_at, n in self.outbox.recent_notifications(since):
            if n.get("automatic", True) and n.get("to"):
                ages.setdefault(RecipientLimiter.key(n), []).append((now - done_at).total_seconds())
        mono = time.monotonic()
        for key, seen in ages.items():
            self.limiter.seed(key, seen, now=mono)

    def backoff(self, attempts: int) -> float:
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = max(1, attempts + 1)
        return float(self._wait(state))

    def breaker(self, target: str) -> Breaker:
        if target not in self.breakers:
            self.breakers[target] = Breaker(self.cfg.breaker_threshold, self.cfg.breaker_cooldown)
        return self.breakers[target]

    async def drain(self, max_rounds: int = 10_000) -> None:
        """Deliver until nothing is due now (``run --once``); items scheduled later stay queued."""
        for _ in range(max_rounds):
            if not await self.run_once():
                return

    def _impl(self, target: str) -> Any:
        channel = Target(target).channel
        return self.notifiers.get(channel) if channel is not None else self.sinks.get(target)

    async def run_once(self) -> int:
        """Handle every item due now (heads of their ticket/target queues); returns how many were seen.

        One round: claim the batch in one transaction, call the targets (targets concurrently, up to
        ``outbox.concurrency`` items of one sink or idempotent notifier at a time, other notices one at
        a time per channel; an auth failure or an opened breaker stops what has not started yet). Each
        outcome is recorded as soon as it is known (``settler.py``): a crash re-sends only what was in
        flight, a sink's item with the same idempotency key, a notice at most once per channel (an
        idempotent notifier's resend has no effect).
        """
        rows = await asyncio.to_thread(self.outbox.due, self.cfg.batch)
        if not rows:
            return 0
        settled: list[Settled] = []
        ready: list[dict[str, Any]] = []
        missing: dict[str, int] = {}
        for r in rows:
            wait = self.breaker(r["target"]).allow()
            if self._impl(r["target"]) is None:
                missing[r["target"]] = missing.get(r["target"], 0) + 1
                if Target(r["target"]).is_notify:
                    # no notifier serves the channel (and composing found no fallback): the notice is
                    # kept, parked with a visible alert, and tried again on the next start (after the
                    # configuration is fixed), not every minute for ever
                    why = f"no notifier for channel {Target(r['target']).channel!r}"
                    settled.append(Settled(r, "parked", error=why))
                else:  # a sink whose plugin failed or is not configured yet: look again later
                    settled.append(Settled(r, "release", delay=60.0))
            elif wait > 0:
                settled.append(Settled(r, "release", delay=wait))
            else:
                ready.append(r)
        for target, n in missing.items():  # one line per target and round, not one per waiting item
            hint = NO_TARGET_HINT[OutboxKind.NOTIFY if Target(target).is_notify else ""]
            log.warning("no_target", target=target, waiting=n, hint=hint)
            if Target(target).is_notify:
                self.alerts[target] = hint
        claimed = await asyncio.to_thread(self.outbox.claim_many, [r["id"] for r in ready])
        ready = [r for r in ready if r["id"] in claimed]
        # notifications the loop protection stops anyway are settled without loading their tickets
        # (a mail loop or a flood from one sender is when a round is largest)
        looks = {r["id"]: self._suppressed(r["kind"], r["payload"], count=False) for r in ready}
        quiet = {oid: why for oid, why in looks.items() if why}
        settled.extend(self._suppress(r, quiet[r["id"]]) for r in ready if r["id"] in quiet)
        ready = [r for r in ready if r["id"] not in quiet]
        settler = Settler(self.outbox, self.cfg.max_attempts)
        for s in settled:  # the round's early answers (missing targets, breakers, loop protection)
            settler.add(s)
        try:
            await settler.flush()
            items = await asyncio.to_thread(self._items, ready)
            by_target: dict[str, list[dict[str, Any]]] = {}
            for r in ready:
                by_target.setdefault(r["target"], []).append(r)
            await asyncio.gather(*(self._run_target(t, b, items, settler) for t, b in by_target.items()))
        finally:
            await settler.flush()  # whatever is still queued (a flush that failed is tried again here)
            self._observe(settler.written)
        return len(rows)

    async def _run_target(
        self, target: str, rows: list[dict[str, Any]], items: dict[int, DeliveryItem], settler: Settler
    ) -> None:
        impl, br = self._impl(target), self.breaker(target)
        stop = asyncio.Event()

        def stopped(row: dict[str, Any]) -> Settled | None:
            return Settled(row, "release", delay=br.allow()) if stop.is_set() else None

        def judge(out: Settled) -> Settled:
            if out.status == "parked" or (out.status == "retry" and br.allow() > 0):
                stop.set()
            return out

        if Target(target).is_notify and not getattr(impl, "idempotent", False):
            # no idempotency key on the far side (SMTP, SMS): one at a time, each marked in flight in
            # the transaction that records the one before, so a crash can repeat only that one
            for row in rows:
                if (early := stopped(row)) is not None:
                    settler.add(early)
                    continue
                await settler.flush(inflight=[row["id"]])
                settler.add(judge(await self._attempt(impl, row, items[row["id"]])))
            await settler.flush()  # the last one's outcome, now: not when slower targets finish
            return
        # an idempotent notifier may say how many of its sends can run at once (the mail spool: many,
        # their fsyncs made together); a sink's items are bounded by outbox.concurrency
        sem = asyncio.Semaphore(getattr(impl, "concurrency", None) or self.cfg.concurrency)

        async def one(row: dict[str, Any]) -> None:
            async with sem:
                early = stopped(row)
                await settler.record(early or judge(await self._attempt(impl, row, items[row["id"]])))

        await asyncio.gather(*(one(r) for r in rows))

    def _suppressed(self, kind: str, payload: dict[str, Any] | None, count: bool = True) -> str | None:
        """Why an automatic notification must not go out (loop protection), or None.

        ``count=False`` only looks (the round's early sort, before tickets are loaded); the call just
        before sending counts the message against the recipient's windows.
        """
        n = (payload or {}).get("notification") or {}
        if kind != OutboxKind.NOTIFY or not n.get("automatic", True):
            return None
        to = str(n.get("to") or "")
        if NEVER_AUTO.match(to):
            return f"no automatic message to {to}"
        return self.limiter.allow(RecipientLimiter.key(n), count=count)

    def _suppress(self, row: dict[str, Any], why: str) -> Settled:
        log.warning("notification_suppressed", target=row["target"], outbox_id=row["id"], reason=why)
        return Settled(row, "done", result=DeliveryResult(detail=f"suppressed: {why}"))

    async def _attempt(self, impl: Any, row: dict[str, Any], item: DeliveryItem) -> Settled:
        br = self.breaker(row["target"])
        if why := self._suppressed(item.kind, item.payload):
            return self._suppress(row, why)
        try:
            result = await asyncio.wait_for(self._call(impl, item), CALL_TIMEOUT)
            fault("after_remote_commit")  # the peer has it, we have not recorded it: reconcile's case
        except AuthFailed as exc:
            return Settled(row, "parked", error=clean_error(f"auth failed: {exc}"))
        except PermanentError as exc:
            return Settled(row, "dead", error=clean_error(f"permanent: {exc}"))
        except Exception as exc:
            retry_after = exc.retry_after if isinstance(exc, NotReady) else None
            delay = (
                max(retry_after, self.cfg.backoff_initial) if retry_after else self.backoff(row["attempts"])
            )
            if br.failure():
                metrics.BREAKER_OPEN.labels(target=row["target"]).set(1)
                log.warning("circuit_opened", target=row["target"], cooldown=br.cooldown)
            # kept, logged and shown as cleaned: a peer's error page may echo our credentials
            return Settled(row, "retry", error=clean_error(f"{type(exc).__name__}: {exc}"), delay=delay)
        br.success()
        return Settled(row, "done", result=result)

    def _observe(self, settled: list[Settled]) -> None:
        """Metrics, alerts and one log line per outcome (after the settle committed)."""
        olog = log.bind()  # once per round: the module's lazy proxy binds a new logger on every call
        now = utcnow()
        ok: dict[str, tuple[Any, Any]] = {}  # target -> its metric children, looked up once per round
        missing_once: set[str] = set()
        for s in settled:
            target, row = s.row["target"], s.row
            # plain keyword arguments, not log.bind(): a bound logger per item cost more than the
            # delivery bookkeeping itself, and lines below the configured level are dropped unformatted
            ctx = {
                "target": target,
                "outbox_id": row["id"],
                "ticket": self.store.ref_for(row["ticket_id"]),
                "kind": row["kind"],
            }
            if s.status == "done":
                if target not in ok:
                    self.alerts.pop(target, None)
                    metrics.BREAKER_OPEN.labels(target=target).set(0)
                    ok[target] = (
                        metrics.DELIVERIES.labels(target=target, result="ok"),
                        metrics.DELIVERY_LATENCY.labels(target=target),
                    )
                count, latency = ok[target]
                count.inc()
                latency.observe((now - row["created_at"]).total_seconds())
                olog.info("delivered", detail=s.result.detail if s.result else "", **ctx)
            elif s.status == "parked" and target not in missing_once:
                missing_once.add(target)  # one line and alert per target and round, not per item
                self.alerts[target] = s.error
                auth = s.error.startswith("auth failed")
                metrics.DELIVERIES.labels(target=target, result="auth_failed" if auth else "parked").inc()
                olog.error("target_auth_failed_parked" if auth else "target_parked", error=s.error, **ctx)
            elif s.status in ("dead", "retry"):
                final = s.status == "dead" or row["attempts"] + 1 >= self.cfg.max_attempts
                metrics.DELIVERIES.labels(target=target, result="dead" if final else "retry").inc()
                olog.warning(
                    "delivery_failed",
                    error=s.error,
                    retry_in=None if final else round(s.delay, 2),
                    status="dead" if final else "pending",
                    **ctx,
                )

    def _items(self, rows: list[dict[str, Any]]) -> dict[int, DeliveryItem]:
        # sinks get links and attachments; the growing event trail is not loaded on this hot path
        tickets = self.store.get_tickets({int(r["ticket_id"]) for r in rows}, events=False)
        creates = {int(r["ticket_id"]) for r in rows if r["kind"] == OutboxKind.CREATE}
        journals = {
            int(r["payload"]["journal_id"])
            for r in rows
            if r["kind"] == OutboxKind.UPDATE and (r["payload"] or {}).get("journal_id")
        }
        by_ticket, by_journal = self.store.attachments_bulk(creates, journals)
        out = {}
        for row in rows:
            payload = row["payload"] or {}
            if row["kind"] == OutboxKind.CREATE:
                atts = by_ticket[int(row["ticket_id"])]
            elif row["kind"] == OutboxKind.UPDATE and payload.get("journal_id"):
                atts = by_journal[int(payload["journal_id"])]
            else:
                atts = []
            out[row["id"]] = DeliveryItem(
                id=row["id"],
                kind=row["kind"],
                target=row["target"],
                idempotency_key=row["idempotency_key"],
                ticket=tickets[int(row["ticket_id"])],
                payload=payload,
                attempts=row["attempts"],
                attachments=atts,
            )
        return out

    async def _call(self, impl: Any, item: DeliveryItem) -> DeliveryResult:
        if item.kind == OutboxKind.NOTIFY:
            res = await impl.send(item)
        else:
            if item.attempts > 0 and hasattr(impl, "reconcile"):
                found = await impl.reconcile(item)
                if found is not None:
                    return found if isinstance(found, DeliveryResult) else DeliveryResult(detail="reconciled")
            res = await impl.deliver(item)
        return res if isinstance(res, DeliveryResult) else DeliveryResult()
