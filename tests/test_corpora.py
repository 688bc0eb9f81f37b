"""Robustness on the public raw-mail corpora in ../shared/corpora: every message ends as a ticket or a
quarantined message with a reason; nothing escapes the pipeline, and the journal keeps every byte."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from svcbridge import RawMessage

CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
SKIP = {"SOURCE.md", "README.md", ".gitattributes"}
SETS = sorted(p.name for p in CORPORA.iterdir() if p.is_dir()) if CORPORA.exists() else ["(absent)"]


@pytest.mark.parametrize("corpus", SETS)
async def test_every_message_is_a_ticket_or_quarantined_with_a_reason(make_app, corpus: str) -> None:
    if not CORPORA.exists():
        pytest.skip(f"the shared corpora are not beside this checkout ({CORPORA}); an opt-in extended test")
    files = sorted(p for p in (CORPORA / corpus).rglob("*") if p.is_file() and p.name not in SKIP)
    app = make_app()
    ctx = app.context(f"corpus:{corpus}")
    raws = [RawMessage(channel="email", source=ctx.name, external_id=str(p.relative_to(CORPORA)),
                       raw=p.read_bytes()) for p in files]
    await ctx.submit_many(raws)
    t0 = time.monotonic()
    outcomes = await app.pipeline.drain()  # an exception escaping here is a crash and fails the test
    took = time.monotonic() - t0
    counts = {s: sum(o.status == s for o in outcomes) for s in ("created", "followup", "duplicate", "quarantined")}
    print(f"{corpus}: {len(files)} files in {took:.1f}s -> {counts}")
    assert len(outcomes) == len(files)
    assert app.store.journal_counts().get("pending", 0) == 0
    for q in app.store.quarantine_list():
        assert q["error"] and q["stage"]
    for raw in raws[:20]:  # the journal keeps the exact bytes
        row = app.store.load_raws([(await ctx.submit(raw)).journal_id])
        assert next(iter(row.values())).raw == raw.raw
