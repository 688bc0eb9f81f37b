"""A raw mail as a skeleton plus its decoded base64 parts, rebuilt byte for byte.

After-sales mail is mostly base64: scans, photos, PDFs, zipped logs. Keeping the raw mail AND the
attachments a parser decodes from it would store every file twice (the issue measured 1.73x the mail
volume). ``split`` cuts out each base64 body that re-encodes exactly (same line length, same line
ending) and returns the decoded bytes by sha256, so the parser's attachment (same bytes, same sha256)
and the raw mail share one blob, and the same scan in two mails is one blob. What does not re-encode
exactly (odd line lengths, junk after the padding, a body that is not base64 at all) simply stays in the
skeleton: correctness never depends on recognising MIME, because the cut is proven on the spot
(``join`` of the result must equal the input, or nothing is cut).

The stored form: ``SBB1 <json manifest>\\n<skeleton>``; the manifest lists ``[offset, sha256, line
length, eol]`` for each cut, in order, offsets into the skeleton.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable

MAGIC = b"SBB1 "
MIN_PART = 2048  # encoded bytes: smaller parts are not worth a file of their own
_HDR = b"content-transfer-encoding:"


def _encode(data: bytes, line: int, eol: bytes) -> bytes:
    """``data`` in base64 lines of ``line`` characters, each ended by ``eol`` (the last one too).

    b2a_base64 on slices of a memoryview: about twice as fast as ``base64.encodebytes``, which loops in
    Python 57 bytes at a time (this runs for every cut part whenever a raw mail is read back)."""
    step = line // 4 * 3
    view = memoryview(data)
    out = b"".join([binascii.b2a_base64(view[i : i + step]) for i in range(0, len(data), step)])
    return out if eol == b"\n" else out.replace(b"\n", eol)


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HEADER_WINDOW = 16384  # a part's header block ends within this many bytes of its encoding header


def _same(body: bytes, data: bytes, line: int, eol: bytes) -> bool:
    """``body`` is exactly ``_encode(data, line, eol)``, proven without encoding ``data`` again:
    the line breaks sit where full lines end, every other byte is in the alphabet, the count of
    characters is that of ``data``'s encoding, padding only at the very end, and the last quantum
    re-encodes the same (its unused bits zero). Then decoding and encoding are inverse."""
    n = -(-len(data) // 3) * 4
    lines = -(-n // line)
    step = line + len(eol)
    if len(body) != n + lines * len(eol) or body[-len(eol) :] != eol:
        return False
    full = n // line
    for i, ch in enumerate(eol):  # a line break wherever a full line ends (the last may be shorter)
        if body[line + i :: step] != bytes([ch]) * full:
            return False
    if body.translate(None, _ALPHABET + b"=" + eol):  # anything else: not canonical base64
        return False
    pad = body.find(b"=")
    if pad >= 0 and pad < len(body) - len(eol) - 2:
        return False
    tail = len(data) % 3 or 3
    last = base64.b64encode(data[-tail:]) if data else b""
    return body[len(body) - len(eol) - len(last) : len(body) - len(eol)] == last


def _cuts(raw: bytes) -> list[tuple[int, int, int, bytes, bytes]]:
    """(start, end, line length, eol, decoded) of each base64 body that re-encodes exactly."""
    low = raw.lower()  # one lower-cased copy to search the headers in (bytes.lower is C-fast)
    out: list[tuple[int, int, int, bytes, bytes]] = []
    pos = 0
    while True:
        h = low.find(_HDR, pos)
        if h < 0:
            return out
        pos = h + len(_HDR)
        value_end = low.find(b"\n", pos)
        if value_end < 0 or low[pos:value_end].strip() != b"base64":
            continue
        # the body starts after the first empty line below this header (searched in a window: a
        # CRLF mail has no "\n\n" at all, and a search to its end per part was most of the time)
        window = value_end + HEADER_WINDOW
        a, b = low.find(b"\n\n", value_end - 1, window), low.find(b"\n\r\n", value_end - 1, window)
        if a < 0 and b < 0:
            continue
        start = a + 2 if b < 0 or (0 <= a < b) else b + 3
        nl = raw.find(b"\n", start)
        if nl < 0:
            return out
        eol = b"\r\n" if nl > start and raw[nl - 1] == 13 else b"\n"
        line = nl + 1 - len(eol) - start
        if line <= 0 or line % 4:
            continue
        # the body ends before a boundary ("--") or an empty line, whichever comes first
        boundary = raw.find(eol + b"--", start)
        limit = boundary if boundary >= 0 else len(raw)
        blank = raw.find(eol + eol, start, limit + len(eol))
        ends = [i for i in (blank, boundary) if i >= 0]
        end = (min(ends) if ends else len(raw) - len(eol)) + len(eol)
        if end - start < MIN_PART or raw[end - len(eol) : end] != eol:
            continue
        body = raw[start:end]
        try:
            data = binascii.a2b_base64(body, strict_mode=False)
        except binascii.Error:
            continue
        if not _same(body, data, line, eol):
            continue
        out.append((start, end, line, eol, data))
        pos = end


def split(raw: bytes) -> tuple[list[bytes | memoryview], dict[str, bytes]]:
    """The stored form of ``raw`` (chunks to write, no copy of the skeleton) and its parts by sha256."""
    view = memoryview(raw)
    chunks: list[bytes | memoryview] = []
    parts: dict[str, bytes] = {}
    manifest: list[list[object]] = []
    at = skel = 0
    for start, end, line, eol, data in _cuts(raw):
        sha = hashlib.sha256(data).hexdigest()
        chunks.append(view[at:start])
        skel += start - at
        manifest.append([skel, sha, line, 1 if eol == b"\r\n" else 0])
        parts[sha] = data
        at = end
    chunks.append(view[at:])
    head = MAGIC + json.dumps(manifest, separators=(",", ":")).encode() + b"\n"
    return [head, *chunks], parts


def join(stored: bytes, part: Callable[[str], bytes | None]) -> bytes:
    """The original raw message from its stored form; ``part(sha)`` gives a cut part's bytes."""
    if not stored.startswith(MAGIC):
        return stored  # stored whole
    nl = stored.index(b"\n")
    manifest = json.loads(stored[len(MAGIC) : nl])
    skeleton = memoryview(stored)[nl + 1 :]
    out: list[bytes | memoryview] = []
    at = 0
    for offset, sha, line, crlf in manifest:
        data = part(sha)
        if data is None:
            from .blobs import BlobMissing

            raise BlobMissing(f"part {sha} of a raw message is missing from the blob store")
        out += [skeleton[at:offset], _encode(data, line, b"\r\n" if crlf else b"\n")]
        at = offset
    out.append(skeleton[at:])
    return b"".join(out)


def part_keys(stored_head: bytes) -> list[str]:
    """The part blobs a stored raw message references (from its first line)."""
    if not stored_head.startswith(MAGIC):
        return []
    return [m[1] for m in json.loads(stored_head[len(MAGIC) : stored_head.index(b"\n")])]
