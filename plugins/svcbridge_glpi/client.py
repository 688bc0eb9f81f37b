"""``GlpiSink``: GLPI's legacy REST API (``apirest.php``, contract §1.2) and the GLPI 11 webhook.

Session: ``GET initSession`` with ``Authorization: user_token <t>`` (or Basic) and ``App-Token`` returns a
``session_token``; every later call sends ``Session-Token`` and ``App-Token``. A 401
``ERROR_SESSION_TOKEN_INVALID`` (the session expired on the server) starts one new session and repeats the
call once; any other 401/403, and an App-Token GLPI refuses (400 ``ERROR_APP_TOKEN_PARAMETERS_MISSING`` /
``ERROR_WRONG_APP_TOKEN_PARAMETER``), is ``AuthFailed``: the host parks the target. ``aclose`` sends
``killSession``. Failures otherwise mean what ``svcbridge.classify_response`` says (429/5xx/timeouts
retry with Retry-After, other 4xx dead-letter the item); redirects are never followed, so the session and
app tokens never reach another host.

Calls:

- find:      ``GET /search/Ticket?criteria[0][field]=1&criteria[0][searchtype]=contains&criteria[0][value]=
  [SB-000001]&forcedisplay[0]=2``, paged by ``range``; a row whose name (``"1"``) carries the tag counts,
  the lowest id (``"2"``) wins.
- create:    ``POST /Ticket`` ``{"input": {name, content, status: 1, urgency, type, entities_id,
  [_users_id_requester], <fields>}}`` -> 201 ``{"id"}``.
- follow-up: ``POST /ITILFollowup`` ``{"input": {itemtype: "Ticket", items_id, content, is_private}}``
  with the marker first in ``content``, after ``GET /Ticket/{id}/ITILFollowup`` (paged by ``range``,
  206 + ``Content-Range``) found none carrying it.
- note:      a ticket change for the agents (``add_note``): the same ``POST /ITILFollowup`` with
  ``is_private: 1`` whatever ``private_followups`` says, so the requester never sees it.
- priority:  ``PUT /Ticket/{id}`` ``{"input": {"urgency": N}}`` with the ``urgencies`` map the create uses
  (GLPI derives the ticket's priority from urgency and impact, as it does on create).
- reopen:    ``GET /Ticket/{id}`` (``status``), ``PUT /Ticket/{id}`` ``{"input": {"status": 2}}``.

Attachments: the contract has no Document upload, so files stay in svcbridge and the ticket text names
them (``describe``). Webhook: ``X-GLPI-signature = hex(HMAC-SHA256(secret, body + X-GLPI-timestamp))``;
GLPI's cron may deliver late and retry, so there is no freshness window and the delivery is deduplicated
on a hash of the body. An ``item`` with ``itemtype``/``items_id``/``content`` is a follow-up (public
reply, or internal note when ``is_private``), one with ``status`` a ticket; which item a webhook carries
is not in the contract (gap), so it is told by these columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import httpx

from svcbridge import (
    AuthFailed,
    DeliveryItem,
    HelpdeskSink,
    NotReady,
    PermanentError,
    Priority,
    StatusUpdate,
    Ticket,
    TicketState,
    WebhookRoute,
    basic_auth,
    classify_response,
    hmac_matches,
    html_to_text,
    signed_webhook,
)

from .settings import GlpiSettings

PAGE = 100  # rows asked per range; GLPI's own limit (Accept-Range) is larger
MAX_PAGES = 50
APP_TOKEN_ERRORS = ("ERROR_APP_TOKEN_PARAMETERS_MISSING", "ERROR_WRONG_APP_TOKEN_PARAMETER")


def error_code(resp: httpx.Response) -> str:
    """GLPI's error name: the first element of its ``["ERROR_...", "message"]`` body."""
    try:
        data = resp.json()
    except ValueError:
        return ""
    return str(data[0]) if isinstance(data, list) and data else ""


def as_html(text: str) -> str:
    """Plain text as the rich text GLPI shows (newlines kept, markup escaped)."""
    return "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"


class GlpiSink(HelpdeskSink):
    """A GLPI instance as a svcbridge sink (status comes back through the signed webhook)."""
    ticket_page = "front/ticket.form.php?id={id}"  # the agents' page, linked from the operator console

    label = "GLPI"
    fields: ClassVar[frozenset[str]] = HelpdeskSink.fields | {"priority", "due"}

    def __init__(self, cfg: GlpiSettings, *, allow: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(cfg.name, cfg.state_map)
        self.cfg = cfg
        app = {"App-Token": cfg.app_token.get_secret_value()} if cfg.app_token is not None else None
        self.open_http(cfg, None, allow, headers=app)  # Authorization only for initSession
        self._session: str | None = None
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    # ------------------------------------------------------------------ session and calls
    def _login_header(self) -> str:
        if self.cfg.user_token is not None:
            return f"user_token {self.cfg.user_token.get_secret_value()}"
        pw = self.cfg.password.get_secret_value() if self.cfg.password else ""
        return basic_auth(self.cfg.login, pw)

    def _session_lock(self) -> asyncio.Lock:
        # one initSession at a time; a Lock belongs to one loop and the sink outlives asyncio.run
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    async def _send(
        self, method: str, path: str, what: str, headers: dict[str, str], **kw: Any
    ) -> httpx.Response:
        try:
            return await self.http.get().request(method, path, headers=headers, **kw)
        except httpx.TimeoutException as exc:
            raise NotReady(f"GLPI {what}: timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise NotReady(f"GLPI {what}: {type(exc).__name__}: {exc}") from None

    async def _token(self, stale: str | None) -> str:
        async with self._session_lock():
            if self._session is None or self._session == stale:
                resp = await self._send(
                    "GET", "initSession", "initSession", {"Authorization": self._login_header()}
                )
                if resp.status_code == 400 and error_code(resp) in APP_TOKEN_ERRORS:
                    raise AuthFailed(f"GLPI initSession: HTTP 400 {error_code(resp)}")
                classify_response(resp, "GLPI initSession")
                try:
                    token = str(resp.json()["session_token"])
                except (ValueError, KeyError, TypeError):
                    raise NotReady("GLPI initSession: no session_token in the answer") from None
                self._session = token
            return self._session

    async def request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        """One API call with the session; an expired session is renewed once and the call repeated.

        Not ``http_request``: GLPI's error bodies decide between a renewal and ``AuthFailed`` first.
        """
        token = await self._token(None)
        for renewed in (False, True):
            resp = await self._send(method, path, what, {"Session-Token": token}, **kw)
            if resp.status_code == 401 and error_code(resp) == "ERROR_SESSION_TOKEN_INVALID" and not renewed:
                token = await self._token(token)
                continue
            break
        if resp.status_code in (400, 401) and error_code(resp) in APP_TOKEN_ERRORS:
            raise AuthFailed(f"GLPI {what}: HTTP {resp.status_code} {error_code(resp)}")
        classify_response(resp, f"GLPI {what}")
        return resp

    async def pages(self, path: str, what: str, params: dict[str, Any], rows: Any) -> list[Any]:
        """Every row of a ``range``-paged GET; `rows(body)` picks the rows out of one answer."""
        out: list[Any] = []
        for n in range(MAX_PAGES):
            start = n * PAGE
            resp = await self.request(
                "GET", path, what, params={**params, "range": f"{start}-{start + PAGE - 1}"}
            )
            got = rows(resp.json())
            out += got
            total = resp.headers.get("Content-Range", "").rpartition("/")[2]
            if resp.status_code != 206 or not got or (total.isdigit() and start + len(got) >= int(total)):
                break
        return out

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        tag = f"[{ticket.ref}]"
        params = {
            "criteria[0][field]": 1,
            "criteria[0][searchtype]": "contains",
            "criteria[0][value]": tag,
            "forcedisplay[0]": 2,
        }
        data = await self.pages(
            "search/Ticket", "ticket search", params, lambda d: (d or {}).get("data") or []
        )
        ids = [
            int(r["2"])
            for r in data
            if isinstance(r, dict) and tag in str(r.get("1", "")) and str(r.get("2", "")).isdigit()
        ]
        return str(min(ids)) if ids else None

    async def create(self, item: DeliveryItem) -> str:
        t = item.ticket
        given: dict[str, Any] = {
            "name": self.title(t, 255),
            "content": as_html(self.describe(t, t.description, item.attachments)),
            "status": 1,
            "urgency": self.cfg.urgencies[t.priority.name],
            "type": self.cfg.ticket_type,
            "entities_id": self.cfg.entities_id,
            **self.cfg.fields,
        }
        if self.cfg.requester_id:
            given["_users_id_requester"] = self.cfg.requester_id
        if self.cfg.due_field and t.deadlines:
            given[self.cfg.due_field] = self._glpi_time(min(t.deadlines.values()))
        data = (await self.request("POST", "Ticket", "create ticket", json={"input": given})).json()
        tid = str(data.get("id", "")) if isinstance(data, dict) else ""
        if not tid.isdigit():
            raise PermanentError(f"GLPI create ticket: no id in the answer: {str(data)[:200]}")
        return tid

    # ------------------------------------------------------------------ follow-ups and state
    async def find_message(self, remote_id: str, marker: str) -> str | None:
        rows = await self.pages(
            f"Ticket/{int(remote_id)}/ITILFollowup",
            f"follow-ups of {remote_id}",
            {},
            lambda d: d if isinstance(d, list) else [],
        )
        for f in rows:
            if isinstance(f, dict) and marker in html.unescape(str(f.get("content") or "")):
                return str(f.get("id"))
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        p = item.payload
        text = self.describe(
            item.ticket, str(p.get("body") or ""), item.attachments, by=str(p.get("author") or "")
        )
        return await self._followup(remote_id, f"{marker}\n{text}", private=self.cfg.private_followups)

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """A private follow-up: only GLPI users allowed to see private follow-ups read it."""
        return await self._followup(remote_id, f"{marker}\n{text}", private=True)

    async def _followup(self, remote_id: str, text: str, *, private: bool) -> str | None:
        given = {
            "itemtype": "Ticket",
            "items_id": int(remote_id),
            "content": as_html(text),
            "is_private": int(private),
        }
        data = await self.call("POST", "ITILFollowup", f"follow-up on {remote_id}", json={"input": given})
        return str(data.get("id")) if isinstance(data, dict) and data.get("id") is not None else None

    async def remote_state(self, remote_id: str) -> TicketState | None:
        data = await self.call("GET", f"Ticket/{int(remote_id)}", f"get ticket {remote_id}")
        return self.state_map.state(data.get("status", "")) if isinstance(data, dict) else None

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        body = {"input": {"status": int(self.state_map.remote(state))}}
        await self.request("PUT", f"Ticket/{int(remote_id)}", f"update ticket {remote_id}", json=body)

    async def set_due(self, remote_id: str, due: datetime | None) -> None:
        if not self.cfg.due_field:
            return
        # "NULL" is how GLPI's own forms empty a datetime (unverified against a live GLPI)
        body = {"input": {self.cfg.due_field: self._glpi_time(due) if due else "NULL"}}
        await self.request("PUT", f"Ticket/{int(remote_id)}", f"due time of ticket {remote_id}", json=body)

    def _glpi_time(self, at: datetime) -> str:
        return at.astimezone(ZoneInfo(self.cfg.due_timezone)).strftime("%Y-%m-%d %H:%M:%S")

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        body = {"input": {"urgency": int(self.cfg.urgencies[priority.name])}}
        await self.request("PUT", f"Ticket/{int(remote_id)}", f"urgency of ticket {remote_id}", json=body)

    async def aclose(self) -> None:
        """End the GLPI session (best effort: the server expires it anyway), then the client."""
        if self._session is not None:
            with contextlib.suppress(NotReady):
                await self._send("GET", "killSession", "killSession", {"Session-Token": self._session})
            self._session = None
        await super().aclose()


# ---------------------------------------------------------------------- the webhook
def _item_id(value: Any) -> str:
    """A GLPI id as it arrives in a webhook: an int or a string of ASCII digits, nothing else.

    ``int()`` would take 1e999 (OverflowError), 1.7 (silently 1) and True (1): a float or bool id is
    not one GLPI sends, so it is refused with ValueError like any other unreadable payload.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and 0 < len(value) < 19:
        return str(int(value))
    raise ValueError(f"not a GLPI id: {type(value).__name__}")


def to_update(cfg: GlpiSettings, data: Any) -> StatusUpdate | None:
    """One webhook body ``{event, item}`` as a StatusUpdate, or None when it says nothing to svcbridge."""
    event, item = data.get("event"), data.get("item")
    if not isinstance(item, dict) or str(event or "").lower() in ("delete", "purge"):
        return None
    if item.get("itemtype") == "Ticket" and "items_id" in item and "content" in item:
        content = str(item.get("content") or "")
        if HelpdeskSink.relayed(html.unescape(content)) or not content.strip():
            return None  # svcbridge posted it
        text = html_to_text(html.unescape(content))
        private = str(item.get("is_private", "0")) not in ("0", "", "False", "false")
        who = item.get("users_id")
        return StatusUpdate(
            system=cfg.name,
            external_ticket_id=_item_id(item["items_id"]),
            public_reply=None if private else text,
            internal_note=text if private else None,
            actor=f"{cfg.name}:user{who}" if who else cfg.name,
        )
    if "status" in item and "id" in item:
        state = cfg.state_map.state(item["status"])
        if state is None:
            return None
        return StatusUpdate(
            system=cfg.name, external_ticket_id=_item_id(item["id"]), state=state, actor=cfg.name
        )
    return None


def webhook_route(cfg: GlpiSettings) -> WebhookRoute:
    secret = cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else ""

    def verify(headers: Any, body: bytes) -> bool:
        ts = headers.get("x-glpi-timestamp", "").strip()
        return bool(ts) and hmac_matches(
            secret, body + ts.encode(), headers.get("x-glpi-signature", ""), "sha256"
        )

    def event_id(headers: Any, body: bytes) -> str | None:
        # no delivery id in the contract; a retry by GLPI's cron resends the same body
        return "sha256:" + hashlib.sha256(body).hexdigest()

    return signed_webhook(
        cfg.webhook_path,
        f"glpi:{cfg.name}",
        verify=verify,
        event_id=event_id,
        parse=lambda d: to_update(cfg, d),
    )
