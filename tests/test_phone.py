"""Hotline call events (issue 17): Zammad-style generic CTI webhooks; a missed call is exactly one
callback ticket with a callback deadline and a durable timer, an answered call an event on the caller's
open ticket (and the end of a pending callback)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from svcbridge import StatusUpdate, TicketState, utcnow
from svcbridge.web import build_web

TOKEN = "cti-token-0123456789abcdef"
CUSTOMERS = {"directory": [{"name": "Qingdao Port Hospital", "phones": ["+8653288881234"]}]}


@pytest.fixture
async def app(make_app):
    a = make_app(plugins={"phone": {"token": TOKEN, "default_region": "CN", "callback_minutes": 5},
                          "customers": CUSTOMERS})
    await a.pm.lifecycle("startup", app=a)
    return a


def post(c: TestClient, event: str, call_id: str, as_json: bool = False, token: str = TOKEN, **fields):
    data = {"event": event, "callId": call_id, **fields}
    if as_json:
        return c.post(f"/hooks/cti/{token}", json=data)
    return c.post(f"/hooks/cti/{token}", data=data)


def missed(c: TestClient, call_id: str, frm: str = "0532 8888 1234", cause: str = "cancel", as_json: bool = False):
    post(c, "newCall", call_id, as_json, **{"from": frm, "to": "+864008001234", "direction": "in",
                                            "user[]": ["hotline-1"]})
    return post(c, "hangup", call_id, as_json, cause=cause, **{"from": frm, "to": "+864008001234",
                                                               "direction": "in"})


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("cause", ["cancel", "noAnswer", "busy", "normalClearing"])
async def test_a_missed_call_is_exactly_one_callback_ticket(app, as_json, cause) -> None:
    c = TestClient(build_web(app))
    r = missed(c, "call-1", cause=cause, as_json=as_json)
    assert r.status_code == 200 and r.json()["journaled"] == "missed"
    for _ in range(3):  # the PBX retries the hangup
        again = post(c, "hangup", "call-1", as_json, cause=cause, **{"from": "0532 8888 1234", "direction": "in"})
        assert again.status_code == 200
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert (t.channel, t.contact.phone, t.customer) == ("phone", "+8653288881234", "Qingdao Port Hospital")
    assert t.labels["call"]["kind"] == "missed" and t.labels["call"]["cause"] == cause
    due = t.deadlines["callback_by"]
    assert timedelta(minutes=4, seconds=55) < due - t.created_at < timedelta(minutes=5, seconds=5)
    (timer,) = app.work.timers.list()
    assert timer["name"] == "phone.callback_due" and timer["status"] == "pending"
    assert app.delivery.outbox.list() == [] or all(r["kind"] != "notify" for r in app.delivery.outbox.list())


async def test_an_overdue_callback_is_flagged_and_sent_as_a_note(app) -> None:
    c = TestClient(build_web(app))
    missed(c, "call-2")
    await app.pipeline.drain()
    app.work.clock = lambda: utcnow() + timedelta(minutes=6)
    await app.work.run_once()
    (t,) = app.store.list_tickets()
    t = app.store.get_ticket(t.ref)
    assert "callback_overdue" in t.labels
    (ev,) = [e for e in t.events if e.type == "ticket_updated" and e.actor == "phone"]
    assert ev.data["note"].startswith("Callback to +8653288881234 is overdue")


async def test_an_answered_call_back_ends_the_callback_and_another_missed_call_joins_it(app) -> None:
    c = TestClient(build_web(app))
    missed(c, "call-3")
    await app.pipeline.drain()
    missed(c, "call-4")  # rang again while the callback was pending: the same ticket
    await app.pipeline.drain()
    assert app.store.count_tickets() == 1
    # the agent calls back and reaches the customer
    post(c, "newCall", "call-5", **{"from": "801", "to": "053288881234", "direction": "out"})
    post(c, "answer", "call-5", answeringNumber="801")
    r = post(c, "hangup", "call-5", cause="normalClearing", **{"direction": "out", "to": "053288881234"})
    assert r.json()["journaled"] == "answered"
    outcomes = await app.pipeline.drain()
    assert [o.status for o in outcomes] == ["followup"]
    (t,) = app.store.list_tickets()
    assert "callback_done_at" in t.labels
    (timer,) = app.work.timers.list()
    assert timer["status"] == "cancelled"
    app.work.clock = lambda: utcnow() + timedelta(minutes=6)
    await app.work.run_once()
    assert "callback_overdue" not in app.store.get_ticket(t.ref).labels


async def test_an_answered_call_is_an_event_on_the_open_ticket_or_nothing(app, make_app) -> None:
    c = TestClient(build_web(app))
    # no open ticket: an answered call leaves no ticket
    post(c, "newCall", "a1", **{"from": "+8653288881234", "to": "+864008001234", "direction": "in"})
    post(c, "answer", "a1", answeringNumber="agent@desk.example")
    r = post(c, "hangup", "a1", cause="normalClearing")
    assert r.json()["journaled"] is None and app.store.journal_counts() == {}
    # ... unless the agent marked it a fault report
    post(c, "newCall", "a2", **{"from": "+8653288881234", "to": "+864008001234", "direction": "in"})
    post(c, "answer", "a2", answeringNumber="agent@desk.example")
    assert post(c, "hangup", "a2", cause="normalClearing", fault="1").json()["journaled"] == "answered"
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert t.channel == "phone" and t.labels["call"]["answered_by"] == "agent@desk.example"
    # the next answered call lands on it as an event
    post(c, "answer", "a3", answeringNumber="802", **{"from": "+8653288881234", "direction": "in"})
    assert post(c, "hangup", "a3", cause="normalClearing").json()["journaled"] == "answered"
    assert [o.status for o in await app.pipeline.drain()] == ["followup"]
    t = app.store.get_ticket(t.ref)
    assert any(e.type == "message_received" for e in t.events)
    # a resolved ticket is no open ticket any more
    await app.pipeline.apply_status_update(StatusUpdate(ticket_ref=t.ref, system="local",
                                                        state=TicketState.RESOLVED, external_event_id="r1"))
    post(c, "answer", "a4", answeringNumber="802", **{"from": "+8653288881234", "direction": "in"})
    assert post(c, "hangup", "a4", cause="normalClearing").json()["journaled"] is None


async def test_out_of_order_and_anonymous_calls(app) -> None:
    c = TestClient(build_web(app))
    # the hangup arrives before newCall (it carries from/to itself)
    r = post(c, "hangup", "o1", cause="cancel", **{"from": "+886227208889", "to": "+864008001234", "direction": "in"})
    assert r.json()["journaled"] == "missed"
    assert post(c, "newCall", "o1", **{"from": "+886227208889", "direction": "in"}).status_code == 200
    r = post(c, "hangup", "o2", cause="cancel", **{"from": "anonymous", "to": "+864008001234", "direction": "in"})
    assert r.json()["journaled"] == "missed"
    await app.pipeline.drain()
    by_call = {t.labels["call"]["call_id"]: t for t in app.store.list_tickets()}
    assert by_call["o1"].contact.phone == "+886227208889"
    assert by_call["o2"].contact.phone is None and "an unknown number" in by_call["o2"].subject


@pytest.mark.parametrize(("case", "code"), [("wrong_token", 403), ("no_event", 400), ("bad_event", 400),
                                            ("bad_json", 400)])
def test_cti_refusals(app, case, code) -> None:
    c = TestClient(build_web(app))
    if case == "wrong_token":
        r = post(c, "hangup", "x", token="guess", cause="cancel", **{"from": "+8653288881234"})
    elif case == "no_event":
        r = c.post(f"/hooks/cti/{TOKEN}", data={"callId": "x"})
    elif case == "bad_event":
        r = post(c, "transfer", "x")
    else:
        r = c.post(f"/hooks/cti/{TOKEN}", content=b"[1,2", headers={"content-type": "application/json"})
    assert r.status_code == code and app.store.journal_counts() == {}


async def test_hmac_signed_pbx(make_app) -> None:
    app = make_app(plugins={"phone": {"token": TOKEN, "hmac_secret": "pbx-secret"}})
    c = TestClient(build_web(app))
    body = json.dumps({"event": "hangup", "callId": "h1", "from": "+8653288881234", "direction": "in",
                       "cause": "cancel"}).encode()
    good = "sha256=" + hmac.new(b"pbx-secret", body, hashlib.sha256).hexdigest()
    headers = {"content-type": "application/json"}
    assert c.post(f"/hooks/cti/{TOKEN}", content=body, headers=headers).status_code == 403
    bad = {**headers, "x-signature-256": good[:-1] + ("0" if good[-1] != "0" else "1")}
    assert c.post(f"/hooks/cti/{TOKEN}", content=body, headers=bad).status_code == 403
    assert app.store.journal_counts() == {}
    ok = c.post(f"/hooks/cti/{TOKEN}", content=body, headers={**headers, "x-signature-256": good})
    assert ok.status_code == 200 and app.store.journal_counts() == {"pending": 1}


@pytest.mark.parametrize("drain_between", [True, False])
async def test_an_answer_after_its_hangup_ends_the_callback(app, drain_between) -> None:
    """Events out of order: the hangup (no answer yet: a missed call) and then the call's answer."""
    c = TestClient(build_web(app))
    assert missed(c, "late-1").json()["journaled"] == "missed"
    if drain_between:
        await app.pipeline.drain()
    r = post(c, "answer", "late-1", answeringNumber="803")
    assert r.json()["journaled"] == "answered"
    assert post(c, "answer", "late-1", answeringNumber="803").json() == {"ok": True}  # retried: once
    outcomes = await app.pipeline.drain()
    assert outcomes[-1].status == "followup"
    (t,) = app.store.list_tickets()
    assert "callback_done_at" in t.labels
    (timer,) = app.work.timers.list()
    assert timer["status"] == "cancelled"


@pytest.mark.parametrize("to", ["4008001234", "400 800 1234", "+86 400-800-1234", "0086 4008001234"])
async def test_a_missed_call_to_the_hotline_written_the_pbx_way_is_a_callback(make_app, to) -> None:
    """The PBX writes the dialled number as it likes; the configured hotline matches it in E.164.
    (Compared as text, a missed hotline call was silently dropped: no callback ticket.)"""
    app = make_app(plugins={"phone": {"token": TOKEN, "default_region": "CN",
                                      "hotline_numbers": ["+864008001234"]}})
    c = TestClient(build_web(app))
    post(c, "newCall", "h-" + to, **{"from": "0532 8888 1234", "to": to, "direction": "in"})
    r = post(c, "hangup", "h-" + to, cause="cancel")
    assert r.json()["journaled"] == "missed"
    other = post(c, "hangup", "o-" + to, cause="cancel", **{"from": "0532 8888 1234", "to": "4008009999",
                                                             "direction": "in"})
    assert other.json()["journaled"] is None  # another number is still not the hotline


async def test_concurrent_answer_and_hangup_of_a_call_are_not_a_missed_call(app) -> None:
    """The PBX's answer and hangup of one call may arrive at the same moment; the call's state is read
    and written by each, and the answer must not be lost (a lost answer is a false callback ticket)."""
    import asyncio

    import httpx

    transport = httpx.ASGITransport(app=build_web(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        async def call(i: int) -> None:
            cid = f"cc-{i}"
            await c.post(f"/hooks/cti/{TOKEN}", data={"event": "newCall", "callId": cid, "from": "+8653288881234",
                                                      "to": "+864008001234", "direction": "in"})
            await asyncio.gather(
                c.post(f"/hooks/cti/{TOKEN}", data={"event": "answer", "callId": cid, "answeringNumber": "801"}),
                c.post(f"/hooks/cti/{TOKEN}", data={"event": "hangup", "callId": cid, "cause": "normalClearing"}),
            )

        await asyncio.gather(*(call(i) for i in range(12)))
    await app.pipeline.drain()
    missed_calls = [t for t in app.store.list_tickets() if t.labels.get("call", {}).get("kind") == "missed"]
    assert missed_calls == []
