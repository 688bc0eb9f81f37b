"""Ticket changes as data (changes.py) and as they reach a helpdesk that has no internal notes."""

from __future__ import annotations

from typing import Any

from svcbridge import (
    Asset,
    DeliveryItem,
    FaultLevel,
    HelpdeskSink,
    Priority,
    StateMap,
    TicketChange,
    TicketDraft,
)
from svcbridge.changes import apply, draft_change, kept, snapshot
from svcbridge.connector import change_summary
from svcbridge.models import Ticket


def ticket(**kw: Any) -> Ticket:
    return Ticket(id=1, ref="SB-000001", channel="email", **kw)


def test_apply_reports_only_what_changed_and_merges_labels_and_asset() -> None:
    t = ticket(labels={"a": 1, "b": 2}, asset=Asset(serial="SN1", model="X1"), priority=Priority.P3)
    diff = apply(t, TicketChange(labels={"a": 1, "b": None, "c": 3}, asset=Asset(vendor="Dell"),
                                 priority=Priority.P1, fault_level=FaultLevel.CRITICAL))
    assert t.labels == {"a": 1, "c": 3} and (t.asset.serial, t.asset.vendor) == ("SN1", "Dell")
    assert diff["labels"] == {"b": {"from": 2, "to": None}, "c": {"from": None, "to": 3}}
    assert diff["priority"] == {"from": 3, "to": 1} and diff["fault_level"] == {"from": None, "to": "critical"}
    assert apply(t, TicketChange(labels={"a": 1}, priority=Priority.P1)) == {}  # the same again: nothing


def test_a_draft_change_is_what_one_plugin_did_including_nested_labels() -> None:
    d = TicketDraft(channel="email", labels={"w": {"status": "unknown"}, "_scratch": 1})
    before = snapshot(d)
    assert "_scratch" not in before["labels"] and kept(d.labels) == {"w": {"status": "unknown"}}
    d.labels["w"]["status"] = "in"  # changed in place
    d.priority = Priority.P2
    change = draft_change(before, d)
    assert change is not None and change.labels == {"w": {"status": "in"}} and change.priority == Priority.P2
    assert draft_change(snapshot(d), d) is None


class NoNotes(HelpdeskSink):
    """A helpdesk whose API has public follow-ups only."""

    posted: list[str]

    def __init__(self) -> None:
        super().__init__("plain", StateMap())
        self.posted = []

    async def find(self, t: Ticket) -> str | None:
        return "7"

    async def find_message(self, remote_id: str, marker: str) -> str | None:
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        self.posted.append(str(item.payload))
        return "m1"


async def test_a_helpdesk_without_internal_notes_never_gets_the_change_as_a_public_post() -> None:
    sink = NoNotes()
    payload = {"type": "ticket_updated", "changes": {"labels": {"warranty": {"from": None, "to": "out"}}},
               "note": "Out of warranty: charge the customer.", "plugin": "warranty", "origin": "job:1:1"}
    item = DeliveryItem(id=1, kind="update", target="plain", idempotency_key="k", ticket=ticket(), payload=payload)
    res = await sink.deliver(item)
    assert sink.posted == [] and "kept in svcbridge" in res.detail
    text = change_summary(payload)
    assert "warranty: (none) → out" in text and "Out of warranty" in text and "by warranty" in text
