"""Spare parts as a durable enrichment job, through the real pipeline, store and runner (issue 16 item 3).

Table-driven over two ERPs: the real Tryton (tests/tryton_server.py) and the small shop's CSV table. A
mail names a failed power supply of a unit whose model a stand-in classifier sets (the asset register
of issue 14 does it in production); the ticket is created at once, the job reads stock per depot,
orders depots by the customer's region, reserves one part and puts the ``parts`` label and a note on
the ticket (sent to the helpdesk once). Cancelling the ticket releases the reservation, resolving it
consumes it; an ERP outage leaves the ticket intact and the job retries; a re-run of the job after the
ERP committed (the kill -9 window) finds its reservation: exactly one.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import eml
from helpdesk_helpers import Recorder, drop, plugin, recorder_plugin
from svcbridge import StatusUpdate, TicketState
from svcbridge.plugins import make_plugin_manager
from tryton_server import TrytonServer, running_tryton

MAIL_EN = ("Server down: power supply failed", "The PSU of our R740 is dead, amber light.")
MAIL_CN = ("服务器电源故障", "R740 的电源坏了，指示灯为橙色。")
MAIL_TW = ("伺服器電源故障", "R740 的電源壞了。")
REGIONS = {"north": ["BJ", "SH"], "east": ["SH", "BJ"], "south": ["GZ", "SH"]}


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonServer]:
    with running_tryton() as server:
        yield server


def write_table(path: Path) -> None:
    rows = [
        (
            "PSU-750W",
            "Power supply 750 W 电源",
            "psu",
            "PowerEdge R740;PowerEdge R750",
            "SH",
            4,
            0,
            5,
            "east",
        ),
        (
            "PSU-750W",
            "Power supply 750 W 电源",
            "psu",
            "PowerEdge R740;PowerEdge R750",
            "BJ",
            2,
            0,
            5,
            "north",
        ),
        (
            "PSU-750W",
            "Power supply 750 W 电源",
            "psu",
            "PowerEdge R740;PowerEdge R750",
            "GZ",
            0,
            0,
            5,
            "south",
        ),
        ("FAN-R740", "System fan", "fan", "PowerEdge R740", "SH", 10, 0, "", "east"),
    ]
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["part", "name", "category", "models", "depot", "on_hand", "reserved", "lead_time_days", "region"]
        )
        w.writerows(rows)


class Erp:
    """One ERP under test: its [[plugins.parts.erps]] table and how to count reservations in it."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        if kind == "tryton":
            self.server: TrytonServer = request.getfixturevalue("tryton")
            self.server.reset()
            self.table = self.server.plugin_config(name="erp", lead_time_days=3)
        else:
            write_table(tmp_path / "stock.csv")
            self.table = {"name": "erp", "type": "table", "path": str(tmp_path / "stock.csv")}

    def reservations(self) -> list[tuple[str, str]]:
        """(key, state) of every reservation the ERP holds, in its own words normalised."""
        if self.kind == "tryton":
            words = {
                "assigned": "reserved",
                "cancelled": "released",
                "done": "consumed",
                "waiting": "waiting",
            }
            return sorted((r["reference"], words[r["state"]]) for r in self.server.reservations())
        import sqlite3

        with sqlite3.connect(self.table["path"] + ".reservations.sqlite") as db:
            if not db.execute("select name from sqlite_master where name = 'parts_reservations'").fetchall():
                return []  # never asked for one
            return sorted(db.execute("select key, state from parts_reservations").fetchall())


@pytest.fixture(params=["tryton", "table"])
def erp(request: pytest.FixtureRequest, tmp_path: Path) -> Erp:
    return Erp(request.param, tmp_path, request)


# the sender of eml() is alice@example.com: a customer of the directory, so its tickets may reserve
DIRECTORY = {"directory": [{"name": "ACME", "domains": ["example.com"]}]}


def build(
    make_app: Any, erp: Erp, desk: Recorder, region: str | None = "north", known: bool = True, **parts: Any
) -> Any:
    def classify_ticket(draft: Any) -> None:  # stands for the asset register: the unit's model
        draft.asset.model = "PowerEdge R740"
        if region:
            draft.labels["region"] = region

    pm = make_plugin_manager(extra=(plugin("unit", classify_ticket=classify_ticket), recorder_plugin(desk)))
    cfg = {"erps": [erp.table], "regions": REGIONS, **parts}
    plugins: dict[str, Any] = {"parts": cfg}
    if known:
        plugins["customers"] = DIRECTORY
    return make_app(pm=pm, routing={"default": ["desk"]}, outbound_allow=["127.0.0.1"], plugins=plugins)


def notes(desk: Recorder) -> list[str]:
    return [i.payload.get("note") or "" for i in desk.items if i.kind == "update" and i.payload.get("note")]


@pytest.mark.parametrize(
    ("mail", "region", "depot"),
    [(MAIL_EN, "north", "BJ"), (MAIL_CN, "east", "SH"), (MAIL_TW, "south", "SH")],
)
async def test_a_failed_power_supply_gets_stock_per_depot_and_one_reservation(
    make_app, tmp_path: Path, erp: Erp, mail, region, depot
) -> None:
    desk = Recorder()
    app = build(make_app, erp, desk, region=region)
    drop(tmp_path, "a", eml(subject=mail[0], body=mail[1]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    t = app.store.get_ticket(t.ref)
    (item,) = t.labels["parts"]["items"]
    assert item["part"] == "PSU-750W"
    order = [d["depot"] for d in item["depots"]]
    assert order[0] == (REGIONS[region][0] if region else "SH")
    assert {d["depot"]: d["available"] for d in item["depots"]}["GZ"] == 0
    res = item["reservation"]
    assert (res["depot"], res["state"], res["qty"]) == (depot, "reserved", 1)  # south: GZ has none -> SH
    assert erp.reservations() == [(f"svcbridge:{t.ref}:PSU-750W", "reserved")]
    (note,) = notes(desk)
    assert "PSU-750W" in note and f"reserved 1 at {depot}" in note
    await app.run_once()  # nothing twice
    assert len(notes(desk)) == 1 and len(erp.reservations()) == 1


@pytest.mark.parametrize(
    ("states", "final"),
    [
        ([TicketState.CLOSED], "released"),  # cancelled: closed without being resolved
        ([TicketState.RESOLVED], "consumed"),
        (
            [TicketState.RESOLVED, TicketState.CLOSED],
            "consumed",
        ),  # closing a resolved ticket releases nothing
    ],
)
async def test_cancel_releases_and_resolve_consumes(
    make_app, tmp_path: Path, erp: Erp, states, final
) -> None:
    desk = Recorder()
    app = build(make_app, erp, desk)
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    ctx = app.context("desk")
    for n, state in enumerate(states):
        await ctx.apply_status_update(
            StatusUpdate(ticket_ref=t.ref, system="desk", state=state, external_event_id=f"e{n}")
        )
        await app.run_once()  # the settle job, and its note to the helpdesk
    t = app.store.get_ticket(t.ref)
    assert t.labels["parts"]["items"][0]["reservation"]["state"] == final
    assert erp.reservations() == [(f"svcbridge:{t.ref}:PSU-750W", final)]
    settled = [
        n for n in notes(desk) if n.startswith("Spare parts released") or n.startswith("Spare parts consumed")
    ]
    assert len(settled) == (0 if final == "reserved" else 1)


async def test_an_erp_outage_leaves_the_ticket_intact_and_retries(make_app, tmp_path: Path, request) -> None:
    erp = Erp("tryton", tmp_path, request)
    desk = Recorder()
    app = build(make_app, erp, desk)
    erp.server.stop()
    try:
        drop(tmp_path, "a", eml(subject=MAIL_CN[0], body=MAIL_CN[1]))
        res = await app.run_once()
        assert res["processed"] == 1
        (t,) = app.store.list_tickets()
        assert "parts" not in t.labels and [i.kind for i in desk.items] == ["create"]
        (job,) = app.work.jobs.list()
        assert job["status"] == "pending" and "tryton" in job["last_error"]
    finally:
        erp.server.start()
    with app.store.tx() as conn:  # the retry is due now rather than after the backoff
        conn.execute(app.work.jobs.table.update().values(next_attempt_at=datetime(2000, 1, 1, tzinfo=UTC)))
    await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert t.labels["parts"]["items"][0]["reservation"]["state"] == "reserved"
    assert len(erp.reservations()) == 1 and len(notes(desk)) == 1


async def test_a_rerun_after_the_erp_committed_makes_no_second_reservation(
    make_app, tmp_path: Path, erp: Erp
) -> None:
    """The kill -9 window in process: the handler ran (the ERP committed), its outcome was never recorded,
    and the job runs again. The daemon-level kill -9 is in test_parts_e2e.py."""
    desk = Recorder()
    app = build(make_app, erp, desk, reserve=True)
    kinds = app.work.job_kinds
    plugin_name, kind = kinds["parts.lookup"]
    calls: list[Any] = []

    async def lost_first(job: Any, work: Any) -> Any:
        out = await kind.run(job)
        calls.append(out)
        if len(calls) == 1:
            raise ConnectionError("killed before the record")  # the ERP has the reservation now
        return out

    import dataclasses

    kinds["parts.lookup"] = (
        plugin_name,
        dataclasses.replace(kind, run=lost_first, backoff_initial=0.01, backoff_max=0.01),
    )
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1]))
    await app.run_once()
    await asyncio.sleep(0.05)
    await app.run_once()
    assert len(calls) == 2
    (t,) = app.store.list_tickets()
    assert erp.reservations() == [(f"svcbridge:{t.ref}:PSU-750W", "reserved")]
    t = app.store.get_ticket(t.ref)
    assert t.labels["parts"]["items"][0]["reservation"]["depot"] == "BJ"  # the first run's depot
    assert len(notes(desk)) == 1


async def test_a_mail_naming_no_part_asks_for_nothing(make_app, tmp_path: Path, erp: Erp) -> None:
    desk = Recorder()
    app = build(make_app, erp, desk)
    drop(tmp_path, "a", eml(subject="Invoice question 发票问题", body="Please resend the invoice."))
    await app.run_once()
    assert app.work.jobs.list() == [] and erp.reservations() == []


async def test_refused_credentials_park_the_kind_with_an_alert(make_app, tmp_path: Path, request) -> None:
    erp = Erp("tryton", tmp_path, request)
    table = {**erp.table, "password": "wrong"}
    table.pop("password_file")
    erp.table = table
    desk = Recorder()
    app = build(make_app, erp, desk)
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1]))
    await app.run_once()
    (job,) = app.work.jobs.list()
    assert job["status"] == "parked" and "auth" in job["last_error"]
    assert "job:parts.lookup" in app.work.alerts
    (t,) = app.store.list_tickets()
    assert "parts" not in t.labels and erp.reservations() == []


async def test_a_refused_reservation_is_dead_lettered_and_the_ticket_kept(make_app, tmp_path: Path) -> None:
    from svcbridge import WorkQueue
    from svcbridge.store.jobs import write_work

    erp = Erp("table", tmp_path, None)  # type: ignore[arg-type]
    desk = Recorder()
    app = build(make_app, erp, desk)
    drop(tmp_path, "a", eml(subject="hello", body="no part named"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    work = WorkQueue(t.ref, t.id)
    work.enqueue("parts.lookup", {"parts": ["PSU-750W"], "depot": "XX"}, key="cli:x")
    with app.store.tx() as conn:
        write_work(conn, app.store, work)
    await app.run_once()
    (job,) = app.work.jobs.list()
    assert job["status"] == "dead" and "no part 'PSU-750W' at depot 'XX'" in job["last_error"]
    assert app.store.get_ticket(t.ref) is not None and erp.reservations() == []


async def test_a_component_named_without_a_known_unit_asks_for_nothing(make_app, tmp_path: Path) -> None:
    erp = Erp("table", tmp_path, None)  # type: ignore[arg-type]
    desk = Recorder()
    pm = make_plugin_manager(extra=(recorder_plugin(desk),))  # no model, no serial on the draft
    app = make_app(pm=pm, routing={"default": ["desk"]}, plugins={"parts": {"erps": [erp.table]}})
    drop(tmp_path, "a", eml(subject="Disk full 磁盘满了", body="The power supply of the office is fine."))
    await app.run_once()
    assert app.work.jobs.list() == [] and erp.reservations() == []


@pytest.mark.parametrize(
    ("states", "final", "settled"),
    [
        ([TicketState.CLOSED, TicketState.IN_PROGRESS], "reserved", 2),  # cancelled, then reopened
        ([TicketState.CLOSED, TicketState.IN_PROGRESS, TicketState.RESOLVED], "consumed", 3),
        ([TicketState.CLOSED, TicketState.WAITING_PARTS, TicketState.IN_PROGRESS], "reserved", 2),  # once
    ],
)
async def test_a_ticket_reopened_after_close_gets_its_part_back(
    make_app, tmp_path: Path, request, states, final, settled
) -> None:
    """Closing released the part; reopening the ticket left it released, so the engineer had no part
    set aside and resolving it consumed nothing (the part used was never posted)."""
    desk = Recorder()
    erp = Erp("table", tmp_path, request)
    app = build(make_app, erp, desk)
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    ctx = app.context("desk")
    for n, state in enumerate(states):
        await ctx.apply_status_update(
            StatusUpdate(ticket_ref=t.ref, system="desk", state=state, external_event_id=f"e{n}")
        )
        await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert t.labels["parts"]["items"][0]["reservation"]["state"] == final
    assert erp.reservations() == [(f"svcbridge:{t.ref}:PSU-750W", final)]
    assert len([n for n in notes(desk) if n.startswith("Spare parts ")]) == 1 + settled  # + the lookup's


@pytest.mark.parametrize(
    ("sender", "customers", "reason"),
    [
        ("Spam <x@spam.example>", None, "unknown sender"),  # no directory at all
        ("Spam <x@spam.example>", DIRECTORY, "unknown sender"),  # a directory that does not know it
    ],
)
async def test_an_unknown_sender_naming_a_model_and_a_part_reserves_nothing(
    make_app, tmp_path: Path, erp: Erp, sender, customers, reason
) -> None:
    """Spam naming 'R740 power supply' reserved a part in the ERP each time: anyone could drain the
    depots. The stock is still looked up and noted; nothing is set aside, and the label says why."""
    desk = Recorder()
    app = build(make_app, erp, desk, known=False)
    if customers is not None:
        app = build(make_app, erp, desk, known=True)
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1], sender=sender))
    await app.run_once()
    (t,) = app.store.list_tickets()
    t = app.store.get_ticket(t.ref)
    (item,) = t.labels["parts"]["items"]
    assert item["part"] == "PSU-750W" and item["reservation"] is None and item["depots"]
    assert reason in t.labels["parts_not_reserved"]
    assert erp.reservations() == []
    (note,) = notes(desk)
    assert "BJ: 2 available" in note and "no reservation" in note and reason in note
    assert "svcbridge parts reserve" in note
    await app.run_once()
    assert erp.reservations() == []


async def test_a_customer_set_by_the_message_itself_is_not_known(make_app, tmp_path: Path) -> None:
    """A customer name a plugin read from the message (not the directory, not the unit's owner) is
    what the sender says: no reservation."""
    erp = Erp("table", tmp_path, None)  # type: ignore[arg-type]
    desk = Recorder()

    def classify_ticket(draft: Any) -> None:
        draft.asset.model = "PowerEdge R740"
        draft.customer = "ACME"  # e.g. a webhook's 'customer' field

    pm = make_plugin_manager(extra=(plugin("unit", classify_ticket=classify_ticket), recorder_plugin(desk)))
    app = make_app(
        pm=pm,
        routing={"default": ["desk"]},
        plugins={
            "parts": {"erps": [erp.table]},
            "customers": {"directory": [{"name": "Other", "domains": ["other.example"]}]},
        },
    )
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert app.store.get_ticket(t.ref).customer == "ACME"
    assert erp.reservations() == [] and "parts_not_reserved" in app.store.get_ticket(t.ref).labels


async def test_a_directory_name_set_by_the_message_itself_is_not_known(make_app, tmp_path: Path) -> None:
    """The message names a customer the directory lists (a webhook's 'customer' field, a plugin reading
    the body), but the sender is not that customer's: the name is still only the sender's word."""
    erp = Erp("table", tmp_path, None)  # type: ignore[arg-type]
    desk = Recorder()

    def classify_ticket(draft: Any) -> None:
        draft.asset.model = "PowerEdge R740"
        draft.customer = "Other"  # the directory's customer, named by an unknown sender

    pm = make_plugin_manager(extra=(plugin("unit", classify_ticket=classify_ticket), recorder_plugin(desk)))
    app = make_app(
        pm=pm,
        routing={"default": ["desk"]},
        plugins={
            "parts": {"erps": [erp.table]},
            "customers": {"directory": [{"name": "Other", "domains": ["other.example"]}]},
        },
    )
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1], sender="x@free.example"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert app.store.get_ticket(t.ref).customer == "Other"
    assert erp.reservations() == [] and "parts_not_reserved" in app.store.get_ticket(t.ref).labels
    # the same name from the customer's own domain: known, reserved
    drop(tmp_path, "b", eml(subject=MAIL_EN[0], body=MAIL_EN[1], sender="it@other.example", msgid="<b@x>"))
    await app.run_once()
    await app.run_once()
    assert len(erp.reservations()) == 1


async def test_a_known_unit_reserves_for_an_unknown_sender(make_app, tmp_path: Path) -> None:
    """The serial is in the asset register (the unit's owner is a customer): the part is set aside even
    when the mail comes from an address no directory knows (a technician's free-mail account)."""
    from svcbridge import AssetRecord
    from svcbridge.store.assets import AssetStore

    erp = Erp("table", tmp_path, None)  # type: ignore[arg-type]
    desk = Recorder()
    pm = make_plugin_manager(extra=(recorder_plugin(desk),))
    app = make_app(
        pm=pm,
        routing={"default": ["desk"]},
        plugins={"parts": {"erps": [erp.table], "regions": REGIONS}, "assets": {}},
    )
    AssetStore(app.store).upsert(
        AssetRecord(
            serial="7XK2M9P", vendor="Dell", model="PowerEdge R740", customer="华东电力", region="east"
        )
    )
    drop(
        tmp_path, "a", eml(subject=MAIL_CN[0], body="机身编号：7XK2M9P，电源坏了。", sender="x@free.example")
    )
    await app.run_once()
    await app.run_once()
    (t,) = app.store.list_tickets()
    t = app.store.get_ticket(t.ref)
    assert t.labels["parts"]["items"][0]["reservation"]["state"] == "reserved"
    assert "parts_not_reserved" not in t.labels
    assert erp.reservations() == [(f"svcbridge:{t.ref}:PSU-750W", "reserved")]


async def test_an_agent_reserves_by_hand_for_an_unknown_sender(make_app, tmp_path: Path) -> None:
    """'svcbridge parts reserve' is the agent's decision: it reserves, and the label saying why the
    lookup did not goes."""
    from svcbridge import WorkQueue
    from svcbridge.store.jobs import write_work

    erp = Erp("table", tmp_path, None)  # type: ignore[arg-type]
    desk = Recorder()
    app = build(make_app, erp, desk, known=False)
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1], sender="x@spam.example"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert "parts_not_reserved" in app.store.get_ticket(t.ref).labels
    work = WorkQueue(t.ref, t.id)
    work.enqueue("parts.lookup", {"parts": ["PSU-750W"], "reserve": True}, key="cli:x")
    with app.store.tx() as conn:
        write_work(conn, app.store, work)
    await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert t.labels["parts"]["items"][0]["reservation"]["state"] == "reserved"
    assert "parts_not_reserved" not in t.labels
    assert erp.reservations() == [(f"svcbridge:{t.ref}:PSU-750W", "reserved")]


async def test_a_part_reserved_again_after_it_was_consumed_gets_a_new_key(
    make_app, tmp_path: Path, erp: Erp
) -> None:
    """Resolved (the part consumed), then reopened: the agent reserves the part again. The same key
    answered 'consumed' and nothing was set aside; the next generation is a new reservation, and a
    re-run of that job after the ERP committed (the kill -9 window) finds it: exactly one."""
    import dataclasses

    from svcbridge import WorkQueue
    from svcbridge.store.jobs import write_work

    desk = Recorder()
    app = build(make_app, erp, desk)
    drop(tmp_path, "a", eml(subject=MAIL_EN[0], body=MAIL_EN[1]))
    await app.run_once()
    (t,) = app.store.list_tickets()
    ctx = app.context("desk")
    for n, state in enumerate([TicketState.RESOLVED, TicketState.IN_PROGRESS]):
        await ctx.apply_status_update(
            StatusUpdate(ticket_ref=t.ref, system="desk", state=state, external_event_id=f"e{n}")
        )
        await app.run_once()
    first = f"svcbridge:{t.ref}:PSU-750W"
    assert erp.reservations() == [(first, "consumed")]

    plugin_name, kind = app.work.job_kinds["parts.lookup"]
    calls: list[Any] = []

    async def lost_first(job: Any, work: Any) -> Any:
        out = await kind.run(job)
        calls.append(out)
        if len(calls) == 1:
            raise ConnectionError("killed before the record")
        return out

    app.work.job_kinds["parts.lookup"] = (
        plugin_name,
        dataclasses.replace(kind, run=lost_first, backoff_initial=0.01, backoff_max=0.01),
    )
    work = WorkQueue(t.ref, t.id)
    work.enqueue("parts.lookup", {"parts": ["PSU-750W"], "reserve": True}, key="cli:again")
    with app.store.tx() as conn:
        write_work(conn, app.store, work)
    await app.run_once()
    await asyncio.sleep(0.05)
    await app.run_once()
    assert len(calls) == 2
    second = f"{first}:r1"
    assert erp.reservations() == sorted([(first, "consumed"), (second, "reserved")])
    item = app.store.get_ticket(t.ref).labels["parts"]["items"][0]
    assert (item["reservation"]["key"], item["reservation"]["state"], item["generation"]) == (
        second,
        "reserved",
        1,
    )
    await ctx.apply_status_update(
        StatusUpdate(ticket_ref=t.ref, system="desk", state=TicketState.RESOLVED, external_event_id="e9")
    )
    await app.run_once()
    assert erp.reservations() == sorted([(first, "consumed"), (second, "consumed")])
