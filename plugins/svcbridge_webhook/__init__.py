"""Generic signed JSON webhook intake, and a signed status-update endpoint for custom helpdesks.

Signing (Stripe-style, documented in README): the sender puts the Unix time in
``X-Svcbridge-Timestamp`` and ``v1=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`` in
``X-Svcbridge-Signature`` (several ``v1=`` entries allowed, comma-separated, for secret rotation).
Requests older or newer than ``tolerance`` seconds are refused, so a captured request cannot be replayed
later; within the window a replay is a redelivery of the same ``id`` and the journal ignores it.

``POST /hooks/generic``          ``{"id", "subject", "body", "contact": {...}, "asset": {...}, "priority"}``
``POST /hooks/generic/status``   ``{"id", "ticket_ref", "state", "public_reply", "internal_note"}``
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from svcbridge import (
    Asset,
    Contact,
    IntakeContext,
    ParseError,
    PluginSettings,
    Priority,
    RawMessage,
    StatusUpdate,
    StoreUnavailable,
    TicketDraft,
    TicketState,
    WebhookRoute,
    hookimpl,
    read_body,
)

__version__ = "0.1.0"
log = structlog.get_logger("svcbridge.webhook")
MAX_BODY = 2 * 1024 * 1024


class WebhookSettings(PluginSettings):
    secret: SecretStr | None = None
    previous_secret: SecretStr | None = Field(default=None, description="still accepted while rotating")
    tolerance: int = Field(default=300, ge=1)
    path: str = "generic"


# a one-line field: nothing str.splitlines() breaks at (the stdlib refuses a subject it splits in a mail
# header, and the notice is dead-lettered), no NUL, no lone surrogate; other control characters stay
# (the CLI shows them inert) and are the helpdesk's to render
_LINE_UNSAFE = re.compile(r"[\x00\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\ud800-\udfff]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # JSON may escape a lone surrogate; no store takes one


def _line(value: str | None) -> str | None:
    """One line of text (a subject reaches mail headers), nothing a store refuses."""
    return None if value is None else _LINE_UNSAFE.sub(" ", value).strip()


def _text(value: str | None) -> str | None:
    """Free text: no NUL (PostgreSQL refuses it) and no lone surrogate."""
    return None if value is None else _SURROGATE.sub("\ufffd", value.replace("\x00", ""))


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=300)
    subject: str = Field(default="", max_length=1000)
    body: str = Field(default="", max_length=1_500_000)
    contact: Contact = Field(default_factory=Contact)
    customer: str | None = None
    asset: Asset = Field(default_factory=Asset)
    priority: Priority = Priority.P3

    @model_validator(mode="after")
    def _storable(self) -> Payload:
        """What a sender writes is text for a ticket: one-line fields stay one line, nothing unstorable."""
        c = self.contact
        if c.email is not None and re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", c.email):
            raise ValueError("contact.email holds a control character")
        self.subject = _line(self.subject) or ""
        self.body = _text(self.body) or ""
        self.customer = _line(self.customer)
        self.contact = c.model_copy(update={"name": _line(c.name), "company": _line(c.company)})
        a = self.asset
        self.asset = a.model_copy(update={k: _line(getattr(a, k)) for k in ("vendor", "model", "serial")})
        return self


class StatusPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=300)
    ticket_ref: str
    state: TicketState | None = None
    public_reply: str | None = None
    internal_note: str | None = None
    actor: str = "agent"

    @model_validator(mode="after")
    def _storable(self) -> StatusPayload:
        self.public_reply, self.internal_note = _text(self.public_reply), _text(self.internal_note)
        self.actor = _line(self.actor) or "agent"
        return self


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The value of X-Svcbridge-Signature for a body (also what senders implement)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify(
    secrets: list[str], headers: Any, body: bytes, tolerance: int, now: float | None = None
) -> str | None:
    """None when the request is authentic and fresh, else the reason it is refused."""
    ts = headers.get("x-svcbridge-timestamp", "")
    sig = headers.get("x-svcbridge-signature", "")
    if not ts or not sig:
        return "missing signature headers"
    # ASCII digits only, and a sane number of them: str.isdigit() accepts "²" (a Latin-1 header byte)
    # that int() refuses, and 5,000 digits overflow int() or the float subtraction (a 500 before auth)
    if not (ts.isascii() and ts.isdigit()) or len(ts) > 15:
        return "bad timestamp"
    if abs((now or time.time()) - int(ts)) > tolerance:
        return "timestamp outside tolerance"
    # ASCII only: hmac.compare_digest raises TypeError on a non-ASCII str (a Latin-1 header byte)
    offered = [p.strip() for p in sig.split(",") if p.strip().startswith("v1=") and p.isascii()]
    for secret in secrets:
        expected = sign(secret, ts, body)
        if any(hmac.compare_digest(expected, o) for o in offered):
            return None
    return "signature mismatch"


def _invalid(exc: ValidationError) -> Response:
    # no context: a validator's ValueError in it is no JSON (the 422 became a 500)
    detail = exc.errors(include_url=False, include_input=False, include_context=False)
    return JSONResponse({"error": "invalid payload", "detail": detail}, status_code=422)


class _Endpoint:
    def __init__(self, cfg: WebhookSettings) -> None:
        self.cfg = cfg
        self.secrets = [s.get_secret_value() for s in (cfg.secret, cfg.previous_secret) if s is not None]

    async def _read(self, request: Request) -> bytes | Response:
        body = await read_body(request, MAX_BODY)
        if not isinstance(body, bytes):
            return body
        reason = verify(self.secrets, request.headers, body, self.cfg.tolerance)
        if reason:
            log.warning(
                "webhook_refused", reason=reason, client=request.client.host if request.client else None
            )
            return JSONResponse({"error": reason}, status_code=401)
        return body

    async def intake(self, request: Request, ctx: IntakeContext) -> Response:
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        try:
            payload = Payload.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc)
        raw = RawMessage(
            channel="webhook", source=f"webhook:{self.cfg.path}", external_id=payload.id, raw=body
        )
        try:
            res = await ctx.submit(raw)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable, retry"}, status_code=503)
        return JSONResponse({"journal_id": res.journal_id, "duplicate": not res.new}, status_code=200)

    async def status(self, request: Request, ctx: IntakeContext) -> Response:
        body = await self._read(request)
        if isinstance(body, Response):
            return body
        try:
            p = StatusPayload.model_validate_json(body)
        except ValidationError as exc:
            return _invalid(exc)
        upd = StatusUpdate(
            ticket_ref=p.ticket_ref,
            system=f"webhook:{self.cfg.path}",
            state=p.state,
            public_reply=p.public_reply,
            internal_note=p.internal_note,
            actor=p.actor,
            external_event_id=p.id,
        )
        try:
            applied = await ctx.apply_status_update(upd)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable, retry"}, status_code=503)
        return JSONResponse({"applied": applied})


@hookimpl
def register_settings(register: Any) -> None:
    register("webhook", WebhookSettings)


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("webhook")
    if cfg is None or cfg.secret is None:
        log.info("generic_webhook_disabled", reason="no [plugins.webhook] secret configured")
        return
    ep = _Endpoint(cfg)
    register(WebhookRoute(path=cfg.path, endpoint=ep.intake, name=f"webhook:{cfg.path}"))
    register(WebhookRoute(path=f"{cfg.path}/status", endpoint=ep.status, name=f"webhook:{cfg.path}:status"))


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel != "webhook" or raw.raw is None:
        return None
    try:
        data = json.loads(raw.raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, deep nesting
        raise ParseError(f"not JSON: {type(exc).__name__}: {str(exc)[:200]}") from None
    try:
        p = Payload.model_validate(data)
    except ValidationError as exc:  # pydantic quotes the offending values (shown inert by the CLI)
        raise ParseError(f"not a webhook payload: {exc}") from None
    return TicketDraft(
        channel="webhook",
        subject=p.subject,
        body_text=p.body,
        contact=p.contact,
        customer=p.customer,
        asset=p.asset,
        priority=p.priority,
        language=p.contact.language,
    )
