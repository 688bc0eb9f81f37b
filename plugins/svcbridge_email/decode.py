"""Charset handling for real-world mail: labels that lie, labels that are missing, labels nobody knows.

- ``gb2312`` / ``gbk`` / ``x-gbk`` are decoded as GB18030 (a strict superset): Chinese mail clients
  label GBK text as gb2312 all the time, and characters outside GB2312 would otherwise be lost;
- ``big5`` is decoded as Big5-HKSCS (superset, Hong Kong characters);
- non-ASCII bytes that are valid UTF-8 are UTF-8, whatever the label says;
- ``unknown-8bit``, ``x-unknown``, a missing label on 8-bit data, or a label Python does not know are
  detected with charset-normalizer among a short candidate list;
- anything that still fails decodes with replacement characters, never an exception.
"""

from __future__ import annotations

import codecs
import re

from .charsets import best_encoding, iso2022jp_ext

ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "gb_2312-80": "gb18030",
    "euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "unicode-1-1-utf-7": "utf-7",
    "x-mac-roman": "mac-roman",
    "us-ascii": "ascii",
    # Shift_JIS mail is written by Windows: cp932 (NEC and IBM extensions), never read as GBK
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "windows-31j": "cp932",
}
UNKNOWN = {"", "unknown-8bit", "x-unknown", "unknown", "8bit", "default", "x-user-defined", "none"}
NOT_MAIL = {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"}


def normalize_charset(label: str | None) -> str | None:
    """The codec to use for a declared label, or None when the label says nothing useful."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if name in UNKNOWN:
        return None
    name = ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # unknown, or a NUL in the label (ValueError)
        return None
    # only text encodings a mail can be written in: "zlib", "base64" or "rot13" are codecs.lookup-able
    # but no text encoding (bytes.decode raises LookupError); "idna", "punycode" and "undefined" raise
    # a bare UnicodeError; "unicode_escape" would interpret the customer's backslashes
    if not getattr(info, "_is_text_encoding", True) or info.name in NOT_MAIL:
        return None
    return info.name


# Undeclared 8-bit mail is guessed among these only: an open guess over every code page picks Korean
# or Cyrillic for short Chinese texts; a desk's own mix is set with `fallback_charsets`.
DEFAULT_CANDIDATES = ("gb18030", "big5hkscs", "cp1252")


def detect(data: bytes, candidates: tuple[str, ...] = DEFAULT_CANDIDATES, wide: bool = True) -> str:
    """Best guess for undeclared bytes: UTF-8 when valid, else charset-normalizer (``charsets.py``):
    the candidates first, and with `wide` regional code pages and the whole registry too."""
    if _valid_utf8(data):
        return "utf-8"
    enc = best_encoding(data, candidates, wide) or "utf-8"
    return ALIASES.get(enc, enc)


def decode_bytes(data: bytes, label: str | None, candidates: tuple[str, ...] = DEFAULT_CANDIDATES) -> str:
    """Decode mail bytes under a possibly wrong charset label; never raises."""
    codec = normalize_charset(label)
    if codec is None and b"\x1b$" in data and data.isascii():
        codec = "iso2022_jp"  # 7-bit JIS escapes with no charset parameter (zammad/zammad#6144)
    if not data.isascii() and _valid_utf8(data):
        # Non-ASCII bytes that form valid UTF-8 are UTF-8 whatever the label says: GBK, Big5 or
        # Latin-1 text practically never does (zammad/zammad#6054: UTF-8 declared as gb2312).
        codec = "utf-8"
    elif codec is None or codec == "ascii":
        codec = detect(data, candidates)
    if codec.startswith("iso2022_jp") and not _decodes(data, codec):
        data, codec = iso2022jp_ext(data).encode("utf-8"), "utf-8"  # NEC / IBM extensions (cp50221)
    try:
        text = data.decode(codec)
    except (UnicodeError, LookupError):
        # The label lied (e.g. UTF-8 declared as gb2312): trust detection, then replacement.
        guess = detect(data, candidates)
        try:
            text = data.decode(guess)
        except (UnicodeError, LookupError):
            try:
                text = data.decode(codec if _known(codec) else "utf-8", errors="replace")
            except (UnicodeError, LookupError):  # a codec without "replace" support
                text = data.decode("utf-8", errors="replace")
    if _SURROGATE.search(text):
        # UTF-7 decodes "+2D0-" to a lone surrogate, which no store and no nh3 takes
        text = _SURROGATE.sub("\ufffd", text)
    return text.replace("\x00", "")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _decodes(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
        return True
    except (UnicodeError, LookupError):
        return False


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _known(codec: str) -> bool:
    try:
        codecs.lookup(codec)
        return True
    except LookupError:
        return False
