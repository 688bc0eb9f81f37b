"""``svcbridge run``: the asyncio supervisor for sources, the pipeline, outbox workers, pollers and HTTP.

Each source runs in its own task with its own backoff, so one failing mailbox never stalls another.
SIGTERM / SIGINT stop intake first, then give in-flight pipeline and delivery work ``shutdown_grace``
seconds to finish; whatever is not committed by then is rolled back and stays in the journal / outbox
for the next start. The process then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import structlog
import uvicorn

from .app import App, recover
from .errors import AuthFailed, NotReady
from .store import lease

log = structlog.get_logger("svcbridge.daemon")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


MAX_SOURCE_BACKOFF = 300.0
MAX_RETRY_AFTER = 3600.0


def source_retry_delay(exc: BaseException, interval: float, failures: int) -> float:
    """Seconds before a failed source is tried again.

    A peer that said when to come back (``NotReady.retry_after`` from a 429/503 Retry-After, Graph
    throttling) is taken at its word, capped at an hour: coming back sooner only earns another 429 and,
    with Microsoft, a longer throttle. Refused credentials wait the longest backoff at once: each retry
    is another failed login that can lock the account. Anything else backs off exponentially.
    """
    if isinstance(exc, NotReady) and exc.retry_after is not None and exc.retry_after >= 0:
        # "Retry-After: 0" repeated would otherwise be a tight loop against a throttling peer
        return min(max(exc.retry_after, 1.0), MAX_RETRY_AFTER)
    if isinstance(exc, AuthFailed):
        return MAX_SOURCE_BACKOFF
    # the exponent is capped first: 2**1030 (3.5 days of failures) does not fit a float
    return min(MAX_SOURCE_BACKOFF, interval * 2.0 ** min(failures, 30))


async def _source_loop(app: App, name: str) -> None:
    src = app.sources[name]
    ctx = app.context(name)
    failures = 0
    runner = getattr(src, "run", None)
    while not app.stopping.is_set():
        try:
            if runner is not None:
                await runner(ctx)  # long-running (IDLE); returns when stopping or on error
            else:
                await src.poll(ctx)
            ctx.report(True)
            failures = 0
            delay = src.interval
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            delay = source_retry_delay(exc, src.interval, failures)
            ctx.report(False, f"{type(exc).__name__}: {exc}")
            log.error("source_failed", source=name, error=f"{type(exc).__name__}: {exc}", retry_in=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stopping.wait(), timeout=delay)


async def _pipeline_loop(app: App) -> None:
    while not app.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.wake.wait(), timeout=1.0)
        app.wake.clear()
        try:
            outcomes = await app.pipeline.drain()
            if outcomes:
                app.delivery_wake.set()
        except Exception as exc:  # store outage: keep going, the journal still holds the work
            log.error("pipeline_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the daemon stops
            # a cancel from below that was not meant for this task (a future some library cancelled):
            # ending here would leave intake journaling with nothing processing the journal
            log.error("pipeline_failed", error="CancelledError from a stage; the pipeline goes on")
            await asyncio.sleep(1.0)


async def _delivery_loop(app: App) -> None:
    while not app.stopping.is_set():
        try:
            await app.delivery.run_once()
        except Exception as exc:
            log.error("delivery_loop_failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.delivery_wake.wait(), timeout=app.settings.outbox.poll_interval)
        app.delivery_wake.clear()


async def _work_loop(app: App) -> None:
    """Durable jobs and timers (jobs.py): a round whenever something is due, at least once a second."""
    while not app.stopping.is_set():
        delay = 1.0
        try:
            done = await app.work.run_once()
            if done:
                app.delivery_wake.set()  # their ticket changes wait in the outbox
                delay = 0.0
            else:
                nxt = await asyncio.to_thread(app.work.next_due_in)
                delay = min(1.0, nxt) if nxt is not None else 1.0
        except Exception as exc:
            log.error("work_loop_failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stopping.wait(), timeout=max(delay, 0.05))


async def _status_poll_loop(app: App, name: str) -> None:
    sink = app.delivery.sinks[name]
    interval = float(getattr(sink, "poll_interval", 60.0))
    key = f"sink:{name}"
    while not app.stopping.is_set():
        try:
            cursor = await asyncio.to_thread(app.store.get_checkpoint, key, "cursor")
            updates, new_cursor = await sink.poll_changes(cursor)  # type: ignore[attr-defined]
            for upd in updates:
                await app.pipeline.apply_status_update(upd)
            if new_cursor is not None and new_cursor != cursor:
                await asyncio.to_thread(app.store.set_checkpoint, key, "cursor", new_cursor)
            if updates:
                app.delivery_wake.set()
        except Exception as exc:
            log.error("status_poll_failed", sink=name, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stopping.wait(), timeout=interval)


async def serve(app: App) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop)."""
    loop = asyncio.get_running_loop()
    # Blocking work (store calls, IMAP IDLE waits) runs in the default executor. Each source may hold a
    # thread for as long as it waits on its server, so the pool grows with the number of sources;
    # otherwise 200 idling mailboxes would starve the store calls of the pipeline.
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=8 + 2 * len(app.sources), thread_name_prefix="svcb")
    )
    # the pipeline lease names a daemon: one-shot commands (ingest) leave their entries to it
    app.pipeline.holder = lease.new_holder("daemon")
    app.stopping = asyncio.Event()
    app.wake = asyncio.Event()
    app.delivery_wake = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stopping.set)
    await recover(app)  # claims of a killed predecessor; parked items (credentials may be fixed)
    await app.pm.lifecycle("startup", app=app)  # plugins open their clients before any source polls
    # the lease before the sources poll: their expect() hints start parse workers only in its holder
    await asyncio.to_thread(app.pipeline.take_lease)

    intake = [asyncio.create_task(_source_loop(app, n), name=f"source:{n}") for n in app.sources]
    server = None
    if app.settings.http.enabled:
        from .web import build_web

        cfg = uvicorn.Config(
            build_web(app),
            host=app.settings.http.host,
            port=app.settings.http.port,
            log_config=None,
            lifespan="off",
            access_log=False,
        )
        server = _Server(cfg)
        intake.append(asyncio.create_task(server.serve(), name="http"))
    workers = [
        asyncio.create_task(_pipeline_loop(app), name="pipeline"),
        asyncio.create_task(_delivery_loop(app), name="delivery"),
        asyncio.create_task(_work_loop(app), name="work"),
    ]
    for name, sink in app.delivery.sinks.items():
        if hasattr(sink, "poll_changes"):
            workers.append(asyncio.create_task(_status_poll_loop(app, name), name=f"poll:{name}"))
    app.wake.set()
    log.info(
        "started",
        sources=list(app.sources),
        sinks=list(app.delivery.sinks),
        http=f"{app.settings.http.host}:{app.settings.http.port}" if server else None,
    )

    await app.stopping.wait()
    log.info("stopping", grace=app.settings.shutdown_grace)
    if server is not None:
        server.should_exit = True
    # intake first: nothing new is journaled while in-flight work finishes
    for task in intake:
        if task.get_name() != "http":
            task.cancel()
    app.wake.set()
    app.delivery_wake.set()
    _done, pending = await asyncio.wait(intake + workers, timeout=app.settings.shutdown_grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.to_thread(app.pipeline.close)  # parse workers, if large batches started them
    await app.pm.lifecycle("shutdown", app=app)  # after the last work: plugins close their clients
    log.info("stopped", unfinished=len(pending))
    return 0
