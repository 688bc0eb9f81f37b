"""A notice's bytes written directly, for the common case; the stdlib's ``EmailMessage`` for the rest.

Building an acknowledgement with ``EmailMessage`` and ``policy.default`` parses every header it is
given back into a structured object (twenty per notice: addresses, ids, the content types the parts
get twice) and cost 1.5-3 ms of the event loop's thread per notice, the largest single cost of a
notice (issue 19: 2,000 acknowledgements took longer than ingesting the 2,000 heavy mails that caused
them). Here the same message is written as bytes: headers whose values we made or checked, the
subject as RFC 2047 encoded words when it is not plain ASCII, the bodies in 7bit, quoted-printable or
base64 as the stdlib would choose.

Anything out of the ordinary goes to the stdlib path unchanged (``outbound.build_reply``): an address
that is not a plain ASCII ``local@domain``, control characters or ``=?`` in the subject (the stdlib
refuses CR/LF; look-alike encoded words are its business), a header line that could not be folded.
``tests/test_email_fastreply.py`` parses both versions of many generated notices with the stdlib and
compares every header and body.
"""

from __future__ import annotations

import base64
import re
import uuid
from email.header import Header
from email.quoprimime import body_encode as qp_encode

CRLF = b"\r\n"
MAX_LINE = 78  # RFC 5322's "should"; 998 is the "must"
# a plain addr-spec: dot-atom local part, a host name; nothing a header parser could read otherwise
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
PLAIN_ADDRESS = re.compile(rf"{ATOM}(?:\.{ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Unusual(ValueError):
    """The notice needs the stdlib's general path."""


def fold(name: str, value: str) -> bytes:
    """``Name: value`` as ASCII, folded before spaces so no line passes 78 characters where a space
    allows it (unfolding restores the value exactly); a line that cannot be kept under 998 is Unusual."""
    line, out = f"{name}: ", []
    for i, word in enumerate(value.split(" ")):
        piece = word if i == 0 else " " + word
        if len(line) + len(piece) > MAX_LINE and line.strip() and i:
            out.append(line)
            line = piece  # the space starts the continuation line: folding white space
        else:
            line += piece
    out.append(line)
    # a line of white space only is forbidden (RFC 5322 3.2.2): a parser may take it for the end of the
    # header block (then Auto-Submitted and X-Loop are body text); the stdlib encodes such spaces
    if any(len(x) > 998 or not x.strip() for x in out):
        raise Unusual(f"{name} cannot be folded")
    return "\r\n".join(out).encode("ascii") + CRLF


def subject_header(subject: str) -> bytes:
    if CONTROL.search(subject) or "=?" in subject:
        raise Unusual("subject")
    if subject.isascii():
        return fold("Subject", subject)
    # the ASCII words before the first other one stay as they are, as the stdlib writes them: the
    # "[SB-000123] " tag is then plain in the raw mail (filters, grep); the rest as RFC 2047 encoded
    # words (the shorter of B and Q per chunk), lines within 76 characters after the first
    first = next(i for i, ch in enumerate(subject) if not ch.isascii())
    cut = subject.rfind(" ", 0, first) + 1
    head, rest = (subject[:cut], subject[cut:]) if cut <= 60 else ("", subject)
    words = Header(rest, "utf-8", header_name="Subject").encode(linesep="\r\n")
    return b"Subject: " + head.encode("ascii") + words.encode("ascii") + CRLF


def body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line ends), chosen as ``set_content`` does:
    7bit or 8bit when no line is longer than 78, else the shorter of quoted-printable and base64
    judged on the first ten lines (base64 of LF-ended lines, as the stdlib encodes them)."""
    lines = text.encode("utf-8").splitlines()
    if max((len(x) for x in lines), default=0) <= MAX_LINE:
        # short lines: as they are (policy.default's cte_type is 8bit, as the stdlib path sent them)
        return "7bit" if all(x.isascii() for x in lines) else "8bit", CRLF.join(lines) + CRLF
    sniff = b"\n".join(lines[:10]) + b"\n"
    if len(qp_encode(sniff.decode("latin-1"), MAX_LINE)) > len(base64.b64encode(sniff)) + 1:
        return "base64", base64.encodebytes(b"\n".join(lines) + b"\n").replace(b"\n", CRLF)
    data = b"\n".join(lines) + b"\n"
    return "quoted-printable", qp_encode(data.decode("latin-1"), MAX_LINE, eol="\r\n").encode("ascii")


def _part(subtype: str, text: str) -> bytes:
    cte, data = body(text)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'.encode()
        + data
    )


def reply_bytes(headers: list[tuple[str, str]], subject: str, text: str, html: str | None) -> bytes:
    """The whole message: ``headers`` (name, ASCII value, in order; From and To plain addresses) with
    the subject after To, then MIME-Version and the text (and HTML alternative) parts."""
    out = []
    for name, value in headers:
        if name in ("From", "To") and not PLAIN_ADDRESS.match(value):
            raise Unusual(name)
        if not value.isascii() or CONTROL.search(value):
            raise Unusual(name)
        out.append(fold(name, value))
        if name == "To":
            out.append(subject_header(subject))
    if not html:
        return b"".join(out) + b"MIME-Version: 1.0\r\n" + _part("plain", text)
    plain, rich = _part("plain", text), _part("html", html)
    boundary = f"==sb_{uuid.uuid4().hex}=="
    while boundary.encode() in plain or boundary.encode() in rich:  # never in practice: random
        boundary = f"==sb_{uuid.uuid4().hex}=="
    # a delimiter is CRLF "--" boundary: the CRLF before it belongs to it, not to the part above
    return (
        b"".join(out)
        + f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
        + f"--{boundary}\r\n".encode()
        + plain
        + f"\r\n--{boundary}\r\n".encode()
        + rich
        + f"\r\n--{boundary}--\r\n".encode()
    )
