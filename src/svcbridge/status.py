"""Status changes reported by helpdesks and vendors: state machine, event trail, customer notices.

A change arrives from a sink's ``poll_changes`` or a webhook route (``IntakeContext.apply_status_update``).
It is applied at most once per ``(system, external_event_id)`` (webhook redeliveries are normal), the
ticket's state moves only along the state machine, and ``compose_notifications`` decides what the
customer is told; its outbox rows are written in the same transaction as the change.

``StatusApplier`` is given the store, the plugins and the composer; it knows nothing of the pipeline.
"""

from __future__ import annotations

import asyncio

import structlog

from .compose import Composer
from .models import (
    EventType,
    Notification,
    StatusUpdate,
    Ticket,
    TicketEvent,
    TicketState,
    can_transition,
)
from .plugins import HookFailed, PluginManager
from .store import outbox as ob
from .store.jobs import write_work
from .store.repo import Store
from .work import WorkQueue

log = structlog.get_logger("svcbridge.status")


class StatusApplier:
    def __init__(self, store: Store, pm: PluginManager, composer: Composer) -> None:
        self.store, self.pm, self.composer = store, pm, composer

    async def apply(self, update: StatusUpdate) -> bool:
        """Apply a helpdesk/vendor change; notify the customer via the outbox. False if seen or unknown."""
        store = self.store
        if update.ticket_ref:
            ticket = await asyncio.to_thread(store.get_ticket, update.ticket_ref)
        else:
            found = await asyncio.to_thread(
                store.by_link, update.system, "ticket", str(update.external_ticket_id)
            )
            ticket = await asyncio.to_thread(store.get_ticket, found.id) if found else None
        if ticket is None:
            log.warning(
                "status_update_unknown_ticket",
                ticket=update.ticket_ref or None,
                external_id=update.external_ticket_id,
                system=update.system,
            )
            return False
        old = ticket.state
        events = _events(ticket, update)
        notes: list[Notification] = []
        for ev in events:
            try:
                notes += await self.composer.compose(ticket, ev, None)
            except Exception as exc:  # a broken composer must not lose the change itself
                log.error("compose_failed", error=str(exc), ticket=ticket.ref)
        key = update.external_event_id or f"{update.system}:{update.at.isoformat()}:{update.state}"
        applied = await asyncio.to_thread(self._commit, ticket, old, update, events, notes, key)
        if applied:
            work = WorkQueue(ticket.ref, ticket.id)
            try:
                await self.pm.call_each("status_updated", ticket=ticket, update=update, jobs=work)
            except HookFailed as exc:
                log.error("status_updated_hook_failed", plugin=exc.plugin, error=str(exc.exc))
            if work:  # timers moved or cancelled on the change (an SLA clock paused), jobs asked for
                await asyncio.to_thread(self._write_work, work)
        return applied

    def _write_work(self, work: WorkQueue) -> None:
        with self.store.tx() as conn:
            write_work(conn, self.store, work)

    def _commit(
        self,
        ticket: Ticket,
        old: TicketState,
        update: StatusUpdate,
        events: list[TicketEvent],
        notes: list[Notification],
        key: str,
    ) -> bool:
        s = self.store
        with s.tx() as conn:
            if s.seen_update(conn, update.system, key):
                return False
            if ticket.state != old:
                s.update_ticket(conn, ticket.id, state=ticket.state.value)
            for ev in events:
                s.add_event(conn, ticket.id, ev)
            ob.enqueue_notifications(conn, ticket, notes, f"u:{update.system}:{key}")
        return True


def _events(ticket: Ticket, update: StatusUpdate) -> list[TicketEvent]:
    """The trail entries for an update; moves ``ticket.state`` when the state machine allows it."""
    events: list[TicketEvent] = []
    old = ticket.state
    if update.state and update.state != old:
        if not can_transition(old, update.state):
            log.warning("status_transition_refused", ticket=ticket.ref, frm=old.value, to=update.state.value)
        else:
            ticket.state = update.state
            data = {"from": old.value, "to": update.state.value, "system": update.system}
            events.append(
                TicketEvent(type=EventType.STATUS_CHANGED, at=update.at, actor=update.actor, data=data)
            )
    for kind, body in (
        (EventType.AGENT_REPLY, update.public_reply),
        (EventType.INTERNAL_NOTE, update.internal_note),
    ):
        if body:
            data = {"body": body, "system": update.system}
            events.append(TicketEvent(type=kind, at=update.at, actor=update.actor, data=data))
    return events
