"""Outbound HTTP for connectors: one client factory, one error classifier, an SSRF guard.

- ``classify(response)`` turns a reply into the error that says what to do next: 429 / 5xx / 408 →
  ``NotReady`` (with ``retry_after`` from Retry-After, seconds or HTTP date), 401 / 403 → ``AuthFailed``,
  any other 4xx → ``PermanentError``; network errors and timeouts → ``NotReady``.
- Redirects are never followed automatically: a helpdesk answering 3xx to another host would otherwise
  receive our credentials (custom headers such as ``X-API-Key`` survive httpx's own redirect handling).
  A same-origin redirect is followed once by ``request``.
- ``OutboundGuard`` refuses requests to loopback, link-local, private and other non-public addresses
  unless the host or network is allow-listed (``outbound_allow`` in settings), checked on every request
  after DNS resolution so a webhook URL cannot be pointed at internal services.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .errors import AuthFailed, NotReady, PermanentError
from .models import utcnow

__all__ = ["OutboundGuard", "classify", "make_client", "request"]


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
    """Resolve the host and refuse non-public addresses unless allow-listed."""

    def __init__(self, allow: list[str] | tuple[str, ...] = ()) -> None:
        self.hosts = {a.lower() for a in allow if not _is_net(a)}
        self.nets = [ipaddress.ip_network(a, strict=False) for a in allow if _is_net(a)]

    async def check(self, url: httpx.URL) -> None:
        host = url.host
        if host.lower() in self.hosts:
            return
        try:
            addresses = [ipaddress.ip_address(host)]  # an IP literal needs no DNS round trip
        except ValueError:
            try:
                port = url.port or 443
                infos = await asyncio.to_thread(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise NotReady(f"cannot resolve {host}: {exc}") from None
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for ip in addresses:
            if ip.is_global or any(ip in n for n in self.nets):
                continue
            raise PermanentError(f"refused outbound request to non-public address {ip} ({host})")


def _is_net(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
        return True
    except ValueError:
        return False


def make_client(
    base_url: str,
    *,
    headers: dict[str, str] | None = None,
    auth: Any = None,
    timeout: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
    allow: list[str] | tuple[str, ...] = (),
) -> httpx.AsyncClient:
    """An AsyncClient that never follows redirects and checks every request against the guard."""
    guard = OutboundGuard(allow)

    async def _check(req: httpx.Request) -> None:
        await guard.check(req.url)

    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": "svcbridge", **(headers or {})},
        auth=auth,
        timeout=timeout,
        follow_redirects=False,
        transport=transport,
        event_hooks={"request": [_check]},
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
