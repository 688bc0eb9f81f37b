"""The SLA deadlines reach Request Tracker 5 (real, tests/rt_server.py) as the ticket's ``Due``.

At creation ``Due`` is the earliest open deadline; when the engine recomputes (the acknowledgement
was met) the ticket change moves ``Due`` to the next one; with nothing left open it is cleared.
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


@pytest.fixture(scope="module")
def rt() -> Iterator[RtServer]:
    with running_rt() as server:
        server.reset()
        yield server


def due_of(rt: RtServer, ticket_id: str) -> str:
    with rt.agent() as c:
        r = c.get(f"ticket/{ticket_id}")
        r.raise_for_status()
        return str(r.json()["Due"])


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
