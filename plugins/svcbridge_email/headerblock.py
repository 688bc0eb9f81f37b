"""Broken header blocks (issue 13 item 3).

Python's parser stops reading headers at the first line that is neither a field nor a continuation:
a junk first line (``>From``, a stray word), a field without its colon or a long Subject wrapped
without indentation left the ticket with no subject or sender and the rest of the header block as
its body. Like mature parsers, the block is repaired before parsing: a line without a colon inside
the header block continues a Subject before it (wrapped without indentation) and is skipped
elsewhere (an address or id must not take junk in); the body starts after the last field. Every
repair is reported and ends up in the draft's ``parse_warnings`` label. A block with nothing to
repair is left untouched.
"""

from __future__ import annotations

import re

FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")
BLANK = re.compile(rb"\r?\n\r?\n")
MAX_HEAD = 256 * 1024  # headers beyond this are not inspected
TEXT_FIELDS = {b"subject", b"thread-topic", b"comments", b"keywords"}  # free text a wrapped line continues


def repair(raw: bytes) -> tuple[bytes, list[str]]:
    """(the bytes to parse, the repairs made); `raw` itself when nothing is wrong."""
    m = BLANK.search(raw, 0, MAX_HEAD)
    head, rest = (raw[: m.start()], raw[m.start() :]) if m else (raw[:MAX_HEAD], raw[MAX_HEAD:])
    lines = head.splitlines(keepends=True)
    if lines and lines[0].startswith(b"From ") and not FIELD.match(lines[0]):
        lines = lines[1:]  # the mbox separator: Python reads it too, but it is no field
    fields = [i for i, line in enumerate(lines) if FIELD.match(line)]
    if not fields:
        return raw, []  # no header block at all: not ours to repair
    last = fields[-1]
    bad = [i for i in range(last) if not FIELD.match(lines[i]) and lines[i][:1] not in (b" ", b"\t")]
    tail = [line for line in lines[last + 1 :] if line[:1] not in (b" ", b"\t")]
    if not bad and not tail:
        return raw, []
    warnings: list[str] = []
    out: list[bytes] = []
    field = b""
    for i, line in enumerate(lines[: last + 1]):
        if i not in bad:
            out.append(line)
            if FIELD.match(line):
                field = line.split(b":", 1)[0].strip().lower()
        elif field in TEXT_FIELDS and line.strip():
            out.append(b" " + line.lstrip())  # wrapped without indentation: continues the field before
            warnings.append(f"header line without colon joined to the field before: {_shown(line)}")
        else:
            warnings.append(f"header line skipped: {_shown(line)}")
    body_start = lines[last + 1 :]
    cont = 0
    while cont < len(body_start) and body_start[cont][:1] in (b" ", b"\t"):
        cont += 1
    out += body_start[:cont]
    body = body_start[cont:]
    if body:
        warnings.append("no blank line between the header block and the body")
        nl = b"\r\n" if out[-1].endswith(b"\r\n") else b"\n"
        if not out[-1].endswith(b"\n"):
            out[-1] += nl
        return b"".join(out) + nl + b"".join(body) + rest, warnings
    return b"".join(out) + rest, warnings


def _shown(line: bytes) -> str:
    text = line.rstrip(b"\r\n")[:60].decode("ascii", "backslashreplace")
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
