"""Telnyx messaging (api-contracts 2.2): inbound SMS/MMS, delivery status, outbound SMS.

Inbound ``POST /hooks/<path>``: the Ed25519 signature over ``timestamp|body`` is checked exactly as for
Telnyx faxes (``svcbridge_fax.signatures``; 300 s window, a replayed signature is refused), then:

- ``message.received``: MMS media are fetched (SSRF guard, size limits per file and in total) and the
  event journaled under its event id (``data.id``): a Telnyx retry is journaled once.
- ``message.sent`` / ``message.finalized``: the status of an SMS we sent, found by the link the
  notifier recorded (``telnyx/sms_id``), becomes an internal note on that ticket
  (``apply_status_update`` with the event id as its dedup key). Unknown ids are acknowledged.

Outbound: ``POST {api_base}/v2/messages`` with the Bearer key; the text is cut to ``max_parts`` SMS;
an opted-out number is never sent to (``PermanentError``: the row is dead with the reason).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from svcbridge import (
    Contact,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    IntakeContext,
    MediaError,
    OptOutRegister,
    PermanentError,
    RawMessage,
    StatusUpdate,
    StoreUnavailable,
    fetch_media,
    http_request,
    make_client,
    read_body,
)
from svcbridge_fax.signatures import ReplayGuard, telnyx_public_key, telnyx_verify

from .text import fit, segments

log = structlog.get_logger("svcbridge.sms.telnyx")
MAX_EVENT = 256 * 1024


class TelnyxSmsRoute:
    def __init__(self, cfg: Any, allow: list[str], transport: Any, host: Callable[[], Any]) -> None:
        self.cfg, self.allow, self.transport, self.host = cfg, allow, transport, host
        self.key = telnyx_public_key(cfg.public_key)
        self.replays = ReplayGuard(window=2 * cfg.tolerance)

    async def __call__(self, request: Request, ctx: IntakeContext) -> Response:
        body = await read_body(request, MAX_EVENT)
        if not isinstance(body, bytes):
            return body
        sig = request.headers.get("telnyx-signature-ed25519", "")
        why = telnyx_verify(
            self.key, body, request.headers.get("telnyx-timestamp", ""), sig, self.cfg.tolerance
        )
        if why is None and not self.replays.first_use(sig):
            why = "replayed request"
        if why is not None:
            log.warning("telnyx_sms_refused", reason=why)
            return Response("forbidden", status_code=403)
        return await self.replays.journal_once(sig, lambda: self._take(ctx, body, sig))

    async def _take(self, ctx: IntakeContext, body: bytes, sig: str) -> Response:
        try:
            event = json.loads(body)
            data = event["data"]
            event_id, kind, payload = str(data["id"]), str(data["event_type"]), data.get("payload") or {}
        except (ValueError, KeyError, TypeError, RecursionError):
            return JSONResponse({"error": "not a Telnyx event"}, status_code=400)
        try:
            if kind == "message.received":
                return await self._received(ctx, event, event_id, payload)
            if kind in ("message.sent", "message.finalized"):
                return await self._status(ctx, event_id, kind, payload)
        except StoreUnavailable:
            return Response("store unavailable", status_code=503)
        return JSONResponse({"ok": True, "ignored": kind[:60]})

    async def _received(self, ctx: IntakeContext, event: Any, event_id: str, payload: Any) -> Response:
        media: list[dict[str, str]] = []
        errors: list[str] = []
        budget = self.cfg.max_media_total
        for m in (payload.get("media") or [])[:10]:
            url = m.get("url") if isinstance(m, dict) else None
            if not isinstance(url, str):
                continue
            try:
                data, ctype = await fetch_media(
                    url, limit=min(self.cfg.max_media, budget), allow=self.allow, transport=self.transport
                )
            except MediaError as exc:
                errors.append(str(exc))
                continue
            budget -= len(data)
            media.append({"content_type": m.get("content_type") or ctype, "data": _b64(data)})
        doc = {"provider": "telnyx", "event": event, "media": media, "media_errors": errors}
        raw = RawMessage(
            channel="sms",
            source=f"telnyx-sms:{self.cfg.path}",
            external_id=event_id[:200],
            raw=json.dumps(doc, ensure_ascii=False).encode(),
        )
        await ctx.submit(raw)
        return JSONResponse({"ok": True})

    async def _status(self, ctx: IntakeContext, event_id: str, kind: str, payload: Any) -> Response:
        msg_id = str(payload.get("id") or "")
        app = self.host()
        ticket = await asyncio.to_thread(app.lookup().by_link, "telnyx", "sms_id", msg_id) if app else None
        if ticket is None:
            return JSONResponse({"ok": True, "ticket": None})
        to = payload.get("to") or []
        states = ", ".join(f"{t.get('phone_number')}: {t.get('status')}" for t in to if isinstance(t, dict))
        errs = "; ".join(str(e.get("detail") or e.get("title") or e) for e in payload.get("errors") or [])
        note = f"SMS {msg_id} {kind.split('.')[1]}: {states or 'no recipient status'}" + (
            f" ({errs})" if errs else ""
        )
        update = StatusUpdate(
            ticket_ref=ticket.ref, system="telnyx", internal_note=note[:1000], external_event_id=event_id
        )
        applied = await ctx.apply_status_update(update)
        return JSONResponse({"ok": True, "ticket": ticket.ref, "applied": applied})


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


class TelnyxSmsNotifier:
    channel = "sms"
    name = "telnyx-sms"

    @staticmethod
    def address(contact: Contact) -> str | None:
        return contact.phone

    def __init__(self, cfg: Any, optouts: OptOutRegister, allow: list[str], transport: Any = None) -> None:
        self.cfg, self.optouts = cfg, optouts
        self.client = make_client(
            cfg.api_base,
            headers={"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"},
            transport=transport,
            allow=allow,
        )

    async def send(self, item: DeliveryItem) -> DeliveryResult:
        n = item.payload["notification"]
        to = n["to"]
        stopped = await asyncio.to_thread(self.optouts.blocked, to)  # a store read: off the event loop
        if stopped:
            raise PermanentError(f"{to} opted out of SMS ({stopped}); not sent")
        text = fit(n.get("body") or n.get("subject") or "", self.cfg.max_parts)
        body: dict[str, Any] = {"from": self.cfg.from_number, "to": to, "text": text}
        if self.cfg.messaging_profile_id:
            body["messaging_profile_id"] = self.cfg.messaging_profile_id
        if self.cfg.webhook_url:
            body["webhook_url"] = self.cfg.webhook_url
        r = await http_request(self.client, "POST", "/v2/messages", "Telnyx send SMS", json=body)
        msg_id = str((r.json().get("data") or {}).get("id", ""))
        enc, parts = segments(text)
        return DeliveryResult(
            links=[ExternalLink(system="telnyx", kind="sms_id", value=msg_id)],
            detail=f"sms {msg_id} to {to}, {parts} part(s) {enc}",
        )
