"""What intake just journaled reaches the pipeline without reading the blobs back (store/recent.py):
the same bytes and hash as from the store, each entry taken once, bounded by bytes, and never for an
entry whose stored message was purged or erased meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from svcbridge import RawMessage
from svcbridge.store import schema as t
from svcbridge.store.recent import RecentRaws
from test_blobs import mail, rnd


class CountingBlobs:
    """The app's blob store, counting reads."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.gets = inner, 0

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def journal(app: Any, n: int) -> list[tuple[int, bytes]]:
    raws = [mail(("scan.tif", rnd(60_000, i)), msgid=f"<r{i}@example.com>") for i in range(n)]
    msgs = [RawMessage(channel="email", source="t", external_id=str(i), raw=r) for i, r in enumerate(raws)]
    res = app.store.journal_insert_many(msgs)
    return [(r.journal_id, raw) for r, raw in zip(res, raws, strict=True)]


def test_just_journaled_entries_load_without_reading_blobs(make_app, tmp_path: Path) -> None:
    app = make_app()
    entries = journal(app, 3)
    counting = app.store.blobs = CountingBlobs(app.store.blobs)
    loaded = app.store.load_raws([jid for jid, _ in entries])
    assert counting.gets == 0
    for jid, raw in entries:
        msg = loaded[jid]
        assert msg.raw == raw
        assert msg.content_hash == app.store.journal_row(jid)["content_hash"]
    assert len(app.store.recent) == 0  # each taken once: a second load reads the store
    again = app.store.load_raws([entries[0][0]])
    assert again[entries[0][0]].raw == entries[0][1] and counting.gets > 0


def test_an_entry_purged_meanwhile_is_not_served_from_memory(make_app, tmp_path: Path) -> None:
    app = make_app()
    (jid, _raw), (jid2, raw2) = journal(app, 2)
    with app.store.tx() as conn:  # what purge / contacts erase leave of a message
        conn.execute(
            update(t.journal).where(t.journal.c.id == jid).values(raw=None, blob_ref=None, blob_parts=None)
        )
    loaded = app.store.load_raws([jid, jid2])
    assert loaded[jid].raw is None
    assert loaded[jid2].raw == raw2


def test_bounded_by_bytes_oldest_out_and_size_checked() -> None:
    r = RecentRaws(max_bytes=1000)
    r.put("a", b"x" * 200)
    r.put("b", b"y" * 200)
    r.put("huge", b"z" * 300)  # over a quarter of the bound: not kept
    assert len(r) == 2
    for i in range(5):
        r.put(f"c{i}", b"w" * 200)
    assert r.take("a", 200) is None and r.take("b", 200) is None  # pushed out, oldest first
    assert r.take("c3", 199) is None  # not the stored size: read from the store
    assert r.take("c3", 200) == b"w" * 200
    assert r.take("c3", 200) is None  # once


async def test_pipeline_outcome_is_the_same_with_and_without_the_memory(make_app, tmp_path: Path) -> None:
    seen = []
    for keep in (True, False):
        app = make_app(data_dir=tmp_path / f"v{keep}")
        if not keep:
            app.store.recent = RecentRaws(max_bytes=0)  # keeps nothing: every entry read from the store
        journal(app, 4)
        out = await app.pipeline.drain()
        tickets = [app.store.get_ticket(o.ticket_ref) for o in out]
        seen.append(
            [
                (o.status, t.subject, [a.sha256 for a in t.attachments])
                for o, t in zip(out, tickets, strict=True)
            ]
        )
    assert seen[0] == seen[1] and len(seen[0]) == 4 and all(s[2] for s in seen[0])
