"""Outbound HTTP for connectors: one client factory, one error classifier, an SSRF guard.

- ``classify(response)`` turns a reply into the error that says what to do next: 429 / 5xx / 408 →
  ``NotReady`` (with ``retry_after`` from Retry-After, seconds or HTTP date), 401 / 403 → ``AuthFailed``,
  any other 4xx → ``PermanentError``; network errors and timeouts → ``NotReady``.
- Redirects are never followed automatically: a helpdesk answering 3xx to another host would otherwise
  receive our credentials (custom headers such as ``X-API-Key`` survive httpx's own redirect handling).
  A same-origin redirect is followed once by ``request``.
- ``OutboundGuard`` refuses requests to loopback, link-local, private and other non-public addresses
  unless the host or network is allow-listed (``outbound_allow`` in settings), so a webhook URL cannot be
  pointed at internal services. IPv6 addresses that carry an IPv4 address (IPv4-mapped and -compatible,
  NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4, Teredo) are judged by that IPv4 address.
- ``make_client`` connects through ``GuardedTransport``: each new connection resolves the host once, checks
  every address, and opens the socket to a checked address (TLS and the Host header keep the host name), so
  DNS rebinding between the check and the connect is impossible. A transport passed in (tests: a
  ``MockTransport``, an ASGI app) does its own connecting; its requests' URLs are checked before sending.
  Environment proxies (``HTTPS_PROXY``) are not used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx

from .errors import AuthFailed, NotReady, PermanentError
from .models import utcnow

__all__ = ["GuardedTransport", "OutboundGuard", "classify", "embedded_ipv4", "make_client", "request"]

_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds())


def classify(resp: httpx.Response, what: str = "") -> None:
    """Raise the svcbridge error that matches a non-2xx reply; return for 2xx."""
    code = resp.status_code
    if code < 300:
        return
    label = f"{what or resp.request.method + ' ' + resp.request.url.path}: HTTP {code}"
    body = resp.text[:300] if resp.content else ""
    if code in (429, 408) or code >= 500:
        raise NotReady(f"{label} {body}".strip(), retry_after=retry_after(resp))
    if code in (401, 403):
        raise AuthFailed(label)
    if 300 <= code < 400:
        raise PermanentError(f"{label}: redirect to {resp.headers.get('Location', '?')} not followed")
    raise PermanentError(f"{label} {body}".strip())


class OutboundGuard:
    """Resolve the host and refuse non-public addresses unless allow-listed.

    ``outbound_allow`` entries are host names (skip the address check for that name) or networks (CIDR; an
    address inside one passes, and so does an IPv6 address whose embedded IPv4 is inside one).
    """

    def __init__(self, allow: list[str] | tuple[str, ...] = ()) -> None:
        self.hosts = {a.lower().rstrip(".") for a in allow if not _is_net(a)}
        self.nets = [ipaddress.ip_network(a, strict=False) for a in allow if _is_net(a)]

    def permitted(self, ip: IPAddress) -> bool:
        """May a connection go to `ip`? Public, or inside an allow-listed network."""
        if any(ip in n for n in self.nets):
            return True
        embedded = embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        if embedded is not None:  # decided by the IPv4 the packets end up at, not by the IPv6 wrapper
            return all(_public(v4) or any(v4 in n for n in self.nets) for v4 in embedded)
        return _public(ip)

    async def resolve(self, host: str, port: int, timeout: float | None = None) -> list[str]:
        """The addresses of `host` (one DNS round trip, in the resolver's order, without duplicates)."""
        lookup = asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        try:
            infos = await asyncio.wait_for(lookup, timeout)  # a hanging lookup is abandoned, not waited for
        except TimeoutError:
            raise NotReady(f"cannot resolve {host}: timeout after {timeout}s") from None
        except (socket.gaierror, UnicodeError) as exc:
            raise NotReady(f"cannot resolve {host}: {exc}") from None
        found: list[str] = []
        for info in infos:
            addr = str(info[4][0])
            if info[0] in (socket.AF_INET, socket.AF_INET6) and addr not in found:
                found.append(addr)
        if not found:
            raise NotReady(f"cannot resolve {host}: no IPv4 or IPv6 address")
        return found

    async def addresses(self, host: str, port: int, timeout: float | None = None) -> list[str]:
        """The addresses a connection to `host` may use: all of them checked, else ``PermanentError``.

        An IP literal needs no DNS round trip; an allow-listed host name is resolved but not checked.
        """
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        else:
            if not self.permitted(ip):
                raise PermanentError(f"refused outbound request to non-public address {ip}")
            return [str(ip)]
        found = await self.resolve(host, port, timeout)
        if self.host_allowed(host):
            return found
        for addr in found:
            if not self.permitted(ipaddress.ip_address(addr)):
                raise PermanentError(f"refused outbound request to non-public address {addr} ({host})")
        return found

    def host_allowed(self, host: str) -> bool:
        """Is `host` an allow-listed name (its addresses are not checked)?"""
        return host.lower().rstrip(".") in self.hosts

    async def check(self, url: httpx.URL) -> None:
        """Refuse `url` unless every address of its host passes (for transports that connect themselves)."""
        if not self.host_allowed(url.host):
            await self.addresses(url.host, url.port or (443 if url.scheme == "https" else 80))


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not caught by ipaddress's flags on every Python 3.11 patch level: the deprecated 6to4 relay anycast
# (RFC 7526) and IPv6 site-local (fec0::/10, deprecated by RFC 3879).
_NOT_PUBLIC = [ipaddress.ip_network("192.88.99.0/24"), ipaddress.ip_network("fec0::/10")]

# IPv6 forms whose packets are delivered to an IPv4 address carried inside them.
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # IPv4-mapped ::ffff:a.b.c.d (ipv4_mapped)
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT IPv4-translated ::ffff:0:a.b.c.d (RFC 2765)
_COMPATIBLE = ipaddress.ip_network("::/96")  # IPv4-compatible ::a.b.c.d (deprecated, RFC 4291)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # NAT64 well-known prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # NAT64 local-use prefix (RFC 8215)
_6TO4 = ipaddress.ip_network("2002::/16")  # 6to4 (RFC 3056): 2002:a.b.c.d::/48
_TEREDO = ipaddress.ip_network("2001::/32")  # Teredo (RFC 4380): server v4, then the client v4 inverted


def _public(ip: IPAddress) -> bool:
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        return False
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return False
    return not any(ip in n for n in _NOT_PUBLIC)


def _bits(value: int, start: int, length: int) -> int:
    """`length` bits of the 128-bit `value` starting at bit `start` (0 = most significant)."""
    return (value >> (128 - start - length)) & ((1 << length) - 1)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address hands its packets to (NAT64, 6to4, Teredo, mapped, compatible).

    None when `ip` is a plain IPv6 address. For the NAT64 local-use prefix the operator picks the prefix
    length (RFC 6052: /48, /56, /64 or /96 inside 64:ff9b:1::/48), so the IPv4 of every layout the address
    is well formed for is returned (the /96 layout always, the others when bits 64-71 and the suffix are
    zero, as RFC 6052 requires).
    """
    value = int(ip)
    v4 = ipaddress.IPv4Address
    if ip in _MAPPED or ip in _TRANSLATED or ip in _COMPATIBLE or ip in _NAT64:
        return [v4(value & 0xFFFFFFFF)]
    if ip in _NAT64_LOCAL:
        found = [v4(value & 0xFFFFFFFF)]
        for plen in (48, 56, 64):
            suffix_start = plen + 40  # 32 bits of IPv4 plus the u octet (bits 64-71) inside them
            if _bits(value, 64, 8) or _bits(value, suffix_start, 128 - suffix_start):
                continue
            head = 64 - plen  # IPv4 bits before the u octet
            addr = (_bits(value, plen, head) << (32 - head)) | _bits(value, 72, 32 - head)
            found.append(v4(addr))
        return found
    if ip in _6TO4:
        return [v4(_bits(value, 16, 32))]
    if ip in _TEREDO:
        return [v4(_bits(value, 32, 32)), v4(~value & 0xFFFFFFFF)]
    return None


def _is_net(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
        return True
    except ValueError:
        return False


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses the guard resolved and checked, never to a name resolved again.

    httpcore still does TLS on the returned stream with the URL's host name (SNI and certificate check),
    and the Host header is the request's own: only the address the socket goes to is decided here.
    """

    def __init__(self, guard: OutboundGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else time.monotonic() + timeout
        addresses = await self.guard.addresses(host, port, timeout)
        error: Exception = httpcore.ConnectError(f"no address to connect to for {host}")
        for addr in addresses:  # in the resolver's order; each attempt gets what is left of the timeout
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"connect to {host} ({', '.join(addresses)}): timeout")
            try:
                return await self.inner.connect_tcp(
                    addr, port, timeout=left, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("outbound requests do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's network transport whose every connection goes to an address the guard resolved and checked.

    One DNS round trip per new connection: the addresses it returns are checked (all of them must pass)
    and the socket is opened to one of them, so a name that answers a public address to the check and
    127.0.0.1 a moment later (DNS rebinding) cannot reach 127.0.0.1. Environment proxies are not used.
    """

    def __init__(
        self,
        guard: OutboundGuard,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = _LIMITS,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        context = httpx.create_ssl_context(verify=verify)
        super().__init__(verify=context, limits=limits)
        self.guard = guard
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(guard, network_backend),
        )


def make_client(
    base_url: str,
    *,
    headers: dict[str, str] | None = None,
    auth: Any = None,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    allow: list[str] | tuple[str, ...] = (),
) -> httpx.AsyncClient:
    """An AsyncClient that never follows redirects and connects only where the guard allows."""
    guard = OutboundGuard(allow)
    hooks: dict[str, list[Any]] = {}
    if transport is None:
        transport = GuardedTransport(guard)  # checks and pins every connection it opens
    elif not isinstance(transport, GuardedTransport):

        async def _check(req: httpx.Request) -> None:
            await guard.check(req.url)

        hooks["request"] = [_check]

    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": "svcbridge", **(headers or {})},
        auth=auth,
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        event_hooks=hooks,
    )


async def request(
    client: httpx.AsyncClient, method: str, url: str, what: str = "", **kwargs: Any
) -> httpx.Response:
    """Send, follow one same-origin redirect, map network errors to NotReady and statuses via classify."""
    try:
        resp = await client.request(method, url, **kwargs)
        if resp.is_redirect and resp.next_request is not None:
            target = resp.next_request.url
            if (target.scheme, target.host, target.port) == (resp.url.scheme, resp.url.host, resp.url.port):
                resp = await client.request(method, target, **kwargs)
    except httpx.TimeoutException as exc:
        raise NotReady(f"{what or method + ' ' + url}: timeout ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise NotReady(f"{what or method + ' ' + url}: {type(exc).__name__}: {exc}") from None
    classify(resp, what)
    return resp
