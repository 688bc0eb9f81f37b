"""The straight line from the journal to a stored ticket: threading, duplicates, quarantine, status."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import structlog

from conftest import eml
from svcbridge import DeliveryResult, RawMessage, StatusUpdate, TicketDraft, TicketState, hookimpl
from svcbridge.plugins import make_plugin_manager


def drop(tmp_path: Path, name: str, data: bytes) -> None:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / name).write_bytes(data)


def outgoing(tmp_path: Path) -> list[bytes]:
    d = tmp_path / "outgoing"
    return [p.read_bytes() for p in sorted(d.glob("*.eml"))] if d.exists() else []


async def test_mail_becomes_ticket_with_trail_and_ack(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "a", eml())
    res = await app.run_once()
    assert res["processed"] == 1
    (t,) = app.store.list_tickets()
    assert (t.ref, t.subject, t.contact.email, t.state) == ("SB-000001", "Printer jams", "alice@example.com", "new")
    full = app.store.get_ticket("SB-000001")
    assert [e.type for e in full.events] == ["received", "delivered", "notified"]
    assert ("local", "ticket", "SB-000001") in [(x.system, x.kind, x.value) for x in full.links]
    (ack,) = outgoing(tmp_path)
    assert b"In-Reply-To: <m1@example.com>" in ack and b"[SB-000001]" in ack
    assert not list((tmp_path / "maildir" / "new").iterdir())  # acknowledged after journaling


async def test_the_local_sink_records_inline_in_the_store_transaction(make_app, tmp_path: Path, monkeypatch) -> None:
    """``local`` is svcbridge's own store: its create and update rows are written done in the commit
    that stores the ticket (links, trail entry), and the delivery loop never calls it for them."""
    from svcbridge_local import LocalSink

    async def no_loop_delivery(self, item):
        raise AssertionError("the delivery loop must not see local rows recorded inline")

    monkeypatch.setattr(LocalSink, "deliver", no_loop_delivery)
    app = make_app()
    drop(tmp_path, "1", eml())
    drop(tmp_path, "2", eml(subject="Re: Printer jams", msgid="<m2@example.com>",
                            extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    rows = [r for r in app.delivery.outbox.list() if r["target"] == "local"]
    assert [(r["kind"], r["status"], r["attempts"]) for r in rows] == [("create", "done", 0), ("update", "done", 0)]
    assert all(r["done_at"] is not None for r in rows)
    t = app.store.get_ticket("SB-000001")
    delivered = [e.data for e in t.events if e.type == "delivered"]
    assert [(d["target"], d["kind"], d["inline"]) for d in delivered] == [("local", "create", True), ("local", "update", True)]
    assert [ln.value for ln in t.links if ln.system == "local"] == ["SB-000001"]
    # `outbox replay` of a local row goes through deliver, which gives the same answer
    monkeypatch.undo()
    assert app.delivery.outbox.replay(rows[0]["id"])
    await app.delivery.drain()
    t = app.store.get_ticket("SB-000001")
    assert [ln.value for ln in t.links if ln.system == "local"] == ["SB-000001"]  # no second link


async def test_followup_by_references_and_subject_tag(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "1", eml())
    drop(tmp_path, "2", eml(subject="Re: Printer jams", msgid="<m2@example.com>",
                            extra="In-Reply-To: <m1@example.com>\r\nReferences: <m1@example.com>\r\n"))
    drop(tmp_path, "3", eml(subject="Still broken [SB-000001]", msgid="<m3@example.com>"))
    await app.run_once()
    assert app.store.count_tickets() == 1
    t = app.store.get_ticket("SB-000001")
    assert [e.type for e in t.events].count("message_received") == 2
    # the local sink received each follow-up as an update, in order
    updates = [r for r in app.delivery.outbox.list() if r["kind"] == "update"]
    assert [r["payload"]["subject"] for r in updates] == ["Re: Printer jams", "Still broken [SB-000001]"]
    assert all(r["status"] == "done" for r in updates)
    # only the first message was acknowledged
    assert len(outgoing(tmp_path)) == 1


async def test_redelivery_same_bytes_and_same_message_id_make_no_second_ticket(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "1", eml())
    drop(tmp_path, "2", eml())  # same bytes, other file (e.g. a second watched mailbox)
    drop(tmp_path, "3", b"Received: from relay by mx; Mon, 1 Jan 2026 00:00:00 +0000\r\n" + eml())
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created", "duplicate", "duplicate"]
    assert app.store.count_tickets() == 1
    assert len(outgoing(tmp_path)) == 1


async def test_same_source_and_external_id_is_journaled_once(make_app) -> None:
    app = make_app()
    ctx = app.context("maildir")
    raw = RawMessage(channel="email", source="maildir", external_id="x1", raw=eml())
    first, second = await ctx.submit(raw), await ctx.submit(raw)
    assert first.new and not second.new and first.journal_id == second.journal_id


@pytest.mark.parametrize(("policy", "tickets", "state"), [("reopen", 1, "in_progress"), ("new_linked", 2, "resolved")])
async def test_reply_to_resolved_ticket(make_app, tmp_path: Path, policy: str, tickets: int, state: str) -> None:
    app = make_app(pipeline={"on_closed_reply": policy})
    drop(tmp_path, "1", eml())
    await app.run_once()
    await app.pipeline.apply_status_update(
        StatusUpdate(ticket_ref="SB-000001", system="local", state=TicketState.RESOLVED, external_event_id="e1")
    )
    drop(tmp_path, "2", eml(subject="Re: Printer jams", msgid="<m2@example.com>", extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    assert app.store.count_tickets() == tickets
    assert app.store.get_ticket("SB-000001").state == state
    if policy == "new_linked":
        t2 = app.store.get_ticket("SB-000002")
        assert ("svcbridge", "follows", "SB-000001") in [(x.system, x.kind, x.value) for x in t2.links]
    else:
        assert "reopened" in [e.type for e in app.store.get_ticket("SB-000001").events]


class Boom:
    __name__ = "boom"

    def __init__(self) -> None:
        self.broken = True

    @hookimpl
    def classify_ticket(self, draft, ticket):
        if self.broken and "poison" in draft.subject:
            raise ValueError("cannot classify this")


async def test_stage_failure_quarantines_one_message_and_the_rest_go_on(make_app, tmp_path: Path) -> None:
    boom = Boom()
    app = make_app(pm=make_plugin_manager(extra=(boom,)))
    drop(tmp_path, "1", eml(subject="poison pill", msgid="<p@x>"))
    drop(tmp_path, "2", eml(subject="fine", msgid="<f@x>"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["quarantined", "created"]
    (q,) = app.store.quarantine_list()
    assert (q["stage"], q["plugin"]) == ("classify", "boom")
    assert "cannot classify this" in q["error"]
    assert app.store.load_raw(q["journal_id"]).raw == eml(subject="poison pill", msgid="<p@x>")
    # after the fix, retry makes the ticket
    boom.broken = False
    jid = app.store.quarantine_release(q["id"], "retry")
    outcome = await app.pipeline.process(jid)
    assert outcome.status == "created" and app.store.count_tickets() == 2
    assert app.store.quarantine_list() == []


async def test_unparseable_channel_is_quarantined(make_app) -> None:
    app = make_app()
    ctx = app.context("test")
    await ctx.submit(RawMessage(channel="carrier-pigeon", source="test", external_id="1", raw=b"coo"))
    await ctx.submit(RawMessage(channel="webhook", source="test", external_id="2", raw=b"{not json"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["quarantined", "quarantined"]
    reasons = [q["error"] for q in app.store.quarantine_list()]
    assert "no plugin parses channel 'carrier-pigeon'" in reasons[0]
    plugins = [q["plugin"] for q in app.store.quarantine_list()]
    assert plugins == [None, "webhook"]


async def test_status_updates_notify_once_and_respect_the_state_machine(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "1", eml())
    await app.run_once()
    upd = StatusUpdate(ticket_ref="SB-000001", system="local", state=TicketState.IN_PROGRESS,
                       public_reply="A technician is on the way.", external_event_id="rt-55")
    assert await app.pipeline.apply_status_update(upd) is True
    assert await app.pipeline.apply_status_update(upd) is False  # redelivered webhook
    await app.delivery.drain()
    mails = outgoing(tmp_path)
    assert len(mails) == 3  # ack, status change, agent reply
    assert b"A technician is on the way." in mails[2]
    # new -> closed -> on_site is not a legal move; the refused transition changes nothing
    await app.pipeline.apply_status_update(StatusUpdate(ticket_ref="SB-000001", system="local",
                                                        state=TicketState.CLOSED, external_event_id="c"))
    await app.pipeline.apply_status_update(StatusUpdate(ticket_ref="SB-000001", system="local",
                                                        state=TicketState.ON_SITE, external_event_id="o"))
    assert app.store.get_ticket("SB-000001").state == "closed"


async def test_status_update_by_external_ticket_id(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "1", eml())
    await app.run_once()
    upd = StatusUpdate(system="local", external_ticket_id="SB-000001", state=TicketState.RESOLVED, external_event_id="1")
    assert await app.pipeline.apply_status_update(upd)
    assert app.store.get_ticket("SB-000001").state == "resolved"
    unknown = StatusUpdate(system="local", external_ticket_id="nope", state=TicketState.RESOLVED)
    assert not await app.pipeline.apply_status_update(unknown)


async def test_no_acknowledgement_to_automated_mail(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "1", eml(sender="MAILER-DAEMON@mx.example.com", msgid="<b@x>"))
    drop(tmp_path, "2", eml(extra="Auto-Submitted: auto-replied\r\n", msgid="<oo@x>"))
    res = await app.run_once()
    # the auto-reply concerns no ticket: it opens none (issue 13 item 8, plugins/svcbridge_email/bounce.py)
    assert [o.status for o in res["outcomes"]] == ["created", "quarantined"]
    assert app.store.count_tickets() == 1
    assert outgoing(tmp_path) == []


async def test_routing_rules(make_app, tmp_path: Path) -> None:
    class Other:
        name = "other"

        async def deliver(self, item):
            return DeliveryResult()

        async def reconcile(self, item):
            return None

    class P:
        __name__ = "otherplugin"

        @hookimpl
        def register_sinks(self, register):
            register(Other())

    app = make_app(pm=make_plugin_manager(extra=(P(),)),
                   routing={"default": ["local"], "rules": [{"channel": "webhook", "sinks": ["other", "local"]}]})
    routes = [app.pipeline.route(app.pipeline._new_ticket(i, TicketDraft(channel=c)), "src")
              for i, c in enumerate(("email", "webhook"), 1)]
    assert routes == [["local"], ["other", "local"]]
    ctx = app.context("hooks")
    body = b'{"id": "w1", "subject": "Fan noise", "contact": {"email": "bob@example.com"}}'
    await ctx.submit(RawMessage(channel="webhook", source="hooks", external_id="w1", raw=body))
    await app.run_once()
    targets = sorted(r["target"] for r in app.delivery.outbox.list() if r["kind"] == "create")
    assert targets == ["local", "other"]


async def test_log_lines_are_bound_to_plugin_message_and_ticket(make_app, tmp_path: Path) -> None:
    import io
    import json

    import structlog

    from svcbridge import log as logmod

    class Chatty:
        __name__ = "chatty"

        @hookimpl
        def enrich_ticket(self, draft):
            structlog.get_logger("chatty").info("looked_up_warranty", serial="SN1")

    app = make_app(pm=make_plugin_manager(extra=(Chatty(),)))
    buf = io.StringIO()
    logmod.configure("json", "info", stream=buf)
    drop(tmp_path, "1", eml())
    await app.run_once()
    lines = [json.loads(x) for x in buf.getvalue().splitlines() if x.startswith("{")]
    mine = next(x for x in lines if x["event"] == "looked_up_warranty")
    assert (mine["plugin"], mine["hook"], mine["journal_id"], mine["message_id"]) == ("chatty", "enrich_ticket", 1, "1")
    processed = next(x for x in lines if x["event"] == "processed")
    assert processed["ticket"] == "SB-000001" and "plugin" not in processed
    delivered = next(x for x in lines if x["event"] == "delivered")
    assert delivered["ticket"] == "SB-000001" and delivered["target"] == "local"


async def test_one_bad_row_does_not_sink_the_batch(make_app, tmp_path: Path, monkeypatch) -> None:
    app = make_app()
    for i in range(3):
        drop(tmp_path, f"{i}", eml(subject=f"case {i}", msgid=f"<b{i}@x>"))
    from svcbridge.store.batch import BatchWriter

    real = BatchWriter.flush

    def flaky(self, conn):  # the store stage writes a batch's rows in flush()
        if any(r["value"] == "<b1@x>" for r in self.links):
            raise ValueError("value too long for column")  # what PostgreSQL says about an oversize value
        return real(self, conn)

    monkeypatch.setattr(BatchWriter, "flush", flaky)
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created", "quarantined", "created"]
    (q,) = app.store.quarantine_list()
    assert q["stage"] == "store" and "value too long" in q["error"]
    assert app.store.count_tickets() == 2
    # the journal entry is intact for a retry after the fix
    monkeypatch.setattr(BatchWriter, "flush", real)
    assert (await app.pipeline.process(app.store.quarantine_release(q["id"], "retry"))).status == "created"


async def test_store_outage_leaves_the_batch_pending(make_app, tmp_path: Path, monkeypatch) -> None:
    from svcbridge import StoreUnavailable

    app = make_app()
    drop(tmp_path, "1", eml())
    await app.poll_sources_once()

    def down(*a, **k):
        raise StoreUnavailable("database is locked")

    from svcbridge.store.batch import BatchWriter

    real = BatchWriter.flush
    monkeypatch.setattr(BatchWriter, "flush", down)  # the store stage's writes
    with pytest.raises(StoreUnavailable):
        await app.pipeline.drain()
    assert app.store.journal_counts() == {"pending": 1}
    monkeypatch.setattr(BatchWriter, "flush", real)
    assert [o.status for o in await app.pipeline.drain()] == ["created"]


async def test_submit_many_journals_once_per_source_and_id(make_app) -> None:
    app = make_app()
    ctx = app.context("bulk")
    a = RawMessage(channel="email", source="bulk", external_id="a", raw=eml(msgid="<a@x>"))
    b = RawMessage(channel="email", source="bulk", external_id="b", raw=eml(msgid="<b@x>"))
    first = await ctx.submit_many([a, b, a])
    assert [r.new for r in first] == [True, True, False] and first[0].journal_id == first[2].journal_id
    again = await ctx.submit_many([b])
    assert again[0].new is False and again[0].journal_id == first[1].journal_id
    assert app.store.journal_counts() == {"pending": 2}


BOOM_PARSER = '''
from svcbridge import hookimpl


@hookimpl(tryfirst=True)
def parse_message(raw):
    if b"X-Boom: 1" in (raw.raw or b""):
        raise ValueError("boom in the parser")
    return None
'''


async def test_parse_workers_keep_quarantine_per_message(make_app, tmp_path: Path) -> None:
    """A large batch parsed in worker processes: same outcomes, and a parser exception in a worker
    quarantines only its own message, naming the plugin, with the worker's traceback kept."""
    import asyncio

    from svcbridge import parsepool

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "boomparser.py").write_text(BOOM_PARSER)
    app = make_app(plugins_dir=str(plugins), pipeline={"parse_workers": 2, "batch": 100})
    n = parsepool.MIN_BATCH + 8
    for i in range(n):
        extra = "X-Boom: 1\r\n" if i == 5 else ""
        drop(tmp_path, f"{i:03d}", eml(subject=f"case {i}", msgid=f"<p{i}@x>", extra=extra))
    await app.poll_sources_once()
    assert app.pipeline.workers.start()
    pool = app.pipeline.workers.pool
    assert pool is not None
    for _ in range(600):  # the workers' start-up; no timing is asserted
        if pool.ready:
            break
        await asyncio.sleep(0.05)
    try:
        outcomes = await app.pipeline.drain()
        assert app.pipeline.workers.pool is pool  # the batch went through the pool, which stayed healthy
        app.pipeline.workers.used -= parsepool.IDLE_S + 1  # a quiet spell: the workers are let go
        assert await app.pipeline.drain() == [] and app.pipeline.workers.pool is None
    finally:
        app.pipeline.close()
    assert [o.status for o in outcomes].count("created") == n - 1
    assert outcomes[5].status == "quarantined"
    (q,) = app.store.quarantine_list()
    assert (q["stage"], q["plugin"]) == ("parse", "boomparser")
    assert "boom in the parser" in q["error"] and "raised in a parse worker" in q["traceback"]
    (t,) = [t for t in app.store.list_tickets() if t.subject == "case 7"]
    assert t.contact.email == "alice@example.com"


async def test_a_source_expecting_a_backlog_starts_the_workers_ahead(make_app, tmp_path: Path) -> None:
    """IntakeContext.expect: a Maildir listing of MIN_BATCH mails or more starts the parse workers
    while the source still reads, so the first batch finds them up; a few mails start nothing."""
    from svcbridge import parsepool

    app = make_app(pipeline={"parse_workers": 1, "batch": 100})
    assert app.pipeline.take_lease() is None  # as the daemon's pipeline loop does before any poll
    for i in range(3):
        drop(tmp_path, f"a{i:03d}", eml(subject=f"few {i}", msgid=f"<f{i}@x>"))
    await app.poll_sources_once()
    workers = app.pipeline.workers
    assert workers._starter is None and workers.pool is None
    for i in range(parsepool.MIN_BATCH):
        drop(tmp_path, f"b{i:03d}", eml(subject=f"many {i}", msgid=f"<m{i}@x>"))
    try:
        await app.poll_sources_once()
        assert workers._starter is not None  # started by the listing, before any drain
        workers._starter.join()
        assert workers.pool is not None
        outcomes = await app.pipeline.drain()
        assert [o.status for o in outcomes] == ["created"] * (3 + parsepool.MIN_BATCH)
    finally:
        app.pipeline.close()
    assert workers.pool is None and workers._starter is None


async def test_a_pool_that_cannot_start_leaves_parsing_here(make_app, tmp_path: Path, monkeypatch) -> None:
    """No /dev/shm, a refused fork: the batch is parsed in process, and after a few tries no more pools."""
    from svcbridge import parsepool

    def refuse(*a, **kw):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(parsepool.concurrent.futures, "ProcessPoolExecutor", refuse)
    app = make_app(pipeline={"parse_workers": 2, "batch": 100})
    n = parsepool.MIN_BATCH + 2
    for i in range(n):
        drop(tmp_path, f"{i:03d}", eml(subject=f"case {i}", msgid=f"<s{i}@x>"))
    await app.poll_sources_once()
    outcomes = await app.pipeline.drain()
    assert [o.status for o in outcomes] == ["created"] * n
    for _ in range(parsepool.MAX_FAILURES):
        app.pipeline.workers.start()
    assert app.pipeline.workers.off and not app.pipeline.workers.start()  # gave up, quietly


def test_parse_workers_log_like_the_daemon_and_redact_secrets(tmp_path: Path, capfd) -> None:
    """A worker is a fresh interpreter: its log lines must be configured (format, level, redaction)."""
    from svcbridge import parsepool
    from svcbridge.settings import load_settings

    settings = load_settings(None, data_dir=tmp_path, log={"format": "json", "level": "warning"},
                             plugins={"webhook": {"secret": "s3cr3t-TOKEN-0123456789"}})
    saved, sigint = structlog.get_config(), signal.getsignal(signal.SIGINT)
    try:
        parsepool._init(settings, [], [], os.getpid())  # what a worker runs first
        structlog.get_logger("x").info("quiet")  # below the level
        structlog.get_logger("x").warning("loud", token="s3cr3t-TOKEN-0123456789")
    finally:
        structlog.configure(**saved)
        signal.signal(signal.SIGINT, sigint)
        parsepool._pm = None
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1
    line = json.loads(err[0])
    assert line["event"] == "loud" and "s3cr3t" not in err[0]


async def test_batches_are_bounded_by_bytes_as_well_as_by_count(make_app, tmp_path: Path) -> None:
    """Large mails make smaller batches, not a larger process: the Maildir source journals at most
    ``batch_bytes`` a transaction, the pipeline takes at most ``[pipeline] batch_bytes`` of raw mail a
    batch, and a single mail over the bound is a batch of its own (never stuck)."""
    from svcbridge_email.maildir import MaildirSource

    big = "x" * 300_000
    for i in range(5):
        drop(tmp_path, f"{i:03d}", eml(subject=f"scan {i}", msgid=f"<big{i}@x>", body=big))
    drop(tmp_path, "005", eml(subject="huge", msgid="<huge@x>", body="y" * 1_200_000))
    src = MaildirSource("maildir", tmp_path / "maildir")
    src.batch_bytes = 700_000
    entries = sorted(os.scandir(tmp_path / "maildir" / "new"), key=lambda e: e.name)
    chunks, total = src._chunks(entries)
    assert [len(c) for c in chunks] == [2, 2, 1, 1]  # two 300 KB files fit, the 1.2 MB one alone
    assert total == sum(e.stat().st_size for e in entries)

    app = make_app(pipeline={"batch": 100, "batch_bytes": 700_000, "parse_workers": 0})
    await app.poll_sources_once()
    first = app.store.pending_journal(100, 700_000)
    assert len(first) == 2  # 100 by count, two by bytes
    assert len(app.store.pending_journal(100)) == 6  # no byte bound: the count alone
    outcomes = await app.pipeline.drain()
    assert [o.status for o in outcomes] == ["created"] * 6  # the 1.2 MB mail went through, alone
    assert app.store.pending_journal(100, 700_000) == []


def test_parse_chunks_balance_by_count_for_small_mails_and_by_bytes_for_large(make_app) -> None:
    """A few chunks per worker: 200 small mails in chunks of 25 (never under 4), four 4 MB scans one
    chunk each (they must not all go to one worker)."""
    from svcbridge import parsepool

    app = make_app()
    pool = parsepool.ParsePool(app.settings, app.pm, 2)  # no process starts before a submit
    try:
        def raws(n: int, size: int) -> list[tuple[int, RawMessage]]:
            return [
                (i, RawMessage(channel="email", source="t", external_id=str(i), raw=b"x" * size))
                for i in range(n)
            ]

        assert [len(c) for c in pool._chunks(raws(200, 700))] == [25] * 8
        assert [len(c) for c in pool._chunks(raws(10, 700))] == [4, 4, 2]
        assert [len(c) for c in pool._chunks(raws(4, 4_000_000))] == [1, 1, 1, 1]
    finally:
        pool.close()


async def test_a_few_large_mails_are_parsed_in_the_workers(make_app, tmp_path: Path) -> None:
    """Under MIN_BATCH mails but over MIN_BYTES: a pool that is up parses them (a scan's MIME is worth
    a second core), though they alone do not start one; one mail is parsed in process."""
    import asyncio

    from svcbridge import parsepool

    app = make_app(pipeline={"parse_workers": 1})
    size = parsepool.MIN_BYTES // 2 + 1000
    for i in range(2):
        drop(tmp_path, f"{i:03d}", eml(subject=f"scan {i}", msgid=f"<s{i}@x>", body="z" * size))
    drop(tmp_path, "002", eml(subject="small", msgid="<small@x>"))
    workers = app.pipeline.workers
    try:
        await app.poll_sources_once()  # expect(3, ~1 MiB): not a backlog worth starting workers for
        assert workers._starter is None and workers.pool is None
        assert workers.start()  # up anyway (an earlier backlog)
        assert workers.pool is not None
        for _ in range(600):  # the workers' start-up; no timing is asserted
            if workers.pool.ready:
                break
            await asyncio.sleep(0.05)
        ids = app.store.pending_journal(100)
        raws = app.store.load_raws(ids)
        parsed = await workers.parse(ids[:2], raws)
        assert sorted(parsed) == ids[:2] and all(d.subject.startswith("scan") for d in parsed.values())
        assert await workers.parse(ids[2:], raws) == {}  # one small mail: parsed in process
    finally:
        app.pipeline.close()


async def test_the_next_batch_is_checked_against_the_one_stored_before_it(make_app, tmp_path: Path) -> None:
    """While a batch is stored the next one is already loaded and parsing (look-ahead); its duplicate
    and threading checks still see everything the batch before it committed."""
    app = make_app(pipeline={"batch": 2})
    first = eml(subject="Printer jams", msgid="<orig@x>")
    drop(tmp_path, "001", first)
    drop(tmp_path, "002", eml(subject="Fan noise", msgid="<fan@x>"))
    drop(tmp_path, "003", first)  # the same bytes again (another mailbox, a re-import)
    drop(tmp_path, "004", eml(subject="Re: Printer jams", msgid="<reply@x>", extra="In-Reply-To: <orig@x>\r\n"))
    drop(tmp_path, "005", eml(subject="Disk full", msgid="<disk@x>"))
    await app.poll_sources_once()
    outcomes = await app.pipeline.drain()
    assert [o.status for o in outcomes] == ["created", "created", "duplicate", "followup", "created"]
    assert outcomes[2].ticket_ref == outcomes[3].ticket_ref == outcomes[0].ticket_ref
    assert app.store.pending_journal(100) == []


async def test_an_entry_pending_again_is_not_left_behind_the_backlog(make_app, tmp_path: Path) -> None:
    """``quarantine retry`` sets an old entry pending again while batches are stored: the look-ahead
    takes the oldest pending entries (not only those after the current batch), so it is processed
    one batch later, not after the whole backlog."""
    from sqlalchemy import update

    from svcbridge.store import schema as t

    app = make_app(pipeline={"batch": 2, "parse_workers": 0})
    for i in range(8):
        drop(tmp_path, f"{i:03d}", eml(subject=f"case {i}", msgid=f"<o{i}@x>"))
    await app.poll_sources_once()
    with app.store.tx() as conn:  # entry 1 was quarantined earlier
        conn.execute(update(t.journal).where(t.journal.c.id == 1).values(status="quarantined"))
    from test_replicas import spy_writer

    calls = []

    def retry_during_first_batch(plans: list, write) -> None:
        if not calls:
            with app.store.tx() as conn:  # what `svcbridge quarantine retry 1` does meanwhile
                conn.execute(update(t.journal).where(t.journal.c.id == 1).values(status="pending"))
        calls.append([p.journal_id for p in plans])
        write(plans)

    spy_writer(app, write=retry_during_first_batch)
    outcomes = await app.pipeline.drain()
    assert [o.journal_id for o in outcomes] == [2, 3, 4, 5, 1, 6, 7, 8]
    assert calls == [[2, 3], [4, 5], [1, 6], [7, 8]]


def test_parse_workers_only_where_they_pay(make_app) -> None:
    """``worth``: one mail never (nothing to spread), a few large ones use a pool that is up, a pool is
    started only for a backlog (a PDF every few minutes must not start and stop processes)."""
    from svcbridge import parsepool

    mb = 1024 * 1024
    assert not parsepool.worth(1, 20 * mb) and not parsepool.worth(1, 20 * mb, start=True)
    assert parsepool.worth(2, 2 * mb) and not parsepool.worth(2, 2 * mb, start=True)
    assert parsepool.worth(3, 9 * mb, start=True)
    assert not parsepool.worth(10, 10_000) and parsepool.worth(parsepool.MIN_BATCH, 10_000, start=True)


def test_a_broken_pool_counts_once_and_the_early_start_never_waits(make_app) -> None:
    """A batch and the one looked ahead both see a pool break: one failure, not two. The early
    start's thread does not wait for the lock a batch holds while it starts a pool itself (which may
    join that thread: waiting would deadlock)."""
    from svcbridge import parsepool

    app = make_app()
    w = parsepool.Workers(app.settings, app.pm)

    class Broken:
        closed = 0

        def close(self) -> None:
            self.closed += 1

    broken = Broken()
    w.pool = broken  # type: ignore[assignment]
    w.failed(RuntimeError("worker killed"), broken)  # type: ignore[arg-type]
    w.failed(RuntimeError("worker killed"), broken)  # type: ignore[arg-type]
    assert w.failures == 1 and w.pool is None and broken.closed == 1
    with w._lock:  # a batch is starting a pool itself
        w.get_ready()
        assert w._starter is not None
        w._starter.join(timeout=10)
        assert not w._starter.is_alive()  # gave way at once
    assert w.pool is None
    w.close()


def test_content_hash_is_computed_once_and_follows_the_bytes() -> None:
    """Cached (three stages ask for it), but never stale: assigning raw or replacing it in a copy
    gives the new bytes' hash; equality and pickling (to the parse workers) are unaffected."""
    import hashlib
    import pickle

    raw = RawMessage(channel="email", source="t", external_id="1", raw=b"one")
    assert raw.content_hash == hashlib.sha256(b"one").hexdigest()
    raw.raw = b"two"
    assert raw.content_hash == hashlib.sha256(b"two").hexdigest()
    copy = raw.model_copy(update={"raw": b"three"})
    assert copy.content_hash == hashlib.sha256(b"three").hexdigest()
    assert raw.content_hash == hashlib.sha256(b"two").hexdigest()
    twin = RawMessage(channel="email", source="t", external_id="1", raw=b"two", received_at=raw.received_at)
    assert twin == raw  # one has its hash cached, the other not: still equal
    assert pickle.loads(pickle.dumps(raw)).content_hash == raw.content_hash


async def test_run_once_asks_for_the_lease_before_the_sources_say_what_is_coming(make_app, tmp_path: Path) -> None:
    """A Maildir lists its backlog before anything else happens in ``run --once``: the lease is asked
    for first, so the hint starts the workers here (the holder) instead of being ignored."""
    from svcbridge import parsepool

    app = make_app(pipeline={"parse_workers": 0})
    for i in range(parsepool.MIN_BATCH):
        drop(tmp_path, f"{i:03d}", eml(subject=f"many {i}", msgid=f"<l{i}@x>"))
    hinted = []
    app.pipeline.workers.get_ready = lambda: hinted.append(app.pipeline.runs_here)  # type: ignore[method-assign]
    res = await app.run_once()
    assert hinted == [True] and res["processed"] == parsepool.MIN_BATCH


def _slow_chunk(x: int) -> int:
    import time

    time.sleep(0.2)
    return x


async def test_a_pool_failing_under_one_batch_does_not_end_the_drain(make_app, tmp_path: Path) -> None:
    """The batch and the one looked ahead both have work queued on the pool; the first sees an
    ordinary failure (an answer that does not unpickle), and dropping the pool cancels the look-ahead's
    queued chunks. That batch is parsed here instead: a cancel must not end the drain (the daemon's
    pipeline task would die quietly while intake goes on journaling)."""
    import asyncio
    import concurrent.futures as cf
    import time

    class Failing:
        ready = True

        def __init__(self) -> None:
            self.executor = cf.ProcessPoolExecutor(1)
            self.calls = 0

        async def parse(self, raws: list) -> dict:
            self.calls += 1
            loop = asyncio.get_running_loop()
            futs = [loop.run_in_executor(self.executor, _slow_chunk, i) for i in range(4)]
            if self.calls == 1:
                await asyncio.sleep(0.05)
                raise RuntimeError("a result did not unpickle")
            await asyncio.gather(*futs)
            return {}

        def close(self) -> None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    app = make_app(pipeline={"batch": 40, "parse_workers": 1})
    for i in range(80):
        drop(tmp_path, f"{i:03d}", eml(subject=f"case {i}", msgid=f"<c{i}@x>"))
    await app.poll_sources_once()
    pool = Failing()
    app.pipeline.workers.pool = pool  # type: ignore[assignment]
    app.pipeline.workers.used = time.monotonic()
    try:
        outcomes = await app.pipeline.drain()
    finally:
        app.pipeline.close()
    assert [o.status for o in outcomes] == ["created"] * 80
    assert app.pipeline.workers.failures == 1 and app.pipeline.workers.pool is None


async def test_a_large_batch_waits_for_starting_workers_instead_of_parsing_in_process(make_app, tmp_path: Path) -> None:
    """Workers take a few tenths of a second to start; a backlog's first batch used to be parsed in the
    daemon's process meanwhile (its event loop busy for as long), now it waits for them (READY_WAIT)."""
    from svcbridge import parsepool

    app = make_app(pipeline={"parse_workers": 1})
    for i in range(parsepool.MIN_BATCH + 4):
        drop(tmp_path, f"{i:03d}", eml(subject=f"case {i}", msgid=f"<w{i}@x>"))
    workers = app.pipeline.workers
    try:
        await app.poll_sources_once()
        ids = app.store.pending_journal(100)
        raws = app.store.load_raws(ids)
        workers.close()  # whatever the poll's hint started: this test starts them itself
        assert workers.start()
        assert workers.pool is not None and not workers.pool.ready  # a process takes longer than this
        parsed = await workers.parse(ids, raws)
        assert sorted(parsed) == sorted(ids)  # parsed in the workers, not handed back ({})
    finally:
        app.pipeline.close()
