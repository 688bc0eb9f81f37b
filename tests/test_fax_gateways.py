"""Fax gateways (issue 17): Telnyx Programmable Fax (Ed25519) and Sinch Fax / Phaxio (HMAC-SHA1)
webhooks, verified exactly as the providers sign (vectors computed here with ``cryptography`` and
``hmac`` from the documented algorithms), plus tampered, stale, replayed and forged variants: 403 and
nothing journaled. A genuine fax is journaled (2xx only after that) and becomes one ``fax`` ticket with
its PDF, the customer found by the number, and an OCR job.

The media download goes through the SSRF-guarded client to a fake storage built from the contract.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.testclient import TestClient

from fax_helpers import fax_page, save_pdf
from svcbridge.web import build_web
from svcbridge_fax.signatures import ReplayGuard, phaxio_signature, telnyx_public_key, telnyx_verify

SEED = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUB = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
API_KEY = "KEY0123-telnyx-secret"
TOKEN = "sinch-callback-token"
PUBLIC = "https://bridge.example.com"


def test_ed25519_rfc8032_vector_and_key_loading() -> None:
    """RFC 8032 section 7.1 TEST 1: the library verifies the published signature of the empty message."""
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    key = telnyx_public_key(base64.b64encode(pub).decode())
    key.verify(sig, b"")
    for bad in ("not base64!", base64.b64encode(b"short").decode(), ""):
        with pytest.raises(ValueError):
            telnyx_public_key(bad)


def sign(body: bytes, ts: int | None = None, key: Ed25519PrivateKey = KEY) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    sig = key.sign(f"{ts}|".encode() + body)
    return {"telnyx-timestamp": str(ts), "telnyx-signature-ed25519": base64.b64encode(sig).decode(),
            "content-type": "application/json"}


@pytest.mark.parametrize(("case", "want"), [
    ("genuine", None),
    ("tampered_body", "signature does not match"),
    ("other_key", "signature does not match"),
    ("stale", "stale timestamp"),
    ("future", "stale timestamp"),
    ("timestamp_changed", "signature does not match"),
    ("bad_timestamp", "bad timestamp"),
    ("superscript_timestamp", "bad timestamp"),
    ("not_base64", "signature not base64"),
    ("short_signature", "signature not 64 bytes"),
])
def test_telnyx_signature_table(case: str, want: str | None) -> None:
    key, body, now = telnyx_public_key(PUB), b'{"data":{"id":"1"}}', 1_800_000_000
    h = sign(body, now)
    ts, sig = h["telnyx-timestamp"], h["telnyx-signature-ed25519"]
    if case == "tampered_body":
        body = body.replace(b"1", b"2")
    elif case == "other_key":
        sig = sign(body, now, OTHER)["telnyx-signature-ed25519"]
    elif case == "stale":
        now += 301
    elif case == "future":
        now -= 301
    elif case == "timestamp_changed":
        ts = str(now + 1)
    elif case == "bad_timestamp":
        ts = "abc"
    elif case == "superscript_timestamp":
        ts = "²"
    elif case == "not_base64":
        sig = "%%%"
    elif case == "short_signature":
        sig = base64.b64encode(b"x" * 10).decode()
    assert telnyx_verify(key, body, ts, sig, 300, now=now) == want


def test_replay_guard_forgets_after_its_window() -> None:
    g = ReplayGuard(window=10)
    assert g.first_use("a", now=0) and not g.first_use("a", now=5)
    assert g.first_use("a", now=20)  # past the window the timestamp check refuses it anyway


class FakeStorage:
    """Telnyx media: a PDF behind a URL; records whether a credential was sent."""

    def __init__(self, pdf: bytes) -> None:
        self.pdf, self.calls = pdf, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.url.path.endswith("/big.pdf"):
            return httpx.Response(200, headers={"content-type": "application/pdf"}, content=b"%PDF" + b"0" * 50_000)
        if request.url.host == "api.telnyx.com" and request.headers.get("authorization") != f"Bearer {API_KEY}":
            return httpx.Response(401, json={"errors": [{"code": "10009"}]})
        return httpx.Response(200, headers={"content-type": "application/pdf"}, content=self.pdf)


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return save_pdf([fax_page(["Serial SN: QA1-2233-XY77", "Fan noise"], seed=4)])


@pytest.fixture
def app(make_app, pdf):
    storage = FakeStorage(pdf)
    a = make_app(
        outbound_allow=["api.telnyx.com", "media.storage.test"],
        plugins={
            "fax": {
                "default_region": "CN", "ocr": {"enabled": True, "languages": ["eng"]},
                "telnyx": {"public_key": PUB, "api_key": API_KEY, "max_media": 40_000},
                "transport": httpx.MockTransport(storage),
                "sinch": {"callback_token": TOKEN, "public_url": PUBLIC},
            },
            "customers": {"directory": [{"name": "ACME Taipei", "phones": ["+886227208889"]}]},
        },
    )
    a.storage = storage
    return a


def client_for(app) -> TestClient:
    return TestClient(build_web(app))


def fax_event(event_id: str = "ev-1", url: str = "https://api.telnyx.com/v2/media/fax-1.pdf",
              kind: str = "fax.received", frm: str = "+886 2 2720 8889") -> bytes:
    return json.dumps({"data": {"event_type": kind, "id": event_id, "occurred_at": "2026-12-03T10:00:00Z",
                                "payload": {"fax_id": "fx-" + event_id, "media_url": url, "page_count": 1,
                                            "from": frm, "to": "+8675512345678"}},
                       "meta": {"attempt": 1}}).encode()


async def test_telnyx_fax_received_becomes_a_fax_ticket_with_its_pdf(app, pdf) -> None:
    c = client_for(app)
    body = fax_event()
    r = c.post("/hooks/telnyx/fax", content=body, headers=sign(body))
    assert r.status_code == 200
    assert app.store.journal_counts() == {"pending": 1}  # journaled before the 200
    (req,) = app.storage.calls
    assert req.headers["authorization"] == f"Bearer {API_KEY}"  # Telnyx's own host gets the key
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert (t.channel, t.contact.phone, t.customer) == ("fax", "+886227208889", "ACME Taipei")
    assert t.labels["fax"]["fax_id"] == "fx-ev-1" and t.subject == "Fax received from +886227208889, 1 page(s)"
    full = app.store.get_ticket(t.ref)
    (att,) = full.attachments
    assert att.content_type == "application/pdf" and att.sha256 == hashlib.sha256(pdf).hexdigest()
    (job,) = app.work.jobs.list()
    assert job["kind"] == "fax.ocr"
    # the same event redelivered (signed anew by Telnyx) is journaled once
    r = c.post("/hooks/telnyx/fax", content=body, headers=sign(body, int(time.time()) + 1))
    assert r.status_code == 200 and app.store.journal_counts() == {"processed": 1}


@pytest.mark.parametrize("case", ["tampered", "stale", "replayed", "forged", "unsigned"])
def test_telnyx_refusals_store_nothing(app, case) -> None:
    c = client_for(app)
    body = fax_event("ev-" + case)
    headers = sign(body)
    if case == "tampered":
        body = body.replace(b"+886", b"+887")
    elif case == "stale":
        headers = sign(body, int(time.time()) - 301)
    elif case == "forged":
        headers = sign(body, key=OTHER)
    elif case == "unsigned":
        headers = {"content-type": "application/json"}
    elif case == "replayed":
        assert c.post("/hooks/telnyx/fax", content=body, headers=headers).status_code == 200
        before = app.store.journal_counts()
        assert c.post("/hooks/telnyx/fax", content=body, headers=headers).status_code == 403
        assert app.store.journal_counts() == before
        return
    assert c.post("/hooks/telnyx/fax", content=body, headers=headers).status_code == 403
    assert app.store.journal_counts() == {} and app.storage.calls == []


@pytest.mark.parametrize(("url", "reason"), [
    ("https://media.storage.test/big.pdf", "over the limit"),
    ("http://media.storage.test/fax.pdf", "must be https"),
    ("https://10.1.2.3/fax.pdf", "refused"),
])
async def test_a_media_fetch_that_fails_keeps_the_fax_with_the_reason(app, url, reason) -> None:
    c = client_for(app)
    body = fax_event("ev-m", url=url)
    assert c.post("/hooks/telnyx/fax", content=body, headers=sign(body)).status_code == 200
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and reason in t.labels["fax"]["media_error"]
    assert "could not be fetched" in t.description and app.work.jobs.list() == []
    if "storage.test" in url and url.startswith("https"):
        assert "authorization" not in app.storage.calls[0].headers  # no key to a foreign host


def test_other_fax_events_are_acknowledged_not_journaled(app) -> None:
    body = fax_event("ev-q", kind="fax.queued")
    r = client_for(app).post("/hooks/telnyx/fax", content=body, headers=sign(body))
    assert r.status_code == 200 and r.json()["ignored"] == "fax.queued"
    body = fax_event("ev-d", kind="fax.delivered")  # the outcome of a fax that is none of ours
    r = client_for(app).post("/hooks/telnyx/fax", content=body, headers=sign(body))
    assert r.status_code == 200 and r.json()["ticket"] is None
    assert app.store.journal_counts() == {}


# ------------------------------------------------------------------------------ Sinch / Phaxio
def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for k, v in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").encode()
    for k, (fname, data) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"; filename=\"{fname}\"\r\n"
                "Content-Type: application/pdf\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def reference_phaxio(token: str, url: str, fields: dict[str, str], files: dict[str, bytes]) -> str:
    """Written from phaxio-ruby's webhook.rb, independently of the plugin's code."""
    s = url + "".join(k + fields[k] for k in sorted(fields))
    s += "".join(k + hashlib.sha1(files[k]).hexdigest() for k in sorted(files))
    return hmac.new(token.encode(), s.encode(), hashlib.sha1).hexdigest()


def sinch_fields(fax_id: int = 1234, direction: str = "received") -> dict[str, str]:
    fax = {"id": fax_id, "direction": direction, "num_pages": 1, "status": "success",
           "from_number": "+886227208889", "to_number": "+8675512345678"}
    return {"fax": json.dumps(fax), "direction": direction, "is_test": "false", "success": "true"}


def test_phaxio_signature_matches_the_reference() -> None:
    fields, files = sinch_fields(), {"filename": b"%PDF-1.4 test"}
    want = reference_phaxio(TOKEN, PUBLIC + "/hooks/sinch/fax", fields, files)
    assert phaxio_signature(TOKEN, PUBLIC + "/hooks/sinch/fax", list(fields.items()), list(files.items())) == want


@pytest.mark.parametrize("case", ["genuine", "tampered_file", "tampered_field", "replayed", "wrong_token"])
async def test_sinch_callbacks(app, pdf, case) -> None:
    c = client_for(app)
    fields, files = sinch_fields(), {"filename": pdf}
    sig = reference_phaxio(TOKEN if case != "wrong_token" else "guess", PUBLIC + "/hooks/sinch/fax", fields, files)
    if case == "tampered_file":
        files = {"filename": pdf + b"%"}
    if case == "tampered_field":
        fields = {**fields, "is_test": "true"}
    body, ctype = multipart(fields, {k: ("fax.pdf", v) for k, v in files.items()})
    r = c.post("/hooks/sinch/fax", content=body, headers={"content-type": ctype, "x-phaxio-signature": sig})
    if case in ("genuine", "replayed"):
        assert r.status_code == 200
        if case == "replayed":
            again = c.post("/hooks/sinch/fax", content=body, headers={"content-type": ctype, "x-phaxio-signature": sig})
            assert again.status_code == 403
        await app.pipeline.drain()
        (t,) = app.store.list_tickets()
        assert (t.channel, t.contact.phone, t.customer) == ("fax", "+886227208889", "ACME Taipei")
        assert t.labels["fax"]["rule"] == "sinch" and len(app.store.get_ticket(t.ref).attachments) == 1
    else:
        assert r.status_code == 403 and app.store.journal_counts() == {}


def test_sinch_sent_fax_callbacks_make_no_ticket(app, pdf) -> None:
    fields = sinch_fields(direction="sent")
    sig = reference_phaxio(TOKEN, PUBLIC + "/hooks/sinch/fax", fields, {})
    body, ctype = multipart(fields, {})
    r = client_for(app).post("/hooks/sinch/fax", content=body, headers={"content-type": ctype, "x-phaxio-signature": sig})
    assert r.status_code == 200 and app.store.journal_counts() == {}


def test_gateway_secrets_can_come_from_files(make_app, tmp_path) -> None:
    (tmp_path / "telnyx.key").write_text(API_KEY + "\n")
    (tmp_path / "sinch.token").write_text(TOKEN + "\n")
    app = make_app(plugins={"fax": {
        "telnyx": {"public_key": PUB, "api_key_file": str(tmp_path / "telnyx.key")},
        "sinch": {"callback_token_file": str(tmp_path / "sinch.token"), "public_url": PUBLIC}}})
    cfg = app.settings.plugin_config("fax")
    assert cfg.telnyx.api_key.get_secret_value() == API_KEY
    assert cfg.sinch.callback_token.get_secret_value() == TOKEN
    assert API_KEY not in repr(cfg) and TOKEN not in repr(cfg)


async def test_a_sinch_retry_after_a_failed_journal_is_accepted(app, pdf, tmp_path) -> None:
    """Phaxio signs no timestamp: its retry is the same request, same signature. When journaling fails
    with an error that is no StoreUnavailable (here the blob directory cannot be written: ENOTDIR, as a
    full or broken disk would), the answer is 500 and the retry must be taken, not refused as a replay
    (it was: every retry 403, the fax lost)."""
    c = client_for(app)
    fields, files = sinch_fields(fax_id=777), {"filename": pdf}
    sig = reference_phaxio(TOKEN, PUBLIC + "/hooks/sinch/fax", fields, files)
    body, ctype = multipart(fields, {k: ("fax.pdf", v) for k, v in files.items()})
    headers = {"content-type": ctype, "x-phaxio-signature": sig}
    blobs = app.store.blobs
    root, tmp, made = blobs.root, blobs.tmp, set(blobs._made)
    (tmp_path / "not-a-dir").write_bytes(b"")
    blobs.root, blobs.tmp, blobs._made = tmp_path / "not-a-dir" / "blobs", tmp_path / "not-a-dir" / "tmp", set()
    try:
        assert c.post("/hooks/sinch/fax", content=body, headers=headers).status_code == 500
    finally:
        blobs.root, blobs.tmp, blobs._made = root, tmp, made
    assert app.store.journal_counts() == {}
    assert c.post("/hooks/sinch/fax", content=body, headers=headers).status_code == 200
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and t.labels["fax"]["fax_id"] == "777"


async def test_a_telnyx_delivery_that_failed_to_journal_can_come_again(app, tmp_path) -> None:
    """The same signed Telnyx request after a 500 (journal failed) is taken, not refused as a replay."""
    c = client_for(app)
    body = fax_event("ev-500")
    headers = sign(body)
    blobs = app.store.blobs
    root, tmp, made = blobs.root, blobs.tmp, set(blobs._made)
    (tmp_path / "not-a-dir").write_bytes(b"")
    blobs.root, blobs.tmp, blobs._made = tmp_path / "not-a-dir" / "blobs", tmp_path / "not-a-dir" / "tmp", set()
    try:
        assert c.post("/hooks/telnyx/fax", content=body, headers=headers).status_code == 500
    finally:
        blobs.root, blobs.tmp, blobs._made = root, tmp, made
    assert c.post("/hooks/telnyx/fax", content=body, headers=headers).status_code == 200
    assert c.post("/hooks/telnyx/fax", content=body, headers=headers).status_code == 403  # now a replay
    assert app.store.journal_counts() == {"pending": 1}


async def test_a_big_unsigned_sinch_post_does_not_stall_the_event_loop(app) -> None:
    """The multipart body must be parsed before its signature can be checked; parsed on the event loop,
    one unauthenticated 20 MB post held every webhook (Telnyx answers within 2 s) for about a second."""
    import asyncio
    import os

    blob = os.urandom(20 * 1024 * 1024 - 200_000)
    body, ctype = multipart(sinch_fields(), {"filename": ("fax.pdf", blob)})
    transport = httpx.ASGITransport(app=build_web(app))
    gaps: list[float] = []

    async def probe(stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        stop = asyncio.Event()
        watcher = asyncio.create_task(probe(stop))
        await asyncio.sleep(0.05)
        r = await c.post("/hooks/sinch/fax", content=body, headers={"content-type": ctype,
                                                                     "x-phaxio-signature": "0" * 40})
        stop.set()
        await watcher
    assert r.status_code == 403 and app.store.journal_counts() == {}
    assert max(gaps) < 0.3, f"event loop stalled {max(gaps):.2f} s"
