"""One-shot passes honour the source leases, and a source acts only while its lease is valid (issue 19
item 4): ``run --once`` beside a daemon replica leaves the sources the daemon holds to it, and a
source whose lease lapsed (its process paused past the TTL) journals and acts upstream no more.

Here on SQLite with Maildir sources and holders written into the store; the same with real processes,
PostgreSQL and Dovecot (a daemon and a cron ``run --once`` beside it; a replica SIGSTOPped past the TTL
and resumed after another took over) is in ``test_source_fencing_processes.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from conftest import eml
from svcbridge import RawMessage
from svcbridge.errors import LeaseLost
from svcbridge.models import utcnow
from svcbridge.replicas import SOURCE, Replicas, SourceLeases
from svcbridge.store import lease
from svcbridge.store import schema as t


def drop(box: Path, n: int, tag: str = "m") -> None:
    (box / "new").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (box / "new" / f"{tag}{i:03d}").write_bytes(
            eml(subject=f"case {tag}{i}", msgid=f"<{tag}{i}@x>", sender=f"C{i} <c{i}@example.com>")
        )


def journaled(app: Any) -> int:
    with app.store.engine.connect() as conn:
        return len(conn.execute(select(t.journal.c.id)).all())


def source_leases(app: Any) -> dict[str, str]:
    with app.store.engine.connect() as conn:
        rows = conn.execute(select(t.leases.c.name, t.leases.c.holder)).all()
    return {r[0][len(SOURCE) :]: r[1] for r in rows if r[0].startswith(SOURCE)}


def hold(app: Any, holder: str, seconds: float = 600.0, name: str = "maildir") -> None:
    with app.store.tx() as conn:
        conn.execute(t.leases.insert().values(name=SOURCE + name, holder=holder,
                                              expires_at=utcnow() + timedelta(seconds=seconds)))


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


async def test_a_lone_run_once_polls_every_source_and_gives_the_leases_back(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path / "maildir", 3)
    res = await app.run_once()
    assert res["polled"] == 3 and res["processed"] == 3 and res["left"] == {}
    assert source_leases(app) == {}  # released at the end: a daemon takes it at its next heartbeat
    assert app.leases is None  # contexts made after the pass are not fenced


async def test_run_once_leaves_a_source_a_live_daemon_holds(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path / "maildir", 3)
    daemon = lease.new_holder("daemon")  # this process is alive: a live holder
    hold(app, daemon)
    res = await app.run_once()
    assert res["polled"] == 0 and res["left"] == {"maildir": daemon}
    assert len(list((tmp_path / "maildir" / "new").iterdir())) == 3  # untouched: not even listed
    assert source_leases(app) == {"maildir": daemon}  # its lease is not touched either
    with app.store.tx() as conn:  # the daemon stops cleanly: its lease goes back
        conn.execute(t.leases.delete())
    res = await app.run_once()
    assert res["polled"] == 3 and res["left"] == {}


@pytest.mark.parametrize("how", ["dead local process", "run out"])
async def test_run_once_takes_a_source_from_a_dead_or_run_out_holder(make_app, tmp_path: Path, how: str) -> None:
    app = make_app()
    drop(tmp_path / "maildir", 2)
    if how == "dead local process":  # kill -9: its lease would last ten more minutes
        hold(app, f"{lease.HOST}:{dead_pid()}:1:daemon-gone")
    else:  # a replica on another host that stopped renewing
        hold(app, "otherhost:4242:7:daemon-far", seconds=-1)
    res = await app.run_once()
    assert res["polled"] == 2 and res["left"] == {}
    assert source_leases(app) == {}


async def test_a_long_pass_keeps_its_lease(make_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass longer than the TTL renews the lease as it goes: a daemon replica cannot take it midway."""
    app = make_app(store={"source_lease_ttl": 2})
    drop(tmp_path / "maildir", 2)
    src = app.sources["maildir"]
    real = src.poll
    daemon = Replicas(app.store, lease.new_holder("daemon"), 2.0)
    taken_midway: list[set[str]] = []

    async def slow_poll(ctx: Any) -> int:
        await asyncio.sleep(3.0)  # one and a half TTLs
        taken_midway.append(await asyncio.to_thread(daemon.round, ["maildir"]))
        return await real(ctx)  # journals: its fence passes, the lease is still this pass's

    monkeypatch.setattr(src, "poll", slow_poll)
    res = await app.run_once()
    assert taken_midway == [set()] and res["polled"] == 2
    assert daemon.round(["maildir"]) == {"maildir"}  # given back at the end


def leases_for(app: Any, holder: str, ttl: float = 10.0) -> SourceLeases:
    sl = SourceLeases(app.store, holder, ttl)
    got, busy = sl.take_for_pass(["maildir"])
    assert got == ["maildir"] and not busy
    return sl


def raws(n: int, tag: str = "r") -> list[RawMessage]:
    return [RawMessage(channel="email", source="maildir", external_id=f"{tag}{i}", raw=eml(msgid=f"<{tag}{i}@x>"))
            for i in range(n)]


async def test_a_batch_whose_lease_was_taken_over_is_not_journaled(make_app) -> None:
    """Paused past the TTL with a fetched batch in hand: another replica took the source meanwhile."""
    app = make_app()
    me = lease.new_holder("daemon")
    app.leases = leases_for(app, me)
    ctx = app.context("maildir", leased=True)
    assert len(await ctx.submit_many(raws(2, "a"))) == 2  # held and fresh: journaled
    with app.store.tx() as conn:  # the TTL ran out and another replica took the source
        conn.execute(update(t.leases).values(holder="otherhost:1:1:daemon-new"))
    app.leases.renewed["maildir"] = time.monotonic() - 60  # ...while this process was stopped
    with pytest.raises(LeaseLost):
        await ctx.submit_many(raws(2, "b"))
    with pytest.raises(LeaseLost):
        await ctx.confirm_lease()  # no after-action either
    with pytest.raises(LeaseLost):
        await ctx.set_checkpoint("last_uid", "1")  # nor a checkpoint moved under the new holder
    assert journaled(app) == 2 and app.store.get_checkpoint("maildir", "last_uid") is None


async def test_the_journal_fence_refuses_inside_its_transaction(make_app) -> None:
    """Fresh by the monotonic clock (the pause fell between the check and the commit), the store says
    otherwise: the journal's own transaction refuses the batch and rolls back."""
    app = make_app()
    sl = leases_for(app, lease.new_holder("daemon"))
    with app.store.tx() as conn:
        conn.execute(update(t.leases).values(holder="otherhost:1:1:daemon-new"))
    assert sl.fresh("maildir")
    with pytest.raises(LeaseLost):
        app.store.journal_insert_many(raws(3), lambda conn: sl.fence(conn, "maildir"))
    with pytest.raises(LeaseLost):
        app.store.journal_insert(raws(1)[0], lambda conn: sl.fence(conn, "maildir"))
    assert journaled(app) == 0


async def test_a_late_renewal_still_ours_is_renewed_in_the_store_not_refused(make_app) -> None:
    """The heartbeat thread was slow (the store busy), the lease never ran out: one UPDATE and go on."""
    app = make_app()
    me = lease.new_holder("daemon")
    app.leases = leases_for(app, me)
    app.leases.renewed["maildir"] = time.monotonic() - 6  # past half the TTL by this process's clock
    ctx = app.context("maildir", leased=True)
    before = source_leases(app)
    await ctx.confirm_lease()
    assert app.leases.fresh("maildir") and source_leases(app) == before == {"maildir": me}
    assert len(await ctx.submit_many(raws(1))) == 1


async def test_a_pass_begun_before_a_gap_is_refused(make_app) -> None:
    """The lease ran out while this process was paused, nobody took it, and the next heartbeat took it
    anew: the pass that began before the gap may hold a stale view (another may have held it between)."""
    app = make_app()
    me = lease.new_holder("daemon")
    app.leases = leases_for(app, me)
    ctx = app.context("maildir", leased=True)
    app.leases.mark("maildir", time.monotonic(), anew=True)  # taken anew after ctx began
    with pytest.raises(LeaseLost):
        await ctx.submit_many(raws(1))
    assert journaled(app) == 0
    fresh_ctx = app.context("maildir", leased=True)  # the restarted loop's pass
    assert len(await fresh_ctx.submit_many(raws(1))) == 1


async def test_webhook_contexts_and_unleased_ones_are_not_fenced(make_app) -> None:
    app = make_app()
    app.leases = SourceLeases(app.store, lease.new_holder("daemon"), 10.0)  # holds nothing
    await app.context("maildir").confirm_lease()  # a webhook route's context, or a test's
    assert len(await app.context("maildir").submit_many(raws(1))) == 1


async def test_a_replica_round_marks_its_leases_and_flags_a_take_after_a_gap(make_app) -> None:
    app = make_app()
    r = Replicas(app.store, lease.new_holder("daemon"), 10.0)
    assert r.round(["maildir"]) == {"maildir"} and r.taken == {"maildir"}
    assert r.leases.fresh("maildir")
    assert r.round(["maildir"]) == {"maildir"} and r.taken == set()  # renewed without a gap
    with app.store.tx() as conn:  # paused past the TTL; nobody took it
        conn.execute(update(t.leases).where(t.leases.c.name == SOURCE + "maildir")
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    began = time.monotonic()
    assert r.round(["maildir"]) == {"maildir"} and r.taken == {"maildir"}  # taken anew: the loop restarts
    assert not r.leases.fresh("maildir", began - 1) and r.leases.fresh("maildir", time.monotonic())
    with app.store.tx() as conn:  # another replica took it
        conn.execute(update(t.leases).where(t.leases.c.name == SOURCE + "maildir")
                     .values(holder="otherhost:1:1:daemon-x", expires_at=utcnow() + timedelta(minutes=1)))
    assert r.round(["maildir"]) == set() and not r.leases.fresh("maildir", time.monotonic())


async def test_the_fence_costs_one_small_update_per_batch(make_app) -> None:
    """The journal path with the fence runs one statement more than without it, no more."""
    from sqlalchemy import event

    app = make_app()
    sl = leases_for(app, lease.new_holder("daemon"))
    counts = []
    for tag, fence in (("a", None), ("b", lambda conn: sl.fence(conn, "maildir"))):
        seen: list[str] = []
        lock = threading.Lock()

        def count(*args: Any, seen: list[str] = seen) -> None:
            with lock:
                seen.append(args[2])

        event.listen(app.store.engine, "before_cursor_execute", count)
        app.store.journal_insert_many(raws(20, tag), fence)
        event.remove(app.store.engine, "before_cursor_execute", count)
        counts.append(len(seen))
    assert counts[1] == counts[0] + 1, counts


async def test_a_status_poller_records_a_poll_only_under_its_lease(make_app) -> None:
    """``poll:<sink>`` is leased like a mailbox: a poller whose lease is gone records nothing."""
    from svcbridge.daemon import _status_poll_loop

    app = make_app()

    class Poller:
        name, poll_interval = "desk", 0.01

        async def poll_changes(self, cursor: str | None) -> tuple[list[Any], str]:
            app.stopping.set()  # one round
            return [], "c1"

    app.delivery.sinks["desk"] = Poller()  # type: ignore[assignment]
    app.leases = SourceLeases(app.store, lease.new_holder("daemon"), 10.0)  # holds nothing
    await _status_poll_loop(app, "desk")
    assert app.store.get_checkpoint("sink:desk", "cursor") is None  # another replica's to record
    app.stopping.clear()
    assert app.leases.take_for_pass(["poll:desk"])[0] == ["poll:desk"]
    await _status_poll_loop(app, "desk")
    assert app.store.get_checkpoint("sink:desk", "cursor") == "c1"


async def test_a_source_given_back_to_a_joining_replica_is_not_fresh_any_more(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not fresh before its lease goes back: the other replica may take it the moment it is free."""
    app = make_app()
    names = ["imap:a", "imap:b"]
    a = Replicas(app.store, lease.new_holder("daemon"), 10.0)
    assert a.round(names) == set(names)
    b = Replicas(app.store, lease.new_holder("daemon"), 10.0)
    b.round(names)  # joins: its heartbeat counts, nothing free yet
    real, fresh_when_released = lease.release, []

    def release(store: Any, name: str, holder: str) -> None:
        fresh_when_released.append(a.leases.fresh(name[len(SOURCE) :]))
        real(store, name, holder)

    monkeypatch.setattr(lease, "release", release)
    kept = a.round(names)  # gives one back
    assert fresh_when_released == [False]
    assert len(kept) == 1
    (given,) = set(names) - kept
    assert not a.leases.fresh(given) and a.leases.fresh(next(iter(kept)))
    with pytest.raises(LeaseLost):
        await a.leases.confirm(given)
    assert b.round(names) == {given}


def test_default_failover_from_another_host_is_within_ten_seconds() -> None:
    """Issue 19: failover after a kill -9 within 10 s by default. A holder on another host is seen dead
    when its lease runs out, at the next heartbeat of another replica (every third of the TTL)."""
    from svcbridge.storesettings import StoreSettings

    ttl = StoreSettings().source_lease_ttl
    assert ttl + ttl / 3 <= 10.0
