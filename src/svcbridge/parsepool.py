"""The parse stage of a batch on every core: ``parse_message`` in worker processes.

Parsing MIME is the pipeline's largest CPU cost and it needs nothing but the raw bytes, so for a large
batch the pipeline hands the ``RawMessage`` objects to a process pool and gets the drafts back
(pickled). Everything else (normalize, threading, the store, delivery) stays in the daemon's process,
which meanwhile keeps fetching, journaling and delivering. Semantics are the in-process ones:

- per message, the first non-None ``parse_message`` answer in plugin order is the draft;
- an exception in one message's hook comes back as that message's failure, naming the plugin, and
  quarantines only that message (stage ``parse``); the worker's traceback is kept as a note on it;
- a broken pool (a worker killed, an unpicklable result) makes the pipeline parse that batch in
  process instead: the pool is an accelerator, never a second way to fail.

Workers come from a ``forkserver``, never a fork of the daemon (which runs threads: a fork could
inherit a lock held by one). Each worker builds its own plugin manager from the settings, lets the
plugins read their settings the way they do at start-up (``register_settings``, ``register_sources``,
``register_notifiers``; no sinks, no network), and keeps only the plugins active in the daemon. It is
used only when the daemon's plugin manager was built from settings (not one assembled in code, as tests
and benchmarks do) and every ``parse_message`` is a plain function.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from typing import Any

import structlog

from .log import SCOPE
from .models import RawMessage
from .plugins import HookFailed, PluginManager

MIN_BATCH = 32  # below this, pickling both ways costs more than a second core saves...
MIN_BYTES = 1024 * 1024  # ... unless the mails are large (parsing grows with the size, pickling less)
READY_WAIT = 3.0  # s a large batch waits for starting workers before it is parsed in process
START_BYTES = 8 * 1024 * 1024  # a pool is started for a few mails only when they are this large
MAX_WORKERS = 4
IDLE_S = 120.0  # the daemon stops the workers after this long without a large batch
MAX_FAILURES = 3  # pools that would not start or broke; after this many the pipeline parses in process

log = structlog.get_logger("svcbridge.pipeline")

_pm: PluginManager | None = None  # the worker's own manager


def workers_for(setting: int | None) -> int:
    """Worker count: the setting, or one per CPU (at most MAX_WORKERS) and none on a single CPU."""
    if setting is not None:
        return max(0, setting)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus < 2 else min(cpus, MAX_WORKERS)


def worth(count: int, size: int, start: bool = False) -> bool:
    """Whether ``count`` messages of ``size`` bytes in all go to the workers (``start``: whether they
    are worth starting a pool for: a PDF every few minutes must not start and stop ~200 MB of
    processes for nothing, while it may use a pool that is up anyway)."""
    if count < 2:
        return False  # nothing to spread; the daemon waits for the answer either way
    return count >= MIN_BATCH or size >= (START_BYTES if start else MIN_BYTES)


def eligible(pm: PluginManager) -> bool:
    return pm.from_settings and all(
        not inspect.iscoroutinefunction(impl.function) for impl in pm.impls("parse_message")
    )


class ParsePool:
    def __init__(self, settings: Any, pm: PluginManager, workers: int) -> None:
        ctx = multiprocessing.get_context("forkserver")
        # the fork server imports this once; each worker starts from that copy
        ctx.set_forkserver_preload(["svcbridge.parsepool"])
        parsers = {impl.plugin_name for impl in pm.impls("parse_message")}
        # a worker loads only the plugins that parse: the others (connectors, their HTTP clients) are
        # blocked before import, which halves a worker's start-up
        others = [name for name, _ in pm.list_name_plugin() if name not in parsers]
        self.workers = workers
        self._started: list[concurrent.futures.Future[None]] = []
        self.executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_init,
            initargs=(settings, sorted(parsers), others, os.getpid()),  # pickled by the pool
        )

    def start(self) -> None:
        """Start the workers (each takes a fraction of a second); ``ready`` tells when they are up."""
        self._started = [self.executor.submit(_ready) for _ in range(self.workers)]

    @property
    def ready(self) -> bool:
        return all(f.done() for f in self._started)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the workers to be up. Worth it for a large batch: parsed here,
        it would hold the event loop's thread for as long as the workers take to start (the first
        batches of a heavy backlog were parsed in the daemon's process, 1.2 s of its thread for
        2,000 heavy mails), while the batch before it is still being stored anyway."""
        pending = [asyncio.wrap_future(f) for f in self._started if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return self.ready

    async def parse(self, raws: list[tuple[int, RawMessage]]) -> dict[int, Any]:
        """journal id -> draft | None | HookFailed, for every message; raises if the pool broke."""
        loop = asyncio.get_running_loop()
        futures = [loop.run_in_executor(self.executor, _parse_chunk, c) for c in self._chunks(raws)]
        out: dict[int, Any] = {}
        for part in await asyncio.gather(*futures):
            for jid, res in part.items():
                # HookFailed does not survive pickling (its __init__ takes three arguments)
                out[jid] = HookFailed(res[1], "parse_message", res[2]) if isinstance(res, tuple) else res
        return out

    def _chunks(self, raws: list[tuple[int, RawMessage]]) -> list[list[tuple[int, RawMessage]]]:
        """A few chunks per worker balance the load: by count for small mails (at least 4 a chunk, or
        pickling dominates), by bytes for large ones (four 4 MB scans must not go to one worker)."""
        parts = self.workers * 4
        per_count = max(4, -(-len(raws) // parts))
        per_bytes = max(sum(len(r.raw or b"") for _, r in raws) // parts, 64 * 1024)
        chunks: list[list[tuple[int, RawMessage]]] = [[]]
        size = 0
        for item in raws:
            chunks[-1].append(item)
            size += len(item[1].raw or b"")
            if len(chunks[-1]) >= per_count or size >= per_bytes:
                chunks.append([])
                size = 0
        return [c for c in chunks if c]

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


class Workers:
    """The pipeline's parse workers: started by the first large batch (or ahead of it, ``get_ready``),
    let go after ``IDLE_S`` without one, given up after ``MAX_FAILURES`` broken pools.

    The pool is an accelerator, never a second way to fail: a pool that cannot start (no /dev/shm in
    a container, a fork refused) or breaks leaves the batch to be parsed in the daemon's process.
    """

    def __init__(self, settings: Any, pm: PluginManager) -> None:
        self.settings, self.pm = settings, pm
        self.pool: ParsePool | None = None
        self.off = False  # decided once: no workers configured, the plugins rule them out, or given up
        self.used = 0.0  # monotonic time of the last batch handed to (or starting) the pool
        self.failures = 0
        self._lock = threading.Lock()  # held while a pool starts (get_ready starts one in a thread)
        self._starter: threading.Thread | None = None

    async def parse(self, ids: list[int], raws: dict[int, RawMessage]) -> dict[int, Any]:
        """parse_message for a large batch in the workers: journal id -> draft | None | HookFailed;
        {} when the batch is to be parsed in process (small, no pool, workers still starting)."""
        size = sum(len(raws[j].raw or b"") for j in ids)
        if not worth(len(ids), size) or (self.pool is None and not worth(len(ids), size, start=True)):
            return {}
        if not self.start(block=False):
            return {}
        pool = self.pool
        assert pool is not None
        self.used = time.monotonic()
        if not pool.ready and not await pool.wait_ready(READY_WAIT):
            return {}  # the workers are slow to start: this batch is parsed here, the next there
        try:
            return await pool.parse([(jid, raws[jid]) for jid in ids])
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this batch itself is given up (shutdown, the drain ends)
            # the pool was closed under this batch: another batch on it saw it fail, and closing
            # cancelled the chunks still queued here. Parse here; never end the caller with a cancel
            return {}
        except Exception as exc:  # a worker died or a result did not pickle: parse here instead
            # in a thread: closing waits for the chunks the workers are running
            await asyncio.to_thread(self.failed, exc, pool)
            return {}

    def get_ready(self) -> None:
        """A source expects a backlog (``IntakeContext.expect``): start the workers now, in a thread
        (the fork server and the workers take a few tenths of a second), so that they are up when
        the first batch is journaled instead of being started by it and not ready for it."""
        if self.pool is None and not self.off and self._starter is None:
            # non-blocking: a batch starting a pool itself holds the lock, and may join this thread
            starter = threading.Thread(target=self.start, args=(False,), name="parse-pool-start", daemon=True)
            self._starter = starter
            try:
                starter.start()
            except RuntimeError as exc:  # no thread to be had (a pid or thread limit): a hint only
                self._starter = None
                log.warning("parse_pool_not_started_early", error=str(exc))

    def start(self, block: bool = True) -> bool:
        """Start the pool unless configured off or ruled out; True when there is one.
        ``block=False``: False at once while get_ready's thread is still starting one."""
        if not self._lock.acquire(blocking=block):
            return False
        try:
            if self.pool is None and not self.off:
                n = workers_for(self.settings.pipeline.parse_workers)
                if n == 0 or not eligible(self.pm):
                    self.off = True
                else:
                    try:
                        pool = ParsePool(self.settings, self.pm, n)
                        pool.start()
                    except Exception as exc:
                        self.failed(exc)
                    else:
                        self.pool, self.used = pool, time.monotonic()  # not idle before its first batch
        finally:
            self._lock.release()
        return self.pool is not None

    def failed(self, exc: Exception, pool: ParsePool | None = None) -> None:
        """Drop a broken pool; after MAX_FAILURES of them stop trying (each costs ~50 MB a worker).
        ``pool``: the one that broke; nothing happens when it was dropped already (a batch and the
        one looked ahead both had work on it and both see it break)."""
        if pool is not None and pool is not self.pool:
            return
        self.failures += 1
        give_up = self.failures >= MAX_FAILURES
        self.off = self.off or give_up
        log.warning(
            "parse_pool_failed",
            error=f"{type(exc).__name__}: {exc}",
            failures=self.failures,
            parse_here_from_now_on=give_up,
        )
        self.close()

    def idle(self) -> bool:
        return self.pool is not None and time.monotonic() - self.used > IDLE_S

    def close(self) -> None:
        """Stop the workers (idle, broken, or the daemon stops)."""
        starter, self._starter = self._starter, None
        if starter is not None and starter is not threading.current_thread():
            starter.join()  # a pool being started now would outlive this call
        if self.pool is not None:
            self.pool.close()
        self.pool = None


# ---------------------------------------------------------------------- in the worker
def _init(settings: Any, parsers: list[str], others: list[str], daemon_pid: int) -> None:
    global _pm
    from . import log as logmod
    from .plugins import make_plugin_manager

    # a fresh interpreter: the daemon's log format, level and secret redaction must be set up again,
    # or a plugin's warning from parse_message would go out unredacted, in another format, unscoped
    logmod.configure(settings.log.format, settings.log.level)
    logmod.add_secrets(settings.secret_values())

    # Ctrl-C reaches the whole process group: the daemon stops the pool itself, a worker that died of
    # the signal first would only add a traceback (and a broken pool) to a clean stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(daemon_pid,), daemon=True, name="parent-watch").start()

    blocked = [*settings.blocked_plugins, *others]
    strict = settings.strict_plugins
    pm = make_plugin_manager(plugins_dir=settings.plugins_dir, blocked=blocked, strict=strict)
    models: dict[str, Any] = {}
    for _plugin, obj in pm.register_objects("register_settings", None):
        if isinstance(obj, tuple):
            models[obj[0]] = obj[1]
    settings.validate_plugins(models)  # the daemon already reported any error in these sections
    logmod.add_secrets(settings.secret_values())  # now with the plugins' own secrets (SecretStr fields)
    for hook in ("register_sources", "register_notifiers"):
        pm.register_objects(hook, settings)
    for name, plugin in list(pm.list_name_plugin()):
        if plugin is not None and name not in parsers:  # failed in the daemon: not here either
            pm.unregister(plugin)
    _pm = pm


def _watch(daemon_pid: int) -> None:
    """Exit when the daemon is gone (kill -9): a worker outliving it would hold memory for nothing."""
    while True:
        time.sleep(2.0)
        try:
            os.kill(daemon_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass  # alive, another user's process would be a reused pid: keep going


def _ready() -> None:
    """Nothing: submitted once per worker to start it."""


def _parse_chunk(raws: list[tuple[int, RawMessage]]) -> dict[int, Any]:
    assert _pm is not None
    impls = _pm.impls("parse_message")
    out: dict[int, Any] = {}
    for jid, raw in raws:
        out[jid] = _parse_one(impls, jid, raw)
    return out


def _parse_one(impls: list[Any], jid: int, raw: RawMessage) -> Any:
    for impl in impls:
        bound = (("plugin", impl.plugin_name), ("hook", "parse_message"))
        token = SCOPE.set((("journal_id", jid), ("message_id", raw.external_id), *bound))
        try:
            res = impl.function(**{k: raw for k in impl.argnames})  # the hook's only argument
        except Exception as exc:
            return ("failed", impl.plugin_name, _portable(exc))
        finally:
            SCOPE.reset(token)
        if res is not None:
            return res
    return None


def _portable(exc: BaseException) -> BaseException:
    """The exception as it will arrive in the daemon: picklable, with the worker's traceback as a note."""
    where = "".join(traceback.format_exception(exc)).rstrip()
    try:
        copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, made on the line
    except Exception:  # an exception class that cannot be rebuilt from its args
        copy = RuntimeError(f"{type(exc).__name__}: {exc}")
    copy.add_note(f"raised in a parse worker:\n{where}")
    return copy
