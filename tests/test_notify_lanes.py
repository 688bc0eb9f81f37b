"""Notices: several at a time for an idempotent notifier (the mail spool), one at a time and marked in
flight first for the others (SMTP), and the spool's receipts that make a resend write nothing."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from conftest import eml
from svcbridge_email.outbound import RECEIPTS, MailNotifier
from test_delivery import make_tickets


def notices(app: Any) -> list[dict[str, Any]]:
    return [r for r in app.delivery.outbox.list(limit=1000) if r["kind"] == "notify"]


def watch(notifier: Any, name: str, during: Any = None) -> dict[str, int]:
    """Wrap ``notifier.name`` (a blocking call run in a thread) to count how many run at once."""
    seen = {"now": 0, "max": 0, "calls": 0}
    inner = getattr(notifier, name)

    def wrapped(*a: Any) -> Any:
        seen["now"] += 1
        seen["calls"] += 1
        seen["max"] = max(seen["max"], seen["now"])
        try:
            if during is not None:
                during(*a)
            time.sleep(0.02)  # a slow disk or relay: overlapping sends would show
            return inner(*a)
        finally:
            seen["now"] -= 1

    setattr(notifier, name, wrapped)
    return seen


async def test_spooled_notices_go_several_at_a_time_without_in_flight_marks(make_app, tmp_path: Path) -> None:
    app = make_app()
    notifier = app.delivery.notifiers["email"]
    assert isinstance(notifier, MailNotifier) and notifier.idempotent
    seen = watch(notifier, "_spool")
    await make_tickets(app, tmp_path, 8)  # under the per-recipient cap of automatic mail (10)
    await app.delivery.drain()
    spool = tmp_path / "outgoing"
    assert len(list(spool.glob("*.eml"))) == 8 == seen["calls"]
    assert seen["max"] > 1  # the concurrent path (outbox.concurrency), not one at a time
    assert len(list((spool / RECEIPTS).iterdir())) == 8
    assert all(r["status"] == "done" and r["inflight_at"] is None for r in notices(app))


async def test_a_spooled_notice_sent_again_writes_nothing_even_after_a_pickup(
    make_app, tmp_path: Path
) -> None:
    app = make_app()
    await make_tickets(app, tmp_path, 2)
    await app.delivery.drain()
    spool = tmp_path / "outgoing"
    first = sorted(spool.glob("*.eml"))
    assert len(first) == 2
    first[0].unlink()  # an MTA's pickup took it; then svcbridge was killed before recording the outcome
    row = next(r for r in notices(app) if f"{r['id']:08d}.eml" == first[0].name)
    with app.store.tx() as conn:
        conn.exec_driver_sql("UPDATE outbox SET status='pending', done_at=NULL WHERE id=?", (row["id"],))
    await app.delivery.drain()
    assert sorted(p.name for p in spool.glob("*.eml")) == [first[1].name]  # not written again
    assert next(r for r in notices(app) if r["id"] == row["id"])["status"] == "done"


async def test_old_receipts_are_pruned(make_app, tmp_path: Path) -> None:
    app = make_app()
    await make_tickets(app, tmp_path, 1)
    receipts = tmp_path / "outgoing" / RECEIPTS
    receipts.mkdir(parents=True)
    old = receipts / "99999999.eml"
    old.touch()
    long_ago = time.time() - 31 * 86400
    os.utime(old, (long_ago, long_ago))
    await app.delivery.drain()
    assert not old.exists()
    assert len(list(receipts.iterdir())) == 1  # this run's own receipt stays


async def test_smtp_notices_go_one_at_a_time_each_marked_in_flight(make_app, tmp_path: Path) -> None:
    smtp = {"host": "127.0.0.1", "port": 9, "tls": "none"}
    app = make_app(plugins={"email": {"outbound": {"transport": "smtp", "smtp": smtp}}})
    notifier = app.delivery.notifiers["email"]
    assert not notifier.idempotent
    marked: list[list[int]] = []

    def during(data: bytes, named: dict[str, str], msg: Any) -> None:
        # while a send is under way exactly one notice is marked in flight: this one
        marked.append([r["id"] for r in notices(app) if r["inflight_at"] is not None])

    sent: list[bytes] = []
    notifier._smtp = lambda data, named, msg: sent.append(data)  # no relay in this test: record the bytes
    seen = watch(notifier, "_smtp", during)
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        (new / f"m{i}").write_bytes(eml(subject=f"case {i}", msgid=f"<m{i}@x>", sender=f"c{i}@example.com"))
    await app.poll_sources_once()
    await app.pipeline.drain()
    await app.delivery.drain()
    assert seen["calls"] == 5 == len(sent) and seen["max"] == 1
    assert [len(m) for m in marked] == [1] * 5
    assert all(r["status"] == "done" and r["inflight_at"] is None for r in notices(app))
    await asyncio.sleep(0)


async def test_the_daemon_goes_again_at_once_after_a_full_round(make_app, tmp_path: Path) -> None:
    """A backlog larger than a round (outbox.batch) is delivered round after round, not one round per
    poll interval (or per committed batch): acknowledgements fell behind a heavy backlog for minutes."""
    from svcbridge.daemon import _delivery_loop

    app = make_app(outbox={"batch": 3, "poll_interval": 60.0})
    await make_tickets(app, tmp_path, 8)  # 8 creates to the local sink, 8 acknowledgements
    task = asyncio.create_task(_delivery_loop(app))
    try:
        for _ in range(200):
            if all(r["status"] == "done" for r in app.delivery.outbox.list(limit=1000)):
                break
            await asyncio.sleep(0.05)
    finally:
        app.stopping.set()
        app.delivery_wake.set()
        await asyncio.wait_for(task, 10)
    assert all(r["status"] == "done" for r in app.delivery.outbox.list(limit=1000))
