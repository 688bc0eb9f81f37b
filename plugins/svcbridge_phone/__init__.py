"""Hotline call events (generic CTI): a missed call becomes a tracked callback, an answered one an event.

The PBX posts Zammad's generic CTI events (api-contracts 2.9; sipgate.io and placetel send close
variants) to ``POST /hooks/cti/<token>``, form-encoded or JSON: ``newCall`` (``from``, ``to``,
``direction``, ``callId``, ``user[]``, ``queue``), ``answer`` (``answeringNumber``), ``hangup``
(``cause``). The token in the URL is the secret (compared in constant time); where the PBX can sign,
``hmac_secret`` makes ``X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` required as well.

The route keeps each call's state in the source's checkpoints (durable, so a restart between
``newCall`` and ``hangup`` forgets nothing) and journals one message when the call ends (``cti.py``):

- an inbound call that ends without an ``answer`` (``cancel``, ``noAnswer``, ``busy``, ...) is journaled
  under ``<callId>:missed``: one **callback ticket** (channel ``phone``) with the caller's number and
  customer (the directory's ``phones``), ``deadlines["callback_by"]`` = received + ``callback_minutes``
  and a durable timer ``phone.callback_due`` that marks it overdue (label ``callback_overdue`` and a
  note to the helpdesk) if no answered call to or from that number came first. A PBX retry of the
  hangup is journaled once (same key): exactly one callback ticket. Another missed call from a
  number whose callback ticket is open lands on it.
- an answered call is journaled under ``<callId>:answered`` only when the caller has an open ticket
  (it becomes an event there; an answered callback clears the callback timer) or when the agent marked
  the call as a fault report (``fault=1`` on ``hangup``): then it opens a ticket.

SLA policies belong to the SLA engine; this plugin only sets the callback deadline and its timer.

Settings (``[plugins.phone]``)::

    token = "long-random-string"        # or token_file
    hmac_secret = "..."                 # optional
    callback_minutes = 5
    default_region = "CN"
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from pydantic import Field, SecretStr

from svcbridge import (
    Contact,
    ExternalLink,
    ParseError,
    PluginSettings,
    RawMessage,
    ThreadMatch,
    TicketChange,
    TicketDraft,
    TicketLookup,
    TimerKind,
    WebhookRoute,
    hookimpl,
    utcnow,
)

from .cti import CtiRoute, _text, e164

__version__ = "0.1.0"
TIMER = "phone.callback_due"


class PhoneSettings(PluginSettings):
    token: SecretStr = Field(description="the secret part of the PBX's URL: /hooks/cti/<token>")
    hmac_secret: SecretStr | None = Field(default=None, description="require X-Signature-256 as well")
    callback_minutes: float = Field(default=5.0, gt=0, le=7 * 24 * 60)
    default_region: str | None = Field(default=None, description="ISO region for national numbers")
    hotline_numbers: list[str] = Field(
        default_factory=list, description="only calls to these numbers count (empty: every inbound call)"
    )


_host: dict[str, Any] = {}


@hookimpl
def register_settings(register: Any) -> None:
    register("phone", PhoneSettings)


@hookimpl
def startup(app: Any) -> None:
    _host["app"] = app


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg: PhoneSettings | None = settings.plugin_config("phone")
    if cfg is not None:
        route = CtiRoute(cfg, lambda: _host.get("app"))
        register(WebhookRoute(path="cti/{token}", endpoint=route, name="cti"))


@hookimpl
def parse_message(raw: RawMessage) -> TicketDraft | None:
    if raw.channel != "phone" or raw.raw is None:
        return None
    try:
        found = json.loads(raw.raw)
        if not isinstance(found, dict) or found.get("kind") not in ("missed", "answered"):
            raise ValueError("no call kind")
    except (ValueError, RecursionError):
        raise ParseError("not a journaled call") from None
    # one storable line per value (the route cleaned them; an entry written by hand may not be)
    call = {k: _text(v, 250) if isinstance(v, str | int | float) else None for k, v in found.items()}
    kind, number = call["kind"], call.get("number")
    try:
        contact = Contact(phone=number) if number else Contact()
    except ValueError:
        contact = Contact()
    who = contact.phone or "an unknown number"
    at = call.get("ended_at") or call.get("started_at") or ""
    if kind == "missed":
        subject = f"Missed hotline call from {who}: call back"
        body = f"Missed call from {who} to {call.get('to') or 'the hotline'} at {at} ({call.get('cause')})."
    else:
        agent = call.get("answered_by") or "an agent"
        subject = f"Call with {who}"
        body = f"Call with {who} answered by {agent} at {call.get('answered_at') or at}; ended {at}."
        if found.get("fault") is True:
            body += " The agent marked it as a fault report."
    label = {k: call.get(k) for k in ("kind", "call_id", "to", "direction", "cause", "answered_by", "queue")}
    draft = TicketDraft(
        channel="phone",
        subject=subject,
        body_text=body,
        contact=contact,
        links=[ExternalLink(system="cti", kind=f"call_{kind}", value=str(call.get("call_id"))[:250])],
        labels={
            "call": {k: v for k, v in label.items() if v},
            "_call_ticket": call.get("ticket_ref"),
            "_call_missed": call.get("late_for"),
        },
        suppress_autoreply=True,  # a caller is called back, not sent an automatic notice
    )
    return draft


@hookimpl
def normalize_draft(draft: TicketDraft, raw: RawMessage, settings: Any) -> None:
    cfg: PhoneSettings | None = settings.plugin_config("phone")
    if draft.channel != "phone" or cfg is None or draft.contact.phone or raw.raw is None:
        return
    number = json.loads(raw.raw).get("number")
    draft.contact.phone = e164(str(number), cfg.default_region) if number else None


@hookimpl
def thread_message(draft: TicketDraft, lookup: TicketLookup) -> ThreadMatch | None:
    if draft.channel != "phone":
        return None
    for link in draft.links:  # the same call journaled again (another source name, a replay)
        seen = lookup.by_link(link.system, link.kind, link.value)
        if seen is not None:
            return ThreadMatch(ticket_ref=seen.ref, duplicate=True, reason="call already stored")
    late = draft.labels.get("_call_missed")
    if late:  # the answer came after the hangup: the call's own callback ticket
        found = lookup.by_link("cti", "call_missed", str(late)[:250])
        if found is not None:
            return ThreadMatch(ticket_ref=found.ref, reason="the missed call was answered after all")
    ref = draft.labels.get("_call_ticket")
    if ref:
        found = lookup.by_ref(str(ref))
        if found is not None:
            return ThreadMatch(ticket_ref=found.ref, reason="call with a caller who has this open ticket")
    if draft.contact.phone and draft.labels.get("call", {}).get("kind") == "missed":
        open_cb = lookup.open_by_contact(phone=draft.contact.phone, channel="phone")
        if open_cb is not None:
            return ThreadMatch(ticket_ref=open_cb.ref, reason="another missed call; callback still open")
    return None


@hookimpl
def classify_ticket(draft: TicketDraft, ticket: Any, settings: Any, jobs: Any) -> None:
    cfg: PhoneSettings | None = settings.plugin_config("phone")
    call = draft.labels.get("call") or {}
    if cfg is None or draft.channel != "phone" or not call:
        return
    if call.get("kind") == "missed" and (ticket is None or "callback_by" not in ticket.deadlines):
        due = (draft.received_at or utcnow()) + timedelta(minutes=cfg.callback_minutes)
        draft.deadlines["callback_by"] = due
        jobs.schedule(TIMER, due, {"number": draft.contact.phone})
    elif (
        call.get("kind") == "answered"
        and ticket is not None
        and "callback_by" in ticket.deadlines
        and "callback_done_at" not in ticket.labels
    ):
        # the caller was reached (an answered call, in or out): the callback is done
        draft.labels["callback_done_at"] = (draft.received_at or utcnow()).isoformat()
        jobs.cancel(TIMER)


def callback_due(timer: Any) -> TicketChange | None:
    t = timer.ticket
    if t is None or "callback_done_at" in t.labels or t.state.is_closed:
        return None
    late = int(timer.late.total_seconds())
    return TicketChange(
        labels={"callback_overdue": timer.due_at.isoformat()},
        note=f"Callback to {t.contact.phone or 'the caller'} is overdue (due {timer.due_at:%H:%M} UTC"
        + (f", checked {late} s late" if late > 60 else "")
        + ").",
    )


@hookimpl
def register_timer_kinds(register: Any, settings: Any) -> None:
    if settings.plugin_config("phone") is not None:
        register(TimerKind(TIMER, callback_due))
