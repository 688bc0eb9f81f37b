"""Several processes on one store: only the holder of the pipeline lease processes the journal.

Intake and delivery run everywhere (the journal is unique on source and id, outbox items are claimed);
the pipeline runs in one process at a time, fenced in its own commit (``store/lease.py``). Two apps in
one test process stand for two replicas: each has its own holder id, like two processes would.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from conftest import eml
from svcbridge.app import recover
from svcbridge.models import utcnow
from svcbridge.store import lease
from svcbridge.store import schema as t
from svcbridge.store.planwriter import PlanWriter

Around = Callable[[list[Any], Callable[[list[Any]], None]], None]


class SpyWriter(PlanWriter):
    """The app's plan writer with a test's function around each of its transactions (``write``) or
    each batch it commits (``commit``, which falls back to one transaction per plan): the function is
    given the plans and the real method to call."""

    def __init__(self, real: PlanWriter, write: Around | None = None, commit: Around | None = None) -> None:
        super().__init__(real.store, real.lease, real.router)
        self.inline_sinks = real.inline_sinks
        self.around_write, self.around_commit = write, commit

    def write(self, plans: list[Any]) -> None:
        if self.around_write is None:
            return super().write(plans)
        return self.around_write(plans, super().write)

    def commit(self, plans: list[Any]) -> None:
        if self.around_commit is None:
            return super().commit(plans)
        return self.around_commit(plans, super().commit)


def spy_writer(app: Any, write: Around | None = None, commit: Around | None = None) -> PlanWriter:
    """Put a SpyWriter in the app's pipeline; returns the writer it replaced."""
    real = app.pipeline.writer
    app.pipeline.writer = SpyWriter(real, write=write, commit=commit)
    return real


def drop(box: Path, mails: dict[str, bytes]) -> None:
    (box / "new").mkdir(parents=True, exist_ok=True)
    for name, data in mails.items():
        (box / "new" / name).write_bytes(data)


def mails(n: int) -> dict[str, bytes]:
    return {f"m{i:03d}": eml(subject=f"case {i}", msgid=f"<r{i}@x>", sender=f"C{i} <c{i}@example.com>")
            for i in range(n)}


def replica(make_app: Any, tmp_path: Path, name: str, **settings: Any) -> Any:
    """An app on the shared store with a Maildir of its own under the same source name."""
    box = tmp_path / f"maildir-{name}"
    app = make_app(plugins={"email": {"maildir": {"path": str(box), "interval": 0.05}}}, **settings)
    app.box = box
    return app


def pending(app: Any) -> int:
    return len(app.store.pending_journal(10_000))


async def test_only_the_lease_holder_runs_the_pipeline(make_app, tmp_path: Path) -> None:
    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    drop(a.box, mails(3))
    await a.poll_sources_once()
    assert a.pipeline.take_lease() is None
    assert await b.pipeline.drain() == [] and pending(b) == 3  # b journals and delivers, never processes
    assert b.pipeline.take_lease() == a.pipeline.holder
    assert len(await a.pipeline.drain()) == 3 and a.store.count_tickets() == 3
    a.pipeline.close()  # a clean stop gives the lease back: b need not wait lease_ttl
    drop(b.box, {"late": eml(subject="late", msgid="<late@x>")})
    res = await b.run_once()
    assert res["processed"] == 1 and b.store.count_tickets() == 4


async def test_a_holder_that_lost_its_lease_cannot_commit(make_app, tmp_path: Path) -> None:
    """A process paused past lease_ttl (GC, SIGSTOP, a slow plugin) finds its batch refused."""
    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    drop(a.box, mails(4))
    await a.poll_sources_once()
    assert a.pipeline.take_lease() is None
    with a.store.tx() as conn:  # a's lease runs out while it "works"
        conn.execute(update(t.leases).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert b.pipeline.take_lease() is None  # b takes over
    plans_made = []

    def spy(plans: list[Any], write: Callable[[list[Any]], None]) -> None:
        plans_made.append(len(plans))
        write(plans)

    spy_writer(a, write=spy)
    # a renewed a moment ago, so it does not ask the store again yet: it gets as far as the commit,
    # and the commit refuses (fencing)
    assert await a.pipeline.drain() == []
    assert plans_made == [4] and pending(a) == 4 and a.store.count_tickets() == 0
    assert await a.pipeline.drain() == [] and plans_made == [4]  # now it asks the store first
    assert a.pipeline.take_lease() == b.pipeline.holder
    assert len(await b.pipeline.drain()) == 4 and b.store.count_tickets() == 4


async def test_the_lease_of_a_dead_local_process_is_released_on_start(make_app, tmp_path: Path) -> None:
    a = replica(make_app, tmp_path, "a")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    with a.store.tx() as conn:  # what a daemon killed with -9 leaves behind
        conn.execute(t.leases.insert().values(name="pipeline", holder=f"{lease.HOST}:{dead}:gone",
                                              expires_at=utcnow() + timedelta(hours=1)))
    # known dead (its pid is gone): taken over at once, not after lease_ttl (issue 19)
    assert a.pipeline.take_lease() is None
    await recover(a)
    assert a.pipeline.take_lease() is None


async def test_a_reused_pid_is_not_mistaken_for_the_old_holder(make_app, tmp_path: Path) -> None:
    """PID 1 in a container, restarted after a crash: same host, same pid, another start time."""
    import os

    a = replica(make_app, tmp_path, "a")
    me, started = os.getpid(), lease._started(os.getpid())
    assert started  # Linux: /proc is there
    old = f"{lease.HOST}:{me}:{int(started) - 1}:before"
    with a.store.tx() as conn:
        conn.execute(t.leases.insert().values(name="pipeline", holder=old,
                                              expires_at=utcnow() + timedelta(hours=1)))
    assert a.pipeline.take_lease() is None  # the old process is gone: taken over at once (issue 19)
    await recover(a)
    assert a.pipeline.take_lease() is None
    # while a live holder of this very process (another app here) keeps its lease
    b = replica(make_app, tmp_path, "b")
    await recover(b)
    assert b.pipeline.take_lease() == a.pipeline.holder


async def test_ingest_beside_a_running_pipeline_leaves_the_entry_to_it(make_app, tmp_path: Path) -> None:
    from svcbridge import RawMessage
    from svcbridge.errors import PipelineBusy

    daemon, cli = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    daemon.pipeline.holder = lease.new_holder("daemon")  # as daemon.serve() names it
    assert daemon.pipeline.take_lease() is None
    res = cli.store.journal_insert(RawMessage(channel="email", source="ingest", external_id="x1", raw=eml()))
    try:
        await cli.pipeline.process(res.journal_id, wait=5.0)  # a daemon is not waited for
        raise AssertionError("processed beside the lease holder")
    except PipelineBusy:
        pass
    assert [o.status for o in await daemon.pipeline.drain()] == ["created"]


async def test_two_replicas_racing_on_postgresql_make_one_ticket_per_mail(make_app, tmp_path: Path,
                                                                         pg_url: str) -> None:
    """The same 60 mails in both replicas' mailboxes, both running at once: 60 tickets, each once."""
    apps = [replica(make_app, tmp_path, n, database_url=pg_url) for n in ("a", "b")]
    same = mails(60)
    for app in apps:
        drop(app.box, same)
    # the worst interleaving: whoever gets to the store stage waits for the other one to get there
    # too (at most 2 s), so two pipelines would both have decided "new ticket" before either commits
    together = threading.Barrier(2, timeout=2.0)
    def commit(plans: list[Any], real: Callable[[list[Any]], None]) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        real(plans)

    for app in apps:
        spy_writer(app, commit=commit)
    results = list(await asyncio.gather(*(app.run_once() for app in apps)))
    for app in apps:  # a last pass each, as their daemons would make on the next wake-up
        results.append(await app.run_once())
    outcomes = [o for r in results for o in r["outcomes"]]
    store = apps[0].store
    assert store.count_tickets() == 60 and pending(apps[0]) == 0
    assert sorted(o.ticket_ref for o in outcomes if o.status == "created") == [
        store.ref_for(i) for i in sorted(tk.id for tk in store.list_tickets(limit=100))
    ]
    subjects = sorted(tk.subject for tk in store.list_tickets(limit=100))
    assert subjects == sorted(f"case {i}" for i in range(60))
    for app in apps:
        app.store.engine.dispose()


async def test_an_idle_holder_does_not_write_its_lease_every_second(make_app, tmp_path: Path, monkeypatch) -> None:
    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    calls: list[str] = []
    real = lease.take

    def counting(store: Any, name: str, holder: str, ttl: float) -> tuple[str | None, bool]:
        calls.append(holder)
        return real(store, name, holder, ttl)

    monkeypatch.setattr(lease, "take", counting)
    for _ in range(5):  # the daemon drains once a second while idle
        assert await a.pipeline.drain() == []
    assert calls == [a.pipeline.holder]  # renewed once; the next store write is due after lease_ttl / 3
    for _ in range(3):  # a process that is not the holder asks every time, to take over at once
        await b.pipeline.drain()
    assert calls[1:] == [b.pipeline.holder] * 3


async def test_a_one_shot_command_waits_for_another_and_then_drains_what_it_left(make_app, tmp_path: Path) -> None:
    """Two MTA deliveries at once: the second waits for the first instead of leaving its mail
    pending for a daemon that may not exist, and takes whatever else was left waiting."""
    from svcbridge import RawMessage
    from svcbridge.errors import PipelineBusy

    first, second = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    assert first.pipeline.take_lease() is None  # an ingest at work
    left = first.store.journal_insert(RawMessage(channel="email", source="ingest", external_id="x0",
                                                 raw=eml(subject="left behind", msgid="<x0@x>")))
    mine = second.store.journal_insert(RawMessage(channel="email", source="ingest", external_id="x1",
                                                  raw=eml(subject="mine", msgid="<x1@x>")))

    async def first_finishes() -> None:
        await asyncio.sleep(0.3)
        first.pipeline.close()

    finishing = asyncio.create_task(first_finishes())
    outcome = await second.pipeline.process(mine.journal_id, wait=5.0)
    await finishing
    assert outcome.status == "created" and pending(second) == 0
    assert sorted(tk.subject for tk in second.store.list_tickets()) == ["left behind", "mine"]
    assert second.store.journal_row(left.journal_id)["status"] == "processed"
    # a daemon is never waited for: its pipeline loop takes the entry within a second
    second.pipeline.close()
    daemon = replica(make_app, tmp_path, "c")
    daemon.pipeline.holder = lease.new_holder("daemon")
    assert daemon.pipeline.take_lease() is None
    third = second.store.journal_insert(RawMessage(channel="email", source="ingest", external_id="x2", raw=eml()))
    started = asyncio.get_running_loop().time()
    with contextlib.suppress(PipelineBusy):
        await second.pipeline.process(third.journal_id, wait=5.0)
        raise AssertionError("processed beside a daemon")
    assert asyncio.get_running_loop().time() - started < 1.0


def test_an_ingest_after_one_killed_mid_way_processes_both(tmp_path: Path, monkeypatch) -> None:
    """The MTA's first ingest died holding the lease (kill -9): the next one releases it and
    processes its own mail and the one left behind."""
    from test_cli import CONFIG, run

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(CONFIG.format(d=tmp_path))
    first = run(cfg, "ingest", "-", input=eml(subject="first", msgid="<k1@x>"))
    assert first.exit_code == 0
    from svcbridge.settings import load_settings
    from svcbridge.store import db
    from svcbridge.store.repo import Store

    store = Store(db.make_engine(load_settings(str(cfg)).db_url))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    with store.tx() as conn:  # what the killed ingest left: its lease, and a journaled mail
        conn.execute(t.leases.insert().values(name="pipeline", holder=f"{lease.HOST}:{dead}:1:oneshot-gone",
                                              expires_at=utcnow() + timedelta(hours=1)))
    from svcbridge import RawMessage

    store.journal_insert(RawMessage(channel="email", source="ingest", external_id="k2",
                                    raw=eml(subject="left behind", msgid="<k2@x>")))
    res = run(cfg, "ingest", "-", input=eml(subject="third", msgid="<k3@x>"))
    assert res.exit_code == 0 and res.stdout.strip() == "SB-000003", res.stdout + res.stderr
    assert len(store.pending_journal(10)) == 0


async def test_a_slow_batch_keeps_its_lease(make_app, tmp_path: Path) -> None:
    """A batch longer than lease_ttl (a slow enrichment lookup) renews the lease as it goes: the other
    process cannot take it from under it, and the batch commits once."""
    from svcbridge import hookimpl
    from svcbridge.plugins import make_plugin_manager

    class Slow:
        __name__ = "slow"

        @hookimpl
        def enrich_ticket(self, draft):
            import time

            time.sleep(0.7)

    a = replica(make_app, tmp_path, "a", pm=make_plugin_manager(extra=(Slow(),)), pipeline={"lease_ttl": 5})
    b = replica(make_app, tmp_path, "b", pipeline={"lease_ttl": 5})
    drop(a.box, mails(9))  # ~6.3 s of enrichment in one batch, more than the 5 s lease
    await a.poll_sources_once()
    seen: list[str | None] = []

    async def other_replica() -> None:
        for _ in range(400):  # bounded: a failure must not hang the suite
            if not (pending(b) or not seen):
                return
            seen.append(await asyncio.to_thread(b.pipeline.take_lease))
            await asyncio.sleep(0.25)

    # a holds the lease before b starts asking: otherwise b could win the first race (both ask from
    # threads at once), a's drain would find it busy and b, which never drains, would wait for ever
    assert await asyncio.to_thread(a.pipeline.take_lease) is None
    watcher = asyncio.create_task(other_replica())
    outcomes = await a.pipeline.drain()
    await watcher
    assert len(outcomes) == 9 and a.store.count_tickets() == 9
    assert sorted(tk.id for tk in a.store.list_tickets()) == list(range(1, 10))  # no numbers burnt
    assert None not in seen  # b never got it while a worked


async def test_a_stale_holder_cannot_quarantine_either(make_app, tmp_path: Path) -> None:
    """The store stage fails on a row and the lease is gone by then: the quarantine write is fenced
    like the batch, so the entry stays pending for the new holder instead of being parked by a
    process that no longer owns the journal."""
    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    drop(a.box, mails(1))
    await a.poll_sources_once()

    def fail_after_losing_the_lease(plans: list[Any], write: Callable[[list[Any]], None]) -> None:
        with a.store.tx() as conn:
            conn.execute(update(t.leases).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert b.pipeline.take_lease() is None
        raise ValueError("a bad row")

    spy_writer(a, write=fail_after_losing_the_lease)
    assert await a.pipeline.drain() == []
    assert pending(a) == 1 and a.store.quarantine_list() == []
    assert [o.status for o in await b.pipeline.drain()] == ["created"]


async def test_a_stale_holder_that_gets_the_lease_back_records_nothing_twice(make_app, tmp_path: Path) -> None:
    """a pauses past lease_ttl with a batch decided; b takes over, does the work and stops cleanly;
    a takes the free lease again on its next renewal. The lease alone would let a's stale batch
    through: the commit also checks that every entry is still pending, and refuses."""
    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    drop(a.box, mails(4))
    await a.poll_sources_once()
    assert a.pipeline.take_lease() is None
    refused = []

    def paused(plans: list[Any], real: Callable[[list[Any]], None]) -> None:
        with a.store.tx() as conn:  # a's lease runs out while it is paused
            conn.execute(update(t.leases).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert len(asyncio.run(b.pipeline.drain())) == 4  # b takes over and does the work
        b.pipeline.close()  # and gives the lease back
        # a, awake, takes the free lease again (as lease.keep() does once a third of lease_ttl passed)
        assert lease.acquire(a.store, "pipeline", a.pipeline.holder, 60.0) is None
        try:
            real(plans)
        except Exception as exc:
            refused.append(exc)
            raise

    spy_writer(a, write=paused)
    assert await a.pipeline.drain() == []
    assert [type(e).__name__ for e in refused] == ["PipelineBusy"]
    assert a.store.count_tickets() == 4 and pending(a) == 0
    with a.store.engine.connect() as conn:
        statuses = [r[0] for r in conn.execute(t.journal.select().with_only_columns(t.journal.c.status))]
    assert statuses == ["processed"] * 4  # not "duplicate": a recorded nothing


async def test_a_replica_without_the_lease_keeps_no_parse_workers(make_app, tmp_path: Path) -> None:
    """Intake runs in every replica, the pipeline in one: a backlog polled by a replica without the
    lease starts no workers there, and workers it still has (it held the lease before) are let go
    after the idle time even though it no longer drains."""
    from svcbridge import parsepool

    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    assert a.pipeline.take_lease() is None
    assert b.pipeline.take_lease() == a.pipeline.holder
    drop(b.box, mails(parsepool.MIN_BATCH + 4))
    await b.poll_sources_once()
    assert b.pipeline.workers._starter is None and b.pipeline.workers.pool is None

    class Idle:
        closed = False

        def close(self) -> None:
            self.closed = True

    idle = Idle()
    b.pipeline.workers.pool = idle  # type: ignore[assignment]
    b.pipeline.workers.used -= parsepool.IDLE_S + 1
    assert await b.pipeline.drain() == []
    assert idle.closed and b.pipeline.workers.pool is None


async def test_a_batch_decided_before_a_lease_gap_is_not_committed(make_app, tmp_path: Path) -> None:
    """a decides a batch (a reply whose original it has not seen: a new ticket), pauses past
    lease_ttl; meanwhile b stores the original; a takes the lease anew. Its entries are still pending,
    but its decision is stale: the commit is refused and the reply, read again, threads."""
    from svcbridge.pipeline import Batch

    a, b = replica(make_app, tmp_path, "a"), replica(make_app, tmp_path, "b")
    reply = eml(subject="Re: Printer jams", msgid="<reply@x>", extra="In-Reply-To: <orig@x>\r\n")
    drop(a.box, {"r": reply})
    await a.poll_sources_once()  # entry 1: the reply
    assert a.pipeline.take_lease() is None

    async def b_stores_the_original() -> None:
        drop(b.box, {"o": eml(subject="Printer jams", msgid="<orig@x>")})
        await b.poll_sources_once()  # entry 2
        assert b.pipeline.take_lease() is None
        raws = b.store.load_raws([2])
        batch = Batch([2], raws, asyncio.ensure_future(b.pipeline.workers.parse([2], raws)))
        assert [o.status for o in await b.pipeline.process_batch(batch)] == ["created"]
        b.pipeline.close()

    def paused(plans: list[Any], real: Callable[[list[Any]], None]) -> None:
        assert [p.status for p in plans] == ["created"]  # a's view: the original is unknown
        with a.store.tx() as conn:  # a's lease runs out while it is paused
            conn.execute(update(t.leases).values(expires_at=utcnow() - timedelta(seconds=1)))
        asyncio.run(b_stores_the_original())
        a.pipeline.lease.forget()  # a's next renewal asks the store: the lease is free
        assert a.pipeline.take_lease() is None  # taken anew
        real(plans)

    writer = spy_writer(a, write=paused)
    assert await a.pipeline.drain() == []  # refused
    a.pipeline.writer = writer
    (out,) = await a.pipeline.drain()
    assert out.status == "followup" and a.store.count_tickets() == 1


def test_taking_a_lease_tells_a_renewal_from_a_new_take(make_app, tmp_path: Path) -> None:
    a = replica(make_app, tmp_path, "a")
    assert lease.take(a.store, "x", "h1", 60) == (None, True)  # new row
    assert lease.take(a.store, "x", "h1", 60) == (None, False)  # renewed without a gap
    assert lease.take(a.store, "x", "h2", 60) == ("h1", False)
    with a.store.tx() as conn:
        conn.execute(update(t.leases).where(t.leases.c.name == "x").values(expires_at=utcnow() - timedelta(seconds=1)))
    assert lease.take(a.store, "x", "h1", 60) == (None, True)  # its own, but run out: a gap
    assert lease.acquire(a.store, "x", "h1", 60) is None
