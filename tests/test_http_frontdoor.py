"""The HTTP front door (frontdoor.py): which Host names are answered (DNS rebinding) and who the client
is (X-Forwarded-For believed only from ``[http] trusted_proxies``). The spoofing test runs the daemon's
own uvicorn (``daemon._http_server``) on a loopback socket: uvicorn's default believed X-Forwarded-For
from 127.0.0.1, which is exactly where a local attacker connects from."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time

import httpx
import pytest
from starlette.testclient import TestClient

from console_helpers import PASSWORD
from svcbridge import httpguard
from svcbridge.console.accounts import Accounts
from svcbridge.daemon import _http_server
from svcbridge.frontdoor import default_hosts, host_allowed, resolve_client
from svcbridge.web import build_web
from svcbridge_webhook import sign

SECRET = "webhook-secret-0123456789"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    from argon2 import PasswordHasher

    from svcbridge.console import accounts

    monkeypatch.setattr(accounts, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


class _Daemon:
    """The daemon's HTTP server (guarded protocol, its uvicorn Config) on a free loopback port."""

    def __init__(self, app):
        self.app = app

    async def __aenter__(self):
        sock = httpguard.bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server, _cap = _http_server(self.app, 1024)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc):
        self.server.should_exit = True
        await self.task


async def _failed_login(c: httpx.AsyncClient, headers: dict[str, str]) -> int:
    page = await c.get("/login", headers=headers)
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    form = {"username": f"u{time.monotonic_ns()}", "password": "wrong password", "login_token": token}
    r = await c.post("/login", data=form, headers=headers)
    return r.status_code


def _audited_addrs(app) -> list[str]:
    rows = Accounts(app.store.engine).audit_list(200)
    return [r["detail"].get("addr") for r in rows if r["action"] in ("login_failed", "login_throttled")]


async def test_a_forged_x_forwarded_for_from_loopback_changes_nothing(make_app) -> None:
    """Every guess names another client in X-Forwarded-For (a fresh user name each time, so only the
    address limit can stop it): the limit still counts 127.0.0.1 and the audit says 127.0.0.1."""
    app = make_app(http={"host": "127.0.0.1", "allowed_hosts": None})
    async with _Daemon(app) as d, httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}") as c:
        codes = [await _failed_login(c, {"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(1, 8)]
    assert codes == [401] * 5 + [429] * 2
    assert set(_audited_addrs(app)) == {"127.0.0.1"}


async def test_a_trusted_proxy_names_the_client_right_most_untrusted_hop(make_app) -> None:
    app = make_app(http={"host": "127.0.0.1", "allowed_hosts": None, "trusted_proxies": ["127.0.0.1/32"]})
    async with _Daemon(app) as d, httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.port}") as c:
        # the client wrote "10.9.9.9" itself; the proxy appended the address it saw: that one counts
        for _ in range(6):
            code = await _failed_login(c, {"X-Forwarded-For": "10.9.9.9, 198.51.100.7"})
        assert code == 429
        assert await _failed_login(c, {"X-Forwarded-For": "198.51.100.8"}) == 401  # another client: own count
    assert set(_audited_addrs(app)) == {"198.51.100.7", "198.51.100.8"}


def test_resolve_client() -> None:
    nets = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "2001:db8::/32")]
    assert resolve_client("192.0.2.1", "203.0.113.5", nets) == "192.0.2.1"  # an untrusted peer: itself
    assert resolve_client("10.0.0.2", "203.0.113.5", []) == "10.0.0.2"  # nothing trusted
    assert resolve_client("10.0.0.2", "1.1.1.1, 203.0.113.5", nets) == "203.0.113.5"
    assert resolve_client("10.0.0.2", "203.0.113.5, 10.0.0.9", nets) == "203.0.113.5"  # two proxies
    assert resolve_client("10.0.0.2", "", nets) == "10.0.0.2"  # a proxy without the header: the proxy
    assert resolve_client("10.0.0.2", "10.1.1.1, 10.0.0.3", nets) == "10.1.1.1"  # all trusted: left-most
    assert resolve_client("::ffff:10.0.0.2", "198.51.100.1:5555", nets) == "198.51.100.1"  # mapped, port
    assert resolve_client("2001:db8::1", "[2001:db9::7]:443", nets) == "2001:db9::7"


def test_forwarded_proto_only_from_a_trusted_proxy(make_app) -> None:
    seen = {}
    from svcbridge.frontdoor import FrontDoor

    async def inner(scope, receive, send):
        seen.update(client=scope["client"], scheme=scope["scheme"])

    async def call(peer: str, trusted: list[str]) -> None:
        scope = {"type": "http", "client": (peer, 1), "scheme": "http",
                 "headers": [(b"host", b"localhost"), (b"x-forwarded-for", b"203.0.113.4"),
                             (b"x-forwarded-proto", b"https")]}
        await FrontDoor(inner, ["localhost"], trusted)(scope, None, None)

    asyncio.run(call("127.0.0.1", []))
    assert seen == {"client": ("127.0.0.1", 1), "scheme": "http"}
    asyncio.run(call("127.0.0.1", ["127.0.0.1"]))
    assert seen == {"client": ("203.0.113.4", 0), "scheme": "https"}


def test_trusted_proxies_must_be_addresses(make_app) -> None:
    from svcbridge.errors import ConfigError

    with pytest.raises(ConfigError, match="trusted_proxies"):
        make_app(http={"trusted_proxies": ["proxy.lan"]})


def test_allowed_hosts_are_checked_when_the_config_loads(make_app) -> None:
    """An entry with a port, a scheme or a path never matched a Host header: every request got a 400."""
    from svcbridge.errors import ConfigError
    from svcbridge.settings import HttpSettings

    for bad in ("bridge.example.com:8443", "https://bridge.example.com", "bridge.example.com/x", "a b", "[::1]:8480",
                ".127.0.0.1", ""):
        with pytest.raises(ConfigError, match="allowed_hosts"):
            make_app(http={"allowed_hosts": [bad]})
    hosts = HttpSettings(allowed_hosts=["Bridge.Example.com.", "*", ".Example.org", "::1", "[fe80::1]", "10.0.0.5",
                                        "Bücher.münchen.de"]).allowed_hosts
    assert hosts == ["bridge.example.com", "*", ".example.org", "::1", "[fe80::1]", "10.0.0.5",
                     "xn--bcher-kva.xn--mnchen-3ya.de"]
    assert host_allowed("xn--bcher-kva.xn--mnchen-3ya.de:8480", hosts)  # what a browser sends for the IDN


# ------------------------------------------------------------------------------------------ Host header
def test_default_hosts_and_matching() -> None:
    assert set(default_hosts("127.0.0.1", None)) == {"localhost", "127.0.0.1", "::1", "[::1]"}
    assert "bridge.example.com" in default_hosts("0.0.0.0", "https://Bridge.example.com:8443/x")
    assert "0.0.0.0" not in default_hosts("0.0.0.0", None)
    allowed = default_hosts("127.0.0.1", "https://bridge.example.com")
    for ok in ("localhost", "LOCALHOST:8480", "127.0.0.1:8480", "[::1]:8480", "bridge.example.com", "bridge.example.com."):
        assert host_allowed(ok, allowed), ok
    for bad in ("evil.example", "evil.example:8480", "bridge.example.com.evil.example", "localhost.evil.example",
                "127.0.0.1.nip.io", "", "localhost:80x", "a@localhost", "[::1"):
        assert not host_allowed(bad, allowed), bad
    assert host_allowed("api.example.com", [".example.com"]) and host_allowed("example.com", [".example.com"])
    assert not host_allowed("badexample.com", [".example.com"])
    assert host_allowed("anything.example", ["*"])
    assert host_allowed("[fe80::1]:8480", default_hosts("fe80::1", None))  # an IPv6 bind: bracketed in Host
    assert not host_allowed("[fe80::2]:8480", default_hosts("fe80::1", None))


def test_a_foreign_host_is_a_400_before_any_routing(make_app) -> None:
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends its own Host."""
    app = make_app(http={"allowed_hosts": None, "public_url": "https://bridge.example.com"},
                   plugins={"webhook": {"secret": SECRET}}, notifications={"fallback_channels": ["email"]})
    Accounts(app.store.engine).add("ops", PASSWORD)
    web = build_web(app)
    evil = TestClient(web, base_url="http://rebind.attacker.example:8480")
    for method, path in (("GET", "/"), ("GET", "/login"), ("GET", "/healthz"), ("GET", "/readyz"),
                         ("GET", "/metrics"), ("POST", "/hooks/generic"), ("GET", "/no/such/path")):
        r = evil.request(method, path)
        assert r.status_code == 400 and r.text == "bad Host header\n", (method, path)
    assert TestClient(web, base_url="http://localhost:8480").get("/healthz").status_code == 200
    assert TestClient(web, base_url="http://127.0.0.1:8480").get("/login").status_code == 200
    # two Host headers: a proxy and the application could each read another one
    two = TestClient(web, base_url="http://localhost").get("/healthz", headers=[("host", "localhost"), ("host", "evil.example")])
    assert two.status_code == 400
    # the providers call the public name: the webhook works there
    public = TestClient(web, base_url="https://bridge.example.com")
    body = json.dumps({"id": "evt-1", "subject": "Fan noise", "description": "loud", "email": "a@example.com"}).encode()
    ts = int(time.time())
    headers = {"X-Svcbridge-Timestamp": str(ts), "X-Svcbridge-Signature": sign(SECRET, ts, body),
               "Content-Type": "application/json"}
    assert public.post("/hooks/generic", content=body, headers=headers).status_code == 200
    assert TestClient(web, base_url="https://hooks.example.net").post("/hooks/generic", content=body, headers=headers).status_code == 400


def test_allowed_hosts_star_and_listed_names(make_app) -> None:
    web = build_web(make_app(http={"allowed_hosts": ["*"]}))
    assert TestClient(web, base_url="http://whatever.example").get("/healthz").status_code == 200
    web = build_web(make_app(http={"allowed_hosts": ["bridge.lan"]}))
    assert TestClient(web, base_url="http://bridge.lan:8480").get("/healthz").status_code == 200
    assert TestClient(web, base_url="http://localhost").get("/healthz").status_code == 400  # the list replaces
