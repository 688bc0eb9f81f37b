"""What helpdesk connectors share: a state table, the create-by-reference flow, signed status webhooks.

- ``HelpdeskSettings``: the settings every connector has (url, sink name, timeout, a test transport).
- ``StateMap``: helpdesk state <-> svcbridge state. A connector subclasses it with its defaults
  (``DEFAULT_FROM`` / ``DEFAULT_TO``); the ``[plugins.<x>.state_map.from_helpdesk]`` and ``.to_helpdesk``
  TOML tables are merged over them, so a custom workflow lists only what differs. A helpdesk state mapped
  to ``""`` is not reported.
- ``HelpdeskSink``: ``deliver``/``reconcile`` written once. A new ticket is looked up by svcbridge's
  reference before it is created (a crash after the remote commit never makes a second one); a customer
  follow-up carries the marker ``[svcbridge <idempotency key>]`` and is looked up by it before it is
  posted; a follow-up on a resolved/closed remote ticket sets it back to work. Subclasses implement the
  remote calls (``find``, ``create``, ``find_message``, ``add_message``, ``remote_state``, ``set_state``).
- ``LoopClient``: ``make_client`` arguments and one client per event loop (a sink outlives ``asyncio.run``).
  ``HelpdeskSink.open_http`` makes the connector's one (JSON, its ``Authorization``), ``request`` / ``call``
  send through ``http_request`` and read the JSON answer (not JSON: ``NotReady``), ``aclose`` closes it.
- ``basic_auth``: an ``Authorization: Basic`` value for a user and secret.
- ``html_to_text``: an agent's HTML reply as plain text for the customer notice.
- ``signed_webhook``: a ``WebhookRoute`` that checks the sender's signature over the raw body, turns the
  JSON into one ``StatusUpdate`` keyed by the delivery id (redeliveries are ignored by the host) and
  answers 401 / 400 / 503 / 200 as the hook contract asks. ``hmac_matches`` compares in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .contracts import IntakeContext, WebhookRoute
from .errors import NotReady, PermanentError, StoreUnavailable
from .htmltext import html_to_text
from .http import make_client
from .http import request as http_request
from .models import (
    Attachment,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    Priority,
    StatusUpdate,
    Ticket,
    TicketState,
)
from .settings import PluginSettings

__all__ = [
    "HelpdeskSettings",
    "HelpdeskSink",
    "LoopClient",
    "StateMap",
    "basic_auth",
    "check_priorities",
    "hmac_matches",
    "html_to_text",
    "read_body",
    "signed_webhook",
]

log = structlog.get_logger("svcbridge.connector")
REF_RE = re.compile(r"^[A-Z][A-Z0-9]{0,7}-\d+$")
MAX_HOOK_BODY = 2 * 1024 * 1024
MARK_PREFIX = "[svcbridge "
_STATES = {s.value for s in TicketState}


class HelpdeskSettings(PluginSettings):
    """Base of a connector's ``[plugins.<x>]`` table; subclasses add credentials and maps."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    url: str = Field(description="the helpdesk's base URL, https://...")
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="sink name used in [routing]")
    timeout: float = Field(default=30.0, gt=0, description="seconds per HTTP request")
    # ``transport`` (the test seam for outbound HTTP) is inherited from PluginSettings

    @property
    def api_base(self) -> str:
        """The root relative paths are joined onto (with a trailing slash); connectors override it."""
        return self.url + "/"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class StateMap(BaseModel):
    """Helpdesk state <-> svcbridge state; each table is merged over the subclass's defaults."""

    model_config = ConfigDict(extra="forbid")
    DEFAULT_FROM: ClassVar[dict[str, str]] = {}
    DEFAULT_TO: ClassVar[dict[str, str]] = {}
    from_helpdesk: dict[str, str] = Field(default_factory=dict, description="helpdesk state -> svcbridge")
    to_helpdesk: dict[str, str] = Field(default_factory=dict, description="svcbridge state -> helpdesk")

    @model_validator(mode="after")
    def _merge(self) -> StateMap:
        bad = {k: v for k, v in self.from_helpdesk.items() if v and v not in _STATES}
        if bad:
            raise ValueError(f"from_helpdesk: unknown svcbridge states {bad}; use {sorted(_STATES)} or ''")
        unknown = sorted(k for k in self.to_helpdesk if k not in _STATES)
        if unknown:
            raise ValueError(f"to_helpdesk: unknown svcbridge states {unknown}; use {sorted(_STATES)}")
        empty = sorted(k for k, v in self.to_helpdesk.items() if not str(v).strip())
        if empty:
            raise ValueError(f"to_helpdesk: empty helpdesk state for {empty}")
        given = {_key(k): v for k, v in self.from_helpdesk.items()}
        self.from_helpdesk = {**{_key(k): v for k, v in self.DEFAULT_FROM.items()}, **given}
        self.to_helpdesk = {**self.DEFAULT_TO, **self.to_helpdesk}
        return self

    def state(self, remote: Any) -> TicketState | None:
        """The svcbridge state of a helpdesk state (name or code); None when unknown or ignored."""
        value = self.from_helpdesk.get(_key(remote), "")
        return TicketState(value) if value else None

    def remote(self, state: TicketState) -> str:
        """The helpdesk state (or transition) svcbridge sets for `state`."""
        return self.to_helpdesk[state.value]


def _key(value: Any) -> str:
    return str(value).strip().lower()


def check_priorities(given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A ``priorities`` table (P1..P4 -> helpdesk value) merged over the connector's defaults."""
    names = {p.name for p in Priority}
    bad = sorted(k for k in given if k not in names)
    if bad:
        raise ValueError(f"unknown priorities {bad}; use {sorted(names)}")
    return {**defaults, **given}


# ---------------------------------------------------------------------- HTTP
class LoopClient:
    """``make_client`` arguments, and one AsyncClient per running event loop."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        self.base_url, self.kwargs = base_url, kwargs
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = make_client(self.base_url, **self.kwargs), loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = self._loop = None


def basic_auth(user: str, secret: str) -> str:
    """``Basic <base64(user:secret)>``: an ``Authorization`` header value."""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")


# ---------------------------------------------------------------------- the sink flow
def change_summary(payload: Mapping[str, Any]) -> str:
    """A ticket change (``changes.py`` payload) as plain text for the agents."""

    def show(v: Any) -> str:
        return (
            "(none)"
            if v in (None, "", {})
            else json.dumps(v, ensure_ascii=False)
            if isinstance(v, dict)
            else str(v)
        )

    by = payload.get("plugin") or "svcbridge"
    lines = [f"Ticket updated by {by} ({payload.get('origin', '')}):"]
    for name, diff in sorted((payload.get("changes") or {}).items()):
        if name == "labels":
            lines += [f"- {k}: {show(d.get('from'))} → {show(d.get('to'))}" for k, d in sorted(diff.items())]
        else:
            lines.append(f"- {name}: {show(diff.get('from'))} → {show(diff.get('to'))}")
    if payload.get("note"):
        lines += ["", str(payload["note"])]
    return "\n".join(lines)


def _marker(key: str) -> str:
    """``[svcbridge <key>]``: what makes a follow-up findable again (and never echoed as an agent reply)."""
    return MARK_PREFIX + re.sub(r"[^A-Za-z0-9:._@-]+", "_", key)[:120] + "]"


def earliest(deadlines: dict[str, Any]) -> datetime | None:
    """The earliest of a ticket's open deadlines (datetimes or their ISO text), None when there is none."""
    found = [v if isinstance(v, datetime) else datetime.fromisoformat(str(v)) for v in deadlines.values()]
    return min(found) if found else None


class HelpdeskSink:
    """``deliver`` / ``reconcile`` for a helpdesk reached by reference lookup; subclasses do the calls."""

    name: str
    label = "helpdesk"
    marker = staticmethod(_marker)
    http: LoopClient | None = None
    empty_answer: ClassVar[bool] = False  # True: an empty body is the answer None (else: not JSON)
    # what of a ticket change (``changes.py``) this helpdesk carries besides a note: a connector that
    # implements ``set_priority`` adds "priority"; everything else reaches the agents as a note
    fields: ClassVar[frozenset[str]] = frozenset({"note"})
    # the agents' page of a ticket, relative to the helpdesk's ``url`` (``{id}``: the linked ticket id);
    # the operator console links it (``ticket_url``); empty: no link
    ticket_page: ClassVar[str] = ""

    def __init__(self, name: str, state_map: StateMap) -> None:
        self.name, self.state_map = name, state_map

    def ticket_url(self, remote_id: str) -> str | None:
        """The helpdesk's web page of ticket `remote_id` (``ticket_page`` under the configured url)."""
        cfg = getattr(self, "cfg", None)
        base = getattr(cfg, "url", None)
        if not self.ticket_page or not isinstance(base, str):
            return None
        return f"{base}/{self.ticket_page.format(id=quote(remote_id, safe=''))}"

    # -- HTTP
    def open_http(
        self,
        cfg: HelpdeskSettings,
        auth: str | None,
        allow: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``self.http``: JSON requests to ``cfg.api_base`` with `auth` as ``Authorization`` (if any)."""
        base = {"Authorization": auth} if auth is not None else {}
        self.http = LoopClient(
            cfg.api_base,
            headers={**base, "Accept": "application/json", **(headers or {})},
            timeout=cfg.timeout,
            transport=cfg.transport,
            allow=list(allow),
        )

    async def request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        """One call through ``http_request`` (failures classified), `what` prefixed with ``label``."""
        if self.http is None:
            raise RuntimeError(f"{type(self).__name__}: open_http was not called")
        return await http_request(self.http.get(), method, path, what=f"{self.label} {what}", **kw)

    def answer(self, resp: httpx.Response, what: str) -> Any:
        """The JSON of `resp`; ``NotReady`` when it is not JSON (a proxy's HTML page with a 200, or a
        truncated body: try again later). An empty body is None when ``empty_answer`` is set."""
        if self.empty_answer and not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise NotReady(f"{self.label} {what}: answer is not JSON") from None

    async def call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        """``request`` and its JSON ``answer``."""
        return self.answer(await self.request(method, path, what, **kw), what)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()

    # -- implemented by each connector
    async def find(self, ticket: Ticket) -> str | None:
        """The remote id of the ticket svcbridge made for `ticket` (by its reference), if any."""
        raise NotImplementedError

    async def create(self, item: DeliveryItem) -> str:
        """Create the remote ticket (title starts with ``title_tag``); return its id."""
        raise NotImplementedError

    async def complete(self, remote_id: str, item: DeliveryItem, fresh: bool) -> None:
        """Finish a create after the ticket exists (a second call, e.g. attachments); `fresh`: just made.

        Also called when ``find`` found the ticket, so a create cut short between its calls is finished
        by the retry. The default does nothing.
        """

    async def find_message(self, remote_id: str, marker: str) -> str | None:
        """The id of the remote article/comment whose text carries `marker`, if any."""
        raise NotImplementedError

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        """Post the customer's follow-up (text starting with `marker`); return its id when known."""
        raise NotImplementedError

    async def remote_state(self, remote_id: str) -> TicketState | None:
        """The remote ticket's state, mapped to svcbridge's."""
        raise NotImplementedError

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        """Move the remote ticket to ``state_map.remote(state)``."""
        raise NotImplementedError

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """Post an internal note for the agents (a ticket change, a vendor's answer) starting with
        `marker`, where the customer never sees it; return its id when known.

        Not implemented by default: a note posted as an ordinary follow-up would reach the customer
        (a warranty finding, a vendor's remark). A connector without internal notes leaves the change
        in svcbridge (its trail and ``fields``), and the delivery says so.
        """
        raise NotImplementedError

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        """Set the remote ticket's priority (connectors listing "priority" in ``fields``)."""
        raise NotImplementedError

    async def set_due(self, remote_id: str, due: datetime | None) -> None:
        """Set the remote ticket's due date to the earliest open SLA deadline, or clear it (connectors
        listing "due" in ``fields``; RT's ``Due``)."""
        raise NotImplementedError

    async def _ticket_updated(self, item: DeliveryItem) -> DeliveryResult:
        rid = await self.remote_id(item.ticket)
        if not rid:
            raise PermanentError(f"no {self.label} ticket for {item.ticket.ref}: it was never created")
        p = item.payload
        detail = f"{self.label} ticket {rid}"
        prio = (p.get("changes") or {}).get("priority")
        if prio and "priority" in self.fields:
            await self.set_priority(rid, Priority(int(prio["to"])))
            detail += f": priority P{prio['to']}"
        moved = (p.get("changes") or {}).get("deadlines")
        if moved is not None and "due" in self.fields:
            due = earliest(moved.get("to") or {})
            await self.set_due(rid, due)
            detail += f": due {due.isoformat(timespec='minutes') if due else 'cleared'}"
        if type(self).add_note is HelpdeskSink.add_note:  # no internal notes: never post it publicly
            return DeliveryResult(detail=detail + ": no internal notes, the change is kept in svcbridge")
        mark = _marker(item.idempotency_key)
        if await self.find_message(rid, mark) is None:
            await self.add_note(rid, item, mark, change_summary(p))
            detail += ", note added"
        return DeliveryResult(detail=detail)

    # -- the shared flow
    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        if item.kind == "create":
            found = await self.find(self.checked(item.ticket))
            if found:
                await self.complete(found, item, fresh=False)
                return self.linked(found, f"found existing {self.label} ticket {found}")
            new = await self.create(item)
            await self.complete(new, item, fresh=True)
            return self.linked(new, f"created {self.label} ticket {new}")
        if item.kind != "update":
            raise PermanentError(f"{self.label} sink cannot handle items of kind {item.kind!r}")
        kind = item.payload.get("type")
        if kind == "ticket_updated":
            return await self._ticket_updated(item)
        if kind != "customer_message":
            return DeliveryResult(detail=f"{self.label} sink ignores updates of type {kind!r}")
        rid = await self.remote_id(item.ticket)
        if not rid:
            raise PermanentError(f"no {self.label} ticket for {item.ticket.ref}: it was never created")
        mark = _marker(item.idempotency_key)
        done = await self.find_message(rid, mark)
        if done is None:
            mid = await self.add_message(rid, item, mark)
            detail = f"follow-up on {self.label} ticket {rid}" + (f" as {mid}" if mid else "")
        else:
            detail = f"already on {self.label} ticket {rid} as {done}"
        remote = await self.remote_state(rid) if item.payload.get("reopen") else None
        if remote is not None and remote.is_closed:
            await self.set_state(rid, TicketState.IN_PROGRESS)
            detail += ", reopened"
        return DeliveryResult(detail=detail)

    async def reconcile(self, item: DeliveryItem) -> DeliveryResult | None:
        if item.kind == "create":
            found = await self.find(self.checked(item.ticket))
            if not found:
                return None
            await self.complete(found, item, fresh=False)
            return self.linked(found, f"found existing {self.label} ticket {found}")
        if item.kind == "update" and item.payload.get("type") == "customer_message":
            rid = await self.remote_id(item.ticket)
            done = await self.find_message(rid, _marker(item.idempotency_key)) if rid else None
            if done and not item.payload.get("reopen"):
                return DeliveryResult(detail=f"already on {self.label} ticket {rid} as {done}")
        return None

    async def remote_id(self, ticket: Ticket) -> str | None:
        return ticket.link(self.name, "ticket") or await self.find(self.checked(ticket))

    def checked(self, ticket: Ticket) -> Ticket:
        if not REF_RE.match(ticket.ref):
            raise PermanentError(f"unexpected ticket reference {ticket.ref!r}")
        return ticket

    def linked(self, remote_id: str, detail: str) -> DeliveryResult:
        link = ExternalLink(system=self.name, kind="ticket", value=str(remote_id))
        return DeliveryResult(links=[link], detail=detail)

    @staticmethod
    def relayed(text: Any) -> bool:
        """Whether remote text is a follow-up svcbridge posted: it carries the marker, never report it."""
        return MARK_PREFIX in str(text or "")

    @staticmethod
    def title(ticket: Ticket, limit: int = 200) -> str:
        """``[SB-000123] subject`` on one line: what ``find`` looks for in the remote title."""
        return " ".join(f"[{ticket.ref}] {ticket.subject or '(no subject)'}".split())[:limit]

    @staticmethod
    def describe(ticket: Ticket, text: str, not_sent: list[Attachment] | None = None, by: str = "") -> str:
        """`text` with a footer: svcbridge's reference, who wrote it, attachments not transferred."""
        c = ticket.contact
        who = by or ", ".join(x for x in (c.name, c.company, c.email, c.phone) if x)
        out = (text or "(no text)").rstrip() + f"\n\n-- \nsvcbridge {ticket.ref} via {ticket.channel}"
        out += f"; from {who}" if who else ""
        if not_sent:
            names = ", ".join(f"{a.original_name or a.safe_name} ({a.size} bytes)" for a in not_sent)
            out += f"\nAttachments kept in svcbridge, not transferred: {names}"
        return out


# ---------------------------------------------------------------------- signed webhooks
BODY_TIMEOUT = 30.0  # seconds to deliver a webhook body: a slowloris client is cut off after this


async def read_body(request: Any, limit: int = MAX_HOOK_BODY, timeout: float = BODY_TIMEOUT) -> Any:
    """The request body, read with bounded memory and time; else the error response to send.

    A declared ``Content-Length`` over `limit` is refused before reading; otherwise the body is read in
    chunks and refused as soon as it passes `limit` (a client may lie about or omit the length), so a
    10 GB POST costs at most `limit` bytes. A body that does not arrive within `timeout` gets 408.
    Returns ``bytes`` or a Starlette ``Response`` (413 / 408 / 400) for the caller to return as is.
    """
    from starlette.responses import JSONResponse

    declared = request.headers.get("content-length", "").strip()
    if declared and not (declared.isascii() and declared.isdigit()):
        # '²' is isdigit() but not a number int() reads; a length nobody can read is a bad request
        return JSONResponse({"error": "bad Content-Length"}, status_code=400)
    if declared and int(declared) > limit:
        return JSONResponse({"error": "body too large"}, status_code=413)
    chunks: list[bytes] = []
    size = 0

    async def collect() -> bool:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return False
            chunks.append(chunk)
        return True

    try:
        within = await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        return JSONResponse({"error": "body not received in time"}, status_code=408)
    except Exception as exc:  # the client went away mid-body (ClientDisconnect)
        return JSONResponse({"error": f"body not received: {type(exc).__name__}"}, status_code=400)
    if not within:
        return JSONResponse({"error": "body too large"}, status_code=413)
    return b"".join(chunks)


def hmac_matches(secret: str, data: bytes, offered: str, algorithm: str, prefix: str = "") -> bool:
    """Whether `offered` is ``prefix + hex(HMAC(secret, data))``, compared in constant time."""
    if not secret or not offered:
        return False
    expected = prefix + hmac.new(secret.encode(), data, getattr(hashlib, algorithm)).hexdigest()
    return hmac.compare_digest(expected.encode(), offered.strip().lower().encode())


def signed_webhook(
    path: str,
    name: str,
    *,
    verify: Callable[[Any, bytes], bool],
    event_id: Callable[[Any, bytes], str | None],
    parse: Callable[[Any], StatusUpdate | None],
) -> WebhookRoute:
    """A POST route: signature (401), delivery id (400), JSON -> one ``StatusUpdate`` (200), store down (503).

    ``verify(headers, raw body)`` checks the signature; ``event_id(headers, raw body)`` names the delivery
    (its redelivery is recognised by the host and answered ``{"applied": false}``); ``parse(json)`` returns
    the update, or None for events that say nothing to svcbridge.
    """

    async def endpoint(request: Any, ctx: IntakeContext) -> Any:
        from starlette.responses import JSONResponse

        body = await read_body(request)
        if not isinstance(body, bytes):
            return body
        if not verify(request.headers, body):
            client = request.client.host if request.client else None
            log.warning("webhook_refused", route=name, reason="bad or missing signature", client=client)
            return JSONResponse({"error": "bad or missing signature"}, status_code=401)
        eid = event_id(request.headers, body)
        if not eid:
            return JSONResponse({"error": "no delivery id"}, status_code=400)
        try:
            update = parse(json.loads(body))
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError) as exc:
            # a parser reading hostile JSON (int(1e999), deep nesting) is refused input, not a 500
            return JSONResponse({"error": f"unreadable payload: {type(exc).__name__}"}, status_code=400)
        if update is None:
            return JSONResponse({"applied": False, "ignored": True})
        update = update.model_copy(update={"external_event_id": eid[:200]})
        try:
            applied = await ctx.apply_status_update(update)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable, retry"}, status_code=503)
        return JSONResponse({"applied": applied})

    return WebhookRoute(path=path, endpoint=endpoint, methods=("POST",), name=name)
