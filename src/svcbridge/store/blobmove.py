"""Moving bytes stored in rows (before migration 0012) into the blob store.

Used by migration 0012 when the process running it has a blob store (``svcbridge run`` / ``db
upgrade`` do), and by ``svcbridge store move-blobs`` for a store upgraded without one (``alembic``
by hand) or rows an older replica wrote during a rolling upgrade. Rows are moved in chunks; each
chunk's blobs are on disk before the UPDATE that names them, so an interruption leaves orphans at
worst (``store gc``), and a moved row reads exactly as before (the raw bytes are proven equal by
``split``). Rows without a size are the ones to move: ``size`` is set by every write since 0012.

``move_between`` moves every blob from one store to another (``svcbridge store move-blobs --to s3``
and back): rows name blobs by key only, so nothing in the database changes. Each blob is read from
the source, checked against its key, put into the target, read back from the target and compared
byte for byte, and only then deleted from the source. Resumable: what was moved is gone from the
source, so a second run does the rest; with ``keep_source`` the source keeps everything (a copy,
for switching a running deployment: copy, switch the setting, run again to move the stragglers).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from . import rawstore
from . import schema as t
from .blobs import BlobCorrupt, BlobStore, Chunks, ensure
from .split import MAGIC

CHUNK = 100
MOVE_CHUNK = 500  # blobs listed, then moved in parallel, at a time
ATTACHMENT_INLINE_MAX = 4096  # as planwriter: smaller files stay in their row


def move_out(
    conn: Connection, blobs: BlobStore, journal: Any = None, attachments: Any = None, *, each: int = CHUNK
) -> tuple[int, int]:
    """Move raw messages and attachment bytes out of their rows; (journal rows, attachment rows) moved.

    ``journal`` / ``attachments`` are the tables (a migration passes its own lightweight ones)."""
    j = journal if journal is not None else t.journal
    a = attachments if attachments is not None else t.attachments
    moved_j = moved_a = 0
    last = 0
    while True:
        rows = conn.execute(
            select(j.c.id, j.c.raw, j.c.content_hash)
            .where(j.c.id > last, j.c.size.is_(None), j.c.raw.is_not(None))
            .order_by(j.c.id)
            .limit(each)
        ).all()
        if not rows:
            break
        items: dict[str, Chunks] = {}
        updates = []
        for jid, raw, _stored_hash in rows:
            raw = bytes(raw)
            row: dict[str, Any] = {"raw": raw}
            # keyed by the bytes' own hash: content_hash is that for every channel today
            items.update(rawstore.stored_row(blobs, row, raw, hashlib.sha256(raw).hexdigest()))
            updates.append((jid, row))
            last = jid
        blobs.put_many(items)
        for jid, row in updates:
            conn.execute(update(j).where(j.c.id == jid).values(**row))
        ensure(blobs, items, items)
        moved_j += len(rows)
    last = 0
    while True:
        rows = conn.execute(
            select(a.c.id, a.c.data, a.c.sha256)
            .where(a.c.id > last, a.c.data.is_not(None))
            .order_by(a.c.id)
            .limit(each)
        ).all()
        if not rows:
            break
        big = {}
        for aid, data, _sha in rows:
            last = aid
            if len(data) > ATTACHMENT_INLINE_MAX:
                # keyed by the bytes' own hash, whatever the row says: a blob is what its name says
                big[aid] = (hashlib.sha256(bytes(data)).hexdigest(), bytes(data))
        items = {sha: data for sha, data in big.values()}
        blobs.put_many(items)
        for aid, (sha, _) in big.items():
            conn.execute(update(a).where(a.c.id == aid).values(data=None, sha256=sha))
        ensure(blobs, items, items)
        moved_a += len(big)
    return moved_j, moved_a


def run_chunks(begin: Callable[[], Any], blobs: BlobStore) -> tuple[int, int]:
    """``move_out`` in one transaction per call of ``begin`` (an engine's ``begin``)."""
    with begin() as conn:
        return move_out(conn, blobs)


@dataclass
class MoveResult:
    moved: int = 0  # blobs now in the target and (unless keep_source) gone from the source
    bytes: int = 0
    already: int = 0  # already in the target with the same bytes
    failed: list[str] = field(default_factory=list)  # "<key>: why"; left in the source


def _sound(key: str, data: bytes) -> bool:
    """A blob's bytes hash to its key, or it is a raw mail's skeleton (named by the whole mail's hash)."""
    return data.startswith(MAGIC) or hashlib.sha256(data).hexdigest() == key


def _move_one(src: BlobStore, dst: BlobStore, key: str, keep_source: bool) -> tuple[str, int, str | None]:
    try:
        data = src.get(key)
    except BlobCorrupt as exc:
        return "failed", 0, str(exc)
    if data is None:
        return "gone", 0, None  # deleted meanwhile (gc, erasure)
    if not _sound(key, data):
        return "failed", 0, "corrupt in the source: its bytes do not hash to its key (left in place)"
    try:
        there = dst.get(key)
    except BlobCorrupt:
        there = None
        dst.delete(key)  # a damaged copy in the target: replaced below
    status = "already" if there == data else "moved"
    if there != data:
        if there is not None:
            dst.delete(key)
        written = dst.put_many({key: data})
        if dst.get(key) != data:  # read back: only a verified copy lets the source go
            return "failed", 0, "the copy read back from the target differs (source kept)"
    else:
        written = 0
        dst.put_many({key: data})  # touched: it is in use
    if not keep_source:
        src.delete(key)
    return status, written or len(data), None


def move_between(
    src: BlobStore, dst: BlobStore, *, keep_source: bool = False, threads: int = 8,
    progress: Callable[[MoveResult], None] | None = None,
) -> MoveResult:
    """Move (or with ``keep_source`` copy) every blob of ``src`` into ``dst``, verified one by one."""
    result = MoveResult()
    listing = src.keys()
    with ThreadPoolExecutor(threads) as pool:
        # a chunk at a time: a million keys are not held in memory
        while keys := [k for k, _ in itertools.islice(listing, MOVE_CHUNK)]:
            for key, (status, size, why) in zip(
                keys, pool.map(lambda k: _move_one(src, dst, k, keep_source), keys), strict=True
            ):
                if status == "moved":
                    result.moved, result.bytes = result.moved + 1, result.bytes + size
                elif status == "already":
                    result.already += 1
                elif status == "failed":
                    result.failed.append(f"{key}: {why}")
            if progress is not None:
                progress(result)
    return result
