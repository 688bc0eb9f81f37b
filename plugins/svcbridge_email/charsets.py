"""More charsets (issue 13 item 5): wide detection, ISO-2022-JP with NEC / IBM extensions.

Detection: charset-normalizer scores the desk's candidates, a set of regional code pages (Japanese,
Cyrillic, Central European, Greek, Turkish, Baltic) and whatever it finds over its whole registry; the
least chaotic decodings win, then the desk's candidates before the regional ones before the rest of
the registry (each tier pays a chaos penalty), then the most coherent (language) one, so a short
Chinese text still reads as GB18030 rather than Korean, and KOI8-R or cp1251 mail without a label is
Russian. ISO-2022-JP that the strict codec refuses (NEC row 13 circled numbers, IBM extensions, JIS X
0201 kana: what Outlook and cp50221 write) is decoded by converting its JIS rows to Shift_JIS and
reading them as cp932.
"""

from __future__ import annotations

import re

import charset_normalizer

REGIONAL = ("cp932", "euc_jp", "koi8_r", "koi8_u", "cp1251", "iso8859_5", "cp1250", "iso8859_2", "cp1253",
            "cp1254", "cp1257")
NEAR = 0.02  # chaos differences below this are noise on short texts
PENALTY = (0.0, 0.02, 0.1)  # the desk's candidates, the regional code pages, the rest of the registry


def best_encoding(data: bytes, candidates: tuple[str, ...], wide: bool = True) -> str | None:
    """The likeliest encoding of `data` (not valid UTF-8); None when nothing decodes it."""
    order = list(dict.fromkeys((*candidates, *REGIONAL) if wide else candidates))
    results = list(charset_normalizer.from_bytes(data, cp_isolation=order))
    if wide:
        seen = {r.encoding for r in results}
        results += [
            r for r in charset_normalizer.from_bytes(data)
            if r.encoding not in seen and not r.encoding.startswith(("utf_16", "utf_32"))
        ]
    if not results:
        return None

    def tier(r: charset_normalizer.CharsetMatch) -> int:
        return 0 if r.encoding in candidates else 1 if r.encoding in REGIONAL else 2

    least = min(r.chaos + PENALTY[tier(r)] for r in results)
    near = [r for r in results if r.chaos + PENALTY[tier(r)] <= least + NEAR]

    def rank(r: charset_normalizer.CharsetMatch) -> tuple[int, float, int]:
        pos = order.index(r.encoding) if r.encoding in order else len(order)
        return (tier(r), -round(r.coherence, 2), pos)

    return min(near, key=rank).encoding


_JIS_ESC = re.compile(rb"\x1b(\$@|\$B|\$\(Q|\$\(O|\(B|\(J|\(I|\$\(D)")
_KANJI = {b"$@", b"$B", b"$(Q", b"$(O"}


def iso2022jp_ext(data: bytes) -> str:
    """ISO-2022-JP as written by cp50221-style encoders (NEC and IBM extensions, half-width kana)."""
    out = bytearray()
    mode = b"(B"
    pos = 0
    for m in _JIS_ESC.finditer(data):
        out += _shift(data[pos : m.start()], mode)
        mode, pos = m.group(1), m.end()
    out += _shift(data[pos:], mode)
    return out.decode("cp932", errors="replace")


def _shift(chunk: bytes, mode: bytes) -> bytes:
    if mode == b"(I":
        return bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in chunk)
    if mode not in _KANJI:
        return chunk
    out = bytearray()
    i = 0
    while i < len(chunk):
        j1 = chunk[i]
        j2 = chunk[i + 1] if i + 1 < len(chunk) else 0
        if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
            out.append(j1)  # CR/LF inside a kanji run, or a broken byte
            i += 1
            continue
        s1 = ((j1 - 0x21) >> 1) + 0x81
        if s1 > 0x9F:
            s1 += 0x40
        s2 = j2 + 0x1F + (1 if j2 >= 0x60 else 0) if j1 % 2 else j2 + 0x7E
        out += bytes((s1, s2))
        i += 2
    return bytes(out)
