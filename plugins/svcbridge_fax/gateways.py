"""Fax gateways' inbound webhooks: Telnyx Programmable Fax and Sinch Fax (Phaxio v2.1 callbacks).

Both routes answer 2xx only after the fax is journaled, and 403 to a forged, stale or replayed request
(nothing is journaled then). The journal entry is JSON: the provider, the event as received and the
fax document (base64), so parsing never needs the network.

- Telnyx (``POST /hooks/<telnyx.path>``): a JSON event, Ed25519-signed (``signatures.py``). Only
  ``fax.received`` makes a ticket (other fax events are acknowledged and logged). Its ``media_url``
  (the PDF) is fetched before journaling through ``svcbridge.make_client`` (SSRF guard; the Bearer API
  key only to Telnyx's own hosts: a pre-signed storage URL refuses a second credential) with a size
  limit and a short time budget; a fetch that fails is journaled all the same, with the reason, so
  the ticket says the fax came and why its pages are missing (the event is never lost). The journal
  key is the event id: a redelivered event is journaled once.
- Sinch / Phaxio (``POST /hooks/<sinch.path>``): ``multipart/form-data`` with the fax fields and the
  PDF as a file part, ``X-Phaxio-Signature`` over URL, fields and file hashes. Only received faxes
  (``direction = received``) make a ticket; the journal key is the fax id.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from svcbridge import (
    Attachment,
    Contact,
    ExternalLink,
    IntakeContext,
    MediaError,
    ParseError,
    RawMessage,
    StatusUpdate,
    StoreUnavailable,
    TicketDraft,
    fetch_media,
    read_body,
)

from .detect import e164
from .signatures import ReplayGuard, phaxio_verify, telnyx_public_key, telnyx_verify

log = structlog.get_logger("svcbridge.fax.gateways")
MAX_EVENT = 256 * 1024  # a Telnyx event is a few KiB; the fax itself comes by URL


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


class TelnyxFaxRoute:
    """``fax.received`` events from Telnyx Programmable Fax."""

    def __init__(
        self,
        cfg: Any,
        allow: list[str],
        transport: httpx.AsyncBaseTransport | None = None,
        host: Callable[[], Any] = lambda: None,
    ) -> None:
        self.cfg, self.allow, self.transport, self.host = cfg, allow, transport, host
        self.key = telnyx_public_key(cfg.public_key)
        self.replays = ReplayGuard(window=2 * cfg.tolerance)

    async def __call__(self, request: Request, ctx: IntakeContext) -> Response:
        body = await read_body(request, MAX_EVENT)
        if not isinstance(body, bytes):
            return body
        ts = request.headers.get("telnyx-timestamp", "")
        sig = request.headers.get("telnyx-signature-ed25519", "")
        why = telnyx_verify(self.key, body, ts, sig, self.cfg.tolerance)
        if why is None and not self.replays.first_use(sig):
            why = "replayed request"
        if why is not None:
            log.warning("telnyx_fax_refused", reason=why, client=_client_host(request))
            return Response("forbidden", status_code=403)
        return await self.replays.journal_once(sig, lambda: self._take(ctx, body, sig))

    async def _take(self, ctx: IntakeContext, body: bytes, sig: str) -> Response:
        try:
            event = json.loads(body)
            data = event["data"]
            event_id, kind, payload = str(data["id"]), str(data["event_type"]), data.get("payload") or {}
        except (ValueError, KeyError, TypeError, RecursionError):
            return JSONResponse({"error": "not a Telnyx event"}, status_code=400)
        if kind in ("fax.delivered", "fax.failed"):  # a fax we sent (a notice to a fax customer)
            try:
                return await self._outcome(ctx, event_id, kind, payload)
            except StoreUnavailable:
                return Response("store unavailable", status_code=503)
        if kind != "fax.received":
            log.info("telnyx_fax_event", event_type=kind[:60], id=event_id[:80])
            return JSONResponse({"ok": True, "ignored": kind[:60]})
        doc: dict[str, Any] = {"provider": "telnyx", "event": event}
        url = payload.get("media_url")
        if isinstance(url, str) and url:
            host = urllib.parse.urlsplit(url).hostname or ""
            ours = host == "telnyx.com" or host.endswith(".telnyx.com")
            auth_header = {"Authorization": f"Bearer {self.cfg.api_key.get_secret_value()}"} if ours else None
            try:
                data_bytes, ctype = await fetch_media(
                    url,
                    limit=self.cfg.max_media,
                    allow=self.allow,
                    transport=self.transport,
                    headers=auth_header,
                )
                doc["media"] = [{"content_type": ctype or "application/pdf", "data": _b64(data_bytes)}]
            except MediaError as exc:
                doc["media_error"] = str(exc)
                log.warning("telnyx_fax_media_failed", id=event_id[:80], error=str(exc))
        raw = RawMessage(
            channel="fax",
            source=f"telnyx:{self.cfg.path}",
            external_id=event_id[:200],
            raw=json.dumps(doc, ensure_ascii=False).encode(),
        )
        try:
            await ctx.submit(raw)
        except StoreUnavailable:
            return Response("store unavailable", status_code=503)
        return JSONResponse({"ok": True})

    async def _outcome(self, ctx: IntakeContext, event_id: str, kind: str, payload: Any) -> Response:
        """The result of an outgoing fax, as an internal note on the ticket it answered."""
        fax_id = str(payload.get("fax_id") or payload.get("id") or "")
        app = self.host()
        ticket = (
            await asyncio.to_thread(app.lookup().by_link, "telnyx", "fax_out_id", fax_id) if app else None
        )
        if ticket is None:
            return JSONResponse({"ok": True, "ticket": None})
        why = payload.get("failure_reason") or ""
        what = "delivered" if kind == "fax.delivered" else f"failed ({why})" if why else "failed"
        note = f"Fax {fax_id} to {payload.get('to') or ticket.contact.phone} {what}"
        update = StatusUpdate(
            ticket_ref=ticket.ref, system="telnyx", internal_note=note[:1000], external_event_id=event_id
        )
        applied = await ctx.apply_status_update(update)
        return JSONResponse({"ok": True, "ticket": ticket.ref, "applied": applied})


class SinchFaxRoute:
    """Sinch Fax v2.1 (Phaxio) callbacks: multipart fields plus the fax PDF."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.url = cfg.public_url.rstrip("/") + "/hooks/" + cfg.path.lstrip("/")
        self.replays = ReplayGuard(window=24 * 3600)

    async def __call__(self, request: Request, ctx: IntakeContext) -> Response:
        body = await read_body(request, self.cfg.max_media + 64 * 1024)
        if not isinstance(body, bytes):
            return body
        # parsing and hashing 20 MB take about a second: in a thread, or anyone's unsigned post (the
        # signature covers the parsed parts, so it is checked after) holds every other webhook
        try:
            ctype = request.headers.get("content-type", "")
            params, files = await asyncio.to_thread(parse_multipart, ctype, body)
        except ValueError:
            return JSONResponse({"error": "not multipart/form-data"}, status_code=400)
        sig = request.headers.get("x-phaxio-signature", "")
        token = self.cfg.callback_token.get_secret_value()
        parts = [(n, d) for n, d, _ in files]
        ok = await asyncio.to_thread(phaxio_verify, token, self.url, params, parts, sig)
        if ok and not self.replays.first_use(sig):
            ok = False
        if not ok:
            log.warning("sinch_fax_refused", client=_client_host(request))
            return Response("forbidden", status_code=403)
        # Phaxio signs no timestamp, so its retry is this very request: whatever kept it from being
        # journaled (400, 503, a 500 from a full disk) must let the retry in, or the fax is lost
        return await self.replays.journal_once(sig, lambda: self._take(ctx, params, files))

    async def _take(
        self, ctx: IntakeContext, params: list[tuple[str, str]], files: list[tuple[str, bytes, str]]
    ) -> Response:
        fields = dict(params)
        try:
            fax = json.loads(fields.get("fax", "{}"))
            fax_id = str(fax["id"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return JSONResponse({"error": "no fax object"}, status_code=400)
        if fields.get("direction", fax.get("direction")) != "received":
            return JSONResponse({"ok": True, "ignored": "not a received fax"})
        doc = {
            "provider": "sinch",
            "fields": fields,
            "media": [{"content_type": ct, "data": _b64(d)} for _n, d, ct in files],
        }
        raw = RawMessage(
            channel="fax",
            source=f"sinch:{self.cfg.path}",
            external_id=fax_id[:200],
            raw=json.dumps(doc, ensure_ascii=False).encode(),
        )
        try:
            await ctx.submit(raw)
        except StoreUnavailable:
            return Response("store unavailable", status_code=503)
        return JSONResponse({"ok": True})


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[list[tuple[str, str]], list[tuple[str, bytes, str]]]:
    """``multipart/form-data`` as (name, value) fields and (name, bytes, content type) files."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("not multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.message_from_bytes(head + body, policy=email.policy.HTTP)
    if not msg.is_multipart():
        raise ValueError("no parts")
    params: list[tuple[str, str]] = []
    files: list[tuple[str, bytes, str]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            files.append((str(name), data, part.get_content_type()))
        else:
            params.append((str(name), data.decode("utf-8", errors="replace")))
    return params, files


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------ parsing
def parse_gateway_fax(raw: RawMessage) -> TicketDraft:
    """The journaled gateway fax as a draft of channel ``fax`` (pages attached, number in E.164); a
    journal entry of another shape is a ``ParseError`` (quarantined with the reason), never a crash."""
    try:
        return _parse_gateway_fax(raw)
    except ParseError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ParseError(f"not a journaled gateway fax: {type(exc).__name__}") from None


def _s(value: Any, limit: int = 200) -> str | None:
    """A provider's value as storable text (no NUL, no lone surrogate), or None."""
    if value is None or value == "":
        return None
    return _UNSTORABLE.sub("", str(value))[:limit] or None


_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _parse_gateway_fax(raw: RawMessage) -> TicketDraft:
    try:
        doc = json.loads(raw.raw or b"")
        provider = doc["provider"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ParseError("not a journaled gateway fax") from None
    if provider == "telnyx":
        p = doc["event"]["data"].get("payload") or {}
        number, to, pages, fax_id = p.get("from"), p.get("to"), p.get("page_count"), p.get("fax_id")
        system = "telnyx"
    elif provider == "sinch":
        fax = json.loads(doc["fields"].get("fax", "{}"))
        number, to = fax.get("from_number"), fax.get("to_number")
        pages, fax_id = fax.get("num_pages"), fax.get("id")
        system = "sinch"
    else:
        raise ParseError(f"unknown fax provider {str(provider)[:40]!r}")
    number, to, fax_id = _s(number, 40), _s(to, 100), _s(fax_id)
    pages = pages if isinstance(pages, int) and not isinstance(pages, bool) else None
    # an international number here; a national one is read in default_region by normalize_draft
    phone = e164(number, None) if number else None
    atts = []
    for i, m in enumerate(doc.get("media") or []):
        ctype = str(m.get("content_type") or "application/pdf")
        ext = "pdf" if "pdf" in ctype else "tif"
        try:
            data = base64.b64decode(m["data"], validate=True)
        except (ValueError, KeyError, TypeError):
            raise ParseError("fax document is not base64") from None
        atts.append(Attachment.from_bytes(data, original_name=f"fax-{i + 1}.{ext}", content_type=ctype))
    who = phone or "an unknown number"
    count = f", {pages} page(s)" if isinstance(pages, int) else ""
    body = f"Fax received from {who}{count} through {system}."
    if doc.get("media_error"):
        body += f"\n\nThe fax document could not be fetched: {_s(doc['media_error'], 300)}"
    elif atts:
        body += " The text read from the pages (OCR) follows as a note."
    label = {"rule": system, "from": phone, "raw_from": number, "to": to, "pages": pages, "fax_id": fax_id}
    if doc.get("media_error"):
        label["media_error"] = _s(doc["media_error"], 300)
    return TicketDraft(
        channel="fax",
        subject=f"Fax received from {who}{count}",
        body_text=body,
        contact=Contact(phone=phone),
        attachments=atts,
        links=[ExternalLink(system=system, kind="fax_id", value=fax_id or raw.external_id[:200])],
        labels={"fax": {k: v for k, v in label.items() if v not in (None, "")}},
    )
