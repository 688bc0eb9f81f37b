"""SMS for every provider: Telnyx and Alibaba Cloud (Dysmsapi) here, and the rules Twilio's SMS follow too.

Providers (``telnyx.py``, ``aliyun.py``): inbound webhooks journaled once per provider event, delivery
status as internal notes on the ticket, outbound notices (one SMS notifier per install: Twilio's, or
``outbound = "telnyx" | "aliyun"`` here).

For every SMS draft, whichever provider brought it (channel ``sms``):

- ``normalize_draft``: control characters, bidi overrides and zero-width characters leave subject and
  body (``text.clean``); the label ``sms_segments`` says how many parts and which encoding it took.
- ``classify_ticket``: a message that is only ``STOP`` / ``退订`` / ``TD`` ... (``text.keyword``) is
  recorded in the store's opt-out register (``optout.py``: every replica sees it) and on the ticket
  (label ``sms_opt_out``; ``START`` removes it); every SMS notifier refuses an opted-out number,
  visibly (a dead row with the reason).
- ``thread_message``: a ticket reference in the text (``SB-000123``) threads onto that ticket; else
  the number's open SMS ticket continues if it was updated within ``thread_window_hours``; older
  conversations start a new ticket.

Settings (``[plugins.sms]``)::

    thread_window_hours = 72
    max_parts = 3                        # longest outgoing notice, in SMS parts
    outbound = "telnyx"                  # or "aliyun"; none: Twilio's notifier (if configured)
    [plugins.sms.telnyx]
    public_key = "..."; api_key = "..."; from_number = "+8675512345678"
    [plugins.sms.aliyun]
    access_key_id = "..."; access_key_secret = "..."; sign_name = "某某售后"; push_token = "..."
    [plugins.sms.aliyun.templates.acknowledgement]
    zh-CN = "SMS_100001"; zh-TW = "SMS_100002"; en = "SMS_100003"
"""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr

from svcbridge import (
    Attachment,
    Contact,
    ExternalLink,
    OptOutRegister,
    ParseError,
    PluginSettings,
    RawMessage,
    ThreadMatch,
    TicketDraft,
    TicketLookup,
    WebhookRoute,
    hookimpl,
    utcnow,
)

from .aliyun import AliyunPushRoute, AliyunSmsNotifier
from .optout import import_file
from .telnyx import TelnyxSmsNotifier, TelnyxSmsRoute
from .text import clean, keyword, segments

__version__ = "0.1.0"
REF = re.compile(r"\b([A-Z]{2,5}-\d{6,})\b")


class TelnyxSmsSettings(PluginSettings):  # PluginSettings: <secret>_file reads a file
    public_key: str
    api_key: SecretStr
    path: str = "telnyx/sms"
    tolerance: float = Field(default=300.0, gt=0, le=3600)
    from_number: str | None = None
    messaging_profile_id: str | None = None
    webhook_url: str | None = None
    api_base: str = "https://api.telnyx.com"
    max_parts: int = Field(default=3, ge=1, le=10)
    max_media: int = Field(default=5 * 1024 * 1024, ge=1024, description="largest MMS file fetched")
    max_media_total: int = Field(default=10 * 1024 * 1024, ge=1024)


class AliyunSmsSettings(PluginSettings):  # PluginSettings: <secret>_file reads a file
    access_key_id: str
    access_key_secret: SecretStr
    sign_name: str = Field(description="the approved signature (签名) shown in 【】")
    templates: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="notice kind (or 'default') -> language -> TemplateCode"
    )
    default_language: str = "zh-CN"
    push_token: SecretStr = Field(description="secret part of the receipt / reply push URL")
    path: str = "aliyun/sms"
    api_base: str = "https://dysmsapi.aliyuncs.com"


class SmsSettings(PluginSettings):
    thread_window_hours: float = Field(default=72.0, gt=0)
    max_parts: int = Field(default=3, ge=1, le=10)
    outbound: Literal["telnyx", "aliyun"] | None = None
    optout_db: Path | None = Field(
        default=None,
        description="the old opt-out register file (default <data_dir>/sms-optout.db): imported into "
        "the store once, then renamed *.imported",
    )
    default_region: str | None = None
    telnyx: TelnyxSmsSettings | None = None
    aliyun: AliyunSmsSettings | None = None


# thread_message and classify are given no settings: what they need is kept when the app is built
_state: dict[str, Any] = {"window": 72.0, "optouts": None, "host": None}


def _optouts(settings: Any) -> OptOutRegister:
    """The store's register; the first time per store, the old register file is imported into it."""
    cfg: SmsSettings | None = settings.plugin_config("sms")
    path = (cfg.optout_db if cfg and cfg.optout_db else None) or Path(settings.data_dir) / "sms-optout.db"
    register = OptOutRegister.for_settings(settings)
    if _state.get("optouts") != (settings.db_url, path):
        import_file(path, register)
        _state["optouts"] = (settings.db_url, path)
    return register


def optout_register(settings: Any) -> OptOutRegister:
    """The install's opt-out register, for SMS notifiers of other plugins (Twilio's)."""
    return _optouts(settings)


@hookimpl
def register_settings(register: Any) -> None:
    register("sms", SmsSettings)


@hookimpl
def startup(app: Any) -> None:
    _state["host"] = app


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg: SmsSettings | None = settings.plugin_config("sms")
    _state["window"] = cfg.thread_window_hours if cfg else 72.0
    if cfg is None:
        return
    if cfg.telnyx is not None:
        route = TelnyxSmsRoute(cfg.telnyx, settings.outbound_allow, cfg.transport, lambda: _state["host"])
        register(WebhookRoute(path=cfg.telnyx.path, endpoint=route, name=f"telnyx-sms:{cfg.telnyx.path}"))
    if cfg.aliyun is not None:
        path = cfg.aliyun.path.strip("/") + "/{token}/{kind}"
        register(
            WebhookRoute(
                path=path, endpoint=AliyunPushRoute(cfg.aliyun), name=f"aliyun-sms:{cfg.aliyun.path}"
            )
        )


@hookimpl
def register_notifiers(register: Any, settings: Any) -> None:
    cfg: SmsSettings | None = settings.plugin_config("sms")
    if cfg is None or cfg.outbound is None:
        return
    optouts = _optouts(settings)
    if cfg.outbound == "telnyx" and cfg.telnyx is not None:
        register(TelnyxSmsNotifier(cfg.telnyx, optouts, settings.outbound_allow, cfg.transport))
    elif cfg.outbound == "aliyun" and cfg.aliyun is not None:
        register(AliyunSmsNotifier(cfg.aliyun, optouts, settings.outbound_allow, cfg.transport))


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel != "sms" or not raw.source.startswith(("telnyx-sms:", "aliyun-sms:")) or raw.raw is None:
        return None
    try:
        return _parse(raw)
    except ParseError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ParseError(f"not a journaled SMS event: {type(exc).__name__}") from None


def _parse(raw: RawMessage) -> TicketDraft:
    try:
        doc = json.loads(raw.raw)
        if doc["provider"] == "telnyx":
            p = doc["event"]["data"]["payload"]
            number, text, msg_id = (p.get("from") or {}).get("phone_number"), p.get("text") or "", p.get("id")
            system, to = "telnyx", ",".join(t.get("phone_number", "") for t in p.get("to") or [])
        else:
            u = doc["up"]
            number, text, msg_id = (
                str(u.get("phone_number") or ""),
                str(u.get("content") or ""),
                u["sequence_id"],
            )
            system, to = "aliyun", str(u.get("dest_code") or "")
            if number and not number.startswith("+"):
                number = "+86" + number  # SmsUp gives mainland numbers without the country code
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise ParseError("not a journaled SMS event") from None
    try:
        contact = Contact(phone=str(number)) if number else Contact()
    except ValueError:
        raise ParseError(f"sender is not a phone number: {str(number)[:40]!r}") from None
    atts = [
        Attachment.from_bytes(
            base64.b64decode(m["data"]), original_name=f"mms-{i + 1}", content_type=m["content_type"]
        )
        for i, m in enumerate(doc.get("media") or [])
    ]
    body = clean(str(text)) + "".join(
        f"\n[media not fetched: {clean(str(e))}]" for e in doc.get("media_errors") or []
    )
    first = clean(str(text)).strip().splitlines()
    return TicketDraft(
        channel="sms",
        subject=(first[0][:80] if first else "") or "SMS",
        body_text=body,
        contact=contact,
        attachments=atts,
        links=[ExternalLink(system=system, kind="message_id", value=clean(str(msg_id))[:200])],
        labels={"sms_to": clean(str(to))[:100], "sms_segments": _segments_label(clean(str(text)))},
    )


def _segments_label(text: str) -> dict[str, Any]:
    enc, parts = segments(text)
    return {"parts": parts, "encoding": enc}


@hookimpl
def normalize_draft(draft: TicketDraft) -> None:
    if draft.channel != "sms":
        return
    draft.body_text = clean(draft.body_text)
    draft.subject = clean(draft.subject).replace("\n", " ").replace("\t", " ").strip()[:80] or "SMS"
    if "sms_segments" not in draft.labels:  # Twilio's drafts: the body is the text as sent
        draft.labels["sms_segments"] = _segments_label(draft.body_text)


@hookimpl
def classify_ticket(draft: TicketDraft, ticket: Any, settings: Any) -> None:
    phone = draft.contact.phone
    if not phone:
        return
    optouts = _optouts(settings)
    word = keyword(draft.body_text) if draft.channel == "sms" else None
    at = draft.received_at or utcnow()
    if word == "stop":
        optouts.record(phone, draft.body_text.strip(), "sms", at)
        draft.labels["sms_opt_out"] = {"at": at.isoformat(), "word": draft.body_text.strip()[:40]}
    elif word == "start":
        optouts.clear(phone, at)
        if ticket is not None:  # a label set to None is removed from the stored ticket
            draft.labels["sms_opt_out"] = None
        draft.labels["sms_opt_in"] = at.isoformat()
    elif ticket is None:
        # a new ticket (any channel) of a number that said STOP before: every SMS notifier sees it
        blocked = optouts.blocked(phone)
        if blocked:
            draft.labels["sms_opt_out"] = {"register": blocked}
    if word is not None:
        draft.suppress_autoreply = True  # never answer STOP with an acknowledgement


@hookimpl
def thread_message(draft: TicketDraft, lookup: TicketLookup) -> ThreadMatch | None:
    """A ticket reference in the text, else the number's open SMS ticket within the window."""
    if draft.channel != "sms" or not draft.contact.phone:
        return None
    for link in draft.links:
        seen = lookup.by_link(link.system, link.kind, link.value)
        if seen is not None:
            return ThreadMatch(ticket_ref=seen.ref, duplicate=True, reason=f"{link.kind} already stored")
    for ref in REF.findall(draft.body_text):
        found = lookup.by_ref(ref)
        if found is not None and found.contact.phone == draft.contact.phone:
            return ThreadMatch(ticket_ref=found.ref, reason=f"ticket reference {ref} in the text")
    current = lookup.open_by_contact(phone=draft.contact.phone, channel="sms")
    if current is None:
        return None
    if (draft.received_at or utcnow()) - current.updated_at > timedelta(hours=_state["window"]):
        draft.labels["sms_previous_ticket"] = current.ref  # too old: a new fault, not the same talk
        return None
    return ThreadMatch(ticket_ref=current.ref, reason="open SMS conversation within the window")
