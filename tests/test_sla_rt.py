"""The SLA deadlines reach Request Tracker 5 (real, tests/rt_server.py) as the ticket's ``Due``, and
an escalation as RT's ``Priority``.

At creation ``Due`` is the earliest open deadline; when the engine recomputes (the acknowledgement
was met) the ticket change moves ``Due`` to the next one; with nothing left open it is cleared. A
breach raises the priority one step in svcbridge and in RT (P3 50 -> P2 70, ``[plugins.rt] priorities``);
met late, the escalation is taken back in RT too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import svcbridge.cli_sla
import svcbridge.store.batch
import svcbridge.store.jobs
import svcbridge_sla
from rt_server import RtServer, running_rt
from sla_helpers import Clock, raw_mail, settings, sh
from svcbridge import Priority, StatusUpdate


@pytest.fixture(scope="module")
def rt_module() -> Iterator[RtServer]:
    with running_rt() as server:
        yield server


@pytest.fixture
def rt(rt_module: RtServer) -> RtServer:
    """RT back at its pristine DB for each test: no tickets, ids from 1 (every app starts at SB-000001)."""
    rt_module.reset()
    return rt_module


def rt_ticket(rt: RtServer, ticket_id: str) -> dict[str, Any]:
    with rt.agent() as c:
        r = c.get(f"ticket/{ticket_id}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


def due_of(rt: RtServer, ticket_id: str) -> str:
    return str(rt_ticket(rt, ticket_id)["Due"])


def comments_of(rt: RtServer, ticket_id: str) -> list[str]:
    """The subjects of the ticket's Comment transactions (svcbridge's notes for the agents)."""
    query = f"ObjectType = 'RT::Ticket' AND ObjectId = {int(ticket_id)} AND Type = 'Comment'"
    with rt.agent() as c:
        r = c.get("transactions", params={"query": query, "fields": "Data", "per_page": 100})
        r.raise_for_status()
        return [str(x.get("Data") or "") for x in r.json()["items"]]


@pytest.mark.realserver
async def test_rt_due_follows_the_earliest_open_deadline(make_app: Any, rt: RtServer, monkeypatch) -> None:
    clock = Clock(sh(2026, 3, 6, 17, 55, 30))
    for module in (svcbridge.store.batch, svcbridge.store.jobs, svcbridge.cli_sla, svcbridge_sla):
        monkeypatch.setattr(module, "utcnow", clock)
    conf = settings()
    app = make_app(
        routing={"default": ["rt"]},
        outbound_allow=["127.0.0.1/32"],
        plugins={**conf["plugins"], "rt": rt.plugin_config()},
    )
    app.work.clock = clock
    await app.context("maildir").submit(
        raw_mail(sh(2026, 3, 6, 17, 55), "全部中断 紧急", "整个科室无法使用", "Li <li@county.example>")
    )
    await app.run_once()
    (t,) = app.store.list_tickets()
    rid = app.store.get_ticket(t.ref).link("rt", "ticket")
    assert rid is not None
    assert due_of(rt, rid) == "2026-03-06T10:05:00Z"  # the acknowledgement, 18:05 in Shanghai

    clock.now = sh(2026, 3, 6, 18, 4)  # the acknowledgement was met: the next deadline is due
    await app.run_once()
    assert due_of(rt, rid) == "2026-03-08T09:55:00Z"  # resolution within 48 h, Sunday 17:55


@pytest.mark.realserver
async def test_an_escalation_raises_rt_priority_and_a_late_answer_lowers_it(
    make_app: Any, rt: RtServer, monkeypatch
) -> None:
    clock = Clock(sh(2026, 3, 6, 17, 55, 30))
    for module in (svcbridge.store.batch, svcbridge.store.jobs, svcbridge.cli_sla, svcbridge_sla):
        monkeypatch.setattr(module, "utcnow", clock)
    conf = settings()
    app = make_app(
        routing={"default": ["rt"]},
        outbound_allow=["127.0.0.1/32"],
        plugins={**conf["plugins"], "rt": rt.plugin_config()},
    )
    app.work.clock = clock
    await app.context("maildir").submit(
        raw_mail(sh(2026, 3, 6, 17, 55), "Printer jams", "slowly", "a@county.example", n=2)
    )
    await app.run_once()
    (t,) = [x for x in app.store.list_tickets() if x.subject == "Printer jams"]
    assert (t.priority, t.sla_policy) == (Priority.P3, "standard")
    rid = app.store.get_ticket(t.ref).link("rt", "ticket")
    assert rid is not None and int(rt_ticket(rt, rid)["Priority"]) == 50  # P3 at creation
    notes = len(comments_of(rt, rid))

    clock.now = sh(2026, 3, 9, 18, 0)  # the first response (one working day) breached at 17:55
    await app.run_once()
    assert app.store.get_ticket(t.ref).priority == Priority.P2
    assert int(rt_ticket(rt, rid)["Priority"]) == 70  # RT's own field, not only a note
    assert len(comments_of(rt, rid)) > notes  # the agents still get the note saying why
    await app.run_once()  # nothing due: RT is not written again
    assert int(rt_ticket(rt, rid)["Priority"]) == 70

    clock.now = sh(2026, 3, 9, 18, 30)  # the agent answers: met late, the escalation is taken back
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=t.ref, system="rt", public_reply="We are on it.", at=clock.now)
    )
    await app.run_once()
    assert app.store.get_ticket(t.ref).priority == Priority.P3
    assert int(rt_ticket(rt, rid)["Priority"]) == 50
