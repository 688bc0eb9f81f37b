"""``svcbridge run``: the asyncio supervisor for sources, the pipeline, outbox workers, pollers and HTTP.

Each source runs in its own task with its own backoff, so one failing mailbox never stalls another.
SIGTERM / SIGINT stop intake first, then give in-flight pipeline and delivery work ``shutdown_grace``
seconds to finish; whatever is not committed by then is rolled back and stays in the journal / outbox
for the next start. The process then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
import uvicorn

from . import httpguard
from . import log as logmod
from .app import App, recover
from .errors import AuthFailed, LeaseLost, NotReady
from .maintenance import maintenance_loop
from .replicas import Replicas, supervise
from .store import lease

log = structlog.get_logger("svcbridge.daemon")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


MAX_HEADER_BYTES = 16 * 1024  # request line and headers; more is a 400
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
    ctx = app.context(name, leased=True)
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
        except LeaseLost:  # paused or cut off past the lease: the supervisor renews or hands it over
            log.info("source_lease_lost", source=name)
            return
        except Exception as exc:
            failures += 1
            delay = source_retry_delay(exc, src.interval, failures)
            ctx.report(False, f"{type(exc).__name__}: {exc}")
            app.health[name].retry_at = time.time() + delay  # the console shows the backoff
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
        seen = 0
        try:
            seen = await app.delivery.run_once()
        except Exception as exc:
            log.error("delivery_loop_failed", error=f"{type(exc).__name__}: {exc}")
        if seen >= app.settings.outbox.batch:
            continue  # a full round: more is due now (a backlog), not after the next wake
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
    began = time.monotonic()
    while not app.stopping.is_set():
        try:
            cursor = await asyncio.to_thread(app.store.get_checkpoint, key, "cursor")
            updates, new_cursor = await sink.poll_changes(cursor)  # type: ignore[attr-defined]
            if app.leases is not None:  # the changes are recorded once, by the lease's holder
                await app.leases.confirm(f"poll:{name}", began)
            for upd in updates:
                await app.pipeline.apply_status_update(upd)
            if new_cursor is not None and new_cursor != cursor:
                await asyncio.to_thread(app.store.set_checkpoint, key, "cursor", new_cursor)
            if updates:
                app.delivery_wake.set()
        except LeaseLost:
            log.info("source_lease_lost", source=f"poll:{name}")
            return
        except Exception as exc:
            log.error("status_poll_failed", sink=name, error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stopping.wait(), timeout=interval)


async def _log_flush_loop(app: App) -> None:
    """Counts of repeated log lines (log.py) are written once their window is over."""
    while not app.stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(app.stopping.wait(), timeout=5.0)
        logmod.flush_repeats()


def _http_server(app: App, nofile: int) -> tuple[_Server, int]:
    """uvicorn with the guarded h11 protocol (httpguard.py): header / body / keep-alive timeouts, a cap."""
    from .web import build_web

    http = app.settings.http
    cap = httpguard.connection_cap(http.max_connections, nofile)
    limits = httpguard.Limits(header_timeout=http.header_timeout, body_timeout=http.body_timeout, cap=cap)
    cfg = uvicorn.Config(
        build_web(app),
        http=httpguard.guarded_protocol(limits),
        ws="none",
        log_config=None,
        lifespan="off",
        access_log=False,
        backlog=httpguard.ACCEPT_BATCH,
        timeout_keep_alive=http.keep_alive_timeout,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=max(1, int(app.settings.shutdown_grace)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        # uvicorn believed X-Forwarded-For from 127.0.0.1 (and $FORWARDED_ALLOW_IPS): any local process
        # could name itself any client. [http] trusted_proxies decides instead (frontdoor.py)
        proxy_headers=False,
    )
    return _Server(cfg), cap


async def serve(app: App) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop).

    The HTTP port is bound first: a port in use ends the start with exit 1 and the reason, before the
    pipeline lease is taken. HTTP failing later stops the daemon the same way (exit 1, lease released).
    """
    http = app.settings.http
    listener = None
    if http.enabled:
        try:
            listener = httpguard.bind(http.host, http.port)
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.error("http_bind_failed", address=f"{http.host}:{http.port}", error=reason)
            return 1
    nofile = httpguard.raise_nofile_limit()  # HTTP under attack must not starve the sources of fds
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

    # each source and status poller runs in one replica at a time, spread across them (replicas.py)
    loops = {n: functools.partial(_source_loop, app, n) for n in app.sources}
    for name, sink in app.delivery.sinks.items():
        if hasattr(sink, "poll_changes"):
            loops[f"poll:{name}"] = functools.partial(_status_poll_loop, app, name)
    shared = Replicas(app.store, app.pipeline.holder, app.settings.store.source_lease_ttl)
    app.leases = shared.leases  # the sources' contexts fence on them
    intake = [asyncio.create_task(supervise(shared, loops, app.stopping), name="sources")]
    server, http_task, cap = None, None, 0
    if listener is not None:
        server, cap = _http_server(app, nofile)
        http_task = asyncio.create_task(server.serve(sockets=[listener]), name="http")
        intake.append(http_task)
    workers = [
        asyncio.create_task(_pipeline_loop(app), name="pipeline"),
        asyncio.create_task(_delivery_loop(app), name="delivery"),
        asyncio.create_task(_work_loop(app), name="work"),
        asyncio.create_task(_log_flush_loop(app), name="log-flush"),
        asyncio.create_task(maintenance_loop(app), name="store-maintenance"),  # retention, blob gc
    ]
    app.wake.set()
    log.info(
        "started",
        sources=list(app.sources),
        sinks=list(app.delivery.sinks),
        http=f"{http.host}:{http.port}" if server else None,
        http_connections=cap or None,
        nofile=nofile,
    )

    code = await _until_stopped(app, http_task)
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
    logmod.flush_repeats(everything=True)
    log.info("stopped", unfinished=len(pending))
    return code


async def _until_stopped(app: App, http_task: asyncio.Task[None] | None) -> int:
    """Wait for SIGTERM / SIGINT (0), or for the HTTP server to end by itself (1, the daemon stops)."""
    stop = asyncio.ensure_future(app.stopping.wait())
    waits: list[asyncio.Future[Any]] = [stop] if http_task is None else [stop, http_task]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if app.stopping.is_set() or http_task is None:
        return 0
    stop.cancel()
    exc = None if http_task.cancelled() else http_task.exception()
    log.error("http_failed", error=f"{type(exc).__name__}: {exc}" if exc else "the HTTP server stopped")
    app.stopping.set()
    return 1
