"""The first thing every HTTP request meets: the Host header allow-list and the client's real address.

- **Host**: a request whose ``Host`` is not in ``[http] allowed_hosts`` is answered 400 before any
  routing. A page that a victim's browser loads from ``evil.example`` whose DNS then points at
  127.0.0.1 (DNS rebinding) reaches the daemon with ``Host: evil.example``: refused, so a script on
  that page can neither read the console nor probe the webhooks. Unset, the list is the bound host,
  the localhost forms and ``public_url``'s host; ``*`` allows every name; ``.example.com`` allows
  ``example.com`` and its subdomains. The port is not compared.
- **Client address**: uvicorn's own proxy-header handling is off (it believed ``X-Forwarded-For``
  from 127.0.0.1 by default, so any local process could name itself any client). Only a peer inside
  ``[http] trusted_proxies`` may name the client: ``X-Forwarded-For`` is read from the right, each
  trusted hop passes on to the address it names, and the first hop that is not a trusted proxy is the
  client (entries further left are the client's own claims). ``X-Forwarded-Proto`` (the nearest
  proxy's, http or https) is believed from a trusted peer too. The resolved address replaces
  ``scope["client"]``, so the login limit, the audit trail and every log line use it; the peer the
  socket saw stays in ``scope["svcbridge.peer"]``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FrontDoor", "default_hosts", "host_allowed", "resolve_client"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOCAL = ("localhost", "127.0.0.1", "::1", "[::1]")
_BAD_HOST = b"bad Host header\n"


def default_hosts(bound: str, public_url: str | None) -> list[str]:
    """The names answered when ``allowed_hosts`` is unset: the bound host, localhost, public_url's host.

    A wildcard bind (0.0.0.0, ::) is not a name anyone should be reached by: it adds nothing, so a
    daemon listening on every interface answers only localhost and public_url until names are listed.
    """
    names = [*_LOCAL]
    if bound and bound not in ("0.0.0.0", "::", "[::]", ""):  # noqa: S104  (compared, not bound)
        names.append(bound.lower())
    host = urlsplit(public_url or "").hostname
    if host:
        names.append(host.lower())
    return names


def _host_name(header: str) -> str | None:
    """The name of a Host header without its port, lower case; None when it is malformed."""
    value = header.strip().lower()
    if not value or any(c in value for c in " /\\@?#\t"):
        return None
    if value.startswith("["):  # [v6]:port
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not value[end + 1 :].startswith(":")):
            return None
        return value[: end + 1]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".")


def host_allowed(header: str | None, allowed: Iterable[str]) -> bool:
    """Is a request with this ``Host`` header one of ours? (No header: HTTP/1.0, answered.)"""
    if header is None:
        return True
    name = _host_name(header)
    if name is None:
        return False
    for entry in allowed:
        e = entry.strip().lower().rstrip(".")
        if e == "*":
            return True
        if e.startswith(".") and (name == e[1:] or name.endswith(e)):
            return True
        if name == e or (":" in e and not e.startswith("[") and name == f"[{e}]"):  # IPv6 literal
            return True
    return False


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    v = value.strip()
    if v.startswith("["):  # "[2001:db8::1]:443"
        v = v[1 : v.find("]")] if "]" in v else v
    elif v.count(":") == 1:  # "192.0.2.1:5678"
        v = v.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(addr: str, proxies: list[Network]) -> bool:
    ip = _ip(addr)
    return ip is not None and any(ip in n for n in proxies)


def resolve_client(peer: str, forwarded_for: str | None, proxies: list[Network]) -> str:
    """The client's address: the peer, or behind trusted proxies the right-most hop that is not one."""
    if not proxies or not _trusted(peer, proxies):
        return peer
    client = peer
    for hop in reversed([h.strip() for h in (forwarded_for or "").split(",") if h.strip()]):
        ip = _ip(hop)
        client = str(ip) if ip is not None else hop[:100]  # a proxy that wrote a non-address: as written
        if ip is None or not any(ip in n for n in proxies):
            break
    return client


class FrontDoor:
    """ASGI middleware: Host allow-list (400), then the client address from trusted proxies."""

    def __init__(self, app: Any, allowed_hosts: list[str], trusted_proxies: list[str]) -> None:
        self.app = app
        self.allowed = allowed_hosts
        self.proxies: list[Network] = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("headers", [])
        hosts = [v.decode("latin-1") for k, v in raw if k.lower() == b"host"]
        # two Host headers are a 400 (RFC 9112 3.2): a proxy and the application could read different ones
        if len(hosts) > 1 or not host_allowed(hosts[0] if hosts else None, self.allowed):
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(_BAD_HOST)).encode()),
                        (b"cache-control", b"no-store"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _BAD_HOST})
            return
        client = scope.get("client")
        if client and self.proxies and _trusted(str(client[0]), self.proxies):
            peer = str(client[0])
            # several X-Forwarded-For lines are one list, in order (RFC 9110 5.3)
            xff = ",".join(v.decode("latin-1") for k, v in raw if k.lower() == b"x-forwarded-for")
            scope = dict(scope)
            scope["svcbridge.peer"] = peer
            scope["client"] = (resolve_client(peer, xff, self.proxies), 0)
            protos = [v.decode("latin-1") for k, v in raw if k.lower() == b"x-forwarded-proto"]
            proto = ",".join(protos).split(",")[-1].strip().lower()  # the nearest proxy's
            if proto in ("http", "https"):
                scope["scheme"] = proto
        await self.app(scope, receive, send)
