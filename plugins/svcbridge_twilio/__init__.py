"""Twilio SMS: signed inbound webhooks become tickets; status notices go back as SMS.

Inbound: ``POST /hooks/<path>`` with Twilio's form fields. ``X-Twilio-Signature`` is verified exactly as
Twilio signs (``signature.py``) against the public URL Twilio called (``public_url`` + path), over every
form parameter received. The message is journaled under its ``MessageSid`` (a Twilio retry is
journaled once) before the empty TwiML 200 answer; a store outage answers 503 so Twilio retries.

Outbound: a notifier for channel ``sms`` posting to the Messages API with Basic auth
(AccountSid:AuthToken), through ``svcbridge.http_request`` (429/5xx retry, 401 park, 4xx dead letter).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import urllib.parse
from typing import Any

import structlog
from pydantic import Field, SecretStr
from starlette.requests import Request
from starlette.responses import Response

from svcbridge import (
    Attachment,
    Contact,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    IntakeContext,
    MediaError,
    ParseError,
    PermanentError,
    PluginSettings,
    RawMessage,
    StoreUnavailable,
    ThreadMatch,
    TicketDraft,
    TicketLookup,
    WebhookRoute,
    fetch_media,
    hookimpl,
    http_request,
    make_client,
    read_body,
)

from .signature import validate

__version__ = "0.1.0"
log = structlog.get_logger("svcbridge.twilio")
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class TwilioSettings(PluginSettings):
    account_sid: str
    auth_token: SecretStr
    public_url: str = Field(description="base URL Twilio calls, e.g. https://bridge.example.com")
    path: str = "twilio/sms"
    from_number: str | None = Field(default=None, description="E.164 sender for outgoing SMS")
    messaging_service_sid: str | None = None
    api_base: str = "https://api.twilio.com"
    status_callback: str | None = None
    max_media: int = Field(default=5 * 1024 * 1024, ge=1024, description="largest MMS file fetched")
    max_media_count: int = Field(default=10, ge=0, le=10)


MAX_BODY = 1024 * 1024  # an inbound SMS/MMS webhook is a few KiB of form fields; media come as URLs


class _Inbound:
    def __init__(self, cfg: TwilioSettings, allow: list[str] | None = None) -> None:
        self.cfg, self.allow = cfg, allow or []
        self.url = cfg.public_url.rstrip("/") + "/hooks/" + cfg.path.lstrip("/")

    async def __call__(self, request: Request, ctx: IntakeContext) -> Response:
        # Twilio posts application/x-www-form-urlencoded; every parameter received is signed
        raw_body = await read_body(request, MAX_BODY)
        if not isinstance(raw_body, bytes):
            return raw_body
        body = raw_body.decode("utf-8", errors="replace")
        params = urllib.parse.parse_qsl(body, keep_blank_values=True)
        # the raw query (request.url decodes it as strict UTF-8: a 0x80 byte was a 500 before the check)
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = self.url + (f"?{query}" if query else "")
        sig = request.headers.get("x-twilio-signature", "")
        if not validate(self.cfg.auth_token.get_secret_value(), url, params, sig):
            log.warning("twilio_signature_refused", client=request.client.host if request.client else None)
            return Response("invalid signature", status_code=403)
        data = dict(params)
        sid = data.get("MessageSid") or data.get("SmsSid")
        if not sid or data.get("AccountSid") != self.cfg.account_sid:
            return Response("unexpected payload", status_code=400)
        # MMS: the files are fetched now (Basic auth, size limit, SSRF guard) and journaled with the
        # message, named svcbridge.media.N.* (a sender's own field of that name is dropped first)
        params = [p for p in params if not p[0].startswith("svcbridge.")] + await self._media(data)
        raw = RawMessage(
            channel="sms",
            source=f"twilio:{self.cfg.path}",
            external_id=sid,
            raw=json.dumps(params, ensure_ascii=False).encode(),
        )
        try:
            await ctx.submit(raw)
        except StoreUnavailable:
            return Response("store unavailable", status_code=503)
        return Response(TWIML_EMPTY, media_type="application/xml")

    async def _media(self, data: dict[str, str]) -> list[tuple[str, str]]:
        count = data.get("NumMedia", "0")
        out: list[tuple[str, str]] = []
        n = min(int(count), self.cfg.max_media_count) if count.isascii() and count.isdigit() else 0
        for i in range(n):
            url = data.get(f"MediaUrl{i}", "")
            try:
                content, ctype = await fetch_media(
                    url,
                    limit=self.cfg.max_media,
                    allow=self.allow,
                    transport=self.cfg.transport,
                    auth=(self.cfg.account_sid, self.cfg.auth_token.get_secret_value()),
                )
            except MediaError as exc:
                out.append((f"svcbridge.media.{i}.error", str(exc)))
                continue
            ctype = data.get(f"MediaContentType{i}") or ctype
            out += [(f"svcbridge.media.{i}.type", ctype), (f"svcbridge.media.{i}.data", _b64(content))]
        return out


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


class SmsNotifier:
    channel = "sms"
    name = "twilio"

    @staticmethod
    def address(contact: Contact) -> str | None:
        return contact.phone

    def __init__(
        self,
        cfg: TwilioSettings,
        transport: Any = None,
        allow: list[str] | None = None,
        optouts: Any = None,
        shorten: Any = None,
    ) -> None:
        self.cfg, self.optouts = cfg, optouts  # svcbridge_sms's register: who said STOP, on any ticket
        self.shorten = shorten  # svcbridge_sms's cut to [plugins.sms] max_parts SMS parts
        self.client = make_client(
            cfg.api_base,
            auth=(cfg.account_sid, cfg.auth_token.get_secret_value()),
            transport=transport or cfg.transport,  # the plugin settings' test seam
            allow=allow or [],
        )

    async def send(self, item: DeliveryItem) -> DeliveryResult:
        n = item.payload["notification"]
        if self.optouts is not None:  # the register, not the ticket's label: a ticket opened before
            # the STOP has none, and one labelled before a START keeps a stale one
            stopped = await asyncio.to_thread(self.optouts.blocked, n["to"])
        else:
            stopped = item.ticket.labels.get("sms_opt_out")
        if stopped:  # recorded by svcbridge_sms when the customer texted STOP / 退订
            raise PermanentError(f"{n['to']} opted out of SMS ({stopped}); not sent")
        text = n.get("body") or n.get("subject") or ""
        form = {"To": n["to"], "Body": (self.shorten(text) if self.shorten else text)[:1600]}
        if self.cfg.messaging_service_sid:
            form["MessagingServiceSid"] = self.cfg.messaging_service_sid
        elif self.cfg.from_number:
            form["From"] = self.cfg.from_number
        if self.cfg.status_callback:
            form["StatusCallback"] = self.cfg.status_callback
        path = f"/2010-04-01/Accounts/{self.cfg.account_sid}/Messages.json"
        r = await http_request(self.client, "POST", path, "Twilio send SMS", data=form)
        sid = r.json().get("sid", "")
        return DeliveryResult(
            links=[ExternalLink(system="twilio", kind="sms_sid", value=sid)], detail=f"sms {sid} to {n['to']}"
        )


@hookimpl
def register_settings(register: Any) -> None:
    register("twilio", TwilioSettings)


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("twilio")
    if cfg is not None:
        route = _Inbound(cfg, settings.outbound_allow)
        register(WebhookRoute(path=cfg.path, endpoint=route, name=f"twilio:{cfg.path}"))


@hookimpl
def register_notifiers(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("twilio")
    if cfg is not None and (cfg.from_number or cfg.messaging_service_sid):
        try:
            from svcbridge_sms import SmsSettings, optout_register
            from svcbridge_sms.text import fit
        except ImportError:  # svcbridge_sms not installed: the ticket's label is all there is
            optouts, shorten = None, None
        else:
            optouts = optout_register(settings)
            parts = (settings.plugin_config("sms") or SmsSettings()).max_parts
            shorten = functools.partial(_cut, fit, parts)
        register(SmsNotifier(cfg, allow=settings.outbound_allow, optouts=optouts, shorten=shorten))


def _cut(fit: Any, parts: int, text: str) -> str:
    """``text`` cut to ``parts`` SMS by svcbridge_sms's ``fit`` (GSM-7 / UCS-2 segment rules)."""
    return str(fit(text, parts))


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel != "sms" or not raw.source.startswith("twilio:") or raw.raw is None:
        return None
    data = _fields(raw.raw)
    body = data.get("Body", "")
    attachments, missing = _attachments(data)
    media = [data[f"MediaUrl{i}"] for i in missing if f"MediaUrl{i}" in data]  # not fetched: keep the URL
    text = body + ("\n\n" + "\n".join(media) if media else "")
    first_line = body.strip().splitlines()[0] if body.strip() else ""
    try:
        contact = Contact(phone=data.get("From"))
    except ValueError:
        raise ParseError(f"From is not a phone number: {data.get('From', '')[:40]!r}") from None
    return TicketDraft(
        channel="sms",
        # one line without control characters (it becomes a mail subject on other channels)
        subject=_CONTROL.sub(" ", first_line).strip()[:80] or "SMS",
        body_text=_storable(text),
        contact=contact,
        links=[
            ExternalLink(
                system="twilio", kind="message_sid", value=_storable(data.get("MessageSid", raw.external_id))
            )
        ],
        labels={"sms_to": _storable(data.get("To")), "num_media": _storable(data.get("NumMedia", "0"))},
        attachments=attachments,
    )


def _attachments(data: dict[str, str]) -> tuple[list[Attachment], list[int]]:
    """The MMS files the route fetched, and the numbers of those it could not (or older entries)."""
    import base64
    import binascii

    out: list[Attachment] = []
    missing: list[int] = []
    count = data.get("NumMedia", "0")
    for i in range(min(int(count), 10) if count.isascii() and count.isdigit() else 0):
        b64 = data.get(f"svcbridge.media.{i}.data")
        try:
            content = base64.b64decode(b64 or "", validate=True) if b64 else None
        except (binascii.Error, ValueError):
            content = None
        if content is None:
            missing.append(i)
            continue
        ctype = _storable(data.get(f"svcbridge.media.{i}.type") or "application/octet-stream")[:100]
        out.append(Attachment.from_bytes(content, original_name=f"mms-{i + 1}", content_type=ctype))
    return out, missing


def _storable(text: Any) -> Any:
    """No NUL (PostgreSQL refuses it, in JSON too) and no lone surrogate (no store takes one)."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "")) if isinstance(text, str) else text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _fields(raw: bytes) -> dict[str, str]:
    """The form fields as the route journaled them (a JSON list of [name, value]); else ParseError."""
    try:
        found = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise ParseError(f"not the fields of a Twilio webhook: {type(exc).__name__}") from None
    pairs = list(found.items()) if isinstance(found, dict) else found
    if not isinstance(pairs, list) or not all(
        isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise ParseError("not the fields of a Twilio webhook: expected [name, value] string pairs")
    return dict(pairs)


@hookimpl
def thread_message(draft: TicketDraft, lookup: TicketLookup) -> ThreadMatch | None:
    """A Twilio message stored already is a duplicate. Conversations (the sender's open SMS ticket
    within a window, a ticket reference in the text) are threaded by ``svcbridge_sms`` for every
    provider; a resolved or closed ticket is not reopened by a new text.
    """
    if draft.channel != "sms" or not draft.contact.phone:
        return None
    for link in draft.links:
        seen = lookup.by_link(link.system, link.kind, link.value)
        if seen is not None:
            return ThreadMatch(ticket_ref=seen.ref, duplicate=True, reason=f"{link.kind} already stored")
    return None
