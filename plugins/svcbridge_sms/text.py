"""SMS text rules shared by every provider: segments, control characters, opt-out keywords.

Segments (3GPP TS 23.038): a text of GSM 03.38 default-alphabet characters is GSM-7, 160 characters
in one SMS, 153 per part of a concatenated one (the 6-byte UDH takes 7 septets); an extension-table
character (``^{}[]~|\\€`` and form feed) takes two septets and never straddles two parts. Anything
else (Chinese, emoji) makes the whole message UCS-2: 70 characters alone, 67 per part, counted in
UTF-16 code units (an emoji outside the BMP is two) and a surrogate pair is never split.

Opt-out: the customer's whole message is a stop word (``STOP``, ``UNSUBSCRIBE``, ``退订``, ``TD``,
``取消订阅``, ...), case and surrounding punctuation ignored; ``START`` / ``UNSTOP`` / ``订阅`` opt back
in. A sentence that merely contains the word ("don't stop the service") is not an opt-out; the clear
words with a code or courtesy around them are ("TD退订", "退订，谢谢", "我要退订", "STOP ALL").
"""

from __future__ import annotations

import re
import unicodedata

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = "\f^{}\\[~]|€"
_BASIC, _EXT = set(GSM7_BASIC) - {"\x1b"}, set(GSM7_EXT)

STOP_WORDS = {
    "stop",
    "stopall",
    "unsubscribe",
    "cancel",
    "end",
    "quit",
    "optout",
    "opt-out",
    "opt out",
    "退订",
    "td",
    "t",
    "取消订阅",
    "取消",
    "退訂",
    "取消訂閱",
    "停止",
}
START_WORDS = {"start", "unstop", "subscribe", "订阅", "訂閱", "恢复", "恢復"}
_EDGE = re.compile(r"^[\s\W_]+|[\s\W_]+$", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def is_gsm7(text: str) -> bool:
    return all(ch in _BASIC or ch in _EXT for ch in text)


def segments(text: str) -> tuple[str, int]:
    """(encoding, number of SMS parts) for ``text``: ("gsm7"|"ucs2", n); an empty text is one part."""
    if is_gsm7(text):
        units = [2 if ch in _EXT else 1 for ch in text]
        single, part = 160, 153
    else:
        units = [2 if ord(ch) > 0xFFFF else 1 for ch in text]  # UTF-16 code units
        single, part = 70, 67
    total = sum(units)
    if total <= single:
        return ("gsm7" if single == 160 else "ucs2"), 1
    n, used = 1, 0
    for u in units:  # a two-unit character (escape + char, surrogate pair) never straddles two parts
        if used + u > part:
            n, used = n + 1, 0
        used += u
    return ("gsm7" if single == 160 else "ucs2"), n


def fit(text: str, max_parts: int) -> str:
    """``text`` cut (with an ellipsis) so that it takes at most ``max_parts`` SMS."""
    if segments(text)[1] <= max_parts:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if segments(text[:mid].rstrip() + "…")[1] <= max_parts:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…"


def clean(text: str) -> str:
    """Customer text as stored: NUL, C0/C1 controls (but newline and tab), bidi overrides and
    zero-width characters gone, lone surrogates replaced; CR LF made LF."""
    text = _SURROGATE.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("", text)


# words that say nothing but "opt out" (cancel / end / 取消 / 停止 alone may be about a repair visit):
# these also count with a code or courtesy around them, as customers reply ("TD退订", "退订，谢谢")
CLEAR_STOP = {"stop", "stopall", "unsubscribe", "退订", "退訂", "td", "t", "取消订阅", "取消訂閱"}
COURTESY = {"谢谢", "謝謝", "谢谢你", "謝謝你", "thanks", "thank", "you", "please", "pls", "all"}
_AFFIX = re.compile(r"^(?:我要|请|請|麻烦|麻煩)|(?:谢谢|謝謝|吧|了)$")


def keyword(text: str) -> str | None:
    """ "stop" / "start" when the whole message is an opt-out / opt-in word, else None."""
    word = unicodedata.normalize("NFKC", _EDGE.sub("", text)).strip().lower()
    word = re.sub(r"\s+", " ", word)
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    # latin words and CJK runs apart ("td退订" -> td, 退订), courtesy dropped; only clear words may remain
    tokens = [_AFFIX.sub("", t) for t in re.findall(r"[a-z]+|\d+|[^\W\d_a-z]+", word)]
    core = [t for t in tokens if t and t not in COURTESY]
    if core and all(t in CLEAR_STOP for t in core):
        return "stop"
    return None
