"""OAuth2 access tokens for XOAUTH2 (Microsoft 365, Gmail): client-credentials and refresh-token flows.

- An access token is cached until ``EXPIRY_MARGIN`` seconds before it expires; ``invalidate()`` drops it
  (the IMAP server refused it) so the next login asks the token endpoint again.
- **Where the refresh token lives: ``refresh_token_file``.** The operator puts the first refresh token
  there (from the consent flow); Microsoft and Google may return a new one on any refresh, and it is
  written back atomically (temp file in the same directory, fsync, ``os.replace``, fsync of the
  directory; mode 0600) *before* the new access token is used. A crash therefore never leaves the
  daemon holding only a refresh token the provider has already replaced. A file rather than a
  checkpoint: the token survives a database rebuild and can be rotated by hand.
- Any refusal (4xx: ``invalid_grant``, ``invalid_client``, ``unauthorized_client``; Azure's AADSTS700082
  = refresh token expired, e.g. 90 days unused, AADSTS50173 = revoked by a password change) raises
  ``AuthFailed`` naming the error code and AADSTS number: the mailbox is reported failing at the next
  attempt instead of intake stopping silently. 429, 5xx and
  network errors raise ``NotReady``. No token or secret appears in an error, a log line or a repr.
- Requests go through ``svcbridge.make_client``: no redirects are followed, and the SSRF guard applies
  (an internal identity provider must be listed in ``outbound_allow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx

from svcbridge import AuthFailed, NotReady, make_client

EXPIRY_MARGIN = 120.0  # seconds: refresh this long before the provider's expiry


class TokenProvider:
    """Access tokens for one mailbox's ``[plugins.email.imap.oauth2]`` settings."""

    def __init__(
        self,
        cfg: Any,
        transport: httpx.AsyncBaseTransport | None = None,
        allow: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        self._transport, self._allow = transport, allow
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"TokenProvider(flow={self.cfg.flow!r}, client_id={self.cfg.client_id!r})"

    async def access_token(self) -> str:
        async with self._lock:
            if self._token is None or time.monotonic() > self._expires - EXPIRY_MARGIN:
                self._token, lifetime = await self._request()
                self._expires = time.monotonic() + lifetime
            return self._token

    def invalidate(self) -> None:
        self._token = None

    def expires_in(self) -> float | None:
        """Seconds until the cached access token expires (0 when it has); None before the first one."""
        return None if self._token is None else max(0.0, self._expires - time.monotonic())

    async def _request(self) -> tuple[str, float]:
        c = self.cfg
        form = {"client_id": c.client_id, "grant_type": c.flow}
        if c.scope:
            form["scope"] = c.scope
        if c.client_secret is not None:
            form["client_secret"] = c.client_secret.get_secret_value()
        old_refresh = None
        if c.flow == "refresh_token":
            old_refresh = form["refresh_token"] = await asyncio.to_thread(self._read_refresh_token)
        try:
            async with make_client(c.token_url, transport=self._transport, allow=self._allow) as http:
                r = await http.post(c.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise NotReady(f"OAuth2 token endpoint unreachable: {type(exc).__name__}") from None
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            parsed = r.json()
            body = parsed if isinstance(parsed, dict) else {}
        if r.status_code == 429 or r.status_code >= 500:
            raise NotReady(f"OAuth2 token endpoint answered HTTP {r.status_code}")
        if r.status_code >= 300:
            code = str(body.get("error", f"HTTP {r.status_code}"))
            desc = str(body.get("error_description", ""))
            # only the error code and Azure's AADSTS number: descriptions may echo request details
            detail = ", ".join([code[:60], *re.findall(r"AADSTS\d+", desc)[:1]])
            raise AuthFailed(f"OAuth2 token refused ({detail}): sign in again and store a new refresh token")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise NotReady(f"OAuth2 token endpoint answered HTTP {r.status_code} without an access_token")
        new_refresh = body.get("refresh_token")
        if (
            c.flow == "refresh_token"
            and isinstance(new_refresh, str)
            and new_refresh
            and new_refresh != old_refresh
        ):
            await asyncio.to_thread(self._write_refresh_token, new_refresh)
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return token, lifetime

    def _read_refresh_token(self) -> str:
        try:
            token = Path(self.cfg.refresh_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthFailed(f"cannot read refresh_token_file: {exc.strerror}") from None
        if not token:
            raise AuthFailed("refresh_token_file is empty: sign in and store a refresh token there")
        return token

    def _write_refresh_token(self, token: str) -> None:
        path = Path(self.cfg.refresh_token_file)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        # the rename itself must survive a power cut
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
