"""Ticket changes: what a hook, a job or a timer sets on a stored ticket, and how it travels.

One path for every origin. A change is applied to the ``Ticket`` (``apply`` returns what really
changed: ``{"priority": {"from": 3, "to": 1}, "labels": {"warranty": {"from": None, "to": "in"}}}``),
then ``change_rows`` makes what the store writes in the same transaction as the work that produced
it: a ``ticket_updated`` event naming the plugin and the origin, and for every helpdesk the ticket
was sent to an outbox ``update`` row of type ``ticket_updated`` (a note, a field, a priority). The
row's idempotency key names the origin, so a re-run cannot send a change twice.

During a pipeline batch the classify and enrich hooks change the draft, not the ticket: ``snapshot``
before each plugin's call and ``draft_change`` after it tell exactly what that plugin set, so a
follow-up records only what a hook changed (not the parser's defaults) and who changed it.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import Connection

from .models import Asset, Ticket, TicketDraft, TicketEvent
from .store import outbox as ob
from .store.repo import Store
from .work import TicketChange

# the fields a hook may set on a ticket and that are kept on it (and sent to its helpdesks)
FIELDS = ("labels", "asset", "customer", "category", "priority", "fault_level", "sla_policy", "deadlines")
UPDATE_TYPE = "ticket_updated"  # the outbox payload type sinks see


def kept(labels: dict[str, Any]) -> dict[str, Any]:
    """The labels kept on a ticket: a name starting with ``_`` is the message's own scratch data."""
    return {k: v for k, v in labels.items() if not k.startswith("_")}


def snapshot(obj: TicketDraft | Ticket) -> dict[str, Any]:
    """The tracked fields of a draft or ticket, as plain JSON-able values."""
    return {
        "labels": copy.deepcopy(kept(obj.labels)),  # a plugin may change a nested label in place
        "asset": obj.asset.model_dump(mode="json", exclude_none=True),
        "customer": obj.customer,
        "category": obj.category,
        "priority": int(obj.priority),
        "fault_level": obj.fault_level.value if obj.fault_level else None,
        "sla_policy": obj.sla_policy,
        "deadlines": _deadlines(obj.deadlines),
    }


def _deadlines(found: dict[str, Any]) -> dict[str, str]:
    return {k: v.isoformat() for k, v in sorted(found.items())}


def draft_change(before: dict[str, Any], draft: TicketDraft) -> TicketChange | None:
    """What one plugin's call set on the draft (``before`` is the ``snapshot`` taken before it)."""
    after = snapshot(draft)
    found: dict[str, Any] = {}
    labels = {k: v for k, v in after["labels"].items() if before["labels"].get(k, _NONE) != v}
    labels.update({k: None for k in before["labels"] if k not in after["labels"]})
    if labels:
        found["labels"] = labels
    if after["asset"] != before["asset"]:
        found["asset"] = Asset(**{k: v for k, v in after["asset"].items() if before["asset"].get(k) != v})
    for name in ("customer", "category", "priority", "fault_level", "sla_policy"):
        if after[name] != before[name] and after[name] is not None:
            found[name] = getattr(draft, name)
    if after["deadlines"] != before["deadlines"]:
        found["deadlines"] = dict(draft.deadlines)
    return TicketChange(**found) if found else None


_NONE = object()


def apply(ticket: Ticket, change: TicketChange) -> dict[str, Any]:
    """Apply ``change`` to ``ticket`` in place; what changed, as ``{field: {"from": .., "to": ..}}``."""
    old = snapshot(ticket)
    diff: dict[str, Any] = {}
    if change.labels:
        labels = dict(ticket.labels)
        for k, v in change.labels.items():
            if v is None:
                labels.pop(k, None)
            else:
                labels[k] = v
        moved = {
            k: {"from": old["labels"].get(k), "to": labels.get(k)}
            for k in change.labels
            if old["labels"].get(k) != labels.get(k)
        }
        if moved:
            ticket.labels = labels
            diff["labels"] = moved
    if change.asset is not None:
        given = change.asset.model_dump(exclude_none=True)
        merged = ticket.asset.model_copy(update=given)
        new = merged.model_dump(mode="json", exclude_none=True)
        if new != old["asset"]:
            ticket.asset = Asset(**merged.model_dump())
            diff["asset"] = {"from": old["asset"], "to": new}
    for name in ("customer", "category", "priority", "fault_level", "sla_policy"):
        value = getattr(change, name)
        if value is None:
            continue
        setattr(ticket, name, value)
        now = snapshot(ticket)[name]
        if now != old[name]:
            diff[name] = {"from": old[name], "to": now}
    if change.deadlines is not None and _deadlines(change.deadlines) != old["deadlines"]:
        ticket.deadlines = dict(change.deadlines)
        diff["deadlines"] = {"from": old["deadlines"], "to": _deadlines(change.deadlines)}
    return diff


def column_values(ticket: Ticket) -> dict[str, Any]:
    """The ticket row's columns for the tracked fields (what ``Store.update_ticket`` takes)."""
    return {
        "labels": dict(ticket.labels),
        "asset": ticket.asset.model_dump(mode="json", exclude_none=True),
        "customer": ticket.customer,
        "category": ticket.category,
        "priority": int(ticket.priority),
        "fault_level": ticket.fault_level.value if ticket.fault_level else None,
        "sla_policy": ticket.sla_policy,
        "deadlines": _deadlines(ticket.deadlines),
    }


def change_rows(
    ticket: Ticket,
    diff: dict[str, Any],
    note: str | None,
    *,
    plugin: str | None,
    origin: str,
    sinks: list[str],
) -> tuple[TicketEvent, list[tuple[str, str, dict[str, Any]]]]:
    """The ``ticket_updated`` event and the outbox rows ``(sink, idempotency key, payload)``.

    ``origin`` says what produced the change (``job:12``, ``timer:7:2``, ``j345``) and makes the keys.
    """
    data: dict[str, Any] = {"changes": diff, "origin": origin}
    if plugin:
        data["plugin"] = plugin
    if note:
        data["note"] = note
    event = TicketEvent(type=UPDATE_TYPE, actor=plugin or "svcbridge", data=data)
    payload = {"type": UPDATE_TYPE, **data, "fields": column_values(ticket)}
    rows = [(sink, f"{ticket.ref}:chg:{origin}:{plugin or ''}:{sink}", payload) for sink in sinks]
    return event, rows


def record(
    conn: Connection,
    store: Store,
    ticket: Ticket,
    change: TicketChange,
    *,
    plugin: str | None,
    origin: str,
) -> dict[str, Any]:
    """Apply ``change`` to ``ticket`` and write it (row, event, outbox) in ``conn``'s transaction.

    Returns the diff; nothing is written when nothing changed and there is no note. The change's own
    ``events`` and ``notifications`` (outbox rows) are written in any case.
    """
    diff = apply(ticket, change)
    for ev in change.events:
        store.add_event(conn, ticket.id, ev)
    if change.notifications:  # keyed by origin: a re-run of the same firing sends nothing twice
        ob.enqueue_notifications(conn, ticket, change.notifications, f"chg:{origin}:{plugin or ''}")
    if not diff and not change.note:
        return diff
    if diff:
        store.update_ticket(conn, ticket.id, **column_values(ticket))
    event, rows = change_rows(
        ticket, diff, change.note, plugin=plugin, origin=origin, sinks=store.sinks_of(conn, ticket.id)
    )
    store.add_event(conn, ticket.id, event)
    for sink, key, payload in rows:
        ob.enqueue(conn, ticket.id, "update", sink, key, payload)
    return diff
