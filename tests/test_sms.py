"""SMS for every provider (issue 17): segments, control characters, STOP / 退订, threading by window or
ticket reference, MMS media; Telnyx messaging (Ed25519 inbound, dedupe, outbound, delivery status) and
Alibaba Cloud SMS (signature v1, templated notices, receipts, replies), against fakes built from the
contracts (429, 5xx, 401 included); Twilio's inbound MMS and its notifier honour the same rules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from svcbridge import (
    AuthFailed,
    DeliveryItem,
    Notification,
    NotReady,
    OptOutRegister,
    PermanentError,
    StatusUpdate,
    Ticket,
    utcnow,
)
from svcbridge.web import build_web
from svcbridge_sms.aliyun import AliyunSmsNotifier, sign
from svcbridge_sms.telnyx import TelnyxSmsNotifier
from svcbridge_sms.text import clean, fit, keyword, segments

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
API_KEY = "KEYtelnyx-sms"
PUSH = "aliyun-push-token"


# ------------------------------------------------------------------------------ text rules
@pytest.mark.parametrize(("text", "enc", "parts"), [
    ("", "gsm7", 1),
    ("Printer jams", "gsm7", 1),
    ("a" * 160, "gsm7", 1),
    ("a" * 161, "gsm7", 2),
    ("a" * 306, "gsm7", 2),
    ("a" * 307, "gsm7", 3),
    ("€" * 80, "gsm7", 1),  # extension characters take two septets
    ("€" * 81, "gsm7", 2),
    ("a" * 152 + "€" + "a" * 10, "gsm7", 2),  # the escape pair never straddles two parts
    ("é ñ ü Ä", "gsm7", 1),
    ("打" * 70, "ucs2", 1),
    ("打" * 71, "ucs2", 2),
    ("打" * 134, "ucs2", 2),
    ("打" * 135, "ucs2", 3),
    ("a" * 159 + "打", "ucs2", 3),  # one Chinese character makes the whole text UCS-2
    ("印表機卡紙" * 14, "ucs2", 1),  # zh-TW, 70 characters
    ("😀" * 35, "ucs2", 1),  # 70 UTF-16 units
    ("😀" * 36, "ucs2", 2),
    ("a" * 68 + "😀", "ucs2", 1),  # 70 UTF-16 units
    ("a" * 68 + "😀" + "a", "ucs2", 2),
    ("a" * 66 + "😀" + "a" * 67, "ucs2", 3),  # the pair does not fit part 1 (66 + 2 > 67): 3 parts
])
def test_segments(text, enc, parts) -> None:
    assert segments(text) == (enc, parts)


@pytest.mark.parametrize(("text", "max_parts"), [("打印机" * 100, 2), ("word " * 200, 3), ("short", 1)])
def test_fit_cuts_to_the_part_limit(text, max_parts) -> None:
    out = fit(text, max_parts)
    assert segments(out)[1] <= max_parts and (out == text or out.endswith("…"))


@pytest.mark.parametrize(("text", "want"), [
    ("STOP", "stop"), ("stop.", "stop"), (" Stop! ", "stop"), ("UNSUBSCRIBE", "stop"),
    ("退订", "stop"), ("退訂", "stop"), (" TD ", "stop"), ("T", "stop"), ("取消订阅。", "stop"), ("\uff33\uff34\uff2f\uff30", "stop"),
    ("START", "start"), ("unstop", "start"), ("订阅", "start"),
    ("please don't stop the service", None), ("退订了吗\uff1f打印机还是坏的", None), ("Printer jams", None), ("", None),
    # the unambiguous words with a code or courtesy around them, as customers actually reply
    ("TD退订", "stop"), ("T 退订", "stop"), ("退订，谢谢", "stop"), ("退訂，謝謝\uff01", "stop"), ("我要退订", "stop"),
    ("请退订。", "stop"), ("STOP ALL", "stop"), ("Stop, thanks", "stop"), ("Unsubscribe please", "stop"),
    ("不要退订", None), ("Thank you", None), ("cancel please", None), ("退订 打印机", None), ("stop it now", None),
])
def test_opt_out_keywords(text, want) -> None:
    assert keyword(text) == want


@pytest.mark.parametrize(("raw", "want"), [
    ("a\x00b", "ab"), ("red\x1b[31mtext", "red[31mtext"), ("x\u202ey", "xy"), ("zero\u200bwidth", "zerowidth"),
    ("line1\r\nline2\rline3", "line1\nline2\nline3"), ("tab\tkept", "tab\tkept"), ("\ud800lone", "\ufffdlone"),
    ("打印机\x07卡纸", "打印机卡纸"),
])
def test_control_characters_are_stripped(raw, want) -> None:
    assert clean(raw) == want


# ------------------------------------------------------------------------------ Telnyx messaging
def signed(body: bytes, ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {"telnyx-timestamp": str(ts), "content-type": "application/json",
            "telnyx-signature-ed25519": base64.b64encode(KEY.sign(f"{ts}|".encode() + body)).decode()}


def sms_event(event_id: str, text: str, frm: str = "+8613800138000", media: list | None = None) -> bytes:
    return json.dumps({"data": {"event_type": "message.received", "id": event_id, "payload": {
        "id": "msg-" + event_id, "direction": "inbound", "type": "MMS" if media else "SMS", "text": text,
        "from": {"phone_number": frm}, "to": [{"phone_number": "+8675512345678"}], "media": media or []}}},
        ensure_ascii=False).encode()


class FakeTelnyx:
    """POST /v2/messages per the contract (Bearer), plus MMS media on a storage host."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.fail: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "media.telnyx.test":
            if request.url.path.endswith("huge.jpg"):
                return httpx.Response(200, headers={"content-type": "image/jpeg"}, content=b"\xff" * 20_000)
            return httpx.Response(200, headers={"content-type": "image/jpeg"}, content=b"\xff\xd8photo")
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return httpx.Response(401, json={"errors": [{"code": "10009", "title": "Authentication failed"}]})
        if self.fail:
            return self.fail.pop(0)
        self.sent.append(json.loads(request.content))
        return httpx.Response(200, json={"data": {"id": f"out-{len(self.sent)}", "parts": 1}})


@pytest.fixture
def fake() -> FakeTelnyx:
    return FakeTelnyx()


@pytest.fixture
async def app(make_app, fake):
    a = make_app(outbound_allow=["api.telnyx.com", "media.telnyx.test"], plugins={"sms": {
        "outbound": "telnyx", "thread_window_hours": 24, "transport": httpx.MockTransport(fake),
        "telnyx": {"public_key": PUB, "api_key": API_KEY, "from_number": "+8675512345678", "max_media": 10_000,
                   "max_parts": 2}}})
    await a.pm.lifecycle("startup", app=a)
    return a


def post(c: TestClient, body: bytes, headers: dict | None = None):
    return c.post("/hooks/telnyx/sms", content=body, headers=headers or signed(body))


async def test_telnyx_inbound_mms_outbound_ack_and_delivery_status(app, fake) -> None:
    c = TestClient(build_web(app))
    body = sms_event("ev1", "打印机卡纸 SN12345\x07", media=[
        {"url": "https://media.telnyx.test/p.jpg", "content_type": "image/jpeg"},
        {"url": "https://media.telnyx.test/huge.jpg", "content_type": "image/jpeg"}])
    assert post(c, body).status_code == 200
    assert post(c, body, signed(body, int(time.time()) + 2)).status_code == 200  # Telnyx retry: same event id
    assert post(c, body, signed(body)).status_code in (200, 403)
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert (t.channel, t.contact.phone, t.subject) == ("sms", "+8613800138000", "打印机卡纸 SN12345")
    assert t.labels["sms_segments"] == {"parts": 1, "encoding": "ucs2"}
    full = app.store.get_ticket(t.ref)
    assert [a.content_type for a in full.attachments] == ["image/jpeg"]
    assert "media not fetched: media of 20000 bytes is over the limit" in full.description
    (sent,) = fake.sent  # the acknowledgement, by SMS, within 2 parts
    assert sent["to"] == "+8613800138000" and t.ref in sent["text"] and segments(sent["text"])[1] <= 2
    # the delivery status arrives as an event on the ticket
    status = json.dumps({"data": {"event_type": "message.finalized", "id": "st1", "payload": {
        "id": "out-1", "to": [{"phone_number": "+8613800138000", "status": "delivered"}]}}}).encode()
    r = post(c, status)
    assert r.status_code == 200 and r.json()["ticket"] == t.ref
    notes = [e for e in app.store.get_ticket(t.ref).events if e.type == "internal_note"]
    assert notes and "out-1 finalized: +8613800138000: delivered" in json.dumps(notes[-1].data, ensure_ascii=False)


@pytest.mark.parametrize("case", ["tampered", "stale", "replayed", "unsigned"])
def test_telnyx_sms_refusals(app, case) -> None:
    c = TestClient(build_web(app))
    body = sms_event("ev-" + case, "hello")
    headers = signed(body)
    if case == "tampered":
        body = body.replace(b"hello", b"hellO")
    elif case == "stale":
        headers = signed(body, int(time.time()) - 400)
    elif case == "unsigned":
        headers = {"content-type": "application/json"}
    elif case == "replayed":
        assert post(c, body, headers).status_code == 200
        n = app.store.journal_counts()
        assert post(c, body, headers).status_code == 403 and app.store.journal_counts() == n
        return
    assert post(c, body, headers).status_code == 403 and app.store.journal_counts() == {}


async def test_stop_is_honoured_recorded_and_threads_by_window_or_reference(app, fake) -> None:
    c = TestClient(build_web(app))
    post(c, sms_event("e1", "Copier E-302"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    post(c, sms_event("e2", "退订"))
    await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert t.labels["sms_opt_out"]["word"] == "退订" and app.store.count_tickets() == 1
    n_sent = len(fake.sent)
    # a status notice to a number that opted out is not sent: a dead row with the reason
    await app.pipeline.apply_status_update(StatusUpdate(ticket_ref=t.ref, system="local", state="on_site",
                                                        external_event_id="s1"))
    await app.delivery.drain()
    assert len(fake.sent) == n_sent
    dead = [r for r in app.delivery.outbox.list() if r["target"] == "notify:sms" and r["status"] == "dead"]
    assert dead and "opted out" in dead[-1]["last_error"]
    # START opts back in
    post(c, sms_event("e3", "START"))
    await app.run_once()
    assert "sms_opt_out" not in app.store.get_ticket(t.ref).labels
    # outside the window (measured from the ticket's last update) a new text is a new ticket
    later = sms_event("e4", "Another fault")
    await _age(app, t.ref, hours=25)
    post(c, later)
    await app.run_once()
    assert app.store.count_tickets() == 2
    newest = max(app.store.list_tickets(), key=lambda x: x.id)
    assert newest.labels["sms_previous_ticket"] == t.ref
    # a ticket reference in the text threads onto that ticket whatever the window
    post(c, sms_event("e5", f"about {t.ref}: fixed now"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup"] and res["outcomes"][0].ticket_ref == t.ref


async def _age(app, ref: str, hours: float) -> None:
    from sqlalchemy import update

    from svcbridge.store import schema as s

    with app.store.tx() as conn:
        old = app.store.get_ticket(ref).updated_at - timedelta(hours=hours)
        conn.execute(update(s.tickets).where(s.tickets.c.ref == ref).values(updated_at=old))


def _item(to: str = "+8613800138000", template: str = "acknowledgement", lang: str = "zh-CN") -> DeliveryItem:
    note = Notification(channel="sms", template=template, to=to, body="您的报修单 SB-000001 已受理。",
                        data={"language": lang})
    return DeliveryItem(id=1, kind="notify", target="notify:sms", idempotency_key="k1",
                        ticket=Ticket(id=1, ref="SB-000001", channel="sms", subject="打印机卡纸"),
                        payload={"notification": note.model_dump(mode="json")})


@pytest.mark.parametrize(("reply", "error"), [
    (httpx.Response(429, headers={"Retry-After": "3"}, json={"errors": []}), NotReady),
    (httpx.Response(503, json={"errors": []}), NotReady),
    (httpx.Response(422, json={"errors": [{"code": "40310", "title": "Invalid 'to'"}]}), PermanentError),
])
async def test_telnyx_outbound_errors(app, fake, tmp_path, reply, error) -> None:
    cfg = app.settings.plugin_config("sms").telnyx
    n = TelnyxSmsNotifier(cfg, OptOutRegister.for_settings(app.settings), ["api.telnyx.com"], httpx.MockTransport(fake))
    fake.fail = [reply]
    with pytest.raises(error):
        await n.send(_item())
    bad = TelnyxSmsNotifier(cfg.model_copy(update={"api_key": __import__("pydantic").SecretStr("x")}),
                            OptOutRegister.for_settings(app.settings), ["api.telnyx.com"], httpx.MockTransport(fake))
    with pytest.raises(AuthFailed):
        await bad.send(_item())


# ------------------------------------------------------------------------------ Alibaba Cloud SMS
ALI = {"access_key_id": "testid", "access_key_secret": "testsecret", "sign_name": "阿里云短信测试",
       "push_token": PUSH, "templates": {"acknowledgement": {"zh-CN": "SMS_1001", "zh-TW": "SMS_1002", "en": "SMS_1003"},
                                         "default": {"zh-CN": "SMS_1999"}}}


def test_aliyun_signature_v1_documented_example() -> None:
    """The parameters of Alibaba's SendSms signature example, signed as its documentation describes."""
    params = {"AccessKeyId": "testid", "Action": "SendSms", "Format": "XML", "OutId": "123",
              "PhoneNumbers": "15300000001", "RegionId": "cn-hangzhou", "SignName": "阿里云短信测试专用",
              "SignatureMethod": "HMAC-SHA1", "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
              "SignatureVersion": "1.0", "TemplateCode": "SMS_71390007",
              "TemplateParam": '{"customer":"test"}', "Timestamp": "2017-07-12T02:42:19Z", "Version": "2017-05-25"}
    # computed independently: RFC 3986 query, GET&%2F&..., HMAC-SHA1 with 'testsecret&'
    q = "&".join(f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}" for k, v in sorted(params.items()))
    want = base64.b64encode(hmac.new(b"testsecret&", ("GET&%2F&" + urllib.parse.quote(q, safe="~")).encode(),
                                     hashlib.sha1).digest()).decode()
    assert sign(params, "testsecret") == want
    from svcbridge_sms.aliyun import enc

    assert enc("a b*~/+") == "a%20b%2A~%2F%2B" and enc("阿") == "%E9%98%BF"
    assert sign({**params, "OutId": "124"}, "testsecret") != want


class FakeDysms:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.reply: list[httpx.Response] = []
        self.nonces: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        q = dict(urllib.parse.parse_qsl(request.url.query.decode()))
        self.calls.append(q)
        sig = q.pop("Signature")
        if sig != sign(q, "testsecret"):
            return httpx.Response(200, json={"Code": "SignatureDoesNotMatch", "Message": "bad signature"})
        # Alibaba's gateway remembers every nonce it saw (throttled requests too) for 15+ minutes
        if q["SignatureNonce"] in self.nonces:
            return httpx.Response(400, json={"Code": "SignatureNonceUsed",
                                             "Message": "Specified signature nonce was used already."})
        self.nonces.add(q["SignatureNonce"])
        if self.reply:
            return self.reply.pop(0)
        return httpx.Response(200, json={"Code": "OK", "Message": "OK", "BizId": f"biz{len(self.calls)}",
                                         "RequestId": "r"})


@pytest.mark.parametrize(("lang", "code"), [("zh-CN", "SMS_1001"), ("zh-TW", "SMS_1002"), ("en", "SMS_1003"),
                                            ("en-GB", "SMS_1003"), ("ja", "SMS_1001")])
async def test_aliyun_templated_notice_per_language(make_app, tmp_path, lang, code) -> None:
    app = make_app(plugins={"sms": {"outbound": "aliyun", "aliyun": ALI}})
    fake = FakeDysms()
    n = AliyunSmsNotifier(app.settings.plugin_config("sms").aliyun, OptOutRegister.for_settings(app.settings),
                          ["dysmsapi.aliyuncs.com"], httpx.MockTransport(fake))
    res = await n.send(_item(lang=lang))
    (q,) = fake.calls
    assert q["TemplateCode"] == code and q["PhoneNumbers"] == "13800138000" and q["OutId"] == "SB-000001"
    assert json.loads(q["TemplateParam"])["ref"] == "SB-000001" and q["SignName"] == "阿里云短信测试"
    assert res.links[0].value == "biz1"


@pytest.mark.parametrize(("reply", "error"), [
    (httpx.Response(200, json={"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"}), NotReady),
    (httpx.Response(429, json={}), NotReady),
    (httpx.Response(502, text="bad gateway"), NotReady),
    (httpx.Response(200, json={"Code": "InvalidAccessKeyId.NotFound", "Message": "x"}), AuthFailed),
    (httpx.Response(200, json={"Code": "isv.SMS_TEMPLATE_ILLEGAL", "Message": "模板不合法"}), PermanentError),
])
async def test_aliyun_errors(make_app, tmp_path, reply, error) -> None:
    app = make_app(plugins={"sms": {"outbound": "aliyun", "aliyun": ALI}})
    fake = FakeDysms()
    fake.reply = [reply]
    n = AliyunSmsNotifier(app.settings.plugin_config("sms").aliyun, OptOutRegister.for_settings(app.settings),
                          ["dysmsapi.aliyuncs.com"], httpx.MockTransport(fake))
    with pytest.raises(error):
        await n.send(_item())


async def test_aliyun_receipts_and_replies(make_app) -> None:
    app = make_app(plugins={"sms": {"aliyun": ALI}})
    c = TestClient(build_web(app))
    up = [{"phone_number": "13800138000", "content": "打印机还是卡纸", "send_time": "2026-12-03 10:00:00",
           "dest_code": "1234", "sequence_id": 987654}]
    assert c.post("/hooks/aliyun/sms/wrong/up", json=up).status_code == 403
    r = c.post(f"/hooks/aliyun/sms/{PUSH}/up", json=up)
    assert r.status_code == 200 and r.json() == {"code": 0, "msg": "成功"}
    c.post(f"/hooks/aliyun/sms/{PUSH}/up", json=up)  # pushed again: journaled once
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert (t.channel, t.contact.phone, t.subject) == ("sms", "+8613800138000", "打印机还是卡纸")
    report = [{"phone_number": "13800138000", "send_time": "2026-12-03 10:01:00", "report_time": "2026-12-03 10:01:05",
               "success": False, "err_code": "DELIVERED_FAIL", "err_msg": "用户关机", "sms_size": "1",
               "biz_id": "biz9", "out_id": t.ref}]
    assert c.post(f"/hooks/aliyun/sms/{PUSH}/report", json=report).status_code == 200
    c.post(f"/hooks/aliyun/sms/{PUSH}/report", json=report)
    notes = [e for e in app.store.get_ticket(t.ref).events if e.type == "internal_note"]
    assert len(notes) == 1 and "not delivered (DELIVERED_FAIL: 用户关机)" in json.dumps(notes[0].data, ensure_ascii=False)
    assert c.post(f"/hooks/aliyun/sms/{PUSH}/report", content=b"{}").status_code == 400


# ------------------------------------------------------------------------------ Twilio follows the rules
async def test_twilio_mms_is_fetched_with_auth_and_stop_blocks_its_notices(make_app) -> None:
    from svcbridge_twilio import SmsNotifier
    from svcbridge_twilio.signature import compute

    account, token = "AC" + "0" * 32, "twilio-token"
    seen: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.twilio.com" and "/Media/" in request.url.path:
            want = "Basic " + base64.b64encode(f"{account}:{token}".encode()).decode()
            if request.headers.get("authorization") != want:
                return httpx.Response(401)
            return httpx.Response(307, headers={"location": "https://cdn.twilio.test/abc.jpg"})
        if request.url.host == "cdn.twilio.test":
            assert "authorization" not in request.headers  # the credential stays with Twilio
            return httpx.Response(200, headers={"content-type": "image/jpeg"}, content=b"\xff\xd8jpeg")
        return httpx.Response(201, json={"sid": "SMout", "status": "queued"})

    app = make_app(outbound_allow=["api.twilio.com", "cdn.twilio.test"], plugins={"twilio": {
        "account_sid": account, "auth_token": token, "public_url": "https://bridge.example.com",
        "from_number": "+8675512345678", "transport": httpx.MockTransport(api)}})
    c = TestClient(build_web(app))

    def send(sid: str, body: str, media: bool = False):
        p = {"MessageSid": sid, "AccountSid": account, "From": "+8613800138000", "To": "+8675512345678",
             "Body": body, "NumMedia": "1" if media else "0"}
        if media:
            p |= {"MediaUrl0": f"https://api.twilio.com/2010-04-01/Accounts/{account}/Messages/{sid}/Media/ME1",
                  "MediaContentType0": "image/jpeg"}
        sig = compute(token, "https://bridge.example.com/hooks/twilio/sms", list(p.items()))
        return c.post("/hooks/twilio/sms", data=p, headers={"X-Twilio-Signature": sig})

    assert send("SM1", "坏了", media=True).status_code == 200
    assert send("SM2", "STOP").status_code == 200
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    full = app.store.get_ticket(t.ref)
    assert [a.content_type for a in full.attachments] == ["image/jpeg"] and "api.twilio.com" not in full.description
    assert "sms_opt_out" in full.labels
    notifier = SmsNotifier(app.settings.plugin_config("twilio"), transport=httpx.MockTransport(api),
                           allow=["api.twilio.com"])
    item = _item().model_copy(update={"ticket": full})
    with pytest.raises(PermanentError, match="opted out"):
        await notifier.send(item)


async def test_twilio_notifier_honours_the_register_on_every_ticket_of_the_number(make_app) -> None:
    """A STOP / 退订 texted on one ticket stops Twilio's SMS about any other ticket of that number
    (a ticket opened before the STOP has no label; Telnyx and Alibaba already read the register)."""
    sent: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201, json={"sid": "SMout", "status": "queued"})

    app = make_app(outbound_allow=["api.twilio.com"], plugins={"twilio": {
        "account_sid": "AC" + "0" * 32, "auth_token": "twilio-token", "public_url": "https://bridge.example.com",
        "from_number": "+8675512345678", "transport": httpx.MockTransport(api)}})
    notifier = app.delivery.notifiers["sms"]
    await notifier.send(_item())  # not opted out: sent
    assert len(sent) == 1
    OptOutRegister.for_settings(app.settings).record("+8613800138000", "退订", "sms", utcnow())
    with pytest.raises(PermanentError, match="opted out"):
        await notifier.send(_item())  # the ticket carries no sms_opt_out label
    assert len(sent) == 1
    await notifier.send(_item(to="+8613900139000"))  # another number still gets its SMS
    assert len(sent) == 2
    # START opts back in: an older ticket still labelled from the register must not block it
    OptOutRegister.for_settings(app.settings).clear("+8613800138000", utcnow())
    stale = _item()
    stale.ticket.labels["sms_opt_out"] = {"register": "'退订' at 2026-12-01"}
    await notifier.send(stale)
    assert len(sent) == 3


async def test_aliyun_throttled_notice_is_sent_on_its_retry(make_app, tmp_path) -> None:
    """A retry is a new request to Alibaba: a new SignatureNonce (the gateway refuses a nonce it saw,
    throttled or not, so a retried throttled notice became a dead letter)."""
    app = make_app(plugins={"sms": {"outbound": "aliyun", "aliyun": ALI}})
    fake = FakeDysms()
    fake.reply = [httpx.Response(200, json={"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"})]
    n = AliyunSmsNotifier(app.settings.plugin_config("sms").aliyun, OptOutRegister.for_settings(app.settings),
                          ["dysmsapi.aliyuncs.com"], httpx.MockTransport(fake))
    with pytest.raises(NotReady):
        await n.send(_item())
    res = await n.send(_item().model_copy(update={"attempts": 1}))  # the outbox's retry
    assert res.links[0].value == "biz2" and len(fake.nonces) == 2


async def test_twilio_notices_are_cut_to_max_parts_like_every_provider(make_app) -> None:
    """Twilio's notifier sent up to 1,600 characters: 24 UCS-2 parts for a Chinese notice; every SMS
    notice is cut to ``[plugins.sms] max_parts``."""
    sent: list[dict] = []

    def api(request: httpx.Request) -> httpx.Response:
        sent.append(dict(urllib.parse.parse_qsl(request.content.decode())))
        return httpx.Response(201, json={"sid": f"SM{len(sent)}", "status": "queued"})

    app = make_app(outbound_allow=["api.twilio.com"], plugins={"sms": {"max_parts": 2}, "twilio": {
        "account_sid": "AC" + "0" * 32, "auth_token": "twilio-token", "public_url": "https://bridge.example.com",
        "from_number": "+8675512345678", "transport": httpx.MockTransport(api)}})
    notifier = app.delivery.notifiers["sms"]
    for body, parts in (("您的报修单已受理，工程师将在两小时内联系您。" * 30, 2), ("Ticket SB-000001 received.", 1)):
        item = _item()
        item.payload["notification"]["body"] = body
        await notifier.send(item)
        assert segments(sent[-1]["Body"])[1] == parts
        assert sent[-1]["Body"] == body or sent[-1]["Body"].endswith("…")


async def test_a_stop_recorded_by_one_replica_stops_the_sms_of_another(make_app, fake, tmp_path) -> None:
    """The register was a SQLite file in the data_dir of the replica that processed the STOP: a second
    replica on the same store (its own data_dir) did not see it and texted the customer anyway."""
    plugins = {"sms": {"outbound": "telnyx", "transport": httpx.MockTransport(fake),
                       "telnyx": {"public_key": PUB, "api_key": API_KEY, "from_number": "+8675512345678"}}}
    one = make_app(outbound_allow=["api.telnyx.com"], plugins=plugins)
    await one.pm.lifecycle("startup", app=one)
    two = make_app(outbound_allow=["api.telnyx.com"], plugins=plugins, data_dir=str(tmp_path / "replica2"),
                   database_url=one.settings.db_url)
    assert two.settings.data_dir != one.settings.data_dir
    c = TestClient(build_web(one))
    post(c, sms_event("e1", "退订"))
    await one.run_once()
    notifier = two.delivery.notifiers["sms"]
    with pytest.raises(PermanentError, match="opted out"):
        await notifier.send(_item())
    assert fake.sent == []
    await notifier.send(_item(to="+8613900139000"))  # another number still gets its SMS
    assert len(fake.sent) == 1


async def test_the_old_register_file_is_imported_once_and_renamed(make_app, fake) -> None:
    """Opt-outs recorded before the register moved into the store are honoured, not forgotten."""
    import sqlite3

    from svcbridge_sms import optout_register

    app = make_app(outbound_allow=["api.telnyx.com"], plugins={"sms": {}})
    old = Path(app.settings.data_dir) / "sms-optout.db"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE optouts (phone TEXT PRIMARY KEY, at TEXT NOT NULL, word TEXT NOT NULL, "
                   "source TEXT NOT NULL)")
        db.execute("INSERT INTO optouts VALUES ('+8613800138000', '2026-11-01T08:00:00+00:00', 'TD', 'sms')")
        db.execute("INSERT INTO optouts VALUES ('+8613900139000', '2026-11-01T08:00:00+00:00', 'STOP', 'sms')")
    register = OptOutRegister.for_settings(app.settings)
    # a START recorded in the store after the file's STOP wins over it
    register.record("+8613900139000", "STOP", "sms", utcnow())
    register.clear("+8613900139000", utcnow())
    optout_register(app.settings)
    assert register.blocked("+8613800138000") == "'TD' at 2026-11-01T08:00:00+00:00"
    assert register.blocked("+8613900139000") is None  # the file's older STOP did not come back
    assert not old.exists() and old.with_name("sms-optout.db.imported").exists()
    register.clear("+8613800138000", utcnow())
    optout_register(app.settings)  # nothing imported again
    assert register.blocked("+8613800138000") is None


def test_two_processes_importing_the_old_file_at_once_both_finish(tmp_path) -> None:
    """A daemon and a run --once on one data_dir both find the file: the one that renames it second
    finds it gone. That is an import done (by the other), not an error failing the SMS plugin."""
    import sqlite3
    from datetime import UTC, datetime

    from svcbridge.store import db
    from svcbridge_sms.optout import import_file

    old = tmp_path / "sms-optout.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE optouts (phone TEXT PRIMARY KEY, at TEXT, word TEXT, source TEXT)")
        conn.execute("INSERT INTO optouts VALUES ('+8613800138000', '2026-11-01T08:00:00+00:00', 'TD', 'sms')")
    engine = db.make_engine(f"sqlite:///{tmp_path}/store.db")
    db.upgrade(engine)
    register = OptOutRegister(engine)

    class OtherProcessFinishesMeanwhile:
        def record(self, *args: object) -> None:
            register.record(*args)  # type: ignore[arg-type]
            if old.exists():  # the other process's import ends now: it renames the file
                old.rename(old.with_name(old.name + ".imported"))

    assert import_file(old, OtherProcessFinishesMeanwhile()) == 1  # type: ignore[arg-type]
    assert register.blocked("+8613800138000") == f"'TD' at {datetime(2026, 11, 1, 8, tzinfo=UTC).isoformat()}"
    assert import_file(old, register) == 0  # and later: nothing left to import
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return f"sqlite:///{tmp_path}/shared.db"


def test_the_register_keeps_the_latest_word_by_time(db_url: str) -> None:
    """On both stores (the upsert is dialect-specific), migrated by Alembic like a real one."""
    from datetime import UTC, datetime

    from svcbridge.store import db

    engine = db.make_engine(db_url)
    db.upgrade(engine)
    reg = OptOutRegister(engine)
    t0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
    reg.record("+8613800138000", "STOP", "sms", t0)
    reg.record("+8613800138000", "退订", "sms", t0 - timedelta(hours=1))  # an older STOP replayed
    assert reg.blocked("+8613800138000") == f"'STOP' at {t0.isoformat()}"
    reg.clear("+8613800138000", t0 - timedelta(minutes=1))  # a START older than the STOP
    assert reg.blocked("+8613800138000") is not None
    reg.clear("+8613800138000", t0 + timedelta(minutes=1))
    assert reg.blocked("+8613800138000") is None and reg.blocked(None) is None
    # the STOP processed again after the START (a crash replays it, another replica was behind):
    # the customer's last word is still START
    reg.record("+8613800138000", "STOP", "sms", t0)
    assert reg.blocked("+8613800138000") is None
    # a START first, its older STOP later: the same
    reg.clear("+8613700137000", t0 + timedelta(minutes=1))
    reg.record("+8613700137000", "STOP", "sms", t0)
    assert reg.blocked("+8613700137000") is None
    reg.record("+8613700137000", "STOP", "sms", t0 + timedelta(minutes=2))  # and a newer STOP counts
    assert reg.blocked("+8613700137000") == f"'STOP' at {(t0 + timedelta(minutes=2)).isoformat()}"
    engine.dispose()
