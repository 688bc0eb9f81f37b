"""Fetching what a customer sent by URL (MMS pictures, a fax gateway's PDF): guarded and bounded.

``fetch_media`` is the one way a channel plugin downloads a file a provider hosts: through
``make_client`` (the SSRF guard: no loopback or private address unless allow-listed, no redirect to
another host; a redirect is followed up to three times, without the credential when it leaves
the host), https only (plain http for a loopback test server), with the provider's credential
(``auth`` or ``headers``), a time budget, and a size limit enforced while streaming (a declared
``Content-Length`` over the limit is refused before the body is read; a server that lies is cut off
at ``limit`` bytes). Every failure is a ``MediaError`` with a reason an agent can read: the caller
keeps the message and records why its file is missing, it never loses the message.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

import httpx

from .errors import NotReady, PermanentError
from .http import make_client

__all__ = ["MediaError", "fetch_media"]


class MediaError(ValueError):
    """A file could not be fetched; the message says why (size, scheme, refused address, HTTP status)."""


async def fetch_media(
    url: str,
    *,
    limit: int,
    allow: list[str] | tuple[str, ...] = (),
    transport: httpx.AsyncBaseTransport | None = None,
    auth: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> tuple[bytes, str]:
    """GET ``url``; ``(bytes, content type)`` of at most ``limit`` bytes within ``timeout`` seconds in
    all (redirects included), else ``MediaError``."""
    try:
        # a total budget: httpx's timeout is per read, and a server dripping a byte a second kept a
        # webhook's answer (Telnyx wants one within 2 s, Twilio 15 s) waiting for as long as it liked
        async with asyncio.timeout(timeout):
            return await _fetch(url, limit, allow, transport, auth, headers, timeout)
    except TimeoutError:
        raise MediaError(f"media fetch took longer than its time budget of {timeout:g} s") from None


async def _fetch(
    url: str,
    limit: int,
    allow: list[str] | tuple[str, ...],
    transport: httpx.AsyncBaseTransport | None,
    auth: Any,
    headers: dict[str, str] | None,
    timeout: float,
) -> tuple[bytes, str]:
    parts = urllib.parse.urlsplit(url)
    local = parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme != "https" and not local:
        raise MediaError(f"media URL must be https: {url[:100]!r}")
    for _hop in range(4):  # the URL and up to 3 redirects (Twilio's media URL sends you to its CDN)
        client = make_client(
            "", auth=auth, headers=headers, timeout=timeout, transport=transport, allow=allow
        )
        async with client as c:
            got = await _get(c, url, limit)
        if isinstance(got, tuple):
            return got
        nxt = urllib.parse.urljoin(url, got)
        a, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(nxt)
        if b.scheme != "https" and not (local and b.scheme == "http"):
            raise MediaError(f"media redirect to a non-https URL refused: {nxt[:100]!r}")
        if (a.scheme, a.netloc) != (b.scheme, b.netloc):
            auth, headers = None, None  # a credential never follows the file to another host
        url = nxt
    raise MediaError("media fetch: too many redirects")


async def _get(c: httpx.AsyncClient, url: str, limit: int) -> tuple[bytes, str] | str:
    """The file, or the Location of a redirect."""
    try:
        async with c.stream("GET", url) as resp:
            if resp.status_code in (301, 302, 303, 307, 308) and resp.headers.get("location"):
                return str(resp.headers["location"])
            if resp.status_code != 200:
                raise MediaError(f"media fetch answered HTTP {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise MediaError(f"media of {declared} bytes is over the limit of {limit}")
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise MediaError(f"media is over the limit of {limit} bytes")
                chunks.append(chunk)
            ctype = resp.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
            return b"".join(chunks), ctype.lower()
    except httpx.HTTPError as exc:
        raise MediaError(f"media fetch failed: {type(exc).__name__}: {exc}"[:300]) from None
    except PermanentError as exc:  # the SSRF guard refused the address
        raise MediaError(f"media URL refused: {exc}"[:300]) from None
    except NotReady as exc:  # the host does not resolve
        raise MediaError(f"media fetch failed: {exc}"[:300]) from None
