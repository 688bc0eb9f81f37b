"""The store stage: a batch's plans committed in ONE transaction, fenced by the pipeline lease.

``commit`` writes tickets or follow-ups, events, links, attachments, outbox rows for sinks (routed by
``Router`` for a new ticket, every sink holding it for a follow-up) and notifications, quarantine rows
and journal statuses, table by table (``batch.py``). Should that fail on one bad row (a unique key
raced by another replica), the plans are committed one by one and only the offender is quarantined
(stage ``store``). A sink that is an ``InlineSink`` (``local``) has its create and update rows
recorded as delivered in the same transaction. Every transaction begins with the fence: the lease
(``PipelineLease.fence``) and every entry still pending.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from sqlalchemy import Connection

from .. import changes, metrics
from ..contracts import InlineSink
from ..errors import PipelineBusy, StoreUnavailable
from ..models import DeliveryResult, EventType, OutboxKind, Ticket, TicketEvent
from ..plans import Plan, PlanStatus, StageFailed, actor
from ..routing import Router
from .batch import BatchWriter
from .blobs import Chunks, ensure
from .jobs import write_work
from .outbox import notification_rows
from .pipelease import PipelineLease
from .repo import Store

log = structlog.get_logger("svcbridge.pipeline")
ATTACHMENT_INLINE_MAX = 4096  # bytes: a smaller file stays in its attachments row


class PlanWriter:
    def __init__(
        self, store: Store, lease: PipelineLease, router: Router, sinks: Mapping[str, Any] | None = None
    ) -> None:
        self.store, self.lease, self.router = store, lease, router
        # sinks that record a delivery inside the store transaction (contracts.InlineSink)
        self.inline_sinks: dict[str, InlineSink] = {
            n: s for n, s in (sinks or {}).items() if callable(getattr(s, "store_inline", None))
        }

    def commit(self, plans: list[Plan]) -> None:
        """Store the batch: in one transaction, else one by one, quarantining what cannot be written.

        Raises ``StoreUnavailable`` (nothing written; the entries stay pending for the next round)
        and ``PipelineBusy`` (the fence refused: this process may not commit what it decided).
        """
        try:
            self.write(plans)
            return
        except StoreUnavailable:  # PipelineBusy too: refused, not failed
            raise
        except Exception as exc:  # one bad row (e.g. a unique key raced by another replica)
            if len(plans) == 1:
                self._quarantine(plans[0], exc)
                return
            log.warning("batch_commit_failed_retrying_one_by_one", error=f"{type(exc).__name__}: {exc}")
        for p in plans:
            try:
                self.write([p])
            except StoreUnavailable:
                raise
            except Exception as exc:
                self._quarantine(p, exc)

    def write(self, plans: list[Plan]) -> None:
        """All plans in one transaction: rows collected per table, one statement per table (batch.py)."""
        items = self._attachment_blobs(plans)  # on disk before the commit that names them
        with self.store.tx() as conn:
            self._fence(conn, [p.journal_id for p in plans])
            w = BatchWriter()
            for p in plans:
                self._write(conn, w, p)
            for row in w.attachments:  # the bytes are in the blob store: the row keeps metadata only
                if row["sha256"] in items:
                    row["data"] = None
            w.flush(conn)
            # jobs and timers the hooks asked for: after the flush, which inserts their tickets
            for p in plans:
                if p.work and p.status in (PlanStatus.CREATED, PlanStatus.FOLLOWUP):
                    write_work(conn, self.store, p.work)
        if items and self.store.blobs is not None:
            ensure(self.store.blobs, items, items)
        # committed: log and count inline deliveries as the delivery loop does its own
        dlog = log.bind()
        for r in w.inline_done:
            metrics.DELIVERIES.labels(target=r["target"], result="ok").inc()
            ref = self.store.ref_for(r["ticket_id"])
            dlog.info("delivered", target=r["target"], ticket=ref, kind=r["kind"], inline=True)

    def _attachment_blobs(self, plans: list[Plan]) -> dict[str, Chunks]:
        """The attachment bytes of this batch as blobs, put now. A file cut out of its raw mail at
        journal time (split.py) is the same blob (same sha256): only touched, not written again.
        Files of a few KB stay in the row: a file each would cost more than it saves."""
        blobs = self.store.blobs
        if blobs is None:
            return {}
        items: dict[str, Chunks] = {}
        for p in plans:
            if p.draft is not None and p.status in (PlanStatus.CREATED, PlanStatus.FOLLOWUP):
                for att in p.draft.attachments:
                    if att.data is not None and len(att.data) > ATTACHMENT_INLINE_MAX:
                        items[att.sha256] = att.data
        blobs.put_many(items)
        return items

    def _quarantine(self, plan: Plan, exc: BaseException) -> None:
        plan.quarantine(StageFailed("store", None, exc))
        with self.store.tx() as conn:  # fenced like a batch: a stale holder must not quarantine either
            self._fence(conn, [plan.journal_id])
            self.store.quarantine_row(conn, plan.journal_id, "store", None, exc)

    def _fence(self, conn: Connection, journal_ids: list[int]) -> None:
        """In the commit's transaction: the lease holds (``PipelineLease.fence``), and every entry about
        to be recorded is still pending. The lease alone does not show that: if the one that took over
        has done the work and given the lease back, a stale process takes it again with its next
        renewal."""
        self.lease.fence(conn)
        if self.store.count_pending(conn, journal_ids) != len(set(journal_ids)):
            raise PipelineBusy("entries of this batch were processed elsewhere meanwhile; read again")

    def _write(self, conn: Connection, w: BatchWriter, p: Plan) -> None:
        if p.status == PlanStatus.QUARANTINED:
            assert p.failure is not None
            w.quarantine(p.journal_id, p.failure.stage, p.failure.plugin, p.failure.exc)
            return
        assert p.ticket is not None
        if p.status == PlanStatus.DUPLICATE:
            # one cheap row, so the trail shows the message came again and through which source
            again = TicketEvent(
                type=EventType.RECEIVED_AGAIN,
                data={
                    "source": p.raw.source,
                    "reason": p.reason,
                    "text": f"received again via {p.raw.source}",
                },
            )
            w.add_event(p.ticket.id, again, p.journal_id)
            w.mark_journal(p.journal_id, "duplicate", p.ticket.id)
            return
        assert p.draft is not None and p.event is not None
        ticket, draft = p.ticket, p.draft
        if p.status == PlanStatus.CREATED:
            w.insert_ticket(ticket, p.raw.source)
            for sink in self.router.route(ticket, p.raw.source):
                done = self._inline(sink, OutboxKind.CREATE, ticket, {})
                w.enqueue(ticket.id, OutboxKind.CREATE, sink, f"{ticket.ref}:create:{sink}", {}, done)
        else:
            if p.reopen:
                reopened = TicketEvent(type=EventType.REOPENED, data={"by": "customer"})
                w.add_event(ticket.id, reopened, p.journal_id)
            w.touch_ticket(ticket.id, ticket.state.value if p.reopen else None)
            payload = {
                "type": "customer_message",
                "journal_id": p.journal_id,
                "reopen": p.reopen,
                "subject": draft.subject,
                "body": draft.body_text,
                "author": actor(draft),
            }
            for sink in w.sinks_of(conn, ticket.id):
                done = self._inline(sink, OutboxKind.UPDATE, ticket, payload)
                key = f"{ticket.ref}:j{p.journal_id}:{sink}"
                w.enqueue(ticket.id, OutboxKind.UPDATE, sink, key, payload, done)
        w.add_event(ticket.id, p.event, p.journal_id)
        if p.changes:  # what classify / enrich hooks changed on a follow-up's ticket (changes.py)
            w.set_ticket_fields(ticket.id, changes.column_values(ticket))
            sinks = w.sinks_of(conn, ticket.id)
            for i, (plugin, diff) in enumerate(p.changes):
                origin = f"j{p.journal_id}:{i}"  # one plugin may change the ticket in two stages
                event, rows = changes.change_rows(
                    ticket, diff, None, plugin=plugin, origin=origin, sinks=sinks
                )
                w.add_event(ticket.id, event, p.journal_id)
                for sink, key, payload in rows:
                    w.enqueue(ticket.id, OutboxKind.UPDATE, sink, key, payload)
        for link in draft.links:
            w.add_link(ticket.id, link)
        for att in draft.attachments:
            w.add_attachment(ticket.id, att, p.journal_id)
        for target, key, note in notification_rows(ticket, p.notes, f"j{p.journal_id}"):
            w.enqueue(ticket.id, OutboxKind.NOTIFY, target, key, note)
        w.mark_journal(p.journal_id, "processed", ticket.id)

    def _inline(
        self, sink: str, kind: OutboxKind, ticket: Ticket, payload: dict[str, Any]
    ) -> DeliveryResult | None:
        """An inline sink's answer (``contracts.InlineSink``), recorded in this transaction; else None."""
        impl = self.inline_sinks.get(sink)
        return impl.store_inline(kind, ticket, payload) if impl is not None else None
