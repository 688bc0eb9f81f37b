"""Moving bytes stored in rows (before migration 0012) into the blob store.

Used by migration 0012 when the process running it has a blob store (``svcbridge run`` / ``db
upgrade`` do), and by ``svcbridge store move-blobs`` for a store upgraded without one (``alembic``
by hand) or rows an older replica wrote during a rolling upgrade. Rows are moved in chunks; each
chunk's blobs are on disk before the UPDATE that names them, so an interruption leaves orphans at
worst (``store gc``), and a moved row reads exactly as before (the raw bytes are proven equal by
``split``). Rows without a size are the ones to move: ``size`` is set by every write since 0012.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select, update

from . import rawstore
from . import schema as t
from .blobs import BlobStore, Chunks, ensure

CHUNK = 100
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
