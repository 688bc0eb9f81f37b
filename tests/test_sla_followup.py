"""Milestones from the field and the follow-up after a repair, through the real pipeline and outbox.

A technician's SMS from a registered phone records "on site" with the time he typed; one from an
unknown phone does not. Resolving a ticket sends a survey on the customer's channel (no link); the
mail answer "4 ..." threads, keeps the ticket resolved and is counted by the satisfaction report; the
follow-up call list and its outcome.
"""

from __future__ import annotations

import json
from email.header import decode_header, make_header
from pathlib import Path

import pytest

import svcbridge.cli_sla
import svcbridge.reports.trail
import svcbridge.store.batch
import svcbridge.store.jobs
import svcbridge_sla
from conftest import eml
from helpdesk_helpers import outgoing
from sla_helpers import Clock, raw_mail, settings, sh
from svcbridge import RawMessage, StatusUpdate, TicketState
from svcbridge.reports import build
from svcbridge_sla.followup import read_reply
from test_sla_engine import events


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock(sh(2026, 3, 9, 9, 0))
    for module in (svcbridge.store.batch, svcbridge.store.jobs, svcbridge.cli_sla, svcbridge_sla):
        monkeypatch.setattr(module, "utcnow", c)
    return c


def subject(m) -> str:
    return str(make_header(decode_header(str(m["Subject"]))))


def sms(at, phone: str, body: str, sid: str) -> RawMessage:
    fields = [["From", phone], ["To", "+8675500000000"], ["Body", body], ["MessageSid", sid]]
    return RawMessage(
        channel="sms", source="twilio:main", external_id=sid, received_at=at, raw=json.dumps(fields).encode()
    )


async def ticket_at(app, clock, subject="设备全部中断", sender="Li <li@city-hospital.example>") -> str:
    app.work.clock = clock
    await app.context("maildir").submit(raw_mail(clock.now, subject, "急", sender))
    await app.run_once()
    return app.store.list_tickets()[0].ref


async def test_technician_sms_records_on_site_with_the_time_he_typed(make_app, clock) -> None:
    app = make_app(**settings())
    ref = await ticket_at(app, clock)
    assert app.store.get_ticket(ref).sla_policy == "p1-city"  # in the city: on site within 1 h
    clock.now = sh(2026, 3, 9, 9, 50)
    ctx = app.context("twilio")
    await ctx.submit(sms(clock.now, "+8613900000000", f"到场 {ref} 09:40", "SM1"))  # not a technician
    await ctx.submit(sms(clock.now, "+8613800138000", f"到场 {ref} 09:40", "SM2"))
    await app.run_once()
    tickets = app.store.list_tickets()
    assert len(tickets) == 2  # the stranger's text is a new ticket, nothing more
    (ms,) = events(app, ref, "sla_milestone")
    assert ms.data == {
        "milestone": "onsite",
        "at": "2026-03-09T09:40:00+08:00",
        "source": "sms:+8613800138000",
    }
    met = {e.data["target"]: e.data for e in events(app, ref, "sla_met")}
    assert met["onsite"]["on_time"] is True and met["onsite"]["used_s"] == 40 * 60
    assert "onsite_by" not in app.store.get_ticket(ref).deadlines
    # a time later than the text itself cannot be: the receipt time stands
    clock.now = sh(2026, 3, 9, 10, 5)
    await ctx.submit(sms(clock.now, "+8613800138000", f"RESOLVED {ref} 23:59", "SM3"))
    await app.run_once()
    got = [e.data for e in events(app, ref, "sla_milestone") if e.data["milestone"] == "resolved"]
    assert got == [
        {"milestone": "resolved", "at": "2026-03-09T02:05:00+00:00", "source": "sms:+8613800138000"}
    ]


async def test_survey_after_resolution_and_the_answer(make_app, tmp_path: Path, clock) -> None:
    app = make_app(**settings())
    ref = await ticket_at(app, clock, subject="打印机卡纸")
    clock.now = sh(2026, 3, 9, 15, 0)
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=ref, system="rt", state=TicketState.RESOLVED, at=clock.now)
    )
    await app.run_once()
    (survey,) = [m for m in outgoing(tmp_path / "outgoing") if "满意度" in subject(m)]
    text = survey.get_body(("plain",)).get_content()
    assert "1-5" in text and ref in text and "http" not in text.lower()
    assert survey.get_body(("html",)) is None or "<a " not in survey.get_body(("html",)).get_content()
    # the customer answers by mail; the quoted survey below the answer is not read
    answer = eml(
        subject=f"Re: {subject(survey)}",
        body=f"4 分，工程师很专业\n\n> {text}",
        sender="Li <li@city-hospital.example>",
        msgid="<answer@city-hospital.example>",
        extra=f"In-Reply-To: {survey['Message-ID']}\r\n",
    )
    await app.context("maildir").submit(
        RawMessage(channel="email", source="maildir", external_id="ans", received_at=clock.now, raw=answer)
    )
    await app.run_once()
    t = app.store.get_ticket(ref)
    assert t.state == TicketState.RESOLVED  # an answer to the survey does not reopen it
    (reply,) = [e for e in t.events if e.type == "survey_reply"]
    assert reply.data == {"score": 4, "comment": "工程师很专业"}
    rep = build(app.store, "satisfaction", "2026-03", tz="Asia/Shanghai", now=clock.now)
    assert (rep["surveys_sent"], rep["replies"], rep["average"], rep["distribution"]["4"]) == (1, 1, 4.0, 1)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("5", {"score": 5, "comment": ""}),
        ("4 分，很及时", {"score": 4, "comment": "很及时"}),
        ("3/5 ok-ish", {"score": 3, "comment": "ok-ish"}),
        ("3\uff0f5\uff01不错", {"score": 3, "comment": "不错"}),  # full-width solidus and exclamation mark
        ("SB-000001 2 太慢了", {"score": 2, "comment": "太慢了"}),
        ("SB-000002 2 太慢了", None),  # another ticket's reference
        ("1 很不滿意，等了三天", {"score": 1, "comment": "很不滿意，等了三天"}),
        ("6", None),
        ("10 out of 10", None),
        ("printer still jams", None),
        ("> 5\n", None),  # only a quote
    ],
)
def test_reading_survey_answers(text: str, want) -> None:
    assert read_reply(text, "SB-000001") == want


async def test_followup_calls_due_and_recorded(make_app, clock, monkeypatch) -> None:
    app = make_app(**settings())
    ref = await ticket_at(app, clock, subject="Printer jams")
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=ref, system="rt", state=TicketState.RESOLVED, at=sh(2026, 3, 9, 10, 0))
    )
    await app.run_once()  # the engine writes what the contract owes: a call one day after
    (owed,) = events(app, ref, "followup_due")
    assert owed.data["due_at"] == "2026-03-10T02:00:00+00:00"  # 10:00 in Shanghai
    calls = svcbridge.reports.trail.followup_calls(app.store, sh(2026, 3, 9, 12, 0))
    assert [(c.ref, c.status) for c in calls] == [(ref, "later")]
    calls = svcbridge.reports.trail.followup_calls(app.store, sh(2026, 3, 10, 11, 0), due_only=True)
    assert [(c.ref, c.status) for c in calls] == [(ref, "due")]
    assert svcbridge.cli_sla.record_event(
        app.store,
        ref,
        svcbridge.TicketEvent(type="followup_call", actor="cli", data={"outcome": "satisfied", "note": ""}),
        "call:1",
    )
    calls = svcbridge.reports.trail.followup_calls(app.store, sh(2026, 3, 10, 11, 0))
    assert [(c.ref, c.status, c.outcomes) for c in calls] == [(ref, "done", ["satisfied"])]


async def test_an_instance_without_the_sla_table_is_left_alone(make_app, tmp_path: Path, clock) -> None:
    make_app(**settings())  # one with [plugins.sla] was built in this process before
    app = make_app()
    app.work.clock = clock
    await app.context("maildir").submit(raw_mail(clock.now, "全部中断", "急", "li@city-hospital.example"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert (t.sla_policy, t.deadlines) == (None, {}) and "sla_class" not in t.labels
    await app.context("rt").apply_status_update(
        StatusUpdate(ticket_ref=t.ref, system="rt", state=TicketState.RESOLVED, at=clock.now)
    )
    await app.run_once()
    assert not [m for m in outgoing(tmp_path / "outgoing") if "满意度" in subject(m)]
    assert app.work.jobs.list() == [] and app.work.timers.list() == []
