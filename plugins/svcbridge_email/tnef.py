"""winmail.dat (TNEF) from Outlook: unpack the attachments it hides, so none is lost.

When the TNEF stream cannot be read the winmail.dat itself is kept as an attachment; the raw mail is in
the journal either way.
"""

from __future__ import annotations

import mimetypes

import structlog
from tnefparse import TNEF

from svcbridge import Attachment

log = structlog.get_logger("svcbridge.tnef")


def is_tnef(content_type: str, filename: str | None) -> bool:
    return content_type in ("application/ms-tnef", "application/vnd.ms-tnef") or (
        (filename or "").lower() == "winmail.dat"
    )


def unpack(data: bytes) -> list[Attachment] | None:
    """The attachments inside a TNEF stream, or None when it cannot be read."""
    try:
        tnef = TNEF(data)
    except Exception as exc:  # a damaged stream must not cost the message
        log.warning("tnef_unreadable", error=f"{type(exc).__name__}: {exc}")
        return None
    out = []
    for att in tnef.attachments:
        name = att.long_filename() or att.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", errors="replace")
        name = (name or "attachment").rstrip("\x00")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        out.append(Attachment.from_bytes(bytes(att.data), original_name=name, content_type=ctype))
    return out
