"""Header text from raw 8-bit header bytes (issue 13 item 1).

Chinese and Japanese clients and old gateways send a Subject, a display name or a file name as raw
8-bit bytes, without RFC 2047. compat32 keeps them as surrogate-escaped text and hands them out as a
``Header`` whose ``str()`` is U+FFFD, so header values are read raw (``Message.raw_items``) and their
bytes decoded like a body: valid UTF-8, else the part's or the message's declared charset when the
bytes are valid in it, else detection over all the message's 8-bit header bytes among GB18030, Big5,
Shift_JIS (cp932), UTF-8 and Latin-1 (plus the desk's `fallback_charsets`).
"""

from __future__ import annotations

import re
from email.header import decode_header
from email.message import Message

from .decode import DEFAULT_CANDIDATES, decode_bytes, detect, normalize_charset

HEADER_CANDIDATES = ("gb18030", "big5hkscs", "cp932", "utf_8", "latin_1")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# C0 and C1 controls and the Unicode line separators (str.splitlines breaks at U+0085, U+2028 and U+2029:
# the stdlib refuses such a subject in the acknowledgement's header), lone surrogates
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")


def raw_all(msg: Message, name: str) -> list[str]:
    """Every value of header `name` as compat32 read it (8-bit bytes surrogate-escaped), never a Header."""
    key = name.lower()
    return [v if isinstance(v, str) else str(v) for k, v in msg.raw_items() if k.lower() == key]


def raw_first(msg: Message, name: str) -> str | None:
    values = raw_all(msg, name)
    return values[0] if values else None


def _escaped(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _valid(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
        return True
    except (UnicodeError, LookupError):
        return False


class HeaderDecoder:
    """Decodes one message's header values; the detection over its 8-bit header bytes runs once."""

    def __init__(self, msg: Message, candidates: tuple[str, ...] = DEFAULT_CANDIDATES) -> None:
        self.msg = msg
        self.candidates = tuple(dict.fromkeys(HEADER_CANDIDATES + tuple(candidates)))
        self.declared = next((c for c in msg.get_charsets() if c), None)
        self._guess: str | None = None

    def _guessed(self) -> str:
        if self._guess is None:
            pool = b"\n".join(
                v.encode("ascii", "surrogateescape")
                for part in self.msg.walk()
                for _k, v in part.raw_items()
                if isinstance(v, str) and _escaped(v)
            )
            self._guess = detect(pool, self.candidates, wide=False) if pool else "utf-8"
        return self._guess

    def raw_bytes(self, data: bytes, charset: str | None = None) -> str:
        """Raw 8-bit header bytes to text: UTF-8, the declared charset, then detection."""
        if data.isascii() or _valid(data, "utf-8"):
            return data.decode("utf-8", "replace")
        for label in (charset, self.declared):
            codec = normalize_charset(label)
            if codec and codec != "ascii" and _valid(data, codec):
                return decode_bytes(data, codec, self.candidates)
        for codec in (self._guessed(), detect(data, self.candidates, wide=False), *self.candidates):
            if _valid(data, codec):  # Latin-1 takes any bytes: never a replacement character
                return decode_bytes(data, codec, self.candidates)
        return decode_bytes(data, None, self.candidates)

    def unescape(self, value: str, charset: str | None = None) -> str:
        """A surrogate-escaped raw value with its 8-bit bytes decoded (RFC 2047 words left as they are)."""
        if not _escaped(value):
            return value
        return self.raw_bytes(value.encode("ascii", "surrogateescape"), charset)

    def text(self, value: str | None, charset: str | None = None) -> str:
        """One clean line of text from a raw header value: raw 8-bit bytes and RFC 2047 words decoded."""
        if not value:
            return ""
        value = _FOLD.sub("", self.unescape(value, charset))  # unfolding (RFC 5322 2.2.3)
        out: list[str] = []
        try:
            parts = decode_header(value)
        except Exception:
            parts = [(value, None)]
        for chunk, cs in parts:
            if isinstance(chunk, str):
                out.append(chunk)
            elif cs is None:
                # decode_header hands unencoded text back as raw-unicode-escape bytes
                out.append(chunk.decode("raw-unicode-escape" if not value.isascii() else "ascii", "replace"))
            else:
                out.append(decode_bytes(chunk, cs, self.candidates))
        # no CR/LF or control characters survive into a subject or name (header injection on replies),
        # and no lone surrogate (no store takes one)
        return _UNSAFE.sub(" ", "".join(out)).strip()
