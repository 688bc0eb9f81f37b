"""Answers to fax customers (issue 17 item 6): the notice rendered to a PDF fax and sent through Telnyx
or Sinch (fakes built from the contracts, 429 / 401 included); Tesseract reads the ticket reference
back off the fax we send. Without a fax gateway the customer's directory e-mail is used through
[notifications] fallback_channels, and with nowhere to go the notice waits parked with an alert."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from conftest import require_binary
from svcbridge.web import build_web
from svcbridge_fax.ocr import page_images, read_page
from svcbridge_fax.outbound import render_pdf

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
CUSTOMERS = {"directory": [{"name": "Qingdao Port Hospital", "phones": ["+8653288881234"],
                            "emails": ["it@qdph.example.cn"], "language": "zh-CN"}]}


def hylafax_mail(n: int = 1) -> bytes:
    return (
        "From: HylaFAX Agent <FaxMaster>\r\nTo: support@bridge.test\r\n"
        f'Subject: Fax received from "+86 532 8888 1234"\r\nMessage-ID: <fax{n}@fax>\r\n'
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n  Sender: +86 532 8888 1234\r\n  Pages: 1\r\n"
    ).encode()


def drop(tmp_path: Path, n: int = 1) -> None:
    d = tmp_path / "maildir"
    for sub in ("new", "cur", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "new" / f"fax{n}").write_bytes(hylafax_mail(n))


def ocr_pdf(pdf: bytes, langs: list[str]) -> str:
    images, _total, _ = page_images(pdf, "application/pdf", 5)
    return "\n".join(read_page(img, langs, 60)[0] for img in images)


def test_a_long_chinese_notice_renders_to_readable_fax_pages() -> None:
    require_binary("tesseract")
    body = "Ticket SB-000042\n" + "您的报修单已受理，工程师将在四小时内联系您。" * 120
    pdf, pages = render_pdf("[SB-000042] 报修已受理", body)
    assert pages >= 2 and pdf.startswith(b"%PDF")
    images, total, _ = page_images(pdf, "application/pdf", 5)
    assert total == pages
    top = images[0].crop((0, 0, images[0].width, 500))  # the heading and first lines: OCR of a dense page is slow
    first = read_page(top, ["chi_sim", "eng"], 60)[0]
    assert "SB-000042" in first and "报修" in "".join(first.split())


class FakeFaxApi:
    """Telnyx POST /v2/faxes (202) and Phaxio POST /v2.1/faxes (multipart, Basic)."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.fail: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.fail:
            return self.fail.pop(0)
        if request.url.path == "/v2/faxes":
            if request.headers.get("authorization") != "Bearer fax-key":
                return httpx.Response(401, json={"errors": [{"code": "10009"}]})
            return httpx.Response(202, json={"data": {"id": f"fax-out-{len(self.calls)}", "status": "queued"}})
        if request.url.path == "/v2.1/faxes":
            if request.headers.get("authorization") != "Basic " + base64.b64encode(b"pk:ps").decode():
                return httpx.Response(401, json={"success": False, "message": "bad key"})
            return httpx.Response(200, json={"success": True, "data": {"id": 555}})
        return httpx.Response(404)


def telnyx_settings(fake: FakeFaxApi, **extra):
    return {"plugins": {"customers": CUSTOMERS, "fax": {
        "default_region": "CN", "ocr": {"enabled": False}, "outbound": "telnyx", "transport": httpx.MockTransport(fake),
        "telnyx": {"public_key": PUB, "api_key": "fax-key", "connection_id": "conn-1", "from_number": "+8675512345678",
                   "public_url": "https://bridge.example.com"}, **extra}},
        "outbound_allow": ["api.telnyx.com"]}


async def test_a_fax_customer_is_answered_by_fax_through_telnyx(make_app, tmp_path) -> None:
    require_binary("tesseract")
    fake = FakeFaxApi()
    app = make_app(**telnyx_settings(fake))
    fake.fail = [httpx.Response(429, headers={"Retry-After": "0"}, json={})]
    drop(tmp_path)
    await app.run_once()
    await asyncio.sleep(0.1)  # past the retry's backoff
    await app.delivery.drain()
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and t.contact.phone == "+8653288881234"
    sent = [c for c in fake.calls if c.url.path == "/v2/faxes"]
    assert len(sent) == 2  # 429 first, then accepted
    body = json.loads(sent[-1].content)
    assert (body["to"], body["from"], body["connection_id"]) == ("+8653288881234", "+8675512345678", "conn-1")
    assert body["media_url"].startswith("https://bridge.example.com/hooks/telnyx/fax/media/")
    # Telnyx fetches the PDF from the daemon; we read our own fax back
    path = body["media_url"].removeprefix("https://bridge.example.com")
    c = TestClient(build_web(app))
    r = c.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert t.ref in ocr_pdf(r.content, ["eng", "chi_sim"])
    assert c.get(path.replace(path[-44:-4], "0" * 40)).status_code == 404
    assert c.get(path[:-44] + "..%2F..%2Fsvcbridge.db").status_code == 404
    t = app.store.get_ticket(t.ref)
    assert [ln.value for ln in t.links if ln.kind == "fax_out_id"] == ["fax-out-2"]
    # Telnyx reports the outcome of the fax we sent: an internal note on the ticket
    await app.pm.lifecycle("startup", app=app)
    import time

    for n, (kind, extra) in enumerate((("fax.failed", {"failure_reason": "receiver_busy"}), ("fax.delivered", {}))):
        ev = json.dumps({"data": {"event_type": kind, "id": f"out-ev-{n}", "payload": {
            "fax_id": "fax-out-2", "to": "+8653288881234", **extra}}}).encode()
        ts = str(int(time.time()))
        sig = base64.b64encode(KEY.sign(ts.encode() + b"|" + ev)).decode()
        r = c.post("/hooks/telnyx/fax", content=ev, headers={"telnyx-timestamp": ts, "telnyx-signature-ed25519": sig})
        assert r.status_code == 200 and r.json()["ticket"] == t.ref
    notes = [e.data for e in app.store.get_ticket(t.ref).events if e.type == "internal_note"]
    assert "failed (receiver_busy)" in json.dumps(notes) and "fax-out-2 to +8653288881234 delivered" in json.dumps(notes)
    assert not list((tmp_path / "outgoing").glob("*.eml")) if (tmp_path / "outgoing").exists() else True


async def test_a_revoked_telnyx_key_parks_fax_notices_with_an_alert(make_app, tmp_path) -> None:
    fake = FakeFaxApi()
    app = make_app(**telnyx_settings(fake))
    fake.fail = [httpx.Response(401, json={"errors": [{"code": "10009"}]})]
    drop(tmp_path)
    await app.run_once()
    (row,) = [r for r in app.delivery.outbox.list() if r["target"] == "notify:fax"]
    assert row["status"] == "parked" and "notify:fax" in app.delivery.alerts


async def test_sinch_sends_the_pdf_in_the_request(make_app, tmp_path) -> None:
    fake = FakeFaxApi()
    app = make_app(outbound_allow=["api.phaxio.com"], plugins={"customers": CUSTOMERS, "fax": {
        "default_region": "CN", "ocr": {"enabled": False}, "outbound": "sinch", "transport": httpx.MockTransport(fake),
        "sinch": {"callback_token": "t", "public_url": "https://bridge.example.com", "api_key": "pk",
                  "api_secret": "ps"}}})
    drop(tmp_path)
    await app.run_once()
    (call,) = [c for c in fake.calls if c.url.path == "/v2.1/faxes"]
    msg = email.message_from_bytes(b"Content-Type: " + call.headers["content-type"].encode() + b"\r\n\r\n"
                                   + call.content, policy=email.policy.HTTP)
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
    assert parts["to"].get_content().strip() == "+8653288881234"
    assert parts["file"].get_content_type() == "application/pdf"
    assert parts["file"].get_payload(decode=True).startswith(b"%PDF")


async def test_without_a_gateway_the_directory_email_is_the_fallback(make_app, tmp_path) -> None:
    app = make_app(notifications={"fallback_channels": ["email"]},
                   plugins={"customers": CUSTOMERS, "fax": {"default_region": "CN", "ocr": {"enabled": False}}})
    drop(tmp_path)
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and t.contact.email == "it@qdph.example.cn"
    (mail,) = list((tmp_path / "outgoing").glob("*.eml"))
    assert b"it@qdph.example.cn" in mail.read_bytes() and t.ref.encode() in mail.read_bytes()


async def test_with_nowhere_to_go_the_notice_waits_with_an_alert(make_app, tmp_path) -> None:
    app = make_app(plugins={"customers": {"directory": [{"name": "Fax only", "phones": ["+8653288881234"]}]},
                            "fax": {"default_region": "CN", "ocr": {"enabled": False}}})
    drop(tmp_path)
    await app.run_once()
    (row,) = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert (row["target"], row["status"]) == ("notify:fax", "parked") and "notify:fax" in app.delivery.alerts


def test_outbound_settings_are_checked(make_app) -> None:
    from svcbridge import ConfigError

    with pytest.raises(ConfigError, match="connection_id"):
        make_app(plugins={"fax": {"outbound": "telnyx", "telnyx": {"public_key": PUB, "api_key": "k"}}})
    with pytest.raises(ConfigError, match="api_key and api_secret"):
        make_app(plugins={"fax": {"outbound": "sinch", "sinch": {"callback_token": "t", "public_url": "https://x"}}})


