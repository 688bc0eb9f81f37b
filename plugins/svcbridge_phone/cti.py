"""The CTI webhook: call events in, one journaled message per call that matters out.

A call's events (``newCall``, ``answer``, ``hangup``) may arrive out of order or twice (PBX retries).
The route merges what each says into the call's state, kept in the route's checkpoints (durable), and
decides at ``hangup``: missed (inbound, never answered) or answered. The decision is journaled under a
key made of the call id and the outcome, so a retried hangup is journaled once. An ``answer`` arriving
after its ``hangup`` (out of order) is journaled as that call's answer and lands on its callback
ticket (found by the missed call's link), which ends the callback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import phonenumbers
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from svcbridge import IntakeContext, RawMessage, StoreUnavailable, hmac_matches, read_body, utcnow

log = structlog.get_logger("svcbridge.phone")
MAX_EVENT = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def e164(text: str | None, region: str | None) -> str | None:
    """A caller id in E.164, or None ('anonymous', an extension, junk)."""
    if not text or text.lower() in ("anonymous", "unknown", "restricted"):
        return None
    try:
        num = phonenumbers.parse(text, None if text.strip().startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def _fields(body: bytes, content_type: str) -> dict[str, Any]:
    """The event's fields from JSON or a form (``user[]`` may repeat); ValueError when neither."""
    if "json" in content_type:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    out: dict[str, Any] = {}
    for k, v in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if k.endswith("[]"):
            out.setdefault(k[:-2], []).append(v)
        else:
            out[k] = v
    return out


def _text(v: Any, limit: int = 250) -> str:
    return _CONTROL.sub("", str(v))[:limit] if v is not None else ""


class CtiRoute:
    def __init__(self, cfg: Any, host: Callable[[], Any]) -> None:
        self.cfg, self.host = cfg, host
        # the hotline as E.164: the PBX writes the dialled number its own way (4008001234, +86 400 ...)
        self.hotline = {e164(n, cfg.default_region) or n for n in cfg.hotline_numbers}
        # a call's events may arrive at once (answer and hangup, PBX retries): each reads and writes
        # the call's state, so they take turns; else an answer is lost and the call seems missed
        self.lock = asyncio.Lock()

    async def __call__(self, request: Request, ctx: IntakeContext) -> Response:
        offered = str(request.path_params.get("token", ""))
        if not hmac.compare_digest(offered.encode(), self.cfg.token.get_secret_value().encode()):
            return Response("forbidden", status_code=403)
        body = await read_body(request, MAX_EVENT)
        if not isinstance(body, bytes):
            return body
        if self.cfg.hmac_secret is not None:
            sig = request.headers.get("x-signature-256", "")
            if not hmac_matches(self.cfg.hmac_secret.get_secret_value(), body, sig, "sha256", "sha256="):
                return Response("forbidden", status_code=403)
        try:
            ev = _fields(body, request.headers.get("content-type", ""))
        except (ValueError, RecursionError):
            return JSONResponse({"error": "not a CTI event"}, status_code=400)
        kind, call_id = _text(ev.get("event"), 20), _text(ev.get("callId"))
        if kind not in ("newCall", "answer", "hangup") or not call_id:
            err = "event must be newCall, answer or hangup, with a callId"
            return JSONResponse({"error": err}, status_code=400)
        try:
            async with self.lock:
                return await self._event(ctx, kind, call_id, ev)
        except StoreUnavailable:
            return Response("store unavailable", status_code=503)

    async def _event(self, ctx: IntakeContext, kind: str, call_id: str, ev: dict[str, Any]) -> Response:
        key = f"call:{call_id}"
        state: dict[str, Any] = json.loads(await ctx.get_checkpoint(key) or "{}")
        now = utcnow().isoformat()
        for field in ("from", "to", "direction", "queue"):
            if ev.get(field) and not state.get(field):
                state[field] = _text(ev[field], 100)
        if ev.get("user"):
            users = ev["user"] if isinstance(ev["user"], list) else [ev["user"]]
            state["users"] = [_text(u, 100) for u in users][:20]
        # an answer after its hangup (events out of order): the call was journaled as missed already
        late = kind == "answer" and bool(state.get("ended_at")) and not state.get("answered_at")
        if kind == "newCall":
            state.setdefault("started_at", now)
        elif kind == "answer":
            state.setdefault("answered_at", now)
            state["answered_by"] = _text(ev.get("answeringNumber") or (state.get("users") or [""])[0], 100)
        else:
            if ev.get("answeringNumber"):  # some PBXs say who answered only on hangup
                state.setdefault("answered_at", now)
                state["answered_by"] = _text(ev["answeringNumber"], 100)
            state["cause"] = _text(ev.get("cause"), 40)
            state.setdefault("ended_at", now)
            if str(ev.get("fault", "")).lower() in ("1", "true", "yes"):
                state["fault"] = True
        await ctx.set_checkpoint(key, json.dumps(state))
        if late and state.get("direction", "in") == "in":
            return await self._late_answer(ctx, call_id, state)
        if kind != "hangup":
            return JSONResponse({"ok": True})
        return await self._hangup(ctx, call_id, state)

    async def _hangup(self, ctx: IntakeContext, call_id: str, state: dict[str, Any]) -> Response:
        inbound = state.get("direction", "in") == "in"
        number = state.get("from") if inbound else state.get("to")
        hotline = self.hotline
        dialled = e164(state.get("to"), self.cfg.default_region) or state.get("to")
        # unanswered = no answer before the hangup, whatever the cause says (some PBXs report
        # normalClearing for a caller who gave up in the queue)
        answered = bool(state.get("answered_at"))
        if not answered and not inbound:
            return JSONResponse({"ok": True, "journaled": None})  # an agent's call nobody took
        if not answered and hotline and dialled not in hotline:
            return JSONResponse({"ok": True, "journaled": None})  # not the hotline
        call = {**state, "call_id": call_id, "number": number, "kind": "answered" if answered else "missed"}
        if answered and not state.get("fault"):
            ref = await self._open_ticket(number)
            if ref is None:
                log.info("cti_answered_without_ticket", call_id=call_id[:80])
                return JSONResponse({"ok": True, "journaled": None})
            call["ticket_ref"] = ref
        raw = RawMessage(
            channel="phone",
            source=ctx.name,
            external_id=f"{call_id}:{call['kind']}",
            raw=json.dumps(call, ensure_ascii=False).encode(),
        )
        res = await ctx.submit(raw)
        return JSONResponse({"ok": True, "journaled": call["kind"], "new": res.new})

    async def _late_answer(self, ctx: IntakeContext, call_id: str, state: dict[str, Any]) -> Response:
        """The call was answered after all: an event on its callback ticket, which ends the callback."""
        call = {
            **state,
            "call_id": call_id,
            "number": state.get("from"),
            "kind": "answered",
            "late_for": call_id,
        }
        raw = RawMessage(
            channel="phone",
            source=ctx.name,
            external_id=f"{call_id}:answered",
            raw=json.dumps(call, ensure_ascii=False).encode(),
        )
        res = await ctx.submit(raw)
        return JSONResponse({"ok": True, "journaled": "answered", "new": res.new})

    async def _open_ticket(self, number: str | None) -> str | None:
        app = self.host()
        phone = e164(number, self.cfg.default_region)
        if app is None or phone is None:
            return None
        found = await asyncio.to_thread(app.lookup().open_by_contact, phone=phone)
        return found.ref if found is not None else None
