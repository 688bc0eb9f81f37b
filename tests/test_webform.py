"""The public web form /form/<name> (issue 17): zh-CN / zh-TW / en pages, CSRF token with a double-submit
cookie, honeypot, size limits, per-address rate limit; an accepted post is one ``web`` ticket with the
serial number, the files and the contact, journaled once even when the browser sends it twice."""

from __future__ import annotations

import re
import uuid

import pytest
from starlette.testclient import TestClient

from svcbridge.web import build_web

FORM = {"secret": "form-secret", "default_region": "CN", "rate_limit": 5, "max_file": 2000, "max_files": 2,
        "max_request": 20_000, "forms": [{"name": "service", "title": "ACME 售后报修", "language": "zh-CN"}]}


@pytest.fixture
def app(make_app):
    return make_app(plugins={"webform": FORM, "customers": {"directory": [
        {"name": "ACME Taipei", "emails": ["it@acme.example.tw"]}]}})


def open_form(c: TestClient, lang: str | None = None, accept: str = "") -> tuple[str, str]:
    r = c.get("/form/service" + (f"?lang={lang}" if lang else ""), headers={"accept-language": accept})
    assert r.status_code == 200 and "<script" not in r.text.lower()
    token = re.search(r'name="csrf_token" value="([^"]+)"', r.text).group(1)
    return r.text, token


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]] = ()) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    out = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items())
    for name, data in files:
        out += (f'--{b}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def submit(c: TestClient, token: str, **fields):
    files = fields.pop("files", [])
    body, ctype = multipart({"csrf_token": token, **fields}, files)
    return c.post("/form/service?lang=zh-CN", content=body, headers={"content-type": ctype})


GOOD = {"name": "王小明", "email": "it@acme.example.tw", "phone": "", "serial": "SN-7731-KQ92",
        "description": "打印机每页都卡纸，错误 E-302。"}


@pytest.mark.parametrize(("lang", "accept", "want"), [
    ("en", "", "Report a fault"), (None, "zh-TW,zh;q=0.8", "故障報修"), (None, "en-US,en", "Report a fault"),
    (None, "", "故障报修"), ("zh-CN", "en", "故障报修"), (None, "zh-Hant-HK", "故障報修"),
])
def test_the_form_speaks_three_languages(app, lang, accept, want) -> None:
    c = TestClient(build_web(app))
    html, _ = open_form(c, lang, accept)
    assert want in html or "ACME 售后报修" in html
    assert ("description" in html) and 'class="hp"' in html


async def test_an_accepted_report_is_one_ticket_with_serial_files_and_contact(app) -> None:
    c = TestClient(build_web(app))
    _, token = open_form(c)
    r = submit(c, token, **GOOD, files=[("photo.jpg", b"\xff\xd8jpeg"), ("../../etc/passwd", b"x")])
    assert r.status_code == 200 and "我们已收到您的报修" in r.text
    again = submit(c, token, **GOOD)  # the browser sends it again: the cookie is gone after success
    assert again.status_code == 403
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert (t.channel, t.asset.serial, t.contact.email, t.customer) == (
        "web", "SN-7731-KQ92", "it@acme.example.tw", "ACME Taipei")
    assert t.subject.startswith("[SN-7731-KQ92] 打印机每页都卡纸") and t.language == "zh-CN"
    full = app.store.get_ticket(t.ref)
    assert sorted(a.original_name for a in full.attachments) == ["../../etc/passwd", "photo.jpg"]
    assert all("/" not in a.safe_name for a in full.attachments)


async def test_the_same_token_posted_twice_is_journaled_once(app) -> None:
    c = TestClient(build_web(app))
    _, token = open_form(c)
    cookie = c.cookies.get("sbform_service")
    assert submit(c, token, **GOOD).status_code == 200
    c.cookies.set("sbform_service", cookie, path="/form/service")  # a resend with the old cookie
    assert submit(c, token, **GOOD).status_code == 200
    assert app.store.journal_counts() == {"pending": 1}


@pytest.mark.parametrize(("case", "status", "message"), [
    ("no_token", 403, "表单已过期"),
    ("forged_token", 403, "表单已过期"),
    ("no_cookie", 403, "表单已过期"),
    ("other_form_token", 403, "表单已过期"),
    ("no_contact", 422, "请填写电子邮箱或手机号码"),
    ("bad_email", 422, "电子邮箱格式不正确"),
    ("bad_phone", 422, "手机号码格式不正确"),
    ("no_description", 422, "请填写故障描述"),
    ("big_file", 422, "文件过多或过大"),
    ("too_many_files", 422, "文件过多或过大"),
    ("huge_request", 413, "提交内容过大"),
])
def test_refusals_store_nothing_and_keep_what_was_typed(app, case, status, message) -> None:
    c = TestClient(build_web(app))
    _, token = open_form(c)
    fields = dict(GOOD, description='<script>alert(1)</script> "x"')
    files = []
    if case == "no_token":
        token = ""
    elif case == "forged_token":
        ts, nonce, mac = token.split(".")
        token = f"{ts}.{nonce}.{'0' * len(mac)}"
    elif case == "no_cookie":
        c.cookies.clear()
    elif case == "other_form_token":
        token = token.replace(token.split(".")[0], str(int(token.split(".")[0]) - 1))
    elif case == "no_contact":
        fields["email"] = ""
    elif case == "bad_email":
        fields["email"] = "not-an-address"
    elif case == "bad_phone":
        fields["phone"] = "12"
    elif case == "no_description":
        fields["description"] = "  "
    elif case == "big_file":
        files = [("a.jpg", b"x" * 3000)]
    elif case == "too_many_files":
        files = [("a.jpg", b"x"), ("b.jpg", b"y"), ("c.jpg", b"z")]
    elif case == "huge_request":
        files = [("a.jpg", b"x" * 30_000)]
    r = submit(c, token, **fields, files=files)
    assert r.status_code == status and message in r.text
    assert "<script>alert(1)" not in r.text  # what was typed comes back escaped
    assert app.store.journal_counts() == {}


def test_the_honeypot_thanks_a_bot_and_stores_nothing(app) -> None:
    c = TestClient(build_web(app))
    _, token = open_form(c)
    r = submit(c, token, **GOOD, website="http://spam.example")
    assert r.status_code == 200 and "我们已收到" in r.text and app.store.journal_counts() == {}


def test_rate_limit_per_address(app) -> None:
    c = TestClient(build_web(app))
    codes = []
    for _ in range(7):
        _, token = open_form(c)
        codes.append(submit(c, token, **dict(GOOD, email="")).status_code)  # refused posts count too
    assert codes[:5] == [422] * 5 and codes[5:] == [429, 429]


def test_mobile_numbers_are_normalised(app) -> None:
    c = TestClient(build_web(app))
    _, token = open_form(c)
    assert submit(c, token, **dict(GOOD, email="", phone="138 0013 8000")).status_code == 200
    import json

    (raw,) = [app.store.load_raw(1)]
    assert json.loads(raw.raw)["fields"]["phone"] == "+8613800138000"


@pytest.mark.parametrize(("peer", "xff", "want"), [
    ("203.0.113.9", "", "203.0.113.9"),
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),          # not a proxy of ours: its header is ignored
    ("10.0.0.2", "198.51.100.7", "198.51.100.7"),        # our proxy names the client
    ("10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # the client's own claim on the left is not used
    ("10.0.0.2", "198.51.100.7, 10.0.0.3", "198.51.100.7"),  # two proxies of ours
    ("10.0.0.2", "", "10.0.0.2"),
])
def test_the_rate_limit_address_behind_trusted_proxies(peer, xff, want) -> None:
    import ipaddress

    from starlette.requests import Request

    from svcbridge_webform import client_address

    scope = {"type": "http", "client": (peer, 1234), "headers": [(b"x-forwarded-for", xff.encode())] if xff else []}
    assert client_address(Request(scope), [ipaddress.ip_network("10.0.0.0/8")]) == want


def test_rate_limit_buckets_an_ipv6_client_by_its_64_and_forgets_idle_addresses() -> None:
    """An IPv6 client owns a whole /64 (2^64 addresses): counted per address it could post without limit,
    and every address it used stayed in memory for good."""
    import ipaddress

    from svcbridge_webform import FormRoute, FormSettings, WebformSettings

    cfg = WebformSettings(secret="s", rate_limit=3, rate_window=60.0)
    route = FormRoute(cfg, FormSettings(name="service"))
    net = ipaddress.ip_network("2001:db8:1:2::/64")
    got = [route.limited(str(net[i * 7919 + 1])) for i in range(5)]
    assert got == [False, False, False, True, True]
    assert route.limited("2001:db8:1:3::1") is False  # the next /64 is another customer
    assert route.limited("203.0.113.9") is False and route.limited("203.0.113.10") is False  # IPv4: per address
    for i in range(1000):
        route.limited(f"198.51.100.{i % 250}")
    route.posts_pruned_at = 0.0
    import time

    future = time.monotonic() + 61.0
    route.limited("192.0.2.1", now=future)  # a later post: the idle addresses are dropped
    assert len(route.posts) == 1


async def test_a_big_post_does_not_stall_the_event_loop(make_app) -> None:
    """The form is parsed before its token is checked: on the event loop, one 12 MB post held every
    webhook of the daemon for a good part of a second."""
    import asyncio
    import os
    import time

    import httpx

    app = make_app(plugins={"webform": {**FORM, "max_request": 12 * 1024 * 1024, "max_file": 12 * 1024 * 1024}})
    body, ctype = multipart({"csrf_token": "forged", **GOOD}, [("a.jpg", os.urandom(12 * 1024 * 1024 - 100_000))])
    gaps: list[float] = []

    async def probe(stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_web(app)), base_url="http://t") as c:
        stop = asyncio.Event()
        watcher = asyncio.create_task(probe(stop))
        await asyncio.sleep(0.05)
        r = await c.post("/form/service", content=body, headers={"content-type": ctype})
        stop.set()
        await watcher
    assert r.status_code == 403 and app.store.journal_counts() == {}
    assert max(gaps) < 0.3, f"event loop stalled {max(gaps):.2f} s"
