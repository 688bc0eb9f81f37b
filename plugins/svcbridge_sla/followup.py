"""After the repair: the satisfaction survey, and reading the customer's answer.

When a ticket is resolved the customer gets one survey on their own channel (``channels.reach``):
an SMS "reply 1-5" or a mail whose reply is the answer (first line: a score 1-5, then any comment).
No link, no tracking pixel, no HTML: the answer is a reply, threaded like any other message (a mail
by its Message-ID, an SMS by the ticket reference it quotes: ``SB-000123 5 很好``).

A reply on a resolved ticket is recognised in the classify stage (``read_reply``): it keeps the
ticket closed (the draft label ``_keep_closed``) and asks for the ``sla.recompute`` job with the
score and comment, which records a ``survey_reply`` event (what the satisfaction report counts).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from svcbridge import ChannelDirectory, Notification, Ticket, TicketEvent

__all__ = ["fault_words", "read_reply", "survey_for", "survey_open", "survey_sent_at"]

_SCORE = re.compile(
    # full-width punctuation is what Chinese keyboards type (4分，很好; U+FF0F, U+FF01)
    r"^\s*(?:(SB-\d{1,12})\s*[:：,，]?\s*)?([1-5])(?:\s*分)?(?:\s*[/\uff0f]\s*5)?(?:[\s,，.。:：!\uff01-]+(.*))?$",
    re.S,
)
_WIDE_DIGITS = {0xFF10 + i: ord("0") + i for i in range(10)}  # U+FF10-FF19: full-width 0-9
# a count, not a score: "2 台", "3 个", "2 printers" (measure words and common unit nouns)
_COUNT = re.compile(r"^(?:台|个|個|部|件|套|张|張|次|天|小时|小時|pcs|units?|printers?|machines?|devices?)")
_TEXT = {
    "zh-CN": (
        "{ref} 已处理完毕。请为本次服务打分：直接回复 1-5（5 = 非常满意，1 = 很不满意），"
        "可在分数后附上意见。",
        "[{ref}] 服务满意度调查",
    ),
    "zh-TW": (
        "{ref} 已處理完畢。請為本次服務評分：直接回覆 1-5（5 = 非常滿意，1 = 很不滿意），"
        "可在分數後附上意見。",
        "[{ref}] 服務滿意度調查",
    ),
    "en": (
        "{ref} is resolved. How did we do? Reply with a score from 1 to 5 (5 = very satisfied, "
        "1 = very dissatisfied), optionally followed by a comment.",
        "[{ref}] How did we do?",
    ),
}
_SMS_TAIL = {
    "zh-CN": "（回复时请以 {ref} 开头）",
    "zh-TW": "（回覆時請以 {ref} 開頭）",
    "en": " (start your reply with {ref})",
}


def _lang(ticket: Ticket) -> str:
    lang = (ticket.language or ticket.contact.language or "").lower()
    if lang.startswith("zh"):
        return "zh-TW" if any(x in lang for x in ("tw", "hk", "hant", "mo")) else "zh-CN"
    return "en"


def survey_for(ticket: Ticket, channels: ChannelDirectory) -> Notification | None:
    """The survey for a resolved ticket, on the customer's channel (None: no way to reach them)."""
    reach = channels.reach(ticket)
    if reach is None:
        return None
    lang = _lang(ticket)
    body, subject = (x.format(ref=ticket.ref) for x in _TEXT[lang])
    if reach.channel != "email":  # a text message threads by the reference it quotes
        body += _SMS_TAIL[lang].format(ref=ticket.ref)
    return Notification(
        channel=reach.channel,
        template="survey",
        to=reach.to,
        subject=subject,
        body=body,
        data={"ref": ticket.ref},
        key=f"{ticket.ref}:survey:{sum(1 for e in ticket.events if e.type == 'status_changed')}",
    )


def survey_sent_at(ticket: Ticket) -> datetime | None:
    """When the ticket's latest survey went out (its ``notified`` event), or None."""
    sent = [e.at for e in ticket.events if e.type == "notified" and e.data.get("template") == "survey"]
    return sent[-1] if sent else None


def fault_words(comment: str, keywords: list[str]) -> bool:
    """A number that starts a fault report rather than scoring one: ``2 台打印机`` (a count) or words
    the classification rules treat as a fault (``3 printers down``). Only for answers that quote no
    ticket reference: those are matched to a survey by the sender's number alone."""
    text = comment.casefold()
    return bool(_COUNT.match(text)) or any(k in text for k in keywords)


def survey_open(ticket: Ticket) -> bool:
    """A survey went out and no answer was recorded after it."""
    sent = [e.at for e in ticket.events if e.type == "notified" and e.data.get("template") == "survey"]
    if not sent:
        return False
    return not any(e.type == "survey_reply" and e.at >= sent[-1] for e in ticket.events)


def read_reply(text: str, ref: str) -> dict[str, Any] | None:
    """``{"score": 1-5, "comment": ...}`` from a reply's first non-quoted line, else None."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip() and not ln.lstrip().startswith(">")]
    if not lines:
        return None
    # a Chinese keyboard's full-width digits (U+FF15) are the same score; the comment keeps its own text
    m = _SCORE.match(lines[0].translate(_WIDE_DIGITS))  # the answer's first line, then often the quote
    if not m or (m.group(1) and m.group(1).upper() != ref):
        return None
    comment = (m.group(3) or "").strip()[:1000]
    return {"score": int(m.group(2)), "comment": comment}


def followup_due(ticket: Ticket, after: timedelta | None) -> TicketEvent | None:
    """A ``followup_due`` event for the ticket's latest resolution, once per resolution (the list
    ``svcbridge followups`` reads); None when it is not resolved, has one already, or no call is owed."""
    if after is None or not ticket.state.is_closed:
        return None
    resolved = [e.at for e in ticket.events if e.type == "status_changed" and e.data.get("to") == "resolved"]
    if not resolved:
        return None
    at = resolved[-1].isoformat()
    if any(e.type == "followup_due" and e.data.get("resolved_at") == at for e in ticket.events):
        return None
    data = {"resolved_at": at, "due_at": (resolved[-1] + after).isoformat()}
    return TicketEvent(type="followup_due", actor="sla", data=data)


def reply_event(data: dict[str, Any], actor: str) -> TicketEvent:
    return TicketEvent(type="survey_reply", actor=actor, data=data)
