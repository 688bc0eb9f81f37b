"""Where a journal entry's raw bytes go, and how they come back (blobs.py, split.py).

A raw message is split into its skeleton and its base64 parts (``split.py``). The parts (scans, PDFs,
photos: nearly all the bytes of after-sales mail) become blobs; the skeleton (headers, text, the
manifest) stays in the journal row when it is small, which it nearly always is, else it becomes a blob
too (``journal.blob_ref``). Small messages therefore cost no file and no fsync of their own: a corpus
of short mails is as fast as before. The journal row carries the message's size (batches are bounded
by it) and the part keys (``blob_parts``, what retention and gc look at without reading blobs).

A row written before migration 0012 has ``size`` NULL and the original bytes in ``raw``: read as is.
"""

from __future__ import annotations

from typing import Any

from . import split
from .blobs import BlobMissing, BlobStore, Chunks

INLINE_MAX = 32 * 1024  # a skeleton up to this size stays in the journal row


def stored_row(
    blobs: BlobStore | None, row: dict[str, Any], raw: bytes | None, key: str
) -> dict[str, Chunks]:
    """Turn ``row`` (a journal row with ``raw``) into its stored form; the blobs to put before the commit."""
    if blobs is None or raw is None:
        return {}
    chunks, parts = split.split(raw)
    items: dict[str, Chunks] = dict(parts)
    skeleton = sum(len(c) for c in chunks)
    row["size"] = len(raw)
    row["blob_parts"] = " ".join(parts) or None
    if skeleton <= INLINE_MAX:
        row["raw"] = b"".join(chunks)
        row["blob_ref"] = None
    else:
        row["raw"] = None
        row["blob_ref"] = key
        items[key] = list(chunks)
    return items


def load(blobs: BlobStore | None, r: Any) -> bytes | None:
    """The original raw bytes of a journal row (mapping); None when it holds none (purged, or a
    source that journaled only metadata). Raises ``BlobMissing`` when a blob it names is gone."""
    if r["size"] is None:  # before 0012, or written without a blob store
        return r["raw"]
    stored = r["raw"]
    if stored is None and r["blob_ref"]:
        if blobs is None:
            raise BlobMissing(f"raw message {r['blob_ref']} is in a blob store this process has none of")
        stored = blobs.get(r["blob_ref"])
        if stored is None:
            raise BlobMissing(f"raw message blob {r['blob_ref']} is missing from the blob store")
    if stored is None:
        return None
    if blobs is None and r["blob_parts"]:
        raise BlobMissing("raw message parts are in a blob store this process has none of")
    return split.join(bytes(stored), blobs.get if blobs is not None else _none)


def _none(_key: str) -> bytes | None:
    return None


def keys_of(r: Any) -> list[str]:
    """Every blob a journal row references."""
    out = [r["blob_ref"]] if r["blob_ref"] else []
    return out + (r["blob_parts"] or "").split()
