"""Files made durable in groups: one round of fsyncs for the notices spooled together.

Every spooled notice used to pay its own file fsync and directory fsync before its outcome was recorded
(1.5 ms on a quiet disk, several under load: the spool was the slowest part of acknowledging 2,000
heavy mails). A sender that asks while another is syncing waits; the next one to sync takes every file
queued meanwhile: the first fsync commits the file system's journal with all their data and names,
the others find little left to write, and the directory is fsynced once for the group. ``durable``
returns only once the caller's own file is on disk; a failed round puts its files back for the next.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupSync:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[Path, Path]] = []
        self._seq = 0  # files queued so far
        self._done = 0  # every file up to this number is on disk
        self._busy = False

    def durable(self, path: Path, directory: Path) -> None:
        """Return once ``path`` (just renamed into ``directory``) and its name are on disk."""
        with self._cond:
            self._seq += 1
            mine = self._seq
            self._queue.append((path, directory))
            while self._done < mine:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch, self._queue, upto = self._queue, [], self._seq
                self._cond.release()
                ok = False
                try:
                    for p in dict.fromkeys(p for p, _ in batch):
                        # a pickup that took the file already has read it: its copy is its business
                        with contextlib.suppress(FileNotFoundError):
                            fsync_path(p)
                    for d in dict.fromkeys(d for _, d in batch):
                        fsync_path(d, directory=True)
                    ok = True
                finally:
                    self._cond.acquire()
                    self._busy = False
                    if ok:
                        self._done = max(self._done, upto)
                    else:
                        self._queue[:0] = batch  # the next caller tries them again
                    self._cond.notify_all()
