"""The SSRF guard (svcbridge.http): IPv6 addresses that carry an IPv4 address, and DNS rebinding.

Real sockets on loopback: a small HTTP(S) server records the connections it gets and the Host header and
SNI name of each request; ``socket.getaddrinfo`` is replaced to map test names to addresses (a rebinding
resolver answers a public address first and 127.0.0.1 afterwards), and connections to non-loopback
addresses are refused before they leave the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest

from conftest import require_binary
from svcbridge.errors import NotReady, PermanentError
from svcbridge.http import GuardedTransport, OutboundGuard, embedded_ipv4, make_client, request

PUBLIC = "93.184.215.14"  # a public IPv4 address; never actually reached (see the connects fixture)


def _nat64_local(plen: int, v4: str) -> str:
    """`v4` inside 64:ff9b:1::/48 with an RFC 6052 layout of prefix length `plen` (48, 56 or 64)."""
    prefix = int(ipaddress.IPv6Address("64:ff9b:1::"))
    v4int, head = int(ipaddress.IPv4Address(v4)), 64 - plen
    value = prefix | ((v4int >> (32 - head)) << 64) | ((v4int & ((1 << (32 - head)) - 1)) << (56 - (32 - head)))
    return str(ipaddress.IPv6Address(value))


# (address, the IPv4 it delivers to): every form must be refused for a non-public IPv4
EMBEDDED_PRIVATE = [
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:10.0.0.5", "IPv4-mapped"),
    ("::ffff:0:169.254.169.254", "IPv4-translated (SIIT)"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::10.1.2.3", "IPv4-compatible"),
    ("::192.168.1.1", "IPv4-compatible"),
    ("64:ff9b::7f00:1", "NAT64 well-known prefix -> 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 well-known prefix -> 169.254.169.254 (cloud metadata)"),
    ("64:ff9b::a00:5", "NAT64 well-known prefix -> 10.0.0.5"),
    ("64:ff9b:1::c0a8:101", "NAT64 local-use /96 -> 192.168.1.1"),
    (_nat64_local(48, "10.0.0.5"), "NAT64 local-use /48 layout -> 10.0.0.5"),
    (_nat64_local(56, "127.0.0.1"), "NAT64 local-use /56 layout -> 127.0.0.1"),
    (_nat64_local(64, "172.16.0.1"), "NAT64 local-use /64 layout -> 172.16.0.1"),
    ("2002:7f00:1::1", "6to4 -> 127.0.0.1"),
    ("2002:a00:5::", "6to4 -> 10.0.0.5"),
    ("2002:a9fe:a9fe:1::1", "6to4 -> 169.254.169.254"),
    ("2001:0:808:808::80ff:fffe", "Teredo, client (inverted) 127.0.0.1"),
    ("2001:0:808:808::f5ff:fffa", "Teredo, client (inverted) 10.0.0.5"),
    ("2001:0:a00:5::f7f7:f7f7", "Teredo, server 10.0.0.5"),
]

EMBEDDED_PUBLIC = [
    "::ffff:8.8.8.8",
    "::ffff:0:8.8.8.8",
    "::8.8.8.8",
    "64:ff9b::808:808",
    "64:ff9b:1::808:808",
    "64:ff9b:1:ab::808:808",
    "2002:808:808::1",
    "2001:0:808:808::f7f7:f7f7",  # Teredo: server 8.8.8.8, client 8.8.8.8
]

OTHER_NON_PUBLIC = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "100.64.0.1", "224.0.0.1", "192.88.99.1",
                    "0.0.0.0", "::1", "::", "fe80::1", "fc00::1", "fec0::1", "ff0e::1", "2001:db8::1"]


@pytest.mark.parametrize(("address", "form"), EMBEDDED_PRIVATE)
def test_an_ipv6_address_carrying_a_non_public_ipv4_is_refused(address: str, form: str) -> None:
    ip = ipaddress.IPv6Address(address)
    embedded = embedded_ipv4(ip)
    assert embedded, form
    assert not all(v4.is_global for v4 in embedded), form
    assert not OutboundGuard().permitted(ip), form


@pytest.mark.parametrize("address", EMBEDDED_PUBLIC)
def test_an_ipv6_address_carrying_a_public_ipv4_is_allowed(address: str) -> None:
    ip = ipaddress.IPv6Address(address)
    assert embedded_ipv4(ip) and all(v4 == ipaddress.IPv4Address("8.8.8.8") for v4 in embedded_ipv4(ip) or [])
    assert OutboundGuard().permitted(ip)


@pytest.mark.parametrize("address", OTHER_NON_PUBLIC)
def test_other_non_public_addresses_are_refused(address: str) -> None:
    assert not OutboundGuard().permitted(ipaddress.ip_address(address))


def test_plain_public_addresses_and_the_allow_list() -> None:
    guard = OutboundGuard()
    for address in ("8.8.8.8", PUBLIC, "2606:4700:4700::1111", "2a00:1450:4001:82a::200e"):
        assert guard.permitted(ipaddress.ip_address(address)), address
    assert embedded_ipv4(ipaddress.IPv6Address("2606:4700:4700::1111")) is None
    # an allow-listed network covers the IPv4 inside an IPv6 address too, and nothing else
    allow = OutboundGuard(["10.0.0.0/8", "fd00::/8"])
    assert allow.permitted(ipaddress.ip_address("10.1.1.1"))
    assert allow.permitted(ipaddress.ip_address("64:ff9b::a00:5"))
    assert allow.permitted(ipaddress.ip_address("::ffff:10.0.0.5"))
    assert allow.permitted(ipaddress.ip_address("fd00::1"))
    assert not allow.permitted(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert not allow.permitted(ipaddress.ip_address("2001:0:a00:5::80ff:fffe"))  # Teredo client 127.0.0.1


# ---------------------------------------------------------------------- real connections
@dataclass
class Server:
    port: int
    connections: int = 0
    hosts: list[str] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)


async def _serve(tls: ssl.SSLContext | None = None) -> tuple[Server, asyncio.Server]:
    state = Server(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                state.hosts += [line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("host:")]
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: state.sni.append(name)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    return state, server


@pytest.fixture
async def http_server() -> AsyncIterator[Server]:
    state, server = await _serve()
    async with server:
        yield state


@dataclass
class Resolver:
    """Replaces socket.getaddrinfo: test names answer from `answers` (one list per lookup, the last one
    repeats), everything else is the real resolver."""

    answers: dict[str, list[list[str]]]
    lookups: dict[str, int] = field(default_factory=dict)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        n = self.lookups[name] = self.lookups.get(name, 0) + 1
        rounds = self.answers[name]
        result = []
        for addr in rounds[min(n, len(rounds)) - 1]:
            if ":" in addr:
                result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (addr, int(port or 0), 0, 0)))
            else:
                result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, int(port or 0))))
        return result


REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[list[str]]]], Resolver]:
    def install(answers: dict[str, list[list[str]]]) -> Resolver:
        fake = Resolver(answers)
        monkeypatch.setattr(socket, "getaddrinfo", fake)
        return fake

    return install


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a socket is opened to; anything but loopback is refused here (no test reaches out)."""
    seen: list[str] = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def connect_tcp(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        seen.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"test: {host} is unreachable")
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    return seen


async def test_a_rebinding_name_never_reaches_loopback(http_server: Server, resolver: Any, connects: list[str]) -> None:
    dns = resolver({"rebind.example.com": [[PUBLIC], ["127.0.0.1"]]})
    async with make_client(f"http://rebind.example.com:{http_server.port}") as client:
        # checked: the public address; connected to: that same address (refused by the test network)
        with pytest.raises(NotReady, match="ConnectError"):
            await request(client, "GET", "/")
        assert connects == [PUBLIC]
        assert dns.lookups["rebind.example.com"] == 1  # no second lookup by httpx / anyio
        # the next connection resolves again, gets 127.0.0.1, and is refused before connecting
        with pytest.raises(PermanentError, match=r"non-public address 127\.0\.0\.1 \(rebind\.example\.com\)"):
            await request(client, "GET", "/")
    assert connects == [PUBLIC]
    assert http_server.connections == 0


async def test_every_resolved_address_is_checked(http_server: Server, resolver: Any, connects: list[str]) -> None:
    resolver({"mixed.example.com": [[PUBLIC, "127.0.0.1"]], "nat64.example.com": [["64:ff9b::7f00:1"]],
              "teredo.example.com": [["2001:0:808:808::80ff:fffe"]]})
    for name in ("mixed.example.com", "nat64.example.com", "teredo.example.com"):
        async with make_client(f"http://{name}:{http_server.port}") as client:
            with pytest.raises(PermanentError, match="non-public address"):
                await request(client, "GET", "/")
    assert connects == [] and http_server.connections == 0


@pytest.mark.parametrize("literal", ["127.0.0.1", "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[::127.0.0.1]"])
async def test_ip_literals_are_checked_without_dns(literal: str, http_server: Server, connects: list[str]) -> None:
    async with make_client(f"http://{literal}:{http_server.port}") as client:
        with pytest.raises(PermanentError, match="non-public address"):
            await request(client, "GET", "/")
    assert connects == [] and http_server.connections == 0


async def test_the_pinned_connection_keeps_the_host_header(
    http_server: Server, resolver: Any, connects: list[str]
) -> None:
    dns = resolver({"desk.internal.test": [["127.0.0.1"]]})
    async with make_client(f"http://desk.internal.test:{http_server.port}", allow=["127.0.0.0/8"]) as client:
        for _ in range(2):
            resp = await request(client, "GET", "/api/ping")
            assert resp.text == "ok"
    assert connects == ["127.0.0.1"]  # one connection, kept alive
    assert dns.lookups["desk.internal.test"] == 1
    assert http_server.hosts == [f"desk.internal.test:{http_server.port}"] * 2


async def test_an_allow_listed_host_name_is_resolved_once_and_not_checked(
    http_server: Server, resolver: Any, connects: list[str]
) -> None:
    dns = resolver({"helpdesk.lan": [["127.0.0.1"]]})
    async with make_client(f"http://helpdesk.lan:{http_server.port}", allow=["helpdesk.lan"]) as client:
        assert (await request(client, "GET", "/")).text == "ok"
    assert connects == ["127.0.0.1"] and dns.lookups["helpdesk.lan"] == 1
    assert http_server.hosts == [f"helpdesk.lan:{http_server.port}"]


async def test_an_unresolvable_name_is_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    async with make_client("http://nowhere.example.com") as client:
        with pytest.raises(NotReady, match=r"cannot resolve nowhere\.example\.com"):
            await request(client, "GET", "/")


async def test_an_injected_transport_still_gets_the_url_check() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        return httpx.Response(200, text="ok")

    mock = httpx.MockTransport(handler)
    async with make_client("https://desk.test", transport=mock, allow=["desk.test"]) as client:
        assert (await request(client, "GET", "/x")).text == "ok"
        with pytest.raises(PermanentError, match="non-public address"):
            await request(client, "GET", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/")
    assert seen == ["https://desk.test/x"]


# ---------------------------------------------------------------------- TLS to the pinned address
def _cert(root: Path, name: str) -> tuple[Path, Path]:
    require_binary("openssl")
    key, cert = root / f"{name}.key", root / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_to_the_pinned_address_verifies_the_host_name(
    tmp_path: Path, resolver: Any, connects: list[str]
) -> None:
    cert, key = _cert(tmp_path, "desk.internal.test")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    state, server = await _serve(tls)
    resolver({"desk.internal.test": [["127.0.0.1"]], "other.internal.test": [["127.0.0.1"]]})
    trust = ssl.create_default_context(cafile=str(cert))
    guard_allow = ["127.0.0.0/8"]
    async with server:
        transport = GuardedTransport(OutboundGuard(guard_allow), verify=trust)
        async with make_client(f"https://desk.internal.test:{state.port}", transport=transport) as client:
            assert (await request(client, "GET", "/")).text == "ok"
        assert state.sni == ["desk.internal.test"]
        assert state.hosts == [f"desk.internal.test:{state.port}"]
        # the same server under another name: the certificate does not match, the request is not sent
        transport = GuardedTransport(OutboundGuard(guard_allow), verify=trust)
        async with make_client(f"https://other.internal.test:{state.port}", transport=transport) as client:
            with pytest.raises(NotReady, match="ConnectError"):
                await request(client, "GET", "/")
        assert state.sni == ["desk.internal.test", "other.internal.test"]
        assert state.hosts == [f"desk.internal.test:{state.port}"]
    assert connects == ["127.0.0.1", "127.0.0.1"]


def test_make_client_uses_the_guarded_transport() -> None:
    client = make_client("https://desk.example.com")
    assert isinstance(client._transport, GuardedTransport)
    assert not client.event_hooks["request"]
