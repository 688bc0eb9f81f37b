"""Fewer malloc arenas: the daemon's memory stays near what it holds, not what its threads once held.

glibc gives every thread that allocates under contention an arena of its own (up to eight per core)
and rarely returns their freed pages. svcbridge runs many short-lived buffers through many threads
(IMAP fetches, blob writes, the spool's sixteen, the store's): on 3 MB scans its peak RSS grew from
413 MB for 50 mails to 528 MB for 200, and 2,000 heavy mails peaked at 342 MB. With two arenas the
same runs peak at 345 / 410 MB and 254 MB, at the same speed (issue 19, docs/performance.md). It is
the setting gunicorn's and many Python services' guides give (MALLOC_ARENA_MAX=2).

An operator's MALLOC_ARENA_MAX wins (glibc read it at start); elsewhere than glibc nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def limit_arenas(n: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; True when it took effect."""
    if os.environ.get("MALLOC_ARENA_MAX") or n <= 0:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, n))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to set
        return False
