"""Maildir source (the embedded default): drop a ``.eml`` into ``new/`` and it becomes a ticket.

A file is journaled first and only then acknowledged: moved to ``cur/`` (``after = "move"``) or deleted
(``after = "delete"``). The external id is the Maildir unique name (the file name up to ``:``), so a
crash between journaling and the move re-submits the same id, which the journal recognises.
"""

from __future__ import annotations

import os
from pathlib import Path

from svcbridge import IntakeContext, RawMessage

from .batches import batches


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
    ) -> None:
        self.name, self.path, self.after, self.interval, self.max_size = name, path, after, interval, max_size
        for sub in ("new", "cur", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)

    async def poll(self, ctx: IntakeContext) -> int:
        entries = sorted(
            (e for e in os.scandir(self.path / "new") if e.is_file() and not e.name.startswith(".")),
            key=lambda e: e.name,
        )
        chunks, size = self._chunks(entries)
        ctx.expect(len(entries), size)
        count = 0
        for chunk in chunks:
            if ctx.stopping.is_set():
                break
            raws = []
            for entry in chunk:
                data = Path(entry.path).read_bytes()
                meta: dict[str, object] = {"maildir": str(self.path), "file": entry.name}
                if len(data) > self.max_size:
                    meta["oversize"] = len(data)
                unique = entry.name.split(":", 1)[0]
                raws.append(
                    RawMessage(channel="email", source=self.name, external_id=unique, raw=data, metadata=meta)
                )
            await ctx.submit_many(raws)  # raises StoreUnavailable: the files stay in new/
            for entry, raw in zip(chunk, raws, strict=True):
                self._ack(Path(entry.path), raw.external_id)
            count += len(chunk)
        return count

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
        if self.after == "delete":
            path.unlink(missing_ok=True)
        else:
            os.replace(path, self.path / "cur" / f"{unique}:2,")
