"""The SLA engine through the real pipeline, store, work runner and outbox, with a controllable clock.

An urgent mail arrives on a Friday at 17:55 from a customer outside the city: it is classified P1 /
fault level 1 from its Chinese words, gets the province policy's deadlines on its calendars, its
acknowledgement is met, the solution target warns and breaches on Monday (after a restart of the
daemon in between), the supervisor chain is told through the outbox, a technician's SMS and the CLI
report milestones, and a state change pauses the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import svcbridge.cli_sla
import svcbridge.store.batch
import svcbridge.store.jobs
import svcbridge_sla
from helpdesk_helpers import sent
from sla_helpers import Clock, raw_mail, settings, sh
from svcbridge import FaultLevel, Priority, StatusUpdate, TicketState
from svcbridge.cli_sla import record_milestone
from svcbridge.reports import build
from svcbridge_sla.classify import classify, facts_of
from svcbridge_sla.settings import SlaSettings

CFG = SlaSettings(**settings()["plugins"]["sla"])


@pytest.mark.parametrize(
    ("subject", "body", "channel", "labels", "category", "want"),
    [
        ("设备全部中断", "", "email", {}, None, (Priority.P1, 1, ["urgent words"])),
        ("系統無法使用", "請盡快處理", "email", {}, None, (Priority.P1, 1, ["urgent words"])),
        ("Core switch DOWN", "", "email", {}, None, (Priority.P1, 1, ["urgent words"])),
        ("打印机卡纸", "问题严重", "email", {}, None, (Priority.P2, 2, ["severe words"])),
        ("Printer jams", "nothing urgent", "email", {}, None, (Priority.P3, 3, [])),
        ("", "", "phone", {"call": {"kind": "missed"}}, None, (Priority.P2, 3, ["missed hotline call"])),
        ("", "", "phone", {"call": {"kind": "answered"}}, None, (Priority.P3, 3, [])),
        ("", "", "phone", {"call": "missed"}, None, (Priority.P3, 3, [])),  # not the phone plugin's shape
        ("Printer jams", "", "email", {"tier": "gold"}, None, (Priority.P2, 3, ["gold customers"])),
        (
            "Printer jams",
            "",
            "email",
            {"asset_criticality": "high"},
            None,
            (Priority.P3, 2, ["critical assets"]),
        ),
        ("How do I?", "", "email", {}, "question", (Priority.P3, 3, ["how-to questions"])),
        # the most severe of several rules wins, per field
        (
            "outage",
            "",
            "email",
            {"tier": "gold", "asset_criticality": "high"},
            None,
            (Priority.P1, 1, ["urgent words", "gold customers", "critical assets"]),
        ),
    ],
)
def test_classification_rules(subject, body, channel, labels, category, want) -> None:
    facts = facts_of(subject, body, None, channel, category, labels)
    got = classify(facts, CFG.rules, CFG.default_priority, CFG.default_fault_level)
    if category == "question":  # level 4 is below the default 3: a rule can only make it more severe
        want = (Priority.P3, 3, ["how-to questions"])
    assert (got.priority, got.fault_level, got.matched) == want


def test_bad_config_is_refused_with_its_path() -> None:
    bad = {**settings()["plugins"]["sla"]}
    bad["policies"] = [{"name": "x", "targets": {"onsite": {"within": "1h", "calendar": "nope"}}}]
    with pytest.raises(ValueError, match="no calendar 'nope'"):
        SlaSettings(**bad)
    bad["policies"] = [{"name": "x", "targets": {"teleport": {"within": "1h"}}}]
    with pytest.raises(ValueError, match="unknown target"):
        SlaSettings(**bad)
    bad["policies"] = [{"name": "x", "targets": {"onsite": {"within": "soon"}}}]
    with pytest.raises(ValueError, match="not a duration"):
        SlaSettings(**bad)


def timers(app) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in app.work.timers.list()}


def events(app, ref: str, *types: str) -> list:
    return [e for e in app.store.get_ticket(ref).events if e.type in types]


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock(sh(2026, 3, 6, 17, 55, 30))
    # the outbox stamps its notified events with the store's now; the SLA job with its own
    for module in (svcbridge.store.batch, svcbridge.store.jobs, svcbridge.cli_sla, svcbridge_sla):
        monkeypatch.setattr(module, "utcnow", c)
    return c


async def test_friday_urgent_mail_outside_the_city(make_app, tmp_path: Path, clock: Clock) -> None:
    def app_at():
        app = make_app(**settings())
        app.work.clock = clock
        return app

    app = app_at()
    t0 = sh(2026, 3, 6, 17, 55)
    await app.context("maildir").submit(
        raw_mail(t0, "设备全部中断 紧急", "整个科室无法使用", "Li <li@county.example>")
    )
    await app.run_once()
    (t,) = app.store.list_tickets()
    ref = t.ref
    t = app.store.get_ticket(ref)
    assert (t.priority, t.fault_level, t.sla_policy) == (Priority.P1, FaultLevel.CRITICAL, "p1-province")
    assert t.labels["region"] == "province"
    utc = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
    assert t.deadlines == {
        "acknowledge_by": utc(2026, 3, 6, 10, 5),  # 18:05 Shanghai, 24x7
        "solution_by": utc(2026, 3, 9, 2, 55),  # Monday 10:55: 5 min on Friday, 1 h 55 on Monday
        "unsolved_by": utc(2026, 3, 9, 4, 55),  # Monday 12:55
        "onsite_by": utc(2026, 3, 11, 6, 55),  # 24 open hours of 9-18: Wednesday 14:55
        "resolution_by": utc(2026, 3, 8, 9, 55),  # 48 h round the clock: Sunday 17:55
    }
    rows = timers(app)
    assert rows["sla_warn:solution"]["due_at"] == utc(2026, 3, 9, 2, 31)  # 80 % of 2 h = 96 min
    assert rows["sla_breach:solution"]["status"] == "pending"
    assert next(m["Subject"] for m in sent(tmp_path)).startswith("[SB-")  # the acknowledgement went out

    # 18:04: the acknowledgement's warning timer finds the target met (the notice at 17:55:30)
    clock.now = sh(2026, 3, 6, 18, 4)
    await app.run_once()
    (met,) = events(app, ref, "sla_met")
    assert met.data["target"] == "acknowledge" and met.data["on_time"] is True
    assert timers(app)["sla_breach:acknowledge"]["status"] == "cancelled"
    assert not events(app, ref, "sla_warning")

    # the daemon stops on Friday evening; a new one starts on Monday at 10:40 (resolution and
    # the solution warning are past): each fires once, late, and says so
    del app
    clock.now = sh(2026, 3, 9, 10, 40)
    app = app_at()
    await app.run_once()
    warned = {e.data["target"]: e for e in events(app, ref, "sla_warning")}
    assert set(warned) == {"solution"}  # resolution's warning is moot: its deadline passed as well
    assert warned["solution"].data["late_s"] == 9 * 60.0
    breached = {e.data["target"]: e for e in events(app, ref, "sla_breached")}
    assert set(breached) == {"resolution"}  # Sunday 17:55 passed while nobody was running
    assert breached["resolution"].data["late_s"] == (16 * 60 + 45) * 60.0  # Sunday 17:55 to Monday 10:40
    notes = [e.data.get("note", "") for e in events(app, ref, "ticket_updated")]
    assert any("SLA breached: resolution" in n and "late" in n for n in notes)

    # 10:56: the solution target breaches; the team lead is mailed through the outbox
    clock.now = sh(2026, 3, 9, 10, 56)
    await app.run_once()
    breached = {e.data["target"]: e for e in events(app, ref, "sla_breached")}
    assert set(breached) == {"resolution", "solution"} and breached["solution"].data["late_s"] == 60.0
    mails = [m for m in sent(tmp_path) if m["To"] == "lead@bridge.test"]
    assert {m["Subject"].split("SLA breached: ")[1] for m in mails} == {"resolution", "solution"}
    t = app.store.get_ticket(ref)
    assert t.priority == Priority.P1  # it cannot go higher than P1
    assert t.labels["sla_escalated"]["targets"] == ["resolution", "solution"]
    # the next step of the chain waits its 2 h (business time of the target's calendar)
    assert timers(app)["sla_escalate:solution"]["due_at"] == utc(2026, 3, 9, 4, 55)
    await app.run_once()
    assert len([m for m in sent(tmp_path) if m["To"] == "lead@bridge.test"]) == 2  # once each

    # the agent reports the technician on site at 11:30 (a real time, recorded at 11:42)
    clock.now = sh(2026, 3, 9, 11, 42)
    record_milestone(app.store, ref, "onsite", sh(2026, 3, 9, 11, 30), actor="cli:test")
    await app.run_once()
    (ms,) = events(app, ref, "sla_milestone")
    assert ms.data["milestone"] == "onsite"
    met = {e.data["target"]: e for e in events(app, ref, "sla_met")}
    assert (
        met["onsite"].data["on_time"] is True and met["onsite"].data["met_at"] == "2026-03-09T11:30:00+08:00"
    )
    assert "onsite_by" not in app.store.get_ticket(ref).deadlines

    # waiting for parts stops the unsolved clock at 12:00 with 45 min left; back at work at 15:00
    clock.now = sh(2026, 3, 9, 12, 0)
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=ref, system="rt", state=TicketState.WAITING_PARTS, at=clock.now)
    )
    await app.run_once()
    t = app.store.get_ticket(ref)
    assert "unsolved_by" not in t.deadlines  # unknown while the clock stands
    assert timers(app)["sla_breach:unsolved"]["status"] == "cancelled"
    clock.now = sh(2026, 3, 9, 15, 0)
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=ref, system="rt", state=TicketState.IN_PROGRESS, at=clock.now)
    )
    await app.run_once()
    t = app.store.get_ticket(ref)
    assert t.deadlines["unsolved_by"] == utc(2026, 3, 9, 7, 55)  # 15:55: 3 h later than before
    assert timers(app)["sla_breach:unsolved"]["due_at"] == utc(2026, 3, 9, 7, 55)

    # the month's report, from the trail: the breaches are there, the timeliness rate is 0 %
    report = build(app.store, "sla", "2026-03", tz="Asia/Shanghai", now=clock.now)
    assert report["tickets"] == 1 and report["timeliness"]["rate"] == 0.0
    assert not report["timeliness"]["meets_promise"]
    missed = {b["target"]: b for b in report["breaches"]}
    assert set(missed) == {"resolution", "solution"} and missed["solution"]["escalated"]
    assert report["by_target"]["acknowledge"]["met"] == 1 and report["by_target"]["onsite"]["met"] == 1


async def test_helpdesk_override_wins_and_is_an_event(make_app, clock: Clock) -> None:
    app = make_app(**settings())
    app.work.clock = clock
    await app.context("maildir").submit(
        raw_mail(sh(2026, 3, 6, 17, 55), "Printer jams", "slowly", "a@county.example")
    )
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.priority == Priority.P3 and t.sla_policy == "standard"
    await app.context("rt").apply_status_update(
        StatusUpdate(
            ticket_ref=t.ref, system="rt", internal_note="customer is a hospital ward: #priority P1 #fault 2"
        )
    )
    await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert (t.priority, t.fault_level) == (Priority.P1, FaultLevel.MAJOR)
    (ov,) = [e for e in t.events if e.type == "sla_override"]
    assert ov.data["priority"] == 1 and ov.data["fault_level"] == 2 and ov.actor == "agent"
    # a later message with calmer words cannot take it back; 'down' would not change it either
    await app.context("maildir").submit(
        raw_mail(
            sh(2026, 3, 6, 18, 30), f"Re: [{t.ref}] Printer jams", "works a bit better", "a@county.example", 2
        )
    )
    await app.run_once()
    assert app.store.get_ticket(t.ref).priority == Priority.P1


def test_the_commented_example_in_config_is_valid() -> None:
    import tomllib

    text = (Path(__file__).parent.parent / "config" / "svcbridge.toml").read_text(encoding="utf-8")
    start = text.index("# [plugins.sla]")
    block = text[start : text.find("\n\n", start)]  # the SLA block ends at the next blank line
    toml = "\n".join(ln[2:].split("  #")[0] if ln.startswith("# ") else "" for ln in block.splitlines())
    cfg = SlaSettings(**tomllib.loads(toml)["plugins"]["sla"])
    assert [p.name for p in cfg.policies] == ["p1-city", "p1-province", "standard"]
    assert cfg.calendars["office"].is_working_day(datetime(2026, 2, 14).date())  # a make-up Saturday
    assert not cfg.calendars["office"].is_working_day(datetime(2026, 4, 30).date())  # closed in config


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.realserver)])
def db(request) -> dict[str, Any]:
    """The store: SQLite, and the same on the real PostgreSQL (timestamps, JSON, claims)."""
    return {"database_url": request.getfixturevalue("pg_url")} if request.param == "postgres" else {}


async def test_met_late_after_a_breach_de_escalates(make_app, clock: Clock, db) -> None:
    app = make_app(**settings(), **db)
    app.work.clock = clock
    await app.context("maildir").submit(
        raw_mail(sh(2026, 3, 6, 17, 55), "Printer jams", "slowly", "a@county.example")
    )
    await app.run_once()
    (t,) = app.store.list_tickets()
    ref = t.ref
    assert (t.priority, t.sla_policy) == (Priority.P3, "standard")
    # first response within one working day (9 h of 9-18): Friday 5 min + Monday until 17:55
    assert t.deadlines["first_response_by"] == datetime(2026, 3, 9, 9, 55, tzinfo=UTC)
    clock.now = sh(2026, 3, 9, 18, 0)
    await app.run_once()
    t = app.store.get_ticket(ref)
    assert t.priority == Priority.P2 and t.labels["sla_escalated"] == {
        "priority_before": 3,
        "targets": ["first_response"],
    }
    (esc,) = events(app, ref, "sla_escalated")
    assert esc.data["to"] == ["Team lead"] and esc.data["late_s"] == 300.0
    # the agent answers at 18:30: met, late; the escalation is taken back
    clock.now = sh(2026, 3, 9, 18, 30)
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=ref, system="rt", public_reply="We are on it.", at=clock.now)
    )
    await app.run_once()
    t = app.store.get_ticket(ref)
    (met,) = [e for e in t.events if e.type == "sla_met" and e.data["target"] == "first_response"]
    assert met.data["on_time"] is False and met.data["used_s"] > met.data["allowed_s"]
    (de,) = events(app, ref, "sla_deescalated")
    assert de.data["target"] == "first_response"
    assert t.priority == Priority.P3 and "sla_escalated" not in t.labels
    report = build(app.store, "sla", "2026-03", tz="Asia/Shanghai", now=clock.now)
    assert report["by_target"]["first_response"] == {"met": 0, "missed": 1, "open": 0, "rate": 0.0}
    # late by business time: 17:55 to 18:00 counts, the office is closed from 18:00 to the reply
    assert report["breaches"][0]["late_min"] == 5.0 and report["breaches"][0]["escalated"] is True


async def test_a_breach_fires_once_with_two_replicas(make_app, clock: Clock, tmp_path: Path) -> None:
    import asyncio

    a = make_app(**settings())
    a.work.clock = clock
    await a.context("maildir").submit(
        raw_mail(sh(2026, 3, 6, 17, 55), "Printer jams", "slowly", "a@county.example")
    )
    await a.run_once()
    from svcbridge.jobs import WorkRunner

    # two replicas of the runner (other hosts) on the same store, with the SLA plugin's timer kinds
    ra = WorkRunner(a.store, a.work.job_kinds, a.work.timer_kinds, worker_id="hostA:1", clock=clock)
    rb = WorkRunner(a.store, a.work.job_kinds, a.work.timer_kinds, worker_id="hostB:2", clock=clock)
    clock.now = sh(2026, 3, 9, 18, 0)
    got = await asyncio.gather(ra.run_once(), rb.run_once())
    fired = sorted(o.name for run in got for o in run if o.status == "fired")
    assert fired == ["sla_breach:first_response", "sla_warn:first_response"]  # each by one replica
    await asyncio.gather(ra.run_once(), rb.run_once())  # nothing fires twice
    ref = a.store.list_tickets()[0].ref
    assert len(events(a, ref, "sla_breached")) == 1
    assert len(events(a, ref, "sla_escalated")) == 1
    assert events(a, ref, "sla_warning") == []  # past the deadline too: no warning after the fact
    rows = [
        r
        for r in a.delivery.outbox.list()
        if r["payload"].get("notification", {}).get("template") == "sla_escalation"
    ]
    assert len(rows) == 1


async def test_a_year_without_holiday_data_stores_the_ticket_and_says_why(make_app, clock: Clock) -> None:
    app = make_app(**settings())
    app.work.clock = clock
    # New Year's Eve 2026, 17:00: one working day of office hours runs into 2027, which
    # chinese-calendar does not know yet: no guess, the ticket is stored with the reason
    await app.context("maildir").submit(
        raw_mail(sh(2026, 12, 31, 17, 0), "Printer jams", "x", "a@county.example")
    )
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.sla_policy == "standard" and t.deadlines == {}
    assert "no holiday data for 2027" in t.labels["sla_error"]
    assert app.work.timers.list() == []


async def test_a_missed_hotline_call_keeps_the_phone_plugins_callback_deadline(
    make_app, clock: Clock
) -> None:
    import json

    from svcbridge import RawMessage

    conf = settings()
    conf["plugins"]["phone"] = {"token": "t" * 32}
    app = make_app(**conf)
    app.work.clock = clock
    call = {
        "kind": "missed",
        "number": "+8613811112222",
        "call_id": "c1",
        "to": "+8675500000000",
        "cause": "cancel",
    }
    raw = RawMessage(
        channel="phone", source="cti", external_id="c1:missed", received_at=sh(2026, 3, 6, 17, 55),
        raw=json.dumps(call).encode(),
    )  # fmt: skip
    await app.context("cti").submit(raw)
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.priority == Priority.P2 and t.labels["sla_class"]["rules"] == ["missed hotline call"]
    assert t.sla_policy == "standard"
    assert t.deadlines["callback_by"] == datetime(2026, 3, 6, 10, 0, tzinfo=UTC)  # the phone plugin's 5 min
    assert "first_response_by" in t.deadlines and "resolution_by" in t.deadlines
    # a recomputation (a state change) replaces the policy's deadlines and keeps the other plugin's
    await app.context("rt").apply_status_update(
        StatusUpdate(
            ticket_ref=t.ref, system="rt", state=TicketState.WAITING_CUSTOMER, at=sh(2026, 3, 6, 17, 58)
        )
    )
    await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert set(t.deadlines) == {"callback_by"}  # the policy's clocks stand while waiting for the customer
