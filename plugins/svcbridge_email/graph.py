"""Microsoft Graph mail source: a delta query on one mailbox folder, for tenants that disable IMAP.

- **What is new** comes from ``GET /users/{user}/mailFolders/{folder}/messages/delta``. A round is a
  chain of pages joined by ``@odata.nextLink`` and ends with an ``@odata.deltaLink``; the next round
  starts from that link and returns only what changed. The first request asks for
  ``changeType=created`` (Graph encodes it into every later link), so marking a message read or moving
  it, which we do ourselves, never comes back as a change to fetch again. ``@removed`` rows are skipped.
- **Same parser.** Each new message is fetched as MIME with ``GET /users/{user}/messages/{id}/$value``
  and journaled as raw bytes, so Graph mail goes through exactly the parser Maildir, IMAP and
  ``svcbridge ingest`` use. Ids are requested as immutable (``Prefer: IdType="ImmutableId"``): the
  external id of a message stays the same when it is moved, so a redelivered page is recognised.
- **Journal, then acknowledge, then checkpoint.** A page is journaled in one transaction
  (``submit_many``); only then does the after-action run (``none``, ``read``, ``move``, ``delete``), and
  only then is the page's link stored: ``next_link`` inside a round, ``delta_link`` at its end. A
  crash in between replays the page; the journal knows its ids, nothing is doubled. An after-action the
  server refuses for one message (404: deleted meanwhile) is logged and skipped.
- **Expired state.** Graph answers an expired or unknown delta token with 410 Gone: both links are
  dropped and a full round starts; the journal and the pipeline's Message-ID / content checks keep
  that from making second tickets.
- **Throttling.** 429 and 503 with ``Retry-After`` up to ``max_wait`` seconds are waited out here (a stop
  request ends the wait) and the request is repeated; a longer wait raises ``NotReady(retry_after=...)``
  and the daemon backs this source off at least that long. Other mailboxes are not affected.
- **Tokens** come from ``oauth.py`` (client credentials against Azure AD, scope
  ``https://graph.microsoft.com/.default``). A 401 drops the cached token and retries once with a new
  one; a second 401, or a 403 (the app lacks ``Mail.ReadWrite``), raises ``AuthFailed`` and the source
  is reported failing on /readyz. No token appears in an error or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from typing import Any

import httpx
import structlog

from svcbridge import AuthFailed, IntakeContext, NotReady, PermanentError, RawMessage, make_client
from svcbridge import classify_response as classify

log = structlog.get_logger("svcbridge.graph")

THROTTLED = (429, 503)
MAX_THROTTLE_RETRIES = 5  # waits per request before the daemon's own backoff takes over


class DeltaExpired(Exception):
    """The stored delta or next link is no longer valid (HTTP 410): start a full round."""


class GraphSource:
    """One mail folder of one Microsoft 365 mailbox (``[[plugins.email.graph]]``)."""

    channel = "email"

    def __init__(
        self,
        cfg: Any,
        tokens: Any,
        transport: httpx.AsyncBaseTransport | None = None,
        allow: list[str] | tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.name: str = cfg.name
        self.interval: float = cfg.poll_interval
        self.tokens = tokens  # oauth.TokenProvider
        self.transport, self.allow = transport, allow
        base = cfg.base_url.rstrip("/")
        user = urllib.parse.quote(cfg.user, safe="@")
        self.user_url = f"{base}/users/{user}"

    def __repr__(self) -> str:
        return f"GraphSource(name={self.name!r}, user={self.cfg.user!r}, folder={self.cfg.folder!r})"

    def initial_url(self) -> str:
        folder = urllib.parse.quote(self.cfg.folder, safe="")
        query = urllib.parse.urlencode({"changeType": "created", "$select": "id,internetMessageId"})
        return f"{self.user_url}/mailFolders/{folder}/messages/delta?{query}"

    def health_facts(self) -> dict[str, Any]:
        """What the console's overview shows beside this source's state: the OAuth token's expiry."""
        left = self.tokens.expires_in() if self.tokens is not None else None
        return {} if left is None else {"oauth_token_expires_in": left}

    # ------------------------------------------------------------------ one pass
    async def poll(self, ctx: IntakeContext) -> int:
        async with make_client(
            self.cfg.base_url, timeout=self.cfg.timeout, transport=self.transport, allow=self.allow
        ) as http:
            try:
                return await self._round(ctx, http)
            except DeltaExpired:
                log.warning("graph_delta_expired_full_resync", source=self.name)
                await ctx.set_checkpoint("next_link", "")
                await ctx.set_checkpoint("delta_link", "")
                return await self._round(ctx, http)

    async def _round(self, ctx: IntakeContext, http: httpx.AsyncClient) -> int:
        url = (
            await ctx.get_checkpoint("next_link")
            or await ctx.get_checkpoint("delta_link")
            or self.initial_url()
        )
        total = 0
        while not ctx.stopping.is_set():
            page = (await self._send(ctx, http, "GET", url, prefer_page=True)).json()
            rows = [r for r in page.get("value", []) if isinstance(r, dict) and "@removed" not in r]
            raws = [await self._fetch(ctx, http, row) for row in rows]
            if raws:
                await ctx.submit_many(raws)  # StoreUnavailable propagates: nothing acknowledged or stored
            for row in rows:
                await self._after(ctx, http, str(row["id"]))
            total += len(raws)
            nxt, delta = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
            if nxt:
                await ctx.set_checkpoint("next_link", str(nxt))
                url = str(nxt)
                continue
            if not delta:
                raise PermanentError(f"{self.name}: a delta page without nextLink or deltaLink")
            # delta first: a crash between the writes resumes from the round's end, not its middle
            await ctx.set_checkpoint("delta_link", str(delta))
            await ctx.set_checkpoint("next_link", "")
            break
        return total

    async def _fetch(self, ctx: IntakeContext, http: httpx.AsyncClient, row: dict[str, Any]) -> RawMessage:
        mid = str(row["id"])
        meta: dict[str, Any] = {"graph_user": self.cfg.user, "graph_folder": self.cfg.folder}
        if row.get("internetMessageId"):
            meta["internet_message_id"] = str(row["internetMessageId"])
        url = f"{self.user_url}/messages/{urllib.parse.quote(mid, safe='')}/$value"
        try:
            body = (await self._send(ctx, http, "GET", url)).content
        except PermanentError as exc:
            # one message Graph will not hand out (404 after a delete elsewhere, an item without MIME):
            # journaled empty with the reason, so the pipeline quarantines it and the round goes on
            log.error("graph_message_unfetchable", source=self.name, error=str(exc))
            meta["fetch_error"] = str(exc)
            body = b""
        return RawMessage(channel="email", source=self.name, external_id=mid, raw=body, metadata=meta)

    async def _after(self, ctx: IntakeContext, http: httpx.AsyncClient, mid: str) -> None:
        action = self.cfg.after
        if action == "none":
            return
        await ctx.confirm_lease()  # LeaseLost (paused past the lease): another replica acts now
        url = f"{self.user_url}/messages/{urllib.parse.quote(mid, safe='')}"
        try:
            if action == "read":
                await self._send(ctx, http, "PATCH", url, json={"isRead": True})
            elif action == "move":
                await self._send(ctx, http, "POST", f"{url}/move", json={"destinationId": self.cfg.move_to})
            else:
                await self._send(ctx, http, "DELETE", url)
        except PermanentError as exc:
            # journaled already: a refused acknowledgement must not replay the page forever
            log.warning("graph_after_action_failed", source=self.name, action=action, error=str(exc))

    # ------------------------------------------------------------------ HTTP
    async def _send(
        self, ctx: IntakeContext, http: httpx.AsyncClient, method: str, url: str, *,
        prefer_page: bool = False, json: Any = None,
    ) -> httpx.Response:  # fmt: skip
        refreshed = False
        throttled = 0
        while True:
            prefer = ['IdType="ImmutableId"']
            if prefer_page:
                prefer.insert(0, f"odata.maxpagesize={self.cfg.page_size}")
            token = await self.tokens.access_token()
            headers = {"Authorization": f"Bearer {token}", "Prefer": ", ".join(prefer)}
            try:
                resp = await http.request(method, url, headers=headers, json=json)
            except httpx.TimeoutException as exc:
                raise NotReady(f"{self.name}: Graph {method} timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise NotReady(f"{self.name}: Graph {method}: {type(exc).__name__}") from None
            code = resp.status_code
            if code == 401 and not refreshed:
                self.tokens.invalidate()  # expired or revoked: one fresh token, then give up
                refreshed = True
                continue
            if code in THROTTLED:
                wait = _retry_after(resp)
                throttled += 1
                if wait is not None and wait <= self.cfg.max_wait and throttled <= MAX_THROTTLE_RETRIES:
                    log.info("graph_throttled", source=self.name, retry_after=wait)
                    if await _sleep(ctx, wait):
                        raise NotReady(f"{self.name}: stopping while throttled")
                    continue
                raise NotReady(f"{self.name}: Graph throttled (HTTP {code})", retry_after=wait)
            if code == 410:
                raise DeltaExpired()
            if code in (401, 403):
                raise AuthFailed(f"{self.name}: Graph refused the token (HTTP {code}, {_error_code(resp)})")
            # only the path goes into an error: query strings hold delta and skip tokens
            classify(resp, f"{self.name}: Graph {method} {httpx.URL(url).path}")
            return resp


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_code(resp: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        return str(resp.json()["error"]["code"])[:60]
    return "no error code"


async def _sleep(ctx: IntakeContext, seconds: float) -> bool:
    """Wait ``seconds``; True when a stop request ended the wait early."""
    start = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.stopping.wait(), timeout=seconds)
    return ctx.stopping.is_set() and time.monotonic() - start < seconds
