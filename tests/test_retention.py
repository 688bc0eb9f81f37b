"""Retention, erasure and blob gc (issue 19 item 2): per-kind retention never touches anything
undelivered or quarantined; an erased person's messages, files and contact data go, an anonymous trail
and who did it stay; freed blobs and SQLite pages are given back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, update

from svcbridge.models import utcnow
from svcbridge.store import retention
from svcbridge.store import schema as t
from svcbridge.store.erasure import ErasureRefused, erase, was_erased
from svcbridge.storesettings import RetentionSettings
from test_blobs import _config, mail, rnd
from test_email_pipeline import drop

ALL = RetentionSettings(raw_days=1, attachments_days=1, duplicates_days=1, outbox_days=1, events_days=1)


async def fill(make_app, tmp_path: Path):
    """Alice: two tickets with files (one file also sent by Bob); Bob: one; a duplicate; a poison mail."""
    app = make_app(outbox={"auto_limits": {10: 100}})
    shared = rnd(120_000, 1)
    first = mail(("scan.tif", shared), ("a.pdf", rnd(50_000, 2)), msgid="<a1@x>", sender="Alice <alice@example.com>")
    drop(tmp_path, "1", first)
    drop(tmp_path, "2", mail(("照片.jpg", rnd(70_000, 3)), msgid="<a2@x>", sender="alice@example.com",
                             text="第二台机器也坏了"))
    drop(tmp_path, "3", mail(("scan.tif", shared), msgid="<b1@x>", sender="bob@example.com"))
    drop(tmp_path, "4", first)  # the same mail again (an MTA redelivery): a duplicate
    drop(tmp_path, "5", b"\x00not a mail at all, but it names alice@example.com\x00")
    res = await app.run_once()
    statuses = sorted(o.status for o in res["outcomes"])
    assert statuses == ["created", "created", "created", "duplicate", "quarantined"], statuses
    return app


def age(app, ticket_ids: list[int], days: float = 3, state: str = "closed") -> None:
    old = utcnow() - timedelta(days=days)
    with app.store.tx() as conn:
        conn.execute(update(t.tickets).where(t.tickets.c.id.in_(ticket_ids)).values(state=state, updated_at=old))
        conn.execute(update(t.events).values(at=old))
        conn.execute(update(t.outbox).values(done_at=old))
        conn.execute(update(t.journal).values(processed_at=old))


def snapshot(app) -> dict:
    with app.store.engine.connect() as conn:
        return {
            "raw": sorted(conn.execute(select(t.journal.c.id).where(t.journal.c.purged_at.is_(None))).scalars()),
            "journal": conn.execute(select(func.count()).select_from(t.journal)).scalar(),
            "attachments": conn.execute(select(func.count()).select_from(t.attachments)).scalar(),
            "outbox": conn.execute(select(func.count()).select_from(t.outbox)).scalar(),
            "events": conn.execute(select(func.count()).select_from(t.events)).scalar(),
            "blobs": app.store.blobs.usage(),
        }


async def test_retention_per_kind_spares_open_undelivered_and_quarantined(make_app, tmp_path: Path) -> None:
    app = await fill(make_app, tmp_path)
    age(app, [1, 3])  # Alice's first and Bob's ticket closed long ago; Alice's second stays open
    with app.store.tx() as conn:  # Bob's ticket has an update not delivered yet: not "fully delivered"
        conn.execute(insert(t.outbox).values(ticket_id=3, kind="update", target="zammad", idempotency_key="k",
                                             payload={}, status="pending", attempts=0,
                                             next_attempt_at=utcnow(), created_at=utcnow()))
    before = snapshot(app)
    dry = retention.purge(app.store, ALL, dry_run=True)
    assert snapshot(app) == before  # a dry run removes nothing
    counts = retention.purge(app.store, ALL)
    assert {k: counts[k] for k in dry} == dry
    assert counts["raw"] == 2 and counts["attachments"] == 2 and counts["duplicates"] == 1
    after = snapshot(app)
    with app.store.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(t.journal)).all()}
        quarantined = [r for r in rows.values() if r.status == "quarantined"]
        assert len(quarantined) == 1 and quarantined[0].purged_at is None  # never touched
        kept = {r.ticket_id for r in rows.values() if r.purged_at is None and r.ticket_id}
        assert kept == {2, 3}  # open ticket 2, undelivered ticket 3
        assert conn.execute(select(t.outbox.c.status).where(t.outbox.c.ticket_id == 3)).scalars().all().count(
            "pending") == 1
        files = conn.execute(select(t.attachments.c.ticket_id)).scalars().all()
        assert sorted(files) == [2, 3]
        removed = conn.execute(select(t.events.c.data).where(t.events.c.type == "files_removed")).scalars().all()
        assert removed == [{"reason": "retention", "files": ["scan.tif", "a.pdf"]}]
    assert app.store.load_raws(sorted(rows))[min(rows)].raw is None  # purged
    # the shared scan stays (Bob's ticket still names it); Alice's a.pdf is gone
    assert after["blobs"][0] == before["blobs"][0] - 1
    assert [a.data for a in app.store.attachments_with_data(3)] == [rnd(120_000, 1)]
    with app.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2
        assert conn.exec_driver_sql("PRAGMA freelist_count").scalar() == 0  # pages given back
    assert retention.purge(app.store, ALL)["raw"] == 0  # nothing left to do: idempotent


async def test_gc_takes_orphans_only_after_the_grace_period(make_app, tmp_path: Path) -> None:
    app = await fill(make_app, tmp_path)
    blobs = app.store.blobs
    orphan = "ab" * 32
    blobs.put_many({orphan: b"left by a writer killed before its commit"})
    held = blobs.usage()[0]
    assert retention.gc(app.store, 3600) == (0, 0)  # young: may be about to be named
    old = time.time() - 7200
    for key, _ in list(blobs.keys()):
        os.utime(blobs.path(key), (old, old))
    assert retention.gc(app.store, 3600, dry_run=True)[0] == 1
    assert retention.gc(app.store, 3600)[0] == 1 and not blobs.has(orphan)
    assert blobs.usage()[0] == held - 1  # every referenced blob stays, however old


@pytest.mark.parametrize("address", ["alice@example.com", "ALICE@Example.com "])
async def test_erasure_removes_a_person_and_keeps_an_anonymous_trail(make_app, tmp_path: Path, address: str) -> None:
    app = await fill(make_app, tmp_path)
    await app.delivery.drain()
    blobs_before = app.store.blobs.usage()[0]
    preview = erase(app.store, address, "dpo-kim", dry_run=True)
    assert preview["tickets"] == 2 and preview["quarantined"] == 1
    result = erase(app.store, address, "dpo-kim")
    assert result["tickets"] == 2 and result["attachments"] == 3 and result["raw_messages"] == 3
    for ref in ("SB-000001", "SB-000002"):
        tk = app.store.get_ticket(ref)
        assert (tk.subject, tk.description, tk.contact.email, tk.labels, tk.attachments) == (
            "[erased]", "", None, {}, [])
        assert tk.events[-1].type == "erased" and tk.events[-1].actor == "dpo-kim"
        text = " ".join(str(e.data) for e in tk.events)
        assert "alice" not in text.lower() and "第二台" not in text and "printer" not in text
    bob = app.store.get_ticket("SB-000003")
    assert bob.contact.email == "bob@example.com" and len(bob.attachments) == 1
    assert [a.data for a in app.store.attachments_with_data(3)] == [rnd(120_000, 1)]  # shared file stays
    assert app.store.blobs.usage()[0] == blobs_before - 2  # a.pdf and the photo; the scan is Bob's too
    with app.store.engine.connect() as conn:
        raws = conn.execute(select(t.journal.c.raw, t.journal.c.meta, t.journal.c.status)).all()
        assert not any(r and b"alice" in r.lower() for r, _, _ in raws)
        assert conn.execute(select(t.quarantine.c.resolved)).scalars().all() == [True]
        (row,) = conn.execute(select(t.erasures)).all()
        assert row.by == "dpo-kim" and "alice" not in row.subject_hash and row.counts["tickets"] == 2
        outbox = conn.execute(select(t.outbox.c.payload).where(t.outbox.c.ticket_id.in_([1, 2]))).scalars().all()
        assert all(p == {} for p in outbox)
    assert was_erased(app.store, "Alice@example.com") and not was_erased(app.store, "bob@example.com")


async def test_erasure_is_refused_while_the_persons_tickets_are_undelivered(make_app, tmp_path: Path) -> None:
    app = await fill(make_app, tmp_path)
    with app.store.tx() as conn:
        conn.execute(update(t.outbox).where(t.outbox.c.ticket_id == 1).values(status="pending", done_at=None))
    with pytest.raises(ErasureRefused) as refused:
        erase(app.store, "alice@example.com", "dpo")
    assert refused.value.pending
    assert app.store.get_ticket("SB-000001").contact.email == "alice@example.com"  # nothing changed
    assert erase(app.store, "alice@example.com", "dpo", force=True)["undelivered_dropped"] >= 1


def test_cli_purge_dry_run_and_erase_record_the_operator(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[http]", "[store.retention]\nraw_days = 1\n[http]"))
    env = {**os.environ, "USER": "ops-lee"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "svcbridge", "--config", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=120)
    ing = subprocess.run([sys.executable, "-m", "svcbridge", "--config", str(cfg), "ingest", "-"],
                         input=mail(("f.pdf", rnd(30_000))), capture_output=True, env=env, timeout=120)
    assert ing.returncode == 0, ing.stderr
    dry = run("purge", "--dry-run", "--json")
    assert dry.returncode == 0 and '"dry_run": true' in dry.stdout, dry.stderr
    refused = run("contacts", "erase", "alice@example.com")  # its acknowledgement is not delivered
    done = run("contacts", "erase", "alice@example.com", "--force")
    assert done.returncode == 0 and "erased by ops-lee" in done.stdout, (refused.stdout, done.stderr)
    usage = run("store", "usage", "--json")
    assert usage.returncode == 0 and '"journal_rows": 1' in usage.stdout


async def test_the_daemons_maintenance_runs_once_per_period_in_one_replica(make_app, tmp_path: Path) -> None:
    from svcbridge.maintenance import run_due
    from svcbridge.store import lease

    app = make_app(store={"retention": {"raw_days": 1, "every_hours": 6}})
    app2 = make_app(store={"retention": {"raw_days": 1, "every_hours": 6}})
    drop(tmp_path, "1", mail(("f.pdf", rnd(30_000))))
    await app.run_once()
    await app.delivery.drain()
    age(app, [1])
    me, other = lease.new_holder("daemon"), lease.new_holder("daemon")
    first = run_due(app, me)
    assert first is not None and first["raw"] == 1
    assert run_due(app, me) is None  # done for this period (a checkpoint: survives a restart)
    assert run_due(app2, other, force=True) is None  # another replica holds the maintenance lease
    assert run_due(app, me, force=True) == {**first, "raw": 0, "blobs_removed": 0, "gc_blobs": 0, "gc_bytes": 0}
