"""Running durable jobs and firing durable timers, after the ticket is committed.

A plugin registers job kinds and timer kinds (``register_job_kinds`` / ``register_timer_kinds``) and
asks for work through a ``WorkQueue`` (from the classify and enrich hooks, or from a handler). The
rows are in the store (``store/jobs.py``); this runner claims what is due, calls the handler outside
any transaction (a vendor that hangs never blocks the pipeline), and records the outcome in ONE
transaction: the row's new status, the ``TicketChange`` the handler returned (stored on the ticket,
an event, outbox rows to its helpdesks: ``changes.py``) and the work it asked for.

Failures mean what they mean for the outbox (``delivery.py``): ``AuthFailed`` parks every job of the
kind (an alert until the next start), ``PermanentError`` gives up on that job (dead), anything else
(a timeout included) retries with exponential backoff and jitter, honouring ``NotReady.retry_after``,
until the kind's ``max_attempts``. A claim outlives the handler's time budget; a ``kill -9`` leaves
the row claimed until the next start frees it (``release_orphans``) or the claim runs out, and then
it runs again: handlers must be safe to repeat, their effects are recorded once (claim fencing).

Every time comes from ``clock`` so tests drive timers with a controllable clock.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from . import changes, metrics
from .errors import AuthFailed, NotReady, PermanentError, clean_error
from .faults import fault
from .models import Ticket, TicketEvent, utcnow
from .store import schema as t
from .store.jobs import LostClaim, Rows, write_work
from .store.repo import Store
from .work import Job, JobKind, TicketChange, Timer, TimerKind, WorkQueue

log = structlog.get_logger("svcbridge.jobs")
LATE_AFTER = 60.0  # seconds: a timer firing later than this is logged as late (downtime, overload)
CLAIM_MARGIN = 60.0  # seconds a claim outlives the handler's time budget
ALERT_AFTER = 2  # failed attempts of one job that raise an alert for its kind (/readyz) until one is done


async def call_handler(fn: Callable[..., Any], *args: Any, executor: Executor | None = None) -> Any:
    """Call a sync or async handler with as many of ``args`` as it takes; a sync one runs in a thread
    of ``executor`` (it may block on I/O without stalling the event loop, and a handler that hangs
    past its time budget holds one of the runner's threads, never the store's)."""
    try:
        params = inspect.signature(fn).parameters.values()
        if not any(p.kind is p.VAR_POSITIONAL for p in params):
            args = args[: sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))]
    except (TypeError, ValueError):  # a builtin without a signature: give it everything
        pass
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        res = await fn(*args)
    else:
        res = await asyncio.get_running_loop().run_in_executor(executor, functools.partial(fn, *args))
        if inspect.isawaitable(res):
            res = await res
    return res


@dataclass
class Outcome:
    """What became of one claimed row in a round (for tests, logs and ``run --once``)."""

    table: str
    row_id: int
    name: str
    status: str  # done | fired | retry | dead | parked | lost
    error: str = ""


@dataclass
class WorkRunner:
    """Claims and runs due jobs and timers; one per process (several replicas may each have one)."""

    store: Store
    job_kinds: dict[str, tuple[str, JobKind]]  # kind -> (plugin, JobKind)
    timer_kinds: dict[str, tuple[str, TimerKind]]  # name -> (plugin, TimerKind)
    worker_id: str = "w"
    clock: Callable[[], datetime] = utcnow
    # rows claimed per round and table: no more than run at once, so no claim waits behind others
    # and runs out while it waits (another replica would then run the same job a second time)
    concurrency: int = 8
    alerts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.jobs = Rows(self.store, t.jobs, self.worker_id)
        self.timers = Rows(self.store, t.timers, self.worker_id)
        # sync handlers get threads of their own: one that hangs past its budget (wait_for cannot stop
        # a thread) must not take the threads the pipeline and delivery reach the store with
        self.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="svcb-work")

    # ------------------------------------------------------------------ driving
    async def run_once(self) -> list[Outcome]:
        """One round: jobs and timers due now, side by side (a slow job never delays a timer)."""
        jobs, timers = await asyncio.gather(self.run_jobs(), self.fire_timers())
        return jobs + timers

    async def drain(self, max_rounds: int = 1000) -> list[Outcome]:
        """Rounds until nothing is due now (``run --once``); rows due later stay for later."""
        out: list[Outcome] = []
        for _ in range(max_rounds):
            got = await self.run_once()
            if not got:
                break
            out += got
        return out

    def next_due_in(self) -> float | None:
        """Seconds until the next job or timer is due (the daemon's sleep), None when nothing waits."""
        now = self.clock()
        found = [
            x
            for x in (
                self.jobs.next_due_in(now, set(self.job_kinds)),
                self.timers.next_due_in(now, set(self.timer_kinds)),
            )
            if x is not None
        ]
        return min(found) if found else None

    async def _claimed(self, rows: Rows, names: set[str], lease: Callable[[str], float]) -> list[Any]:
        now = self.clock()
        due = await asyncio.to_thread(rows.due, self.concurrency, now, names)
        if not due:
            return []
        longest = max(lease(r[rows.name_col]) for r in due)
        got = await asyncio.to_thread(rows.claim, [r["id"] for r in due], now, longest + CLAIM_MARGIN)
        return [(r, got[r["id"]]) for r in due if r["id"] in got]

    # ------------------------------------------------------------------ jobs
    async def run_jobs(self) -> list[Outcome]:
        if not self.job_kinds:
            return []
        claimed = await self._claimed(self.jobs, set(self.job_kinds), lambda k: self.job_kinds[k][1].timeout)
        return await _all(self._job(r, until) for r, until in claimed)

    async def _job(self, row: dict[str, Any], until: datetime) -> Outcome:
        plugin, kind = self.job_kinds[row["kind"]]
        ticket = await self._ticket(row["ticket_id"])
        job = Job(
            id=row["id"],
            kind=row["kind"],
            key=row["key"],
            data=row["data"] or {},
            attempts=row["attempts"],
            ticket=ticket,
        )
        work = WorkQueue(ticket.ref if ticket else None, ticket.id if ticket else None)
        try:
            call = call_handler(kind.run, job, work, executor=self.executor)
            change = _as_change(await asyncio.wait_for(call, kind.timeout), f"job kind {kind.name}")
            fault("job_after_run")  # the vendor answered, nothing is recorded yet
        except AuthFailed as exc:
            return await self._job_failed(row, until, kind, "parked", f"auth failed: {exc}")
        except PermanentError as exc:
            return await self._job_failed(row, until, kind, "dead", f"permanent: {exc}")
        except Exception as exc:  # a timeout is TimeoutError: retried like any other failure
            delay = self._backoff(kind, row["attempts"], exc)
            return await self._job_failed(row, until, kind, "retry", _error(exc), delay)
        try:
            await asyncio.to_thread(self._job_done, row, until, plugin, change, work)
        except LostClaim:
            log.warning("job_result_dropped", job=row["id"], kind=row["kind"], reason="claim lost")
            return Outcome("jobs", row["id"], row["kind"], "lost")
        except Exception as exc:  # the answer could not be stored (bad data, store outage): counted
            delay = self._backoff(kind, row["attempts"], exc)
            return await self._job_failed(row, until, kind, "retry", "recording: " + _error(exc), delay)
        self.alerts.pop(f"job:{row['kind']}", None)
        metrics.JOBS.labels(kind=row["kind"], outcome="done").inc()
        log.info("job_done", job=row["id"], kind=row["kind"], ticket=ticket.ref if ticket else None)
        return Outcome("jobs", row["id"], row["kind"], "done")

    def _job_done(
        self, row: dict[str, Any], until: datetime, plugin: str, change: TicketChange | None, work: WorkQueue
    ) -> None:
        now = self.clock()
        with self.store.tx() as conn:
            result = change.model_dump(mode="json", exclude_none=True) if change else None
            self.jobs.finish(
                conn, row["id"], until, status="done", done_at=now, result=result, last_error=None
            )
            if change is not None and row["ticket_id"] is not None:
                ticket = self.store.get_ticket(int(row["ticket_id"]), full=False, conn=conn)
                if ticket is not None:
                    origin = f"job:{row['id']}:{row['runs'] + 1}"  # a retried job's change is news again
                    changes.record(conn, self.store, ticket, change, plugin=plugin, origin=origin)
            write_work(conn, self.store, work, now)

    async def _job_failed(
        self, row: dict[str, Any], until: datetime, kind: JobKind, status: str, error: str, delay: float = 0.0
    ) -> Outcome:
        attempts = row["attempts"] + 1
        final = status if status != "retry" else ("dead" if attempts >= kind.max_attempts else "retry")
        error = _clean(error)

        def write() -> None:
            with self.store.tx() as conn:
                values: dict[str, Any] = {"attempts": attempts, "last_error": error[:4000]}
                if final == "retry":
                    values.update(status="pending", next_attempt_at=self.clock() + timedelta(seconds=delay))
                else:
                    values.update(status=final)
                self.jobs.finish(conn, row["id"], until, **values)
                if final == "parked":  # the credentials are wrong for all of them: no retry storm
                    self.jobs.park(conn, "kind", row["kind"], error, self.clock())

        try:
            await asyncio.to_thread(write)
        except LostClaim:
            return Outcome("jobs", row["id"], row["kind"], "lost", error)
        metrics.JOBS.labels(kind=row["kind"], outcome=final).inc()
        if final == "parked":
            self.alerts[f"job:{row['kind']}"] = error
            log.error("job_kind_parked", kind=row["kind"], job=row["id"], error=error)
        else:
            if attempts >= ALERT_AFTER or final == "dead":  # a kind that keeps failing (a vendor down) shows
                self.alerts[f"job:{row['kind']}"] = f"failing ({attempts} attempts): {error}"
            log.warning(
                "job_failed",
                job=row["id"],
                kind=row["kind"],
                error=error,
                status=final,
                retry_in=round(delay, 1) if final == "retry" else None,
            )
        return Outcome("jobs", row["id"], row["kind"], final, error)

    def _backoff(self, kind: JobKind, attempts: int, exc: BaseException) -> float:
        """Full-jitter exponential backoff; a peer's Retry-After is a floor."""
        cap = min(kind.backoff_max, kind.backoff_initial * 2.0 ** min(attempts, 30))
        delay = random.uniform(kind.backoff_initial, max(kind.backoff_initial, cap))
        if isinstance(exc, NotReady) and exc.retry_after:
            delay = max(delay, float(exc.retry_after))
        return delay

    # ------------------------------------------------------------------ timers
    async def fire_timers(self) -> list[Outcome]:
        if not self.timer_kinds:
            return []
        claimed = await self._claimed(
            self.timers, set(self.timer_kinds), lambda n: self.timer_kinds[n][1].timeout
        )
        return await _all(self._timer(r, until) for r, until in claimed)

    async def _timer(self, row: dict[str, Any], until: datetime) -> Outcome:
        plugin, kind = self.timer_kinds[row["name"]]
        ticket = await self._ticket(row["ticket_id"])
        fired = self.clock()
        timer = Timer(
            id=row["id"],
            name=row["name"],
            due_at=row["due_at"],
            fired_at=fired,
            data=row["data"] or {},
            ticket=ticket,
        )
        work = WorkQueue(ticket.ref if ticket else (row["scope"] or None), ticket.id if ticket else None)
        try:
            call = call_handler(kind.fire, timer, work, executor=self.executor)
            change = _as_change(await asyncio.wait_for(call, kind.timeout), f"timer {kind.name}")
            fault("timer_after_fire")  # its handler ran, the firing is not recorded yet
        except Exception as exc:
            return await self._timer_failed(row, until, kind, _error(exc))
        late = timer.late.total_seconds()
        try:
            await asyncio.to_thread(self._timer_done, row, until, plugin, timer, change, work)
        except LostClaim:  # moved or cancelled while it fired, or fired by another runner
            log.info("timer_result_dropped", timer=row["id"], name=row["name"], reason="claim lost")
            return Outcome("timers", row["id"], row["name"], "lost")
        except Exception as exc:  # the firing could not be stored: counted like a failed handler
            return await self._timer_failed(row, until, kind, "recording: " + _error(exc))
        if late > LATE_AFTER:
            log.warning("timer_fired_late", timer=row["id"], name=row["name"], late_s=round(late, 1))
        else:
            log.info("timer_fired", timer=row["id"], name=row["name"], late_s=round(late, 1))
        return Outcome("timers", row["id"], row["name"], "fired")

    def _timer_done(
        self,
        row: dict[str, Any],
        until: datetime,
        plugin: str,
        timer: Timer,
        change: TicketChange | None,
        work: WorkQueue,
    ) -> None:
        late = round(timer.late.total_seconds(), 3)
        with self.store.tx() as conn:
            self.timers.finish(
                conn,
                row["id"],
                until,
                status="fired",
                fired_at=timer.fired_at,
                late_s=late,
                attempts=row["attempts"] + 1,
                last_error=None,
                updated_at=timer.fired_at,
            )
            tid = row["ticket_id"]
            if tid is not None:
                data = {"name": timer.name, "due_at": timer.due_at.isoformat(), "late_s": late}
                self.store.add_event(
                    conn,
                    int(tid),
                    TicketEvent(type="timer_fired", at=timer.fired_at, actor=plugin, data=data),
                )
                ticket = self.store.get_ticket(int(tid), full=False, conn=conn) if change else None
                if ticket is not None and change is not None:
                    origin = f"timer:{row['id']}:{row['runs'] + 1}"  # each firing's change is its own
                    changes.record(conn, self.store, ticket, change, plugin=plugin, origin=origin)
            write_work(conn, self.store, work, timer.fired_at)

    async def _timer_failed(
        self, row: dict[str, Any], until: datetime, kind: TimerKind, error: str
    ) -> Outcome:
        attempts = row["attempts"] + 1
        final = "dead" if attempts >= kind.max_attempts else "retry"
        error = _clean(error)

        def write() -> None:
            with self.store.tx() as conn:
                values: dict[str, Any] = {"attempts": attempts, "last_error": error[:4000]}
                if final == "retry":
                    values.update(next_attempt_at=self.clock() + timedelta(seconds=kind.retry_in))
                else:
                    values.update(status="dead")
                self.timers.finish(conn, row["id"], until, **values)

        try:
            await asyncio.to_thread(write)
        except LostClaim:
            return Outcome("timers", row["id"], row["name"], "lost", error)
        log.warning("timer_failed", timer=row["id"], name=row["name"], error=error, status=final)
        return Outcome("timers", row["id"], row["name"], final, error)

    async def _ticket(self, ticket_id: int | None) -> Ticket | None:
        if ticket_id is None:
            return None
        return await asyncio.to_thread(self.store.get_ticket, int(ticket_id))


def _as_change(res: Any, what: str) -> TicketChange | None:
    """The handler's answer as a TicketChange of plain JSON values (a datetime in a label becomes its
    ISO text here, inside the handler's failure handling, not later in the store's transaction)."""
    if res is None:
        return None
    if isinstance(res, TicketChange):
        return TicketChange.model_validate(res.model_dump(mode="json", exclude_unset=True))
    if isinstance(res, dict):
        return TicketChange.model_validate(TicketChange(**res).model_dump(mode="json", exclude_unset=True))
    raise TypeError(f"{what} returned {type(res).__name__}, not a TicketChange or None")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _clean(error: str) -> str:
    """An error as it may be stored and shown (jobs list, /readyz): see ``errors.clean_error``."""
    return clean_error(error)


async def _all(calls: Any) -> list[Outcome]:
    """Run the round's rows side by side; one that raises is logged, never ends the round."""
    out: list[Outcome] = []
    for res in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(res, BaseException):
            log.error("work_item_failed", error=_clean(_error(res)))
        else:
            out.append(res)
    return out
