"""The straight line from a journaled raw message to a stored ticket with outbox rows.

    journal ─▶ parse ─▶ normalize ─▶ thread/dedupe ─▶ classify ─▶ enrich ─▶ store (one transaction)

Each stage is a short function that calls one hook; no stage calls back up. An exception in a stage
quarantines that one message with the plugin, stage and error, and the next message goes on.

Messages are taken from the journal in batches. Each message runs the stages on its own and yields a
``Plan`` (what to write); the plans of a batch are committed in ONE transaction: tickets or follow-ups,
events, links, attachments, outbox rows for sinks and notifications, quarantine rows, journal statuses.
A crash before that commit leaves the entries pending and they are processed again. While a batch is
open, threading and duplicate checks see its uncommitted work through ``Overlay``, so a reply or a
redelivery in the same batch as the original still threads or dedupes correctly. Should the batch
commit fail on one bad row, the plans are committed one by one and only the offender is quarantined.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import metrics, parsepool
from .errors import PipelineBusy, StoreUnavailable
from .faults import fault
from .log import scope as logscope
from .models import (
    DeliveryResult,
    ExternalLink,
    Notification,
    RawMessage,
    StatusUpdate,
    ThreadMatch,
    Ticket,
    TicketDraft,
    TicketEvent,
    TicketState,
    utcnow,
)
from .overlay import CLOSED, Overlay
from .plugins import HookFailed, PluginManager
from .settings import Settings
from .status import apply_status_update, notification_rows
from .store import lease
from .store.batch import BatchWriter
from .store.repo import Store

log = structlog.get_logger("svcbridge.pipeline")
LEASE = "pipeline"  # the store lease whose holder alone runs the pipeline (store/lease.py)
_NOT_YET = object()  # no parse worker answered for this message: call parse_message in process


class StageFailed(Exception):
    def __init__(self, stage: str, plugin: str | None, exc: BaseException) -> None:
        super().__init__(f"{stage}: {exc}")
        self.stage, self.plugin, self.exc = stage, plugin, exc


@dataclass(frozen=True)
class Outcome:
    journal_id: int
    status: str  # created | followup | duplicate | quarantined
    ticket_ref: str | None = None
    reason: str = ""


@dataclass
class Plan:
    """What the store stage writes for one journal entry."""

    journal_id: int
    raw: RawMessage
    status: str
    ticket: Ticket | None = None
    draft: TicketDraft | None = None
    event: TicketEvent | None = None
    notes: list[Notification] = field(default_factory=list)
    reopen: bool = False
    reason: str = ""
    failure: StageFailed | None = None

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.journal_id, self.status, self.ticket.ref if self.ticket else None, self.reason)


@dataclass
class Batch:
    """Journal entries taken together: their raw messages and the parse workers' answers (``{}``:
    parse here), which may still be on their way while the batch before is stored."""

    ids: list[int]
    raws: dict[int, RawMessage]
    parsed: asyncio.Future[dict[int, Any]]


class Pipeline:
    def __init__(self, pm: PluginManager, store: Store, settings: Settings) -> None:
        self.pm, self.store, self.settings = pm, store, settings
        self._ids: list[int] = []  # ticket numbers reserved for this process, used in order
        self.workers = parsepool.Workers(settings, pm)  # parse_message on the other cores
        # sinks that record a delivery inside the store transaction (contracts.InlineSink); App.build
        self.inline_sinks: dict[str, Any] = {}
        self.holder = lease.new_holder()
        self._busy_with: str | None = "?"  # who held the lease when we last asked (logged on change)
        self._lease_checked_until = 0.0  # monotonic: until then take_lease answers from memory
        self.committed: asyncio.Event | None = None  # set after each batch commit (run --once waits on it)
        self._held_since = 0.0  # monotonic: when this process last took the lease anew (not renewed)
        self._batch_began = 0.0  # monotonic: when the batch being stored began its decisions

    # ------------------------------------------------------------------ driving
    async def drain(self, wait: float = 0.0) -> list[Outcome]:
        """Process every pending journal entry (oldest first); returns what happened to each.

        Only in the holder of the pipeline lease; ``wait`` seconds are spent waiting for it while a
        one-shot command (another ``ingest``, ``run --once``) holds it, never for a daemon.
        """
        done: list[Outcome] = []
        if await self._wait_for_lease(wait) is not None:
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
                    log.warning("pipeline_batch_refused", holder=self.holder, detail=str(exc))
                    self._lease_checked_until = 0.0  # ask the store next time, not the memory
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

    @property
    def runs_here(self) -> bool:
        """This process held the pipeline lease when it last asked (a replica without it: False)."""
        return self._busy_with is None

    def take_lease(self) -> str | None:
        """Take or renew the pipeline lease: None when this process may run the pipeline, else who has it.

        Asked on every drain (the daemon's is once a second); the store is asked only when a third of
        ``lease_ttl`` has passed since the holder last renewed it (every batch commit renews it too):
        no write and fsync per second while idle. A process that is not the holder asks every time
        (an update that matches no row writes nothing), so it takes over as soon as it may.
        """
        now = time.monotonic()
        if self._busy_with is None and now < self._lease_checked_until:
            return None
        ttl = self.settings.pipeline.lease_ttl
        who, anew = lease.take(self.store, LEASE, self.holder, ttl)
        if anew:  # a gap: a batch begun before this must not commit (_fence)
            self._held_since = now
        self._lease_checked_until = now + ttl / 3 if who is None else 0.0
        if who != self._busy_with:  # one line per change, not one per wake-up
            if who is None:
                log.info("pipeline_lease_taken", holder=self.holder)
            else:
                log.info("pipeline_lease_held_elsewhere", holder=who, waiting=self.holder)
            self._busy_with = who
        return who

    async def _wait_for_lease(self, wait: float) -> str | None:
        """take_lease, retried for up to ``wait`` s while a one-shot command holds the lease."""
        deadline = time.monotonic() + wait
        while True:
            who = await asyncio.to_thread(self.take_lease)
            if who is None or lease.is_daemon(who) or time.monotonic() >= deadline:
                return who
            await asyncio.sleep(0.1)

    async def _keep_lease(self) -> None:
        """During a batch: renew the lease when a third of lease_ttl has passed (a slow plugin must
        not let it run out, or two processes would take it from each other batch after batch)."""
        if (
            time.monotonic() >= self._lease_checked_until
            and await asyncio.to_thread(self.take_lease) is not None
        ):
            raise PipelineBusy("the pipeline lease was taken over during the batch; it stays pending")

    async def process(self, journal_id: int, wait: float = 0.0) -> Outcome:
        """Process the journal up to this entry (``ingest``, ``quarantine retry``); its outcome.

        Everything pending is processed, oldest first, not only this entry: an entry another one-shot
        command left behind (it could not get the lease) must not wait for a daemon that may not
        exist. Raises ``PipelineBusy`` when another process runs the pipeline (a daemon, or a
        one-shot command still busy after ``wait`` s): the entry stays pending for it.
        """
        who = await self._wait_for_lease(wait)
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
        self._batch_began = time.monotonic()  # everything it decides is read from here on
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
            await self._keep_lease()
            with logscope(journal_id=jid, message_id=raws[jid].external_id):
                plan = await self._prepare(jid, raws[jid], parsed[jid], overlay)
            overlay.record(plan)
            plans.append(plan)
        await asyncio.to_thread(self._commit_all, plans)
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
        if self._busy_with is None:  # held (or last held) by this process
            self._busy_with, self._lease_checked_until = "?", 0.0
            try:
                lease.release(self.store, LEASE, self.holder)
            except StoreUnavailable as exc:  # it runs out by itself (lease_ttl)
                log.warning("pipeline_lease_not_released", error=str(exc))

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
                # a duplicate stores nothing but its journal status: the ticket row alone will do,
                # not the trail, links and attachments a full load would read
                same = overlay.by_ref(match.ticket_ref)
                if same:
                    return Plan(journal_id, raw, "duplicate", ticket=same, reason=match.reason)
            ticket = overlay.ticket(match.ticket_ref) if match else None
            cfg = self.settings
            await self._stage("classify", "classify_ticket", draft=draft, ticket=ticket, settings=cfg)
            await self._stage("enrich", "enrich_ticket", draft=draft, ticket=ticket, settings=cfg)
            return await self._plan(journal_id, raw, draft, ticket)
        except StageFailed as exc:
            return Plan(journal_id, raw, "quarantined", reason=f"{exc.stage}: {exc.exc}", failure=exc)

    async def _stage(self, stage: str, hook: str, firstresult: bool = False, **kwargs: Any) -> Any:
        try:
            return await self.pm.call_each(hook, firstresult=firstresult, **kwargs)
        except HookFailed as exc:
            raise StageFailed(stage, exc.plugin, exc.exc) from exc

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
        self, journal_id: int, raw: RawMessage, draft: TicketDraft, ticket: Ticket | None
    ) -> Plan:
        if (
            ticket is not None
            and ticket.state in CLOSED
            and self.settings.pipeline.on_closed_reply == "new_linked"
        ):
            draft.links.append(ExternalLink(system="svcbridge", kind="follows", value=ticket.ref))
            ticket = None
        data = _msg_data(raw, draft)
        if ticket is None:
            ticket = self._new_ticket(self._ids.pop(0), draft)
            event = TicketEvent(type="received", at=raw.received_at, actor=_actor(draft), data=data)
            plan = Plan(journal_id, raw, "created", ticket=ticket, draft=draft, event=event)
        else:
            reopen = ticket.state in CLOSED
            if reopen:
                ticket.state = TicketState.IN_PROGRESS
            event = TicketEvent(type="message_received", actor=_actor(draft), data=data)
            plan = Plan(journal_id, raw, "followup", ticket=ticket, draft=draft, event=event, reopen=reopen)
        plan.notes = await self.compose(ticket, event, draft)
        return plan

    async def compose(
        self, ticket: Ticket, event: TicketEvent, draft: TicketDraft | None
    ) -> list[Notification]:
        """Gather ``compose_notifications`` from every plugin (raises StageFailed naming the plugin)."""
        found = await self._stage(
            "notify", "compose_notifications", ticket=ticket, event=event, draft=draft, settings=self.settings
        )
        return [n for batch in found for n in (batch if isinstance(batch, list) else [batch])]

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
        )

    # ------------------------------------------------------------------ the store stage
    def _commit_all(self, plans: list[Plan]) -> None:
        try:
            self._write_plans(plans)
            return
        except StoreUnavailable:
            raise  # nothing written; the entries stay pending for the next round
        except Exception as exc:  # one bad row (e.g. a unique key raced by another replica)
            if len(plans) == 1:
                self._quarantine_store_failure(plans[0], exc)
                return
            log.warning("batch_commit_failed_retrying_one_by_one", error=f"{type(exc).__name__}: {exc}")
        for p in plans:
            try:
                self._write_plans([p])
            except StoreUnavailable:
                raise
            except Exception as exc:
                self._quarantine_store_failure(p, exc)

    def _write_plans(self, plans: list[Plan]) -> None:
        """All plans in one transaction: rows collected per table, one statement per table (batch.py)."""
        with self.store.tx() as conn:
            self._fence(conn, [p.journal_id for p in plans])
            w = BatchWriter()
            for p in plans:
                self._write(conn, w, p)
            w.flush(conn)
        # committed: log and count inline deliveries as the delivery loop does its own
        dlog = log.bind()
        for r in w.inline_done:
            metrics.DELIVERIES.labels(target=r["target"], result="ok").inc()
            ref = self.store.ref_for(r["ticket_id"])
            dlog.info("delivered", target=r["target"], ticket=ref, kind=r["kind"], inline=True)

    def _quarantine_store_failure(self, plan: Plan, exc: BaseException) -> None:
        plan.status, plan.reason = "quarantined", f"store: {exc}"
        plan.failure = StageFailed("store", None, exc)
        with self.store.tx() as conn:  # fenced like a batch: a stale holder must not quarantine either
            self._fence(conn, [plan.journal_id])
            self.store.quarantine_row(conn, plan.journal_id, "store", None, exc)

    def _fence(self, conn: Any, journal_ids: list[int]) -> None:
        """In the commit's transaction: this process holds the lease, and every entry it is about to
        record is still pending. A process that lost the lease while it worked (paused past
        lease_ttl) must not commit what it decided on a stale view of the store; and the lease alone
        does not show that: if the one that took over has done the work and given the lease back,
        the stale process takes it again with its next renewal."""
        if not lease.renew(conn, LEASE, self.holder, self.settings.pipeline.lease_ttl):
            raise PipelineBusy("the pipeline lease was taken over; the batch stays pending")
        if self._held_since >= self._batch_began:
            # the lease ran out during the batch and was taken again: another process may have
            # stored tickets this batch's threading and duplicate checks did not see
            raise PipelineBusy("the pipeline lease was lost and taken again during the batch; read again")
        if self.store.count_pending(conn, journal_ids) != len(set(journal_ids)):
            raise PipelineBusy("entries of this batch were processed elsewhere meanwhile; read again")

    def _write(self, conn: Any, w: BatchWriter, p: Plan) -> None:
        if p.status == "quarantined":
            assert p.failure is not None
            w.quarantine(p.journal_id, p.failure.stage, p.failure.plugin, p.failure.exc)
            return
        assert p.ticket is not None
        if p.status == "duplicate":
            w.mark_journal(p.journal_id, "duplicate", p.ticket.id)
            return
        assert p.draft is not None and p.event is not None
        ticket, draft = p.ticket, p.draft
        if p.status == "created":
            w.insert_ticket(ticket, p.raw.source)
            for sink in self.route(ticket, p.raw.source):
                done = self._inline(sink, "create", ticket, {})
                w.enqueue(ticket.id, "create", sink, f"{ticket.ref}:create:{sink}", {}, done)
        else:
            if p.reopen:
                w.add_event(ticket.id, TicketEvent(type="reopened", data={"by": "customer"}), p.journal_id)
            w.touch_ticket(ticket.id, ticket.state.value if p.reopen else None)
            payload = {
                "type": "customer_message",
                "journal_id": p.journal_id,
                "reopen": p.reopen,
                "subject": draft.subject,
                "body": draft.body_text,
                "author": _actor(draft),
            }
            for sink in w.sinks_of(conn, ticket.id):
                done = self._inline(sink, "update", ticket, payload)
                w.enqueue(ticket.id, "update", sink, f"{ticket.ref}:j{p.journal_id}:{sink}", payload, done)
        w.add_event(ticket.id, p.event, p.journal_id)
        for link in draft.links:
            w.add_link(ticket.id, link)
        for att in draft.attachments:
            w.add_attachment(ticket.id, att, p.journal_id)
        for target, key, payload in notification_rows(ticket, p.notes, f"j{p.journal_id}"):
            w.enqueue(ticket.id, "notify", target, key, payload)
        w.mark_journal(p.journal_id, "processed", ticket.id)

    def _inline(self, sink: str, kind: str, ticket: Ticket, payload: dict[str, Any]) -> DeliveryResult | None:
        """An inline sink's answer (``contracts.InlineSink``), recorded in this transaction; else None."""
        impl = self.inline_sinks.get(sink)
        return impl.store_inline(kind, ticket, payload) if impl is not None else None

    def route(self, ticket: Ticket, source: str) -> list[str]:
        """Sinks for a new ticket: the first matching ``[[routing.rules]]`` entry, else the default."""
        for rule in self.settings.routing.rules:
            if rule.channel and rule.channel != ticket.channel:
                continue
            if rule.source and rule.source != source:
                continue
            if rule.customer and rule.customer != ticket.customer:
                continue
            if rule.max_priority and int(ticket.priority) > rule.max_priority:
                continue
            return list(rule.sinks)
        return list(self.settings.routing.default)

    # ------------------------------------------------------------------ status updates
    async def apply_status_update(self, update: StatusUpdate) -> bool:
        """Apply a helpdesk/vendor change (see ``status.py``); False if already seen or unknown."""
        return await apply_status_update(self, update)


def _actor(draft: TicketDraft) -> str:
    return draft.contact.email or draft.contact.phone or draft.contact.name or "customer"


def _msg_data(raw: RawMessage, draft: TicketDraft) -> dict[str, Any]:
    return {
        "source": raw.source,
        "external_id": raw.external_id,
        "subject": draft.subject,
        "body": draft.body_text[:20000],
        "automated": draft.automated,
        "attachments": [a.safe_name for a in draft.attachments],
        "stored_at": utcnow().isoformat(),
    }
