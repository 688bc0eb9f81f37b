"""A bare SMS answer to the satisfaction survey ("5", a full-width 5, "4 很满意") from the customer's number.

The survey went out by SMS ("reply 1-5") after the ticket was resolved; the answer quotes no reference
and SMS has no In-Reply-To. It threads onto the ticket whose survey waits for this number's answer
(``TicketLookup.awaiting_survey``, within ``[plugins.sla] survey_window``), is recorded as the score and
comment, never reopens the ticket and never makes a new one. A new fault report from the same number,
a stranger's "5", an answer after the window and a second answer still go the ordinary way. Everything
through Twilio's signed inbound route, the real pipeline, store, outbox and the Messages API contract.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import eml
from helpdesk_helpers import outgoing, text_of
from sla_helpers import settings
from svcbridge import RawMessage, StatusUpdate, TicketState, utcnow
from svcbridge.reports import build
from svcbridge.web import build_web
from svcbridge_twilio import SmsNotifier
from svcbridge_twilio.signature import compute
from test_twilio import ACCOUNT, PUBLIC, TOKEN, FakeTwilioApi

CUSTOMER = "+8613912345678"
TWILIO = {"account_sid": ACCOUNT, "auth_token": TOKEN, "public_url": PUBLIC, "from_number": "+8675512345678"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.realserver)])
def db(request) -> dict[str, Any]:
    """The store: SQLite, and the same on the real PostgreSQL (the survey query reads JSON event data)."""
    return {"database_url": request.getfixturevalue("pg_url")} if request.param == "postgres" else {}


class Bridge:
    """An instance with the SLA engine and Twilio both ways (inbound webhook, outbound fake API)."""

    def __init__(self, make_app, db: dict[str, Any] | None = None, **sla) -> None:
        conf = settings(**sla)
        conf["plugins"]["twilio"] = TWILIO
        self.app = make_app(**conf, **(db or {}))
        self.api = FakeTwilioApi()
        cfg = self.app.settings.plugin_config("twilio")
        self.app.delivery.notifiers["sms"] = SmsNotifier(
            cfg, transport=httpx.MockTransport(self.api), allow=["api.twilio.com"]
        )
        self.web = TestClient(build_web(self.app))
        self.n = 0

    def text(self, body: str, frm: str = CUSTOMER) -> None:
        self.n += 1
        params = {"MessageSid": f"SMin{self.n:04d}", "AccountSid": ACCOUNT, "From": frm,
                  "To": TWILIO["from_number"], "Body": body, "NumMedia": "0"}  # fmt: skip
        sig = compute(TOKEN, PUBLIC + "/hooks/twilio/sms", list(params.items()))
        r = self.web.post("/hooks/twilio/sms", data=params, headers={"X-Twilio-Signature": sig})
        assert r.status_code == 200, r.text

    async def resolved_with_survey(self, *numbers: str) -> list[str]:
        """A ticket from each number's SMS, resolved by the helpdesk; each survey went out by SMS."""
        for frm in numbers or (CUSTOMER,):
            self.text("打印机卡纸，无法打印", frm=frm)
        await self.app.run_once()
        refs = [t.ref for t in sorted(self.app.store.list_tickets(), key=lambda t: t.id)]
        for ref in refs:
            await self.app.pipeline.apply_status_update(
                StatusUpdate(
                    ticket_ref=ref, system="rt", state=TicketState.RESOLVED, external_event_id=f"r-{ref}"
                )
            )
        await self.app.run_once()
        surveys = [x for x in self.api.sent if "score from 1 to 5" in x["Body"] or "1-5" in x["Body"]]
        assert sorted(x["To"] for x in surveys) == sorted(numbers or (CUSTOMER,))
        assert not any("http" in x["Body"] for x in surveys)
        for ref in refs:
            t = self.app.store.get_ticket(ref)
            assert "survey" in [e.data.get("template") for e in t.events if e.type == "notified"]
        return refs

    def replies(self, ref: str) -> list[dict]:
        return [e.data for e in self.app.store.get_ticket(ref).events if e.type == "survey_reply"]


ANSWERS = [  # (text, score, comment)
    ("5", 5, ""),
    ("\uff15", 5, ""),  # a full-width 5 from a Chinese keyboard
    ("4 很满意", 4, "很满意"),
    ("\uff14分，工程師很專業", 4, "工程師很專業"),  # zh-TW, full-width digit and comma
    ("3 - slow engineer", 3, "slow engineer"),
    ("1/5 waited three days", 1, "waited three days"),
]
NOT_ANSWERS = [
    "打印机又卡纸了",  # a new fault report in words
    "2 台打印机无法使用",  # starts with a digit, but a count of machines and a fault word
    "3 printers down since this morning",
    "10",  # not a score 1-5
    "6 分",
]


def number(i: int) -> str:
    return f"+861391234{i:04d}"


async def test_bare_answers_score_the_waiting_survey_and_other_texts_open_tickets(make_app) -> None:
    """Each case from its own customer number, all at once: the answers are recorded on the resolved
    ticket of that number (no new ticket, not reopened, nothing sent back), the rest are new tickets."""
    b = Bridge(make_app)
    cases = [*ANSWERS, *((text, None, None) for text in NOT_ANSWERS)]
    refs = await b.resolved_with_survey(*(number(i) for i in range(len(cases))))
    sent = len(b.api.sent)
    for i, (text, _, _) in enumerate(cases):
        b.text(text, frm=number(i))
    await b.app.run_once()
    for i, (text, score, comment) in enumerate(cases):
        t = b.app.store.get_ticket(refs[i])
        assert t.state == TicketState.RESOLVED, text  # the rated ticket is never reopened
        got = [e for e in t.events if e.type == "message_received"]
        if score is None:
            assert (b.replies(refs[i]), got) == ([], []), text
            (new,) = [x for x in b.app.store.list_tickets() if x.ref not in refs and x.subject == text]
            assert new.contact.phone == number(i)
        else:
            assert b.replies(refs[i]) == [{"score": score, "comment": comment}], text
            assert len(got) == 1, text  # the text itself is on the rated ticket's trail
    assert b.app.store.count_tickets() == len(cases) + len(NOT_ANSWERS)  # no ticket for any answer
    # acknowledgements only for the new tickets; an answer is not acknowledged as a "new problem"
    assert len(b.api.sent) == sent + len(NOT_ANSWERS)
    month = utcnow().strftime("%Y-%m")
    rep = build(b.app.store, "satisfaction", month, tz="Asia/Shanghai", now=utcnow())
    assert (rep["surveys_sent"], rep["replies"]) == (len(cases), len(ANSWERS))
    assert rep["average"] == round(sum(x[1] for x in ANSWERS) / len(ANSWERS), 2)


async def test_a_stranger_an_old_survey_and_a_second_answer(make_app, db) -> None:
    b = Bridge(make_app, db)
    ref, other = await b.resolved_with_survey(CUSTOMER, number(1))
    b.text("5", frm="+8613700000000")  # another number's "5" rates nobody's ticket
    # within the window: two answers in one batch give one score (the first); both texts are kept
    b.text("5")
    b.text("4 其实还行")
    await b.app.run_once()
    assert b.app.store.count_tickets() == 3 and b.replies(other) == []
    assert b.replies(ref) == [{"score": 5, "comment": ""}]
    assert sum(e.type == "message_received" for e in b.app.store.get_ticket(ref).events) == 2
    # the other customer answers eight days after the survey (window 7 d): a new message, not an answer
    late = RawMessage(
        channel="sms",
        source="twilio:twilio/sms",
        external_id="SMlate",
        received_at=utcnow() + timedelta(days=8),
        raw=json.dumps(
            [["From", number(1)], ["To", TWILIO["from_number"]], ["Body", "5"], ["MessageSid", "SMlate"]]
        ).encode(),
    )
    await b.app.context("twilio").submit(late)
    await b.app.run_once()
    assert b.app.store.count_tickets() == 4 and b.replies(other) == []
    assert b.app.store.get_ticket(other).state == TicketState.RESOLVED


async def test_survey_window_none_keeps_only_quoted_answers(make_app) -> None:
    b = Bridge(make_app, survey_window=None)
    (ref,) = await b.resolved_with_survey()
    b.text("5")
    b.text(f"{ref} 4 好")  # quoting the reference still answers
    await b.app.run_once()
    assert b.app.store.count_tickets() == 2
    assert b.replies(ref) == [{"score": 4, "comment": "好"}]


async def test_a_newer_conversation_takes_the_digit(make_app) -> None:
    """After the survey the customer reports a new fault and is asked "how many units?": "5" answers that."""
    b = Bridge(make_app)
    (ref,) = await b.resolved_with_survey()
    b.text("风扇噪音很大")
    await b.app.run_once()
    (new,) = [t for t in b.app.store.list_tickets() if t.ref != ref]
    b.text("5")
    await b.app.run_once()
    assert b.app.store.count_tickets() == 2 and b.replies(ref) == []
    assert sum(e.type == "message_received" for e in b.app.store.get_ticket(new.ref).events) == 1


@pytest.mark.parametrize(
    ("subject", "extra"),
    [
        ("Re: [{ref}] 服务满意度调查", ""),  # a webmail that drops In-Reply-To: the subject tag threads
        ("Re: survey", "In-Reply-To: {msgid}\r\n"),  # the headers thread it, whatever the subject
    ],
)
async def test_mail_answers_thread_by_their_reference(make_app, tmp_path, subject, extra) -> None:
    app = make_app(**settings())
    mail = eml(
        subject="打印机卡纸", body="卡纸", sender="Li <li@city-hospital.example>", msgid="<f1@x.example>"
    )
    await app.context("maildir").submit(
        RawMessage(channel="email", source="maildir", external_id="f1", received_at=utcnow(), raw=mail)
    )
    await app.run_once()
    ref = app.store.list_tickets()[0].ref
    await app.pipeline.apply_status_update(
        StatusUpdate(ticket_ref=ref, system="rt", state=TicketState.RESOLVED, external_event_id="r")
    )
    await app.run_once()
    (survey,) = [m for m in outgoing(tmp_path / "outgoing") if "1-5" in text_of(m)]
    answer = eml(
        subject=subject.format(ref=ref),
        body="5 很满意\n\n> 请为本次服务打分",
        sender="Li <li@city-hospital.example>",
        msgid="<a1@x.example>",
        extra=extra.format(msgid=survey["Message-ID"]),
    )
    await app.context("maildir").submit(
        RawMessage(channel="email", source="maildir", external_id="a1", received_at=utcnow(), raw=answer)
    )
    await app.run_once()
    assert app.store.count_tickets() == 1
    t = app.store.get_ticket(ref)
    assert t.state == TicketState.RESOLVED
    assert [e.data for e in t.events if e.type == "survey_reply"] == [{"score": 5, "comment": "很满意"}]
