"""The generic signed webhook intake and the daemon's HTTP side, through the real Starlette app."""

from __future__ import annotations

import json
import time

import pytest
from starlette.testclient import TestClient

from svcbridge.web import build_web
from svcbridge_webhook import sign

SECRET = "whsec-test-0123456789"


@pytest.fixture
def app(make_app):
    # a web-form customer is answered by mail: the webhook channel has no notifier of its own
    return make_app(
        plugins={"webhook": {"secret": SECRET, "previous_secret": "old-secret-abcdef"}},
        notifications={"fallback_channels": ["email"]},
    )


def post(client: TestClient, path: str, payload: dict, secret: str = SECRET, skew: int = 0,
         tamper: bool = False):
    body = json.dumps(payload).encode()
    ts = int(time.time()) + skew  # computed at request time: the suite may run long after collection
    headers = {"X-Svcbridge-Timestamp": str(ts), "X-Svcbridge-Signature": sign(secret, ts, body),
               "Content-Type": "application/json"}
    return client.post(path, content=body + (b" " if tamper else b""), headers=headers)


PAYLOAD = {"id": "evt-1", "subject": "Fan noise", "body": "Server fan loud",
           "contact": {"email": "ops@example.com", "phone": "+86 138 0013 8000"}, "priority": 2}


async def test_signed_webhook_is_journaled_once_and_becomes_a_ticket(app) -> None:
    client = TestClient(build_web(app))
    r1 = post(client, "/hooks/generic", PAYLOAD)
    r2 = post(client, "/hooks/generic", PAYLOAD)  # provider retry
    assert r1.status_code == 200 and r1.json()["duplicate"] is False
    assert r2.status_code == 200 and r2.json()["duplicate"] is True
    await app.pipeline.drain()
    (t,) = app.store.list_tickets()
    assert (t.subject, t.priority, t.contact.phone, t.channel) == ("Fan noise", 2, "+8613800138000", "webhook")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"secret": "wrong-secret-xyz"}, "signature mismatch"),
        ({"tamper": True}, "signature mismatch"),
        ({"skew": -400}, "timestamp outside tolerance"),
        ({"skew": 400}, "timestamp outside tolerance"),
    ],
)
def test_refused_requests(app, kwargs, reason) -> None:
    client = TestClient(build_web(app))
    r = post(client, "/hooks/generic", PAYLOAD, **kwargs)
    assert r.status_code == 401 and r.json()["error"] == reason
    assert app.store.journal_counts() == {}


def test_previous_secret_still_accepted_and_bad_payload_is_422(app) -> None:
    client = TestClient(build_web(app))
    assert post(client, "/hooks/generic", PAYLOAD, secret="old-secret-abcdef").status_code == 200
    assert post(client, "/hooks/generic", {"subject": "no id"}).status_code == 422
    assert client.post("/hooks/generic", content=b"{}").status_code == 401  # no headers at all
    assert client.get("/hooks/generic").status_code == 405


def test_store_outage_answers_503_never_200(app, monkeypatch) -> None:
    from svcbridge import StoreUnavailable

    def down(raw):
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(app.store, "journal_insert", down)
    r = post(TestClient(build_web(app)), "/hooks/generic", PAYLOAD)
    assert r.status_code == 503


async def test_status_webhook_applies_once(app, tmp_path) -> None:
    client = TestClient(build_web(app))
    post(client, "/hooks/generic", PAYLOAD)
    await app.pipeline.drain()
    upd = {"id": "s-1", "ticket_ref": "SB-000001", "state": "resolved", "public_reply": "Fan replaced"}
    assert post(client, "/hooks/generic/status", upd).json() == {"applied": True}
    assert post(client, "/hooks/generic/status", upd).json() == {"applied": False}
    assert app.store.get_ticket("SB-000001").state == "resolved"


def test_health_metrics_and_index(app, tmp_path) -> None:
    client = TestClient(build_web(app))
    post(client, "/hooks/generic", dict(PAYLOAD, subject="<script>alert(1)</script>"))
    import asyncio

    asyncio.run(app.run_once())
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["alerts"] == {}
    metrics = client.get("/metrics").text
    assert 'svcbridge_messages_total{channel="webhook",outcome="created"}' in metrics
    assert 'svcbridge_queue_depth{queue="journal",status="processed"} 1.0' in metrics
    # the ticket list is the console's now (tests/test_console.py): behind a login, still escaped
    assert client.get("/", follow_redirects=False).headers["location"].startswith("/login")
    from svcbridge.console.accounts import Accounts

    Accounts(app.store.engine).add("ops", "correct horse battery", "readonly")
    login = client.get("/login")
    token = login.text.split('name="login_token" value="')[1].split('"')[0]
    client.post("/login", data={"username": "ops", "password": "correct horse battery", "login_token": token})
    page = client.get("/tickets").text
    assert "SB-000001" in page and "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_readyz_is_503_when_the_store_is_down(app, monkeypatch) -> None:
    client = TestClient(build_web(app))
    app.store.engine.dispose()
    monkeypatch.setattr(app.store.engine, "connect", lambda: (_ for _ in ()).throw(OSError("db gone")))
    assert client.get("/readyz").status_code == 503


# ---------------------------------------------------------------------- bounded request bodies
def test_oversized_bodies_are_refused_without_storing(app) -> None:
    client = TestClient(build_web(app))
    big = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    declared = client.post("/hooks/generic", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413

    def chunks():  # no Content-Length: chunked, as a client that lies or streams would send it
        for _ in range(48):
            yield b" " * 65536

    streamed = client.post("/hooks/generic", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert app.store.journal_counts() == {}


class _Req:
    """Just enough of a Starlette request for read_body: headers and a body stream."""

    def __init__(self, parts: list[bytes], delay: float = 0.0, length: str | None = None) -> None:
        self.headers = {"content-length": length} if length is not None else {}
        self.parts, self.delay, self.pulled = parts, delay, 0

    async def stream(self):
        import asyncio

        for part in self.parts:
            await asyncio.sleep(self.delay)
            self.pulled += 1
            yield part


async def test_read_body_stops_at_the_limit_and_at_the_deadline() -> None:
    from svcbridge import read_body

    ok = _Req([b"ab", b"cd"])
    assert await read_body(ok, limit=10) == b"abcd"

    flood = _Req([b"x" * 100] * 1000)
    refused = await read_body(flood, limit=250)
    assert refused.status_code == 413 and flood.pulled == 3  # stopped reading once past the limit

    lying = _Req([b"x"], length=str(10**10))
    assert (await read_body(lying, limit=250)).status_code == 413 and lying.pulled == 0

    slowloris = _Req([b"x"] * 100, delay=0.05)
    late = await read_body(slowloris, limit=1000, timeout=0.2)
    assert late.status_code == 408 and slowloris.pulled < 100
