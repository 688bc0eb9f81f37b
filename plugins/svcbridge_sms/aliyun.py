"""Alibaba Cloud SMS (Dysmsapi, api-contracts 2.7): templated notices out, receipts and replies in.

Mainland China operators accept only pre-approved templates: a notice is sent as ``TemplateCode`` +
``TemplateParam`` (JSON), picked per notice kind and language (``templates.acknowledgement.zh-CN``),
with the approved ``SignName``. Requests are signed with signature v1 (``sign``): parameters sorted,
RFC 3986 percent-encoding, ``GET&%2F&<encoded query>``, HMAC-SHA1 with ``AccessKeySecret + "&"``.
``OutId`` carries the ticket reference, so a receipt finds its ticket without a lookup table.

Errors: HTTP 429/5xx and the throttling codes inside a 200 (``isv.BUSINESS_LIMIT_CONTROL``,
``Throttling*``) retry later; a bad key or signature parks the channel (``AuthFailed``); any other
code (a template not approved, a bad number) is a dead letter with Alibaba's message.

Pushes (``POST /hooks/<path>/<push_token>/report`` and ``/up``): Alibaba signs nothing (contract:
not found), so the route's URL carries a secret token, compared in constant time. ``SmsReport``
(a JSON array of receipts) becomes internal notes on the tickets named by ``out_id``; ``SmsUp``
(replies) is journaled per ``sequence_id`` and becomes SMS messages like any other provider's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from svcbridge import (
    AuthFailed,
    Contact,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    IntakeContext,
    NotReady,
    OptOutRegister,
    PermanentError,
    RawMessage,
    StatusUpdate,
    StoreUnavailable,
    http_request,
    make_client,
    read_body,
)

from .text import segments

log = structlog.get_logger("svcbridge.sms.aliyun")
THROTTLED = ("isv.BUSINESS_LIMIT_CONTROL", "Throttling", "isv.DAY_LIMIT_CONTROL")
AUTH_CODES = ("InvalidAccessKeyId.NotFound", "SignatureDoesNotMatch", "InvalidAccessKeyId", "Forbidden.RAM")
ACK = {"code": 0, "msg": "成功"}


def enc(value: str) -> str:
    """RFC 3986 as Alibaba signs: space %20, '*' %2A, '~' kept."""
    return urllib.parse.quote(value, safe="~")


def sign(params: dict[str, str], secret: str, method: str = "GET") -> str:
    """Signature v1 of ``params`` (without ``Signature``)."""
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{enc('/')}&{enc(query)}"
    digest = hmac.new((secret + "&").encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunSmsNotifier:
    channel = "sms"
    name = "aliyun-sms"

    @staticmethod
    def address(contact: Contact) -> str | None:
        return contact.phone

    def __init__(self, cfg: Any, optouts: OptOutRegister, allow: list[str], transport: Any = None) -> None:
        self.cfg, self.optouts = cfg, optouts
        self.client = make_client(cfg.api_base, transport=transport, allow=allow)

    def template_for(self, kind: str, language: str | None) -> str:
        per_lang = self.cfg.templates.get(kind) or self.cfg.templates.get("default")
        if not per_lang:
            raise PermanentError(
                f"no Alibaba SMS template for {kind!r} notices ([plugins.sms.aliyun.templates])"
            )
        for lang in (language, (language or "").split("-")[0], self.cfg.default_language):
            if lang and lang in per_lang:
                return str(per_lang[lang])
        return str(next(iter(per_lang.values())))

    def params(self, item: DeliveryItem, now: datetime | None = None) -> dict[str, str]:
        n = item.payload["notification"]
        t = item.ticket
        values = {"ref": t.ref, "state": t.state.value, "subject": (t.subject or "")[:20]}
        params = {
            "AccessKeyId": self.cfg.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "RegionId": "cn-hangzhou",
            "SignatureMethod": "HMAC-SHA1",
            # new for each attempt: the gateway refuses a nonce it has seen (for 15+ minutes, a throttled
            # request's too), so one nonce for all retries made a throttled notice a dead letter; the same
            # attempt run again after a crash reuses it (refused, not sent twice, if it reached Alibaba)
            "SignatureNonce": uuid.uuid5(uuid.NAMESPACE_URL, f"{item.idempotency_key}:{item.attempts}").hex,
            "SignatureVersion": "1.0",
            "Timestamp": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25",
            "PhoneNumbers": _national(n["to"]),
            "SignName": self.cfg.sign_name,
            "TemplateCode": self.template_for(
                n.get("template") or "default", (n.get("data") or {}).get("language")
            ),
            "TemplateParam": json.dumps(values, ensure_ascii=False, separators=(",", ":")),
            "OutId": t.ref,
        }
        params["Signature"] = sign(params, self.cfg.access_key_secret.get_secret_value())
        return params

    async def send(self, item: DeliveryItem) -> DeliveryResult:
        n = item.payload["notification"]
        stopped = await asyncio.to_thread(self.optouts.blocked, n["to"])  # a store read: off the event loop
        if stopped:
            raise PermanentError(f"{n['to']} opted out of SMS ({stopped}); not sent")
        r = await http_request(self.client, "GET", "/", "Alibaba SendSms", params=self.params(item))
        reply = r.json()
        code = str(reply.get("Code", ""))
        if code == "OK":
            biz = str(reply.get("BizId", ""))
            _enc, parts = segments(n.get("body") or "")
            lang = (n.get("data") or {}).get("language")
            code_used = self.template_for(n.get("template") or "default", lang)
            return DeliveryResult(
                links=[ExternalLink(system="aliyun", kind="biz_id", value=biz)],
                detail=f"sms {biz} to {n['to']} (template {code_used}, ~{parts} part(s))",
            )
        msg = f"Alibaba SendSms: {code}: {str(reply.get('Message', ''))[:200]}"
        if code.startswith(THROTTLED):
            raise NotReady(msg, retry_after=60)
        if code.startswith(AUTH_CODES):
            raise AuthFailed(msg)
        raise PermanentError(msg)


def _national(phone: str) -> str:
    """Dysmsapi takes mainland numbers without +86; others with their international prefix 00."""
    if phone.startswith("+86"):
        return phone[3:]
    return "00" + phone.lstrip("+")


class AliyunPushRoute:
    """``<path>/{token}/{kind}``: kind ``report`` (SmsReport) or ``up`` (SmsUp)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    async def __call__(self, request: Request, ctx: IntakeContext) -> Response:
        token = str(request.path_params.get("token", ""))
        if not hmac.compare_digest(token.encode(), self.cfg.push_token.get_secret_value().encode()):
            return Response("forbidden", status_code=403)
        body = await read_body(request, 1024 * 1024)
        if not isinstance(body, bytes):
            return body
        try:
            items = json.loads(body)
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ValueError("not a JSON array of objects")
        except (ValueError, RecursionError):
            return JSONResponse({"code": 1, "msg": "bad body"}, status_code=400)
        kind = request.path_params.get("kind")
        try:
            if kind == "report":
                for r in items:
                    await self._report(ctx, r)
            elif kind == "up":
                raws = [self._up(u) for u in items if u.get("sequence_id") is not None]
                await ctx.submit_many(raws)
            else:
                return JSONResponse({"code": 1, "msg": "unknown push"}, status_code=404)
        except StoreUnavailable:
            return JSONResponse({"code": 1, "msg": "try again"}, status_code=503)
        return JSONResponse(ACK)

    async def _report(self, ctx: IntakeContext, r: dict[str, Any]) -> None:
        ref = str(r.get("out_id") or "")
        if not ref:
            return
        ok = r.get("success") in (True, "true", "True")
        what = "delivered" if ok else f"not delivered ({r.get('err_code')}: {r.get('err_msg')})"
        note = f"SMS {r.get('biz_id')} to {r.get('phone_number')} {what} at {r.get('report_time')}"
        update = StatusUpdate(
            ticket_ref=ref,
            system="aliyun",
            internal_note=note[:1000],
            external_event_id=f"aliyun:{r.get('biz_id')}:{r.get('phone_number')}",
        )
        if not await ctx.apply_status_update(update):  # seen before, or an out_id of no ticket of ours
            log.info("aliyun_report_not_applied", out_id=ref[:40])

    def _up(self, u: dict[str, Any]) -> RawMessage:
        return RawMessage(
            channel="sms",
            source=f"aliyun-sms:{self.cfg.path}",
            external_id=str(u["sequence_id"])[:200],
            raw=json.dumps({"provider": "aliyun", "up": u}, ensure_ascii=False).encode(),
        )
