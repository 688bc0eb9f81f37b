"""Attached and forwarded messages, delivery reports, uuencoded blocks (issue 13 item 2).

``Message.walk()`` descends into a ``message/rfc822`` part (a forwarded mail, an Outlook "attach as
item") and into ``message/delivery-status`` (compat32 reads its field groups as sub-messages), so their
text was merged into the body and nothing was kept. ``leaves`` stops at every ``message/*`` part; each
is kept whole as an attachment: ``<enclosed subject>.eml``, or a ``.txt`` for delivery reports and
``text/rfc822-headers``. uuencoded blocks (``begin 644 name`` ... ``end``) in a text body become
attachments too, and leave the body.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import mimetypes
import re
from collections.abc import Iterator
from email.message import Message

from svcbridge import Attachment

from .headers import HeaderDecoder, raw_first
from .msgid import msgids

MAX_NAME = 120
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')


def leaves(msg: Message) -> Iterator[Message]:
    """The parts to read, in order: leaves of the MIME tree, and every message/* part unopened."""
    if msg.get_content_maintype() == "message" or not msg.is_multipart():
        yield msg
        return
    for sub in msg.get_payload():
        if isinstance(sub, Message):
            yield from leaves(sub)


def _name(subject: str, ext: str, fallback: str | None) -> str:
    subject = _UNSAFE_NAME.sub(" ", subject).strip(" .")[:MAX_NAME].strip()
    return f"{subject}{ext}" if subject else (fallback or f"message{ext}")


def _bytes(msg: Message) -> bytes:
    """A parsed message's bytes; the stdlib's generator refuses a non-ASCII character it did not read as
    8-bit (UnicodeEncodeError, fuzzing found U+FFFD in a multipart with an empty boundary)."""
    try:
        return msg.as_bytes()
    except UnicodeError:
        return msg.as_string().encode("utf-8", "surrogateescape")


def message_part(
    part: Message, fname: str | None, candidates: tuple[str, ...]
) -> tuple[Attachment, list[str]]:
    """A message/* part as one attachment (the enclosed mail's bytes) and the enclosed Message-IDs."""
    ctype = part.get_content_type()
    payload = part.get_payload()
    inner: Message | None = None
    if ctype == "message/delivery-status" and isinstance(payload, list):
        data = b"\n".join(_bytes(block) for block in payload if isinstance(block, Message))
        name = fname or "delivery-status.txt"
        return Attachment.from_bytes(data, original_name=name, content_type=ctype), []
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        inner = payload[0]
        data = _bytes(inner)
    else:  # a base64 or quoted-printable message/rfc822 (not allowed, but written)
        try:
            decoded = part.get_payload(decode=True)
            data = decoded if isinstance(decoded, bytes) else b""
        except Exception:
            data = b""
        inner = email.message_from_bytes(data, policy=email.policy.compat32) if data else None
    ids: list[str] = []
    subject = ""
    if inner is not None:
        ids = msgids(inner.get("Message-ID"))
        subject = HeaderDecoder(inner, candidates).text(raw_first(inner, "Subject"))
    ext = ".eml" if ctype in ("message/rfc822", "message/global") else ".txt"
    return Attachment.from_bytes(data, original_name=_name(subject, ext, fname), content_type=ctype), ids


def headers_part(data: bytes, fname: str | None, candidates: tuple[str, ...]) -> tuple[Attachment, list[str]]:
    """A text/rfc822-headers part (the header block a report quotes) as a .txt attachment."""
    inner = email.message_from_bytes(data, policy=email.policy.compat32)
    subject = HeaderDecoder(inner, candidates).text(raw_first(inner, "Subject"))
    name = _name(subject, ".txt", fname or "headers.txt")
    return (
        Attachment.from_bytes(data, original_name=name, content_type="text/rfc822-headers"),
        msgids(inner.get("Message-ID")),
    )


_UU = re.compile(r"^begin [0-7]{3,4} ([^\r\n]+)\r?\n(.*?)^end[ \t]*\r?$\n?", re.M | re.S)


def uudecode(text: str) -> tuple[str, list[Attachment]]:
    """Cut the uuencoded blocks out of a text body; each becomes an attachment."""
    if "begin " not in text:
        return text, []
    atts: list[Attachment] = []

    def cut(m: re.Match[str]) -> str:
        out = bytearray()
        for line in m.group(2).splitlines():
            if not line or line in ("`", " "):
                continue
            try:
                out += binascii.a2b_uu(line)
            except ValueError:  # binascii.Error, or a non-ASCII line (a str a2b_uu refuses)
                try:  # encoders that miscount the padding
                    nbytes = (((ord(line[0]) - 32) & 63) * 4 + 5) // 3
                    out += binascii.a2b_uu(line[:nbytes])
                except (ValueError, IndexError):
                    return m.group(0)  # not uuencode after all: the text stays
        name = m.group(1).strip() or None
        ctype = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
        atts.append(Attachment.from_bytes(bytes(out), original_name=name, content_type=ctype))
        return ""

    return _UU.sub(cut, text), atts
