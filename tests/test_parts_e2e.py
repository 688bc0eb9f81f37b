"""Spare parts end to end with real components: the svcbridge daemon, the real Tryton, the real RT.

- kill -9 of the daemon right after the reservation job's handler returned (Tryton has the reservation,
  svcbridge never recorded it): after the restart the job runs again and Tryton holds exactly ONE
  reservation, the ticket one ``parts`` change;
- a mail naming a unit (serial in the asset register, issue 14) with a failed power supply becomes a
  ticket in RT whose note shows stock per depot and the reservation; RT's agent cancels the ticket
  (status rejected -> closed) and the reservation is released in Tryton.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import eml, free_port
from test_daemon import _healthy, cli, start, stop, wait_for, write_config
from tryton_server import TrytonServer, running_tryton

pytestmark = pytest.mark.realserver

UNIT_PLUGIN = '''
"""Stands for the asset register in the daemon test: the unit's model (no warranty jobs involved);
the sender is a customer of the directory, so the lookup may reserve."""
from svcbridge import hookimpl


@hookimpl
def classify_ticket(draft):
    draft.asset.model = "PowerEdge R740"
    draft.labels["region"] = "north"
'''


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonServer]:
    with running_tryton() as server:
        yield server


def parts_config(tryton: TrytonServer) -> str:
    secret = tryton.plugin_config()["password_file"]
    return textwrap.dedent(f"""
        [plugins.parts]
        erp = "tryton"
        [plugins.parts.regions]
        north = ["BJ", "SH"]
        east = ["SH", "BJ"]
        [[plugins.parts.erps]]
        name = "tryton"
        type = "tryton"
        url = "{tryton.url}"
        database = "erp"
        user = "admin"
        password_file = "{secret}"
        [[plugins.customers.directory]]
        name = "ACME"
        domains = ["example.com"]
        """)


def test_kill_9_between_the_reservation_and_its_record_makes_one_reservation(
    tmp_path: Path, tryton: TrytonServer
) -> None:
    tryton.reset()
    port = free_port()
    cfg = write_config(tmp_path, port)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "unit.py").write_text(UNIT_PLUGIN)
    text = (
        f'plugins_dir = "{plugins}"\noutbound_allow = ["127.0.0.1"]\n'
        + cfg.read_text()
        + parts_config(tryton)
    )
    cfg.write_text(text, encoding="utf-8")
    proc = start(cfg, faults="job_after_run")
    wait_for(lambda: _healthy(port))
    (tmp_path / "maildir" / "new" / "1.eml").write_bytes(
        eml(subject="服务器电源故障 power supply failed", body="R740 电源坏了")
    )
    assert proc.wait(timeout=60) == -9  # died right after Tryton made the reservation
    assert [(r["reference"], r["state"]) for r in tryton.reservations()] == [
        ("svcbridge:SB-000001:PSU-750W", "assigned")
    ]

    proc = start(cfg)
    try:
        wait_for(lambda: _healthy(port))

        def settled() -> dict | None:
            t = json.loads(cli(cfg, "tickets", "show", "SB-000001", "--json"))
            return t if "parts" in (t.get("labels") or {}) else None

        ticket = wait_for(settled, timeout=60)
    finally:
        assert stop(proc) == 0
    assert [(r["reference"], r["state"]) for r in tryton.reservations()] == [
        ("svcbridge:SB-000001:PSU-750W", "assigned")
    ]
    (item,) = ticket["labels"]["parts"]["items"]
    assert item["reservation"]["depot"] == "BJ" and [d["depot"] for d in item["depots"]][:2] == ["BJ", "SH"]
    updates = [
        e
        for e in ticket["events"]
        if e["type"] == "ticket_updated" and "parts" in e["data"]["changes"].get("labels", {})
    ]
    assert len(updates) == 1
    jobs = json.loads(cli(cfg, "jobs", "list", "--json"))
    assert [(j["kind"], j["status"]) for j in jobs] == [("parts.lookup", "done")]
    tryton.reset()


@pytest.fixture(scope="module")
def rt() -> Iterator[Any]:
    from rt_server import running_rt

    with running_rt() as server:
        yield server


async def test_a_unit_with_a_failed_power_supply_reserves_in_tryton_notes_rt_and_cancel_releases(
    make_app, tmp_path: Path, tryton: TrytonServer, rt: Any
) -> None:
    from helpdesk_helpers import drop, poll
    from svcbridge import AssetPart, AssetRecord, TicketState
    from svcbridge.store.assets import AssetStore
    from test_warranty_e2e import rt_texts

    tryton.reset()
    rt.reset()
    parts = {
        "erp": "tryton",
        "regions": {"east": ["SH", "BJ"], "north": ["BJ", "SH"]},
        "erps": [tryton.plugin_config(name="tryton", lead_time_days=3)],
    }
    app = make_app(
        routing={"default": ["rt"]},
        outbound_allow=["127.0.0.1"],
        plugins={"rt": rt.plugin_config(), "assets": {}, "parts": parts},
    )
    AssetStore(app.store).upsert(
        AssetRecord(
            serial="7XK2M9P",
            vendor="Dell",
            model="PowerEdge R740",
            customer="华东电力",
            region="east",
            parts=[AssetPart(category="main"), AssetPart(category="psu", part_number="PSU-750W")],
        )
    )
    drop(
        tmp_path,
        "1",
        eml(
            subject="服务器电源故障",
            body="机身编号：7XK2M9P，电源模块坏了，橙色指示灯。",
            sender="值班 <duty@hd.example>",
        ),
    )
    await app.run_once()
    await app.run_once()  # the jobs (parts, warranty) and their notes to RT
    ticket = app.store.get_ticket("SB-000001")
    assert ticket.asset.serial == "7XK2M9P"
    (item,) = ticket.labels["parts"]["items"]
    assert item["part"] == "PSU-750W" and [d["depot"] for d in item["depots"]] == [
        "SH",
        "BJ",
        "GZ",
    ]  # region east
    assert (item["reservation"]["depot"], item["reservation"]["state"]) == ("SH", "reserved")
    assert [(r["reference"], r["state"]) for r in tryton.reservations()] == [
        ("svcbridge:SB-000001:PSU-750W", "assigned")
    ]
    (t,) = rt.tickets("Subject LIKE '[SB-000001]'")
    notes = [text for kind, text in rt_texts(rt, t["id"]) if "Spare parts (ERP tryton, region east)" in text]
    assert (
        len(notes) == 1
        and "SH: 3 available (4 on hand, 1 reserved)" in notes[0]
        and "reserved 1 at SH" in notes[0]
    )

    await poll(app, "rt")  # the first poll sets the cursor (RT's history before it is not news)
    rt.set_status(t["id"], "rejected")  # the agent cancels the ticket in RT
    got = await poll(app, "rt")
    assert [u.state for u in got if u.state] == [TicketState.CLOSED]
    await app.run_once()  # the release job, and its note
    assert app.store.get_ticket("SB-000001").state.value == "closed"
    assert [r["state"] for r in tryton.reservations()] == ["cancelled"]
    released = [
        text for kind, text in rt_texts(rt, t["id"]) if "Spare parts released (ticket closed)" in text
    ]
    assert len(released) == 1 and "PSU-750W x1 @ SH: released" in released[0]
    tryton.reset()
