"""Assembling the runtime from settings and plugins: the object every entry point (daemon, CLI, tests) uses.

``App.build`` loads plugins, validates every plugin's settings section before anything starts, runs
the migrations, and collects the sources, routes, sinks and notifiers the plugins register. Failures of
one plugin are recorded on it (``svcbridge plugins`` shows them) and the others go on.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy import Connection

from . import metrics, parsepool
from .assetlookup import HostAssets
from .contracts import Notifier, Sink, Source, SubmitResult, WebhookRoute
from .delivery import Delivery
from .errors import ConfigError
from .faults import fault
from .jobs import WorkRunner
from .models import RawMessage, StatusUpdate
from .pipeline import Outcome, Pipeline
from .plugins import PluginManager, make_plugin_manager
from .replicas import SourceLeases
from .settings import Settings
from .store import db, lease
from .store.openblobs import open_blobs
from .store.repo import Store
from .store.rmas import RmaStore
from .work import JobKind, TimerKind

log = structlog.get_logger("svcbridge.app")
HOST = lease.HOST  # one host name for outbox claims and lease holders
ONESHOT_WAIT = 30.0  # seconds run --once and ingest wait for another one-shot command's pipeline lease


pid_alive = lease.pid_alive  # outbox, job and lease claims of a dead local process are released


async def recover(app: App) -> None:
    """On start: free outbox claims of dead local processes; parked items get another chance."""
    maybe = await asyncio.to_thread(app.delivery.outbox.release_orphans, HOST, pid_alive)
    if maybe:  # marked in flight when the process died: sent or not, they go out once more
        log.warning("outbox_possibly_sent_before_crash", outbox_ids=maybe, resent=len(maybe))
    await asyncio.to_thread(lease.release_orphans, app.store, pid_alive)
    await asyncio.to_thread(app.delivery.outbox.unpark)
    for rows in (app.work.jobs, app.work.timers):
        await asyncio.to_thread(rows.release_orphans, HOST, pid_alive)
    await asyncio.to_thread(app.work.jobs.unpark)  # job kinds parked on refused credentials


def collect_settings_models(pm: PluginManager) -> tuple[dict[str, type[BaseModel]], list[tuple[str, str]]]:
    models: dict[str, type[BaseModel]] = {}
    errors: list[tuple[str, str]] = []
    for plugin, (section, model) in [
        (name, obj) for name, obj in pm.register_objects("register_settings", None) if isinstance(obj, tuple)
    ]:
        if section in models:
            errors.append((f"plugins.{section}", f"declared twice (again by plugin {plugin})"))
        models[section] = model
    return models, errors


@dataclass
class SourceHealth:
    ok: bool = True
    detail: str = ""
    last_success: float | None = None
    # for the console and /readyz: since when it fails, how often in a row, when it is tried again
    failing_since: float | None = None
    failures: int = 0
    last_error_at: float | None = None
    retry_at: float | None = None


@dataclass
class App:
    settings: Settings
    pm: PluginManager
    store: Store
    pipeline: Pipeline
    delivery: Delivery
    work: WorkRunner
    sources: dict[str, Source] = field(default_factory=dict)
    routes: list[WebhookRoute] = field(default_factory=list)
    erps: dict[str, Any] = field(default_factory=dict)  # name -> svcbridge.PartsErp (register_erps)
    rmas: Any = None  # svcbridge.RmaBook over the store (store/rmas.py)
    health: dict[str, SourceHealth] = field(default_factory=dict)
    # replaced by fresh events inside the running loop by daemon.serve()
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    delivery_wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Host.assets: the asset register for plugins' jobs and timers (assetlookup.py, inline=False)
    assets: HostAssets | None = None
    # the source leases of this process (replicas.py), while the daemon or a run --once runs: a
    # source's context fences its journal writes and upstream actions on them; None: not fenced
    leases: SourceLeases | None = None
    left: dict[str, str] = field(default_factory=dict)  # run --once: source -> the live holder it left it to

    @classmethod
    def build(cls, settings: Settings, pm: PluginManager | None = None, migrate: bool = True) -> App:
        if pm is None:
            pm = make_plugin_manager(
                plugins_dir=settings.plugins_dir,
                blocked=settings.blocked_plugins,
                strict=settings.strict_plugins,
                trace=settings.trace_hooks,
            )
            pm.from_settings = True  # parse workers can rebuild exactly this set (parsepool.py)
        pm.trace_calls = settings.trace_hooks
        models, errors = collect_settings_models(pm)
        errors += settings.validate_plugins(models)
        if errors:
            raise ConfigError(errors)
        from . import log as logmod

        logmod.add_secrets(settings.secret_values())
        engine = db.make_engine(settings.db_url)
        blobs = open_blobs(settings.store, settings.blob_dir)
        if migrate:
            db.upgrade(engine, blobs=blobs)
        store = Store(engine, settings.ticket_prefix, blobs)
        sinks: dict[str, Sink] = {}
        for plugin, sink in pm.register_objects("register_sinks", settings):
            _unique(sinks, sink.name, sink, plugin, "sink")
        notifiers: dict[str, Notifier] = {}
        for plugin, notifier in pm.register_objects("register_notifiers", settings):
            _unique(notifiers, notifier.channel, notifier, plugin, "notifier")
        app = cls(
            settings=settings,
            pm=pm,
            store=store,
            # InlineSinks write in its commit; the notifiers say which channels reach a customer
            pipeline=Pipeline.build(pm, store, settings, sinks, notifiers),
            delivery=Delivery(store, settings.outbox, sinks, notifiers, worker_id=f"{HOST}:{os.getpid()}"),
            work=WorkRunner(
                store,
                _kinds(pm.register_objects("register_job_kinds", settings), JobKind, "job kind"),
                _kinds(pm.register_objects("register_timer_kinds", settings), TimerKind, "timer kind"),
                worker_id=f"{HOST}:{os.getpid()}",
            ),
        )
        app.assets = HostAssets.build(pm, store, inline=False)
        for plugin, src in pm.register_objects("register_sources", settings):
            _unique(app.sources, src.name, src, plugin, "source")
        for _plugin, route in pm.register_objects("register_routes", settings):
            app.routes.append(route)
        for plugin, erp in pm.register_objects("register_erps", settings):
            _unique(app.erps, erp.name, erp, plugin, "ERP")
        app.rmas = RmaStore(store)
        return app

    def context(self, name: str, leased: bool = False) -> IntakeCtx:
        """``leased``: a source run under its lease (daemon, run --once), not a webhook route."""
        return IntakeCtx(self, name, self.leases if leased else None)

    def plugin_config(self, section: str) -> Any:
        """``svcbridge.Host``: the App is what the ``startup`` / ``shutdown`` hooks are given."""
        return self.settings.plugin_config(section)

    def attachment_data(self, ticket_id: int, safe_name: str) -> bytes | None:
        """``svcbridge.Host``: a stored attachment's bytes (a job's thread reads a fax's pages)."""
        return self.store.attachment_data(ticket_id, safe_name)

    def lookup(self) -> Any:
        """``svcbridge.Host``: read-only ticket queries (the store answers ``TicketLookup``)."""
        return self.store

    async def poll_sources_once(self) -> int:
        """One pass over every source (``run --once``); a failing source is reported, the others run.

        Beside daemons (or another run --once) on the same store, each source is polled under its lease
        like in a replica: a source a live process holds is left to it (``self.left``), a free, run out
        or dead-held one is leased for the pass, renewed every third of the TTL while the pass runs and
        given back at its end. Alone on a store every source is free: all are polled."""
        self.left = {}
        leases = self.leases
        names = list(self.sources)
        if leases is not None:
            names, self.left = await asyncio.to_thread(leases.take_for_pass, names)
            for name, holder in self.left.items():
                log.info("source_left_to_holder", source=name, holder=holder)
        keep = asyncio.create_task(self._keep_leases(names)) if leases is not None and names else None
        total = 0
        try:
            for name in names:
                src = self.sources[name]
                ctx = self.context(name, leased=True)
                try:
                    total += await src.poll(ctx)
                    ctx.report(True)
                except Exception as exc:
                    ctx.report(False, f"{type(exc).__name__}: {exc}")
                    log.error("source_failed", source=name, error=str(exc))
                if leases is not None:  # done with it: a daemon may take it at its next heartbeat
                    await asyncio.to_thread(leases.release_all, [name])
        finally:
            if keep is not None:
                keep.cancel()
                await asyncio.gather(keep, return_exceptions=True)
            if leases is not None:
                await asyncio.to_thread(leases.release_all, names)
        return total

    async def _keep_leases(self, names: list[str]) -> None:
        assert self.leases is not None
        while True:
            await asyncio.sleep(self.leases.ttl / 3)
            try:
                await asyncio.to_thread(self.leases.renew_all, names)
            except Exception as exc:  # the store is down: the sources' fences refuse once it ran out
                log.error("source_leases_failed", error=f"{type(exc).__name__}: {exc}")

    async def run_once(self) -> dict[str, Any]:
        """Poll every source once, process the journal, deliver what is due; for cron, tests, benchmarks."""
        await recover(self)
        # the sources are polled under their leases, with this command's holder (a one-shot's)
        self.leases = SourceLeases(self.store, self.pipeline.holder, self.settings.store.source_lease_ttl)
        # ask for the pipeline lease before the sources poll: their expect() hints start the parse
        # workers only in the process that holds it (the drain below asks again)
        await asyncio.to_thread(self.pipeline.take_lease)
        # plugins open their clients before any poll; from here on the finally below shuts them down
        await self.pm.lifecycle("startup", app=self)
        # The three stages overlap as in the daemon: journaled batches are processed while the sources are
        # still fetching (an IMAP fetch waits on the socket in its own thread), and delivered while later
        # batches are processed. Each loop ends only after a pass that began after its upstream finished.
        polling = asyncio.create_task(self.poll_sources_once())
        outcomes: list[Outcome] = []

        async def process() -> None:
            while True:
                upstream_done = polling.done()
                # at the end, wait a little for a one-shot command (an MTA's ingest) holding the lease
                got = await self.pipeline.drain(wait=ONESHOT_WAIT if upstream_done else 0.0)
                outcomes.extend(got)
                if upstream_done and not got:
                    return
                if not got:
                    await asyncio.wait([polling], timeout=0.05)

        # delivery takes a round per committed batch while the pipeline runs, not a round whenever
        # anything at all is due: back-to-back rounds of a few dozen items each cost their claim and
        # settle transactions and the due query over again (123 rounds instead of 25 for 5,000 mails)
        self.pipeline.committed = committed = asyncio.Event()
        processing = asyncio.create_task(process())
        rounds_after = 0  # as Delivery.drain: a bound, so an item that is always due cannot spin forever
        try:
            while rounds_after < 10_000:
                upstream_done = processing.done()
                rounds_after += upstream_done
                seen = await self.delivery.run_once()
                full = seen >= self.settings.outbox.batch  # more is due now: go again at once
                # jobs and timers due now: their ticket changes become outbox rows for the next round
                seen += len(await self.work.run_once())
                if upstream_done and not seen:
                    break
                if not upstream_done and not full:
                    waiter = asyncio.ensure_future(committed.wait())
                    await asyncio.wait([processing, waiter], timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    committed.clear()
        finally:
            self.pipeline.committed = None
            try:  # surface a failure of either task (and never leave them running)
                polled = await polling
                await processing
            finally:  # parse workers stop and the pipeline lease goes back, failure or not
                self.leases = None
                try:
                    self.pipeline.close()
                finally:  # after the last work: plugins close their clients
                    await self.pm.lifecycle("shutdown", app=self)
        return {"polled": polled, "processed": len(outcomes), "outcomes": outcomes, "left": dict(self.left)}


def _kinds(found: list[tuple[str, Any]], cls: type[JobKind] | type[TimerKind], what: str) -> dict[str, Any]:
    """Registered job or timer kinds by name, with the plugin that registered each."""
    table: dict[str, Any] = {}
    for plugin, obj in found:
        if not isinstance(obj, cls):
            log.error("bad_registration", kind=what, plugin=plugin, got=type(obj).__name__)
            continue
        if obj.name in table:
            log.error("duplicate_registration", kind=what, name=obj.name, plugin=plugin)
            continue
        table[obj.name] = (plugin, obj)
    return table


def _unique(table: dict[str, Any], key: str, obj: Any, plugin: str, kind: str) -> None:
    if key in table:
        log.error("duplicate_registration", kind=kind, name=key, plugin=plugin)
        return
    table[key] = obj


class IntakeCtx:
    """The host side of ``svcbridge.IntakeContext`` for one source or webhook route."""

    def __init__(self, app: App, name: str, leases: SourceLeases | None = None) -> None:
        self.app, self.name = app, name
        self.stopping = app.stopping
        self.leases = leases  # a source run under its lease: journal writes and actions are fenced
        self.began = time.monotonic()  # a lease taken anew after this is a gap this pass did not see

    def _fenced(self) -> tuple[Callable[[Connection], None], ...]:
        """The journal insert's extra argument: the lease check inside its transaction, if leased."""
        return () if self.leases is None else (functools.partial(self.leases.fence, name=self.name),)

    async def confirm_lease(self) -> None:
        fault("before_upstream_action")  # tests pause here (SIGSTOP) with an action about to run
        if self.leases is not None:
            await self.leases.confirm(self.name, self.began)

    async def submit(self, raw: RawMessage) -> SubmitResult:
        if self.leases is not None:
            await self.leases.confirm(self.name, self.began)
        res = await asyncio.to_thread(self.app.store.journal_insert, raw, *self._fenced())
        fault("after_journal")
        metrics.INTAKE.labels(source=raw.source, new=str(res.new).lower()).inc()
        self.app.wake.set()
        return res

    async def submit_many(self, raws: list[RawMessage]) -> list[SubmitResult]:
        if not raws:
            return []
        fault("before_journal")  # tests pause here (SIGSTOP) with a fetched batch in hand
        if self.leases is not None:  # before the blobs are written: a lapsed lease writes nothing
            await self.leases.confirm(self.name, self.began)
        results = await asyncio.to_thread(self.app.store.journal_insert_many, raws, *self._fenced())
        fault("after_journal")
        log.debug("journaled", source=self.name, messages=len(raws), new=sum(r.new for r in results))
        for raw, res in zip(raws, results, strict=True):
            metrics.INTAKE.labels(source=raw.source, new=str(res.new).lower()).inc()
        self.app.wake.set()
        return results

    def expect(self, count: int, size: int = 0) -> None:
        # only where the pipeline runs: a replica without the lease would hold idle workers for nothing
        if self.app.pipeline.runs_here and parsepool.worth(count, size, start=True):
            self.app.pipeline.workers.get_ready()

    async def get_checkpoint(self, key: str) -> str | None:
        return await asyncio.to_thread(self.app.store.get_checkpoint, self.name, key)

    async def set_checkpoint(self, key: str, value: str) -> None:
        if self.leases is not None:  # a paused holder must not move the new holder's checkpoint back
            await self.leases.confirm(self.name, self.began)
        await asyncio.to_thread(self.app.store.set_checkpoint, self.name, key, value)

    async def apply_status_update(self, update: StatusUpdate) -> bool:
        applied = await self.app.pipeline.apply_status_update(update)
        if applied:
            self.app.delivery_wake.set()
        return applied

    def report(self, ok: bool, detail: str = "") -> None:
        h = self.app.health.setdefault(self.name, SourceHealth())
        h.ok, h.detail = ok, detail
        metrics.SOURCE_UP.labels(source=self.name).set(1 if ok else 0)
        if ok:
            h.last_success = time.time()
            h.failing_since, h.failures, h.retry_at = None, 0, None
            metrics.LAST_SUCCESS.labels(source=self.name).set(h.last_success)
        else:
            h.last_error_at = time.time()
            h.failures += 1
            if h.failing_since is None:
                h.failing_since = h.last_error_at
