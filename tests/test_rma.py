"""RMAs (issue 16 items 4 and 6): the lifecycle, ``svcbridge rma``, ``/rma`` commands in helpdesk
internal notes acted on once and answered with a note, and the reminder when the vendor is silent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import eml
from helpdesk_helpers import Recorder, drop, recorder_plugin
from svcbridge import RmaPart, RmaState, StatusUpdate, rma_can_move
from svcbridge.cli import main
from svcbridge.plugins import make_plugin_manager
from svcbridge_rma import parse_commands

R = RmaState


@pytest.mark.parametrize(
    ("old", "new", "ok"),
    [
        (R.REQUESTED, R.APPROVED, True),
        (R.APPROVED, R.SHIPPED_TO_VENDOR, True),
        (R.SHIPPED_TO_VENDOR, R.RECEIVED_BY_VENDOR, True),
        (R.RECEIVED_BY_VENDOR, R.REPLACEMENT_SHIPPED, True),
        (R.REPLACEMENT_SHIPPED, R.REPLACEMENT_RECEIVED, True),
        (R.REPLACEMENT_RECEIVED, R.CLOSED, True),
        (R.APPROVED, R.REPLACEMENT_SHIPPED, True),  # advance replacement: ships before the part is back
        (R.SHIPPED_TO_VENDOR, R.APPROVED, False),  # never back
        (R.REQUESTED, R.REJECTED, True),
        (R.RECEIVED_BY_VENDOR, R.REJECTED, True),  # the vendor found misuse
        (R.REPLACEMENT_SHIPPED, R.REJECTED, False),
        (R.REPLACEMENT_SHIPPED, R.CANCELLED, True),
        (R.CLOSED, R.CANCELLED, False),  # nothing leaves a final state
        (R.REJECTED, R.APPROVED, False),
        (R.APPROVED, R.APPROVED, False),
    ],
)
def test_lifecycle(old, new, ok) -> None:
    assert rma_can_move(old, new) is ok


@pytest.mark.parametrize(
    ("note", "want"),
    [
        ("/rma DELL part=PSU", [{"open": "DELL", "parts": ["PSU"], "fault": None}]),
        (
            'please see\n/rma huawei part=PSU:2102311 part=FAN fault="12 V 无输出"\nthanks',
            [{"open": "HUAWEI", "parts": ["PSU:2102311", "FAN"], "fault": "12 V 无输出"}],
        ),
        (
            "/RMA cisco part=PWR-C1-715WAC fault=“風扇異音”",
            [{"open": "CISCO", "parts": ["PWR-C1-715WAC"], "fault": "風扇異音"}],
        ),
        (
            "/rma 3 shipped_to_vendor carrier=SF tracking=SF1234567890",
            [{"move": 3, "state": "shipped_to_vendor", "carrier": "SF", "tracking": "SF1234567890"}],
        ),
        ("/rma 7 approved number=R88001234", [{"move": 7, "state": "approved", "number": "R88001234"}]),
        ("/rma DELL", [{"error": "no part= given"}]),
        ("/rma 3 lost", [{"error": "unknown state 'lost'"}]),
        ("/rma ../etc part=x", [{"error": "not a vendor: '../etc'"}]),
        ("no command here, only /rmafoo and text", []),
        # our own answers, handed back by a helpdesk without the connector's marker: never a command
        ("/rma done: RMA 1 (HUAWEI): requested - PSU-900W", []),
        ("/rma refused: this ticket has no RMA 9", []),
        ("/rma not understood: no part= given\n> not understood: no part= given", []),
        # hostile notes: each an answer, never an exception in status_updated (the helpdesk poll)
        ("/rma ² approved", [{"error": "not an RMA id: '²'"}]),
        ("/rma  \u3000", [{"error": "no vendor or RMA id"}]),
        ("/rma 99999999999999999999999 approved", [{"error": "not an RMA id: '99999999999999999999'"}]),
        (
            '/rma 3 shipped_to_vendor tracking="SF1\rBcc: x@evil"',
            [{"error": "tracking: 1-100 characters on one line"}],
        ),
        (
            "/rma 3 shipped_to_vendor tracking=" + "9" * 101,
            [{"error": "tracking: 1-100 characters on one line"}],
        ),
        ("/rma 3 approved number=", [{"error": "number: 1-100 characters on one line"}]),
        (
            "/rma 3 approved number=退货单号ＲＭＡ１２３",
            [{"move": 3, "state": "approved", "number": "退货单号ＲＭＡ１２３"}],
        ),
    ],
)
def test_commands_are_read_from_notes(note, want) -> None:
    got = [{k: v for k, v in c.items() if k != "line"} for c in parse_commands(note)]
    assert got == want


CONFIG = """
data_dir = "{d}/var"
[http]
enabled = false
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
transport = "spool"
spool_dir = "{d}/outgoing"
[plugins.rma]
reminder_days = 5
"""


def run(cfg: Path, *args: str, input: bytes | None = None):
    return CliRunner().invoke(main, ["--config", str(cfg), *args], input=input, env={"COLUMNS": "200"})


def test_cli_open_list_show_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(CONFIG.format(d=tmp_path))
    ref = run(cfg, "ingest", "-", input=eml(subject="交换机电源故障")).stdout.strip()
    res = run(
        cfg,
        "rma",
        "open",
        ref,
        "--vendor",
        "cisco",
        "--part",
        "PWR-C1-715WAC:LIT12345",
        "--fault",
        "电源无输出",
    )
    assert res.exit_code == 0, res.output
    assert "RMA 1 (CISCO): requested - PWR-C1-715WAC LIT12345" in res.stdout
    assert run(cfg, "rma", "set", "1", "approved", "--number", "88001234").exit_code == 0
    res = run(cfg, "rma", "set", "1", "shipped_to_vendor", "--carrier", "SF", "--tracking", "SF1234567890")
    assert "RMA 1 (CISCO 88001234): shipped_to_vendor, SF SF1234567890" in res.stdout
    again = run(cfg, "rma", "set", "1", "shipped_to_vendor", "--carrier", "SF", "--tracking", "SF1234567890")
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    back = run(cfg, "rma", "set", "1", "approved")
    assert back.exit_code == 1 and "not allowed" in back.output
    assert run(cfg, "rma", "open", "SB-999999", "--vendor", "x", "--part", "y").exit_code == 1
    shown = json.loads(run(cfg, "rma", "show", "1").stdout)
    assert (shown["state"], shown["number"], shown["tracking"], shown["ticket_ref"]) == (
        "shipped_to_vendor",
        "88001234",
        "SF1234567890",
        ref,
    )
    listed = json.loads(run(cfg, "rma", "list", "--ticket", ref, "--json").stdout)
    assert [r["id"] for r in listed] == [1]
    assert json.loads(run(cfg, "rma", "list", "--state", "closed", "--json").stdout) == []
    ticket = json.loads(run(cfg, "tickets", "show", ref, "--json").stdout)
    trail = [
        (e["data"]["from"], e["data"]["to"], e["data"]["source"])
        for e in ticket["events"]
        if e["type"] == "rma"
    ]
    assert trail == [
        (None, "requested", "cli"),
        ("requested", "approved", "cli"),
        ("approved", "shipped_to_vendor", "cli"),
    ]
    assert all(e["at"] for e in ticket["events"] if e["type"] == "rma")
    assert "shipped_to_vendor" in ticket["labels"]["rma"]["1"]
    timers = json.loads(run(cfg, "timers", "list", "--json").stdout)
    assert [(t["name"], t["status"]) for t in timers] == [("rma.reminder", "pending")]
    assert run(cfg, "rma", "set", "1", "cancelled").exit_code == 0
    timers = json.loads(run(cfg, "timers", "list", "--json").stdout)
    assert [t["status"] for t in timers] == ["cancelled"]  # no open RMA left: no reminder


def _app(make_app, desk: Recorder, **rma):
    pm = make_plugin_manager(extra=(recorder_plugin(desk),))
    return make_app(pm=pm, routing={"default": ["desk"]}, plugins={"rma": {"reminder_days": 5, **rma}})


def _notes(desk: Recorder) -> list[str]:
    return [i.payload.get("note") or "" for i in desk.items if i.kind == "update" and i.payload.get("note")]


async def test_an_agent_s_rma_command_acts_once_and_is_answered(make_app, tmp_path: Path) -> None:
    desk = Recorder()
    app = _app(make_app, desk)
    drop(tmp_path, "a", eml(subject="Server PSU dead"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    note = 'Part is dead.\n/rma DELL part=PSU-750W:CN0XYZ fault="no 12 V"'
    upd = StatusUpdate(ticket_ref=t.ref, system="desk", internal_note=note, external_event_id="tx-41")
    ctx = app.context("desk")
    assert await ctx.apply_status_update(upd)
    assert not await ctx.apply_status_update(upd)  # a redelivered webhook: seen
    await app.run_once()
    (rma,) = app.rmas.by_ticket(t.ref)
    assert (rma.vendor, rma.state, rma.parts, rma.fault, rma.source) == (
        "DELL",
        R.REQUESTED,
        [RmaPart(part="PSU-750W", serial="CN0XYZ")],
        "no 12 V",
        "helpdesk:desk",
    )
    answers = [n for n in _notes(desk) if n.startswith("/rma done")]
    assert len(answers) == 1 and "RMA 1 (DELL): requested" in answers[0]
    # the same note polled again under another id after a crash would open a second one: the source_key
    # of the job is the helpdesk's event id, so only a new event (a new note) does
    upd2 = StatusUpdate(
        ticket_ref=t.ref,
        system="desk",
        internal_note="/rma 1 approved number=R-77",
        external_event_id="tx-42",
    )
    await ctx.apply_status_update(upd2)
    await app.run_once()
    assert app.rmas.get(1).number == "R-77" and app.rmas.get(1).state == R.APPROVED
    bad = StatusUpdate(
        ticket_ref=t.ref, system="desk", internal_note="/rma 1 requested", external_event_id="tx-43"
    )
    await ctx.apply_status_update(bad)
    await app.run_once()
    assert any(n.startswith("/rma refused") and "not allowed" in n for n in _notes(desk))
    assert len(app.rmas.by_ticket(t.ref)) == 1


async def test_the_reminder_fires_when_the_vendor_is_silent(make_app, tmp_path: Path) -> None:
    desk = Recorder()
    app = _app(make_app, desk, reminder_days=0.00002)  # 1.7 s
    drop(tmp_path, "a", eml(subject="PSU"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    app.rmas.open(
        t.ref,
        "dell",
        [RmaPart(part="PSU")],
        source="cli",
        remind_after=__import__("datetime").timedelta(days=0.00002),
    )
    await app.run_once()
    assert not [n for n in _notes(desk) if n.startswith("RMA reminder")]
    await asyncio.sleep(2.0)
    await app.run_once()
    await app.run_once()
    reminders = [n for n in _notes(desk) if n.startswith("RMA reminder")]
    assert len(reminders) == 1 and "RMA 1 (DELL): requested" in reminders[0]
    assert app.store.get_ticket(t.ref).labels["rma_stalled"] == [1]


@pytest.mark.parametrize(
    ("moved_days_ago", "reminded", "next_in_days"),
    [
        (4, False, 1),  # a vendor moved it 4 days ago (Cisco poll, a mail): the next check in 1 day, not 5
        (1, False, 4),
        (6, True, 5),  # idle: reminded now, again in reminder_days
    ],
)
async def test_the_reminder_is_due_reminder_days_after_the_vendor_s_last_move(
    make_app, tmp_path: Path, moved_days_ago: int, reminded: bool, next_in_days: int
) -> None:
    """A vendor's move (CiscoRmaSource, a mail reply) does not move the rma.reminder timer; when it
    fired it looked again reminder_days from then, so a silence was reported up to twice too late."""
    from datetime import timedelta

    from svcbridge import Timer, WorkQueue, utcnow
    from svcbridge_rma import remind

    desk = Recorder()
    app = _app(make_app, desk)  # reminder_days = 5
    drop(tmp_path, "a", eml(subject="PSU"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    rma = app.rmas.open(t.ref, "cisco", [RmaPart(part="PSU")], source="cli")
    now = utcnow()
    app.rmas.move(
        rma.id, R.APPROVED, source="vendor:cisco", number="800123456", at=now - timedelta(days=moved_days_ago)
    )
    ticket = app.store.get_ticket(t.ref)
    timer = Timer(id=1, name="rma.reminder", due_at=now, fired_at=now, data={"rma": rma.id}, ticket=ticket)
    work = WorkQueue(t.ref, ticket.id)
    await app.pm.lifecycle("startup", app=app)  # the plugin's host, as in the daemon
    try:
        change = remind(timer, work)
    finally:
        await app.pm.lifecycle("shutdown", app=app)
    assert (change is not None) == reminded
    (nxt,) = work.timers
    assert abs((nxt.at - now) - timedelta(days=next_in_days)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tracking", "9" * 101),
        ("number", "R" * 101),
        ("carrier", "顺丰\u2028Bcc: x"),
        ("tracking", "SF1\r\nX"),
    ],
)
async def test_a_move_refuses_what_the_rma_row_cannot_hold(make_app, tmp_path: Path, field, value) -> None:
    """The CLI and a vendor API (Cisco's tracking) reached the store unchecked: on PostgreSQL over 100
    characters is a DataError (a traceback; for the Cisco poll every cycle, the other RMAs never read)."""
    app = _app(make_app, Recorder())
    drop(tmp_path, "a", eml(subject="PSU"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    rma = app.rmas.open(t.ref, "dell", [RmaPart(part="PSU")])
    with pytest.raises(ValueError, match=field):
        app.rmas.move(rma.id, R.SHIPPED_TO_VENDOR, source="cli", **{field: value})
    assert app.rmas.get(rma.id).state == R.REQUESTED
    assert app.rmas.move(rma.id, R.SHIPPED_TO_VENDOR, source="cli", **{field: "SF1234567890"}) is not None


async def test_a_concurrent_move_is_not_overwritten(make_app, tmp_path: Path, monkeypatch) -> None:
    """'svcbridge rma set' and a helpdesk '/rma' note at once: on SQLite the row is read outside any
    write lock (FOR UPDATE is a no-op there), so the second move was judged on the state before the
    first and overwrote it: a cancelled RMA came back 'approved' (out of a final state)."""
    import svcbridge.store.rmas as store_rmas

    app = _app(make_app, Recorder())
    drop(tmp_path, "a", eml(subject="PSU"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    rma = app.rmas.open(t.ref, "dell", [RmaPart(part="PSU")])
    real, raced = store_rmas.rma_can_move, []

    def racing(old, new):  # the other writer commits between our read and our write
        if not raced:
            raced.append(new)
            app.rmas.move(rma.id, R.CANCELLED, source="helpdesk:desk")
        return real(old, new)

    monkeypatch.setattr(store_rmas, "rma_can_move", racing)
    with pytest.raises(ValueError, match="cancelled -> approved"):
        app.rmas.move(rma.id, R.APPROVED, source="cli", number="R123456")
    assert raced and app.rmas.get(rma.id).state == R.CANCELLED
    trail = [(e.data["from"], e.data["to"]) for e in app.store.get_ticket(t.ref).events if e.type == "rma"]
    assert trail == [(None, "requested"), ("requested", "cancelled")]
