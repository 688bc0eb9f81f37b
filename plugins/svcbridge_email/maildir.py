"""Maildir source (the embedded default): drop a ``.eml`` into ``new/`` and it becomes a ticket.

A file is journaled first and only then acknowledged: moved to ``cur/`` (``after = "move"``) or deleted
(``after = "delete"``). The external id is the Maildir unique name (the file name up to ``:``), so a
crash between journaling and the move re-submits the same id, which the journal recognises.

Only complete files are taken (the Maildir convention is that writers write in ``tmp/`` and rename into
``new/``; a writer that writes straight into ``new/`` is tolerated): a file modified less than ``settle``
seconds ago is left for a later pass, and so is one whose size or mtime changed while it was read.
An entry that cannot be read (no permission, a directory, a dangling symlink) is journaled empty with a
``fetch_error`` (the parser quarantines it with that reason) and moved to ``cur/``; it never stalls the
files after it. A file gone since the listing is simply skipped.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import structlog

from svcbridge import IntakeContext, RawMessage

from .batches import batches

log = structlog.get_logger("svcbridge.maildir")


class MaildirSource:
    channel = "email"

    batch = 100  # files journaled per transaction (one fsync for the lot)
    batch_bytes = 25 * 1024 * 1024  # ... and no more bytes than this (a file larger alone is a batch)

    def __init__(
        self,
        name: str,
        path: Path,
        after: str = "move",
        interval: float = 0.25,
        max_size: int = 50 * 1024 * 1024,
        settle: float = 1.0,
    ) -> None:
        self.name, self.path, self.after, self.interval, self.max_size = name, path, after, interval, max_size
        self.settle = settle  # seconds a file in new/ must be unchanged before it is taken
        self._stuck: set[str] = set()  # unreadable entries journaled but not movable out of new/
        for sub in ("new", "cur", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    async def poll(self, ctx: IntakeContext) -> int:
        entries = sorted(
            (e for e in os.scandir(self.path / "new") if self._ready(e)),
            key=lambda e: e.name,
        )
        chunks, size = self._chunks(entries)
        ctx.expect(len(entries), size)
        count = 0
        for chunk in chunks:
            if ctx.stopping.is_set():
                break
            taken, raws = [], []
            for entry in chunk:
                raw = self._read(entry)
                if raw is not None:
                    taken.append(entry)
                    raws.append(raw)
            if not raws:
                continue
            await ctx.submit_many(raws)  # raises StoreUnavailable: the files stay in new/
            await ctx.confirm_lease()  # LeaseLost (paused past the lease): another replica moves them
            for entry, raw in zip(taken, raws, strict=True):
                self._ack(Path(entry.path), raw.external_id)
            count += len(raws)
        return count

    def _ready(self, entry: os.DirEntry[str]) -> bool:
        """Listed for this pass: not hidden, not known stuck, and (a regular file) settled."""
        if entry.name.startswith(".") or entry.name in self._stuck:
            return False
        try:
            st = entry.stat()  # follows a symlink: a dangling one raises and is taken (quarantined)
        except FileNotFoundError:
            return os.path.islink(entry.path)
        except OSError:
            return True
        if not stat.S_ISREG(st.st_mode):
            return True
        return time.time() - st.st_mtime >= self.settle

    def _read(self, entry: os.DirEntry[str]) -> RawMessage | None:
        """The file as a RawMessage; None when it is gone or still being written (left for a later pass)."""
        unique = entry.name.split(":", 1)[0]
        meta: dict[str, object] = {"maildir": str(self.path), "file": entry.name}
        try:
            before = os.stat(entry.path)
            if not stat.S_ISREG(before.st_mode):
                raise IsADirectoryError(f"not a regular file (mode {stat.filemode(before.st_mode)})")
            with open(entry.path, "rb") as f:
                data = f.read()
            after = os.stat(entry.path)
        except FileNotFoundError:
            if not os.path.islink(entry.path):
                return None  # moved or deleted since the listing
            meta["fetch_error"] = "unreadable file in new/: a dangling symlink"
            data = b""
        except OSError as exc:
            meta["fetch_error"] = f"unreadable file in new/: {type(exc).__name__}: {exc}"
            data = b""
        else:
            grown = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
            if grown or len(data) != after.st_size:
                log.info("maildir_file_still_written", source=self.name, file=entry.name)
                return None
        if "fetch_error" in meta:
            log.error("maildir_file_unreadable_quarantined", source=self.name, file=entry.name,
                      error=meta["fetch_error"])
        elif len(data) > self.max_size:
            meta["oversize"] = len(data)
        return RawMessage(channel="email", source=self.name, external_id=unique, raw=data, metadata=meta)

    def _chunks(self, entries: list[os.DirEntry[str]]) -> tuple[list[list[os.DirEntry[str]]], int]:
        """Batches of at most ``batch`` files and ``batch_bytes`` bytes, and the bytes of all of them."""
        sizes: dict[int, int] = {}
        for i, entry in enumerate(entries):
            try:
                sizes[i] = entry.stat().st_size
            except FileNotFoundError:  # gone since the listing: it weighs nothing here
                sizes[i] = 0
        chunks = batches(sizes, self.batch, self.batch_bytes)
        return [[entries[i] for i in chunk] for chunk in chunks], sum(sizes.values())

    def _ack(self, path: Path, unique: str) -> None:
        try:
            if self.after == "delete" and not path.is_dir():
                path.unlink(missing_ok=True)
            else:  # an unreadable directory is moved, never deleted
                os.replace(path, self.path / "cur" / f"{unique}:2,")
        except FileNotFoundError:
            pass
        except OSError as exc:  # journaled already: never taken again from new/ in this process
            log.error("maildir_ack_failed", source=self.name, file=path.name, error=str(exc))
            self._stuck.add(path.name)
