"""Twilio SMS: the signature exactly as Twilio signs, inbound webhooks journaled once, SMS threading by
open conversation, outbound SMS through the Messages API contract (fake built from the contract)."""

from __future__ import annotations

import base64
import urllib.parse

import httpx
import pytest
from starlette.testclient import TestClient

from svcbridge import AuthFailed, NotReady, StatusUpdate, TicketState
from svcbridge.web import build_web
from svcbridge_twilio import SmsNotifier
from svcbridge_twilio.signature import compute, validate

VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"),
          ("From", "+14158675309"), ("To", "+18005551212")]


def test_twilio_published_vectors() -> None:
    assert compute("12345", VECTOR_URL, VECTOR) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234"), ("Digits", "1234")]
    assert compute("12345", VECTOR_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert validate("12345", VECTOR_URL, VECTOR, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not validate("12345", VECTOR_URL + "&x=1", VECTOR, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not validate("12345", VECTOR_URL, [*VECTOR[:2], ("Digits", "9999"), *VECTOR[3:]],
                        "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    assert not validate("12345", VECTOR_URL, VECTOR, "")
    # the SDK accepts the URL with and without the default port
    sig = compute("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2", VECTOR)
    assert validate("12345", VECTOR_URL, VECTOR, sig)


ACCOUNT, TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-auth-token-xyz"
PUBLIC = "https://bridge.example.com"


@pytest.fixture
def app(make_app):
    return make_app(plugins={"twilio": {"account_sid": ACCOUNT, "auth_token": TOKEN, "public_url": PUBLIC,
                                        "from_number": "+8675512345678"}})


def sms(client: TestClient, sid: str, body: str, frm: str = "+8613800138000", token: str = TOKEN,
        extra: dict | None = None):
    params = {"MessageSid": sid, "AccountSid": ACCOUNT, "From": frm, "To": "+8675512345678", "Body": body,
              "NumMedia": "0", **(extra or {})}
    url = PUBLIC + "/hooks/twilio/sms"
    sig = compute(token, url, list(params.items()))
    return client.post("/hooks/twilio/sms", data=params, headers={"X-Twilio-Signature": sig})


async def test_inbound_sms_is_journaled_once_and_threads_by_open_conversation(app) -> None:
    client = TestClient(build_web(app))
    r = sms(client, "SM1", "打印机卡纸 SN12345")
    assert r.status_code == 200 and "<Response>" in r.text
    assert sms(client, "SM1", "打印机卡纸 SN12345").status_code == 200  # Twilio retry
    assert sms(client, "SM2", "还是不行").status_code == 200
    res = await app.pipeline.drain()
    assert [o.status for o in res] == ["created", "followup"]
    (t,) = app.store.list_tickets()
    assert (t.channel, t.contact.phone, t.subject) == ("sms", "+8613800138000", "打印机卡纸 SN12345")
    # once resolved, a new text starts a new ticket instead of reopening the old one
    await app.pipeline.apply_status_update(StatusUpdate(ticket_ref=t.ref, system="local",
                                                        state=TicketState.RESOLVED, external_event_id="r"))
    sms(client, "SM3", "new problem: fan noise")
    assert [o.status for o in await app.pipeline.drain()] == ["created"]
    assert app.store.count_tickets() == 2


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [({"token": "wrong-token"}, 403), ({"extra": {"AccountSid": "ACother"}}, 400), ({}, 200)],
)
def test_inbound_refusals(app, kwargs, code) -> None:
    client = TestClient(build_web(app))
    assert sms(client, "SM9", "hello", **kwargs).status_code == code


def test_unsigned_params_cannot_be_added(app) -> None:
    client = TestClient(build_web(app))
    params = {"MessageSid": "SM5", "AccountSid": ACCOUNT, "From": "+8613800138000", "To": "+1", "Body": "x"}
    sig = compute(TOKEN, PUBLIC + "/hooks/twilio/sms", list(params.items()))
    r = client.post("/hooks/twilio/sms", data={**params, "Body": "tampered"}, headers={"X-Twilio-Signature": sig})
    assert r.status_code == 403 and app.store.journal_counts() == {}


def test_store_outage_answers_503(app, monkeypatch) -> None:
    from svcbridge import StoreUnavailable

    monkeypatch.setattr(app.store, "journal_insert", lambda raw: (_ for _ in ()).throw(StoreUnavailable("x")))
    assert sms(TestClient(build_web(app)), "SM7", "hi").status_code == 503


class FakeTwilioApi:
    """The Messages API per the contract: Basic AccountSid:AuthToken, form fields, 201 with sid/status."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.fail: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        expected = "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"code": 20003, "message": "Authenticate", "status": 401})
        if self.fail:
            return self.fail.pop(0)
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        self.sent.append(form)
        return httpx.Response(201, json={"sid": f"SM{len(self.sent):032d}", "status": "queued", "num_segments": "1"})


async def test_acknowledgement_and_status_go_back_by_sms(app) -> None:
    fake = FakeTwilioApi()
    cfg = app.settings.plugin_config("twilio")
    app.delivery.notifiers["sms"] = SmsNotifier(cfg, transport=httpx.MockTransport(fake), allow=["api.twilio.com"])
    client = TestClient(build_web(app))
    sms(client, "SM1", "Printer jams")
    await app.run_once()
    await app.pipeline.apply_status_update(StatusUpdate(ticket_ref="SB-000001", system="local",
                                                        state=TicketState.ON_SITE, external_event_id="o"))
    await app.delivery.drain()
    assert [m["To"] for m in fake.sent] == ["+8613800138000", "+8613800138000"]
    assert fake.sent[0]["From"] == "+8675512345678" and "SB-000001" in fake.sent[0]["Body"]
    t = app.store.get_ticket("SB-000001")
    assert [ln.value for ln in t.links if ln.kind == "sms_sid"] == [f"SM{1:032d}", f"SM{2:032d}"]


async def test_outbound_errors_are_classified(app) -> None:
    from svcbridge import DeliveryItem, Notification, Ticket

    fake = FakeTwilioApi()
    cfg = app.settings.plugin_config("twilio")
    notifier = SmsNotifier(cfg, transport=httpx.MockTransport(fake), allow=["api.twilio.com"])
    note = Notification(channel="sms", template="acknowledgement", to="+8613800138000", body="hi")
    item = DeliveryItem(id=1, kind="notify", target="notify:sms", idempotency_key="k",
                        ticket=Ticket(id=1, ref="SB-000001", channel="sms"),
                        payload={"notification": note.model_dump(mode="json")})
    fake.fail = [httpx.Response(429, headers={"Retry-After": "7"}, json={"code": 20429, "status": 429})]
    with pytest.raises(NotReady) as exc:
        await notifier.send(item)
    assert exc.value.retry_after == 7
    bad = SmsNotifier(cfg.model_copy(update={"auth_token": __import__("pydantic").SecretStr("nope")}),
                      transport=httpx.MockTransport(fake), allow=["api.twilio.com"])
    with pytest.raises(AuthFailed):
        await bad.send(item)
