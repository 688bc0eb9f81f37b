"""The straight line from a journaled raw message to a stored ticket with outbox rows.

    journal ─▶ parse ─▶ normalize ─▶ thread/dedupe ─▶ classify ─▶ enrich ─▶ plan ─▶ store (one transaction)

Each stage is a short function that calls one hook; no stage calls back up. An exception in a stage
quarantines that one message with the plugin, stage and error, and the next message goes on.

Messages are taken from the journal in batches. Each message runs the stages on its own and yields a
``Plan`` (what to write, ``plans.py``); the plans of a batch are committed in ONE transaction by the
plan writer (``store/planwriter.py``). A crash before that commit leaves the entries pending and they
are processed again. While a batch is open, threading and duplicate checks see its uncommitted work
through ``Overlay``, so a reply or a redelivery in the same batch as the original still threads or
dedupes correctly. Only the holder of the pipeline lease (``store/pipelease.py``) runs this.

The parts are passed in (``Pipeline.build`` assembles them): the lease, the plan writer (with the
router), the composer of notifications, the status applier. None of them knows the pipeline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from . import changes, metrics, parsepool
from .assetlookup import HostAssets
from .channels import ChannelDirectory
from .compose import Composer
from .errors import PipelineBusy
from .faults import fault
from .log import scope as logscope
from .models import (
    EventType,
    ExternalLink,
    RawMessage,
    StatusUpdate,
    ThreadMatch,
    Ticket,
    TicketDraft,
    TicketEvent,
    TicketState,
    utcnow,
)
from .overlay import Overlay
from .plans import Outcome, Plan, PlanStatus, StageFailed, actor
from .plugins import HookFailed, PluginManager
from .routing import Router
from .settings import Settings
from .status import StatusApplier
from .store.pipelease import PipelineLease
from .store.planwriter import PlanWriter
from .store.repo import Store
from .work import TicketChange, WorkQueue

__all__ = ["Batch", "Outcome", "Pipeline", "Plan", "StageFailed"]

log = structlog.get_logger("svcbridge.pipeline")
_NOT_YET = object()  # no parse worker answered for this message: call parse_message in process


@dataclass
class Batch:
    """Journal entries taken together: their raw messages and the parse workers' answers (``{}``:
    parse here), which may still be on their way while the batch before is stored."""

    ids: list[int]
    raws: dict[int, RawMessage]
    parsed: asyncio.Future[dict[int, Any]]


class Pipeline:
    def __init__(
        self,
        pm: PluginManager,
        store: Store,
        settings: Settings,
        *,
        lease: PipelineLease,
        writer: PlanWriter,
        composer: Composer,
        status: StatusApplier,
        assets: HostAssets | None = None,
    ) -> None:
        self.pm, self.store, self.settings = pm, store, settings
        # classify / enrich ask for units through it (inline: local answers only, assetlookup.py)
        self.assets = assets or HostAssets.build(pm, store, inline=True, budget=settings.pipeline.hook_budget)
        self.lease = lease  # only its holder runs the pipeline; fences the commit
        self.writer = writer  # the store stage: a batch's plans in one transaction
        self.composer = composer  # compose_notifications, for the plan of each message
        self.status = status  # status updates from helpdesks and vendors
        self.workers = parsepool.Workers(settings, pm)  # parse_message on the other cores
        self._ids: list[int] = []  # ticket numbers reserved for this process, used in order
        self.committed: asyncio.Event | None = None  # set after each batch commit (run --once waits on it)

    @classmethod
    def build(
        cls,
        pm: PluginManager,
        store: Store,
        settings: Settings,
        sinks: Mapping[str, Any] | None = None,
        notifiers: Mapping[str, Any] | None = None,
    ) -> Pipeline:
        """The pipeline and its parts; ``sinks`` that are ``InlineSink``s are written in the commit,
        ``notifiers`` (by channel) are the channels a customer can be told on (``channels.py``)."""
        lease = PipelineLease(store, settings.pipeline.lease_ttl)
        channels = ChannelDirectory(notifiers or {}, settings.notifications.fallback_channels)
        composer = Composer(pm, settings, channels)
        return cls(
            pm,
            store,
            settings,
            lease=lease,
            writer=PlanWriter(store, lease, Router(settings.routing), sinks),
            composer=composer,
            status=StatusApplier(store, pm, composer),
        )

    # ------------------------------------------------------------------ the lease (store/pipelease.py)
    @property
    def holder(self) -> str:
        return self.lease.holder

    @holder.setter
    def holder(self, holder: str) -> None:  # daemon.serve names a daemon's
        self.lease.holder = holder

    @property
    def runs_here(self) -> bool:
        """This process held the pipeline lease when it last asked (a replica without it: False)."""
        return self.lease.runs_here

    def take_lease(self) -> str | None:
        """Take or renew the pipeline lease: None when this process may run the pipeline, else who has it."""
        return self.lease.take()

    # ------------------------------------------------------------------ driving
    async def drain(self, wait: float = 0.0) -> list[Outcome]:
        """Process every pending journal entry (oldest first); returns what happened to each.

        Only in the holder of the pipeline lease; ``wait`` seconds are spent waiting for it while a
        one-shot command (another ``ingest``, ``run --once``) holds it, never for a daemon.
        """
        done: list[Outcome] = []
        if await self.lease.wait(wait) is not None:
            await self._let_idle_workers_go()
            return done  # another process runs the pipeline on this store; intake and delivery go on
        batch: Batch | None = None
        ahead: Batch | None = None
        try:
            while True:
                batch, ahead = ahead or await self._next_batch(), None
                if batch is None:
                    await self._let_idle_workers_go()
                    return done
                # look ahead: the next batch is parsed in the workers while this one is threaded and
                # stored here (only its parsing: what it is checked against is read after this commit)
                ahead = await self._next_batch(exclude=batch.ids)
                try:
                    done += await self.process_batch(batch)
                except PipelineBusy as exc:  # the lease ran out mid-drain, or its entries were taken
                    log.warning("pipeline_batch_refused", holder=self.lease.holder, detail=str(exc))
                    self.lease.forget()  # ask the store next time, not the memory
                    return done
        finally:  # what was not processed stays pending; the workers' answers for it are dropped
            left = [b.parsed for b in (batch, ahead) if b is not None and not b.parsed.done()]
            for fut in left:
                fut.cancel()
            await asyncio.gather(*left, return_exceptions=True)

    async def _next_batch(self, exclude: list[int] | None = None) -> Batch | None:
        """The oldest pending entries (but ``exclude``), loaded, their parsing started in the workers."""
        cfg = self.settings.pipeline
        ids = await asyncio.to_thread(self.store.pending_journal, cfg.batch, cfg.batch_bytes, exclude)
        if not ids:
            return None
        raws = await asyncio.to_thread(self.store.load_raws, ids)
        return Batch(ids, raws, asyncio.ensure_future(self.workers.parse(ids, raws)))

    async def _let_idle_workers_go(self) -> None:
        if self.workers.idle():
            # parse workers hold ~50 MB each: let them go after a quiet spell (a backlog import, a
            # burst; or this process does not hold the lease any more); a large batch starts them again
            await asyncio.to_thread(self.workers.close)

    async def process(self, journal_id: int, wait: float = 0.0) -> Outcome:
        """Process the journal up to this entry (``ingest``, ``quarantine retry``); its outcome.

        Everything pending is processed, oldest first, not only this entry: an entry another one-shot
        command left behind (it could not get the lease) must not wait for a daemon that may not
        exist. Raises ``PipelineBusy`` when another process runs the pipeline (a daemon, or a
        one-shot command still busy after ``wait`` s): the entry stays pending for it.
        """
        who = await self.lease.wait(wait)
        if who is not None:
            raise PipelineBusy(f"the pipeline runs in another process ({who}); it will process the entry")
        found = [o for o in await self.drain() if o.journal_id == journal_id]
        if found:
            return found[-1]
        row = await asyncio.to_thread(self.store.journal_row, journal_id)  # not pending: done already
        tid = row["ticket_id"] if row else None
        return Outcome(
            journal_id, row["status"] if row else "unknown", self.store.ref_for(tid) if tid else None
        )

    async def process_batch(self, batch: Batch) -> list[Outcome]:
        ids, raws = batch.ids, batch.raws
        self.lease.begin_batch()  # everything it decides is read from here on
        if len(self._ids) < len(ids):
            self._ids += await asyncio.to_thread(self.store.allocate_ticket_ids, len(ids) - len(self._ids))
        hashes = {r.content_hash for r in raws.values()}
        overlay = Overlay(self.store, await asyncio.to_thread(self.store.journal_seen_many, hashes))
        # parse and normalise the whole batch first: then every link the threading stage may ask about
        # is known, and one query answers them all instead of one query per reference
        parsed: dict[int, TicketDraft | StageFailed] = {}
        early = await batch.parsed
        for jid in ids:
            with logscope(journal_id=jid, message_id=raws[jid].external_id):
                parsed[jid] = await self._parse(raws[jid], early.get(jid, _NOT_YET))
        values = {
            ln.value
            for d in parsed.values()
            if isinstance(d, TicketDraft)
            for ln in (*d.links, *d.thread_refs)
        }
        overlay.prefetch(values, await asyncio.to_thread(self.store.links_by_values, values))
        plans = []
        for jid in ids:
            await self.lease.keep()
            with logscope(journal_id=jid, message_id=raws[jid].external_id):
                plan = await self._prepare(jid, raws[jid], parsed[jid], overlay)
            overlay.record(plan)
            plans.append(plan)
        await asyncio.to_thread(self.writer.commit, plans)
        fault("after_store")
        if self.committed is not None:
            self.committed.set()
        # one bound logger for the batch: the module's lazy proxy binds a new one on every call
        blog = log.bind()
        for p in plans:
            metrics.MESSAGES.labels(channel=p.raw.channel, outcome=p.status).inc()
            if p.failure:
                f = p.failure
                blog.warning(
                    "quarantined", journal_id=p.journal_id, stage=f.stage, plugin=f.plugin, error=str(f.exc)
                )
            else:
                blog.info(
                    "processed",
                    journal_id=p.journal_id,
                    message_id=p.raw.external_id,
                    source=p.raw.source,
                    channel=p.raw.channel,
                    outcome=p.status,
                    ticket=p.ticket.ref if p.ticket else None,
                )
        return [p.outcome for p in plans]

    def close(self) -> None:
        """The daemon's shutdown, the end of ``run --once``: parse workers stop, the lease is given back."""
        self.workers.close()
        self.lease.release()

    # ------------------------------------------------------------------ the stages
    async def _parse(self, raw: RawMessage, early: Any = None) -> TicketDraft | StageFailed:
        """parse -> normalize: the draft, or the failure that quarantines this message.

        ``early`` is what a parse worker already answered for ``parse_message`` (a draft, None, or
        the HookFailed of the plugin that raised); ``_NOT_YET`` when the hook is to be called here.
        """
        try:
            if early is _NOT_YET:
                draft = await self._stage("parse", "parse_message", True, raw=raw)
            elif isinstance(early, HookFailed):
                raise StageFailed("parse", early.plugin, early.exc)
            else:
                draft = early
            if draft is None:
                raise StageFailed("parse", None, LookupError(f"no plugin parses channel {raw.channel!r}"))
            if not isinstance(draft, TicketDraft):
                raise StageFailed("parse", None, TypeError(f"parse_message returned {type(draft).__name__}"))
            if draft.received_at is None:  # SLA clocks start at receipt, not when a backlog is processed
                draft.received_at = raw.received_at
            await self._stage("normalize", "normalize_draft", draft=draft, raw=raw, settings=self.settings)
            return draft
        except StageFailed as exc:
            return exc

    async def _prepare(
        self, journal_id: int, raw: RawMessage, draft: TicketDraft | StageFailed, overlay: Overlay
    ) -> Plan:
        """thread / dedupe -> classify -> enrich -> the plan the store stage writes."""
        try:
            if isinstance(draft, StageFailed):
                raise draft
            match = await self._thread(draft, raw, journal_id, overlay)
            if match and match.duplicate:
                # a duplicate stores its journal status and one received_again event: the ticket row will do,
                # not the trail, links and attachments a full load would read
                same = overlay.by_ref(match.ticket_ref)
                if same:
                    return Plan(journal_id, raw, PlanStatus.DUPLICATE, ticket=same, reason=match.reason)
            ticket = overlay.ticket(match.ticket_ref) if match else None
            if (
                ticket is not None
                and ticket.state.is_closed
                and self.settings.pipeline.on_closed_reply == "new_linked"
            ):
                draft.links.append(ExternalLink(system="svcbridge", kind="follows", value=ticket.ref))
                ticket = None
            # the ticket this message ends up on: a new one takes the next reserved number (_plan)
            tid = ticket.id if ticket else self._ids[0]
            work = WorkQueue(self.store.ref_for(tid) if ticket is None else ticket.ref, tid)
            found: list[tuple[str, TicketChange]] = []
            for stage, hook in (("classify", "classify_ticket"), ("enrich", "enrich_ticket")):
                await self._decide(stage, hook, draft, ticket, work, found)
            return await self._plan(journal_id, raw, draft, ticket, work, found)
        except StageFailed as exc:
            return Plan(journal_id, raw, PlanStatus.QUARANTINED, reason=str(exc), failure=exc)

    async def _stage(self, stage: str, hook: str, firstresult: bool = False, **kwargs: Any) -> Any:
        try:
            budget = self.settings.pipeline.hook_budget
            return await self.pm.call_each(hook, firstresult=firstresult, budget=budget, **kwargs)
        except HookFailed as exc:
            raise StageFailed(stage, exc.plugin, exc.exc) from exc

    async def _decide(
        self,
        stage: str,
        hook: str,
        draft: TicketDraft,
        ticket: Ticket | None,
        work: WorkQueue,
        found: list[tuple[str, TicketChange]],
    ) -> None:
        """classify / enrich: on a follow-up, what each plugin set on the draft is noted in ``found``
        (a snapshot before and after each plugin's call), to be kept on the ticket with its name.
        Labels are stored, so one that is not plain JSON fails the plugin that set it, here."""
        state = {"before": changes.snapshot(draft)} if ticket is not None else {}

        def after(plugin: str) -> None:
            if draft.labels:
                try:
                    json.dumps(changes.kept(draft.labels))
                except (TypeError, ValueError) as exc:
                    raise StageFailed(stage, plugin, TypeError(f"labels must be plain JSON: {exc}")) from None
            if ticket is not None:
                change = changes.draft_change(state["before"], draft)
                if change is not None:
                    found.append((plugin, change))
                    state["before"] = changes.snapshot(draft)

        kwargs: dict[str, Any] = {
            "draft": draft,
            "ticket": ticket,
            "settings": self.settings,
            "jobs": work,
            "assets": self.assets,
        }
        await self._stage(stage, hook, after=after, **kwargs)

    async def _thread(
        self, draft: TicketDraft, raw: RawMessage, journal_id: int, overlay: Overlay
    ) -> ThreadMatch | None:
        # Exact same bytes already made a ticket (another mailbox, a re-import): a duplicate.
        seen = overlay.journal_seen(raw.content_hash, journal_id)
        if seen is not None:
            return ThreadMatch(ticket_ref=self.store.ref_for(seen), duplicate=True, reason="same content")
        match = await self._stage("thread", "thread_message", True, draft=draft, lookup=overlay)
        if match is not None and not isinstance(match, ThreadMatch):
            raise StageFailed("thread", None, TypeError("thread_message must return a ThreadMatch"))
        return match

    async def _plan(
        self,
        journal_id: int,
        raw: RawMessage,
        draft: TicketDraft,
        ticket: Ticket | None,
        work: WorkQueue,
        found: list[tuple[str, TicketChange]],
    ) -> Plan:
        data = _msg_data(raw, draft)
        if ticket is None:
            ticket = self._new_ticket(self._ids.pop(0), draft)
            event = TicketEvent(type=EventType.RECEIVED, at=raw.received_at, actor=actor(draft), data=data)
            plan = Plan(journal_id, raw, PlanStatus.CREATED, ticket=ticket, draft=draft, event=event)
        else:
            # a survey answer (the SLA plugin's draft label) does not reopen the ticket it rates
            reopen = ticket.state.is_closed and not draft.labels.get("_keep_closed")
            if reopen:
                ticket.state = TicketState.IN_PROGRESS
            event = TicketEvent(type=EventType.MESSAGE_RECEIVED, actor=actor(draft), data=data)
            plan = Plan(
                journal_id, raw, PlanStatus.FOLLOWUP, ticket=ticket, draft=draft, event=event, reopen=reopen
            )
            # kept on the ticket now, so later messages of this batch see it (the overlay holds it)
            for plugin, change in found:
                diff = changes.apply(ticket, change)
                if diff:
                    plan.changes.append((plugin, diff))
        plan.work = work if work else None
        plan.notes = await self.composer.compose(ticket, event, draft)
        return plan

    def _new_ticket(self, tid: int, draft: TicketDraft) -> Ticket:
        return Ticket(
            id=tid,
            ref=self.store.ref_for(tid),
            channel=draft.channel,
            subject=draft.subject,
            description=draft.body_text,
            contact=draft.contact,
            customer=draft.customer,
            asset=draft.asset,
            priority=draft.priority,
            fault_level=draft.fault_level,
            sla_policy=draft.sla_policy,
            language=draft.language or draft.contact.language,
            deadlines=draft.deadlines,
            category=draft.category,
            labels=changes.kept(draft.labels),
        )

    # ------------------------------------------------------------------ delegated to the parts
    def route(self, ticket: Ticket, source: str | None) -> list[str]:
        """Sinks for a new ticket (``routing.Router``, as the plan writer routes it)."""
        return self.writer.router.route(ticket, source)

    async def apply_status_update(self, update: StatusUpdate) -> bool:
        """Apply a helpdesk/vendor change (``status.StatusApplier``); False if already seen or unknown."""
        return await self.status.apply(update)


def _msg_data(raw: RawMessage, draft: TicketDraft) -> dict[str, Any]:
    return {
        "source": raw.source,
        "external_id": raw.external_id,
        "subject": draft.subject,
        "body": draft.body_text[:20000],
        # the parser's nh3-sanitised HTML, for the console's sandboxed view (never executed there)
        "body_html": draft.body_html[:200_000] if draft.body_html else None,
        "automated": draft.automated,
        "attachments": [a.safe_name for a in draft.attachments],
        "stored_at": utcnow().isoformat(),
    }
