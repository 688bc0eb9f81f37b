"""Message ids read strictly: ``Message-ID``, ``In-Reply-To``, ``References``, and ids stored as links.

An id is a ``<...>`` token whose inside is 1 to 248 printable ASCII characters with no white space,
no ``<`` / ``>`` and no control character (so with its brackets at most ``MAX_LEN`` = 250). Everything
else is dropped: a token with a space, CR/LF or NUL inside, an id without brackets, an overlong one.
A folded ``Message-ID`` carrying a header (``Message-ID: x@y`` + CRLF + `` Bcc: a@b``) thus never
becomes a link, and a reply header built from stored links never carries a line break (the stdlib
refuses one, and the notice would be dead-lettered).

Comments ``(...)`` (nested, with quoted pairs) are skipped, as are the phrases of the obsolete
``In-Reply-To`` syntax. The scan is linear and reads at most ``MAX_HEADER`` characters of a header (its
two ends), and at most ``MAX_IDS`` ids are kept per header (the first and the most recent ones of a long
``References``), so a header of 300,000 ids costs milliseconds.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

MAX_LEN = 250  # "<" + id + ">"
MAX_IDS = 50  # per header: a References chain is trimmed to its first and its latest ids
MAX_HEADER = 64 * 1024  # characters read of one header value (its first and last halves)
_INSIDE = re.compile(rf"[!-;=?-~]{{1,{MAX_LEN - 2}}}")  # printable ASCII but space, "<" and ">"
_SHOWN = 100  # characters of a dropped piece kept in the ``bad_message_ids`` label
_KEEP, _PIECE = 10, 300  # refused pieces kept per header, and characters kept of each (and of the rest)
_PLAIN = re.compile(r"[^<>(]*")
_COMMENT = re.compile(r"\\.|[()]", re.S)  # a quoted pair (skipped whole) or a parenthesis


class MsgIds(NamedTuple):
    ids: list[str]  # the valid ids, "<...>", in order, without repeats, at most MAX_IDS
    bad: list[str]  # "<...>" tokens refused (space, CR/LF, control characters, too long, empty)
    rest: str  # text outside tokens and comments (obsolete phrases, an id without brackets, junk)


def valid(value: object) -> bool:
    """Whether `value` is exactly one well-formed ``<id>`` (what outbound may put in a header)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_LEN
        and value.startswith("<")
        and value.endswith(">")
        and _INSIDE.fullmatch(value, 1, len(value) - 1) is not None
    )


def split(value: object) -> MsgIds:
    """Read a header value (``str``, compat32 ``Header`` or None) into ids, refused tokens and the rest.

    Memory stays bounded whatever the input: at most ``MAX_IDS`` ids, ``_KEEP`` refused tokens of at
    most ``_PIECE`` characters each, and ``_PIECE`` characters of the rest are kept.
    """
    if value is None:
        return MsgIds([], [], "")
    text = value if isinstance(value, str) else str(value)
    bad: list[str] = []
    if len(text) > MAX_HEADER:
        # only its two ends count (the first and the latest ids); the time stays bounded
        bad.append(f"(a header of {len(text)} characters: only its first and last {MAX_HEADER // 2} read)")
        text = text[: MAX_HEADER // 2] + " " + text[-(MAX_HEADER // 2) :]
    first = ""
    recent: deque[str] = deque(maxlen=MAX_IDS - 1)
    rest: list[str] = []
    kept = 0  # characters in rest
    i, n = 0, len(text)
    close = -2  # the next ">" at or after i, found once per ">" (a run of "<" stays linear)
    while i < n:
        ch = text[i]
        if ch == "<":
            if close != -1 and close <= i:
                close = text.find(">", i + 1)
            reopen = text.find("<", i + 1, close if close >= 0 else n)
            if close < 0 or 0 <= reopen < close:
                # "<" without its ">": refused up to the next "<" (or the end)
                end = reopen if reopen >= 0 else n
                if len(bad) < _KEEP:
                    bad.append(text[i : min(end, i + _PIECE)])
                i = end
                continue
            token = text[i : close + 1] if close + 1 - i <= MAX_LEN else ""
            if token and valid(token):
                if token != first and token not in recent:
                    if first:
                        recent.append(token)
                    else:
                        first = token
            elif len(bad) < _KEEP:
                bad.append(token or text[i : i + _PIECE])
            i = close + 1
        elif ch == "(":
            i = _skip_comment(text, i)
            rest.append(" ")
        elif ch == ">":
            if len(bad) < _KEEP:
                bad.append(">")
            i += 1
        else:
            plain = _PLAIN.match(text, i)
            j = plain.end() if plain else n
            if kept < _PIECE:
                rest.append(text[i : min(j, i + _PIECE)])
                kept += j - i
            i = j
    ids = [first, *recent] if first else []
    return MsgIds(ids, bad, " ".join("".join(rest).replace(",", " ").split()))


def _skip_comment(text: str, i: int) -> int:
    """The index after the comment that starts at ``text[i] == "("`` (nested; to the end if unclosed)."""
    depth = 0
    for m in _COMMENT.finditer(text, i):
        ch = m.group()
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return m.end()
    return len(text)


def msgids(value: object) -> list[str]:
    """The valid ids of a header value (what a caller that does not report drops needs)."""
    return split(value).ids


def only_valid(values: Iterable[object]) -> list[str]:
    """The well-formed ids among stored values (links kept before ids were read strictly)."""
    return [v for v in values if isinstance(v, str) and valid(v)]


def shown(piece: str) -> str:
    """A dropped piece as plain ASCII for a label: control characters and non-ASCII escaped, cut short."""
    out = piece.encode("unicode_escape", "backslashreplace").decode("ascii")
    return out if len(out) <= _SHOWN else out[: _SHOWN - 3] + "..."
