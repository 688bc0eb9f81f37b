"""Batches of messages bounded by count and by bytes, for the sources that journal many at a time.

A batch is held in memory (and in one journal transaction) at once: a backlog of scans must make
smaller batches, not a larger process. Used by the IMAP source (UID -> RFC822.SIZE) and the Maildir
source (file -> size).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")


def batches(sizes: dict[K, int], count: int, max_bytes: int) -> list[list[K]]:
    """Consecutive keys, at most ``count`` and about ``max_bytes`` per batch (at least one each)."""
    out: list[list[K]] = []
    chunk: list[K] = []
    total = 0
    for key, size in sizes.items():
        if chunk and (len(chunk) >= count or total + size > max_bytes):
            out.append(chunk)
            chunk, total = [], 0
        chunk.append(key)
        total += size
    if chunk:
        out.append(chunk)
    return out
