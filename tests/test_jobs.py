"""Durable jobs and timers, and ticket changes that reach the helpdesk (issue 11, items 3-5).

Each test builds its own plugin (a module-like object with hookimpls) on a fresh plugin manager and
drives the real pipeline, the real store and the real runner; the only fake is the vendor, which is
a Python flag the handler reads.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import eml
from helpdesk_helpers import Recorder, drop, plugin, recorder_plugin
from svcbridge import (
    AuthFailed,
    JobKind,
    NotReady,
    PermanentError,
    TicketChange,
    TimerKind,
)
from svcbridge.jobs import WorkRunner
from svcbridge.plugins import make_plugin_manager


async def test_an_enrichment_whose_vendor_is_down_creates_the_ticket_at_once_and_the_answer_later(
    make_app, tmp_path: Path
) -> None:
    vendor = {"up": False, "calls": 0}
    desk = Recorder()

    def enrich_ticket(draft, ticket, jobs):
        if ticket is None:  # a new ticket: look its warranty up, outside the batch
            jobs.enqueue("warranty.lookup", {"serial": "SN12345"})

    async def lookup(job):
        vendor["calls"] += 1
        if not vendor["up"]:
            raise NotReady("vendor portal down")
        assert job.ticket is not None and job.data == {"serial": "SN12345"}
        return TicketChange(labels={"warranty": "in", "warranty_until": "2027-05-01"}, note="In warranty.")

    kinds = plugin(
        "warranty",
        enrich_ticket=enrich_ticket,
        register_job_kinds=lambda register: register(
            JobKind("warranty.lookup", lookup, backoff_initial=0.5, backoff_max=0.5)
        ),
    )
    pm = make_plugin_manager(extra=(kinds, recorder_plugin(desk)))
    app = make_app(pm=pm, routing={"default": ["desk"]})
    drop(tmp_path, "a", eml())
    res = await app.run_once()
    assert res["processed"] == 1
    (t,) = app.store.list_tickets()
    assert t.labels == {}  # created at once, without the answer
    (job,) = app.work.jobs.list()
    assert (job["status"], job["attempts"], job["kind"]) == ("pending", 1, "warranty.lookup")
    assert "vendor portal down" in job["last_error"]
    assert [i.kind for i in desk.items] == ["create"]

    vendor["up"] = True
    await asyncio.sleep(0.6)  # past the backoff
    await app.run_once()
    t = app.store.get_ticket(t.ref)
    assert t.labels == {"warranty": "in", "warranty_until": "2027-05-01"}
    (ev,) = [e for e in t.events if e.type == "ticket_updated"]
    assert ev.actor == "warranty" and ev.data["plugin"] == "warranty"
    assert ev.data["changes"]["labels"]["warranty"] == {"from": None, "to": "in"}
    assert ev.data["note"] == "In warranty."
    update = [i for i in desk.items if i.kind == "update"]
    assert len(update) == 1 and update[0].payload["type"] == "ticket_updated"
    assert update[0].payload["note"] == "In warranty." and update[0].payload["fields"]["labels"]["warranty"] == "in"
    assert app.work.jobs.list()[0]["status"] == "done"

    await app.run_once()  # nothing runs twice
    assert vendor["calls"] == 2 and len([i for i in desk.items if i.kind == "update"]) == 1


async def test_a_job_runs_once_per_key_and_failures_mean_what_they_mean_for_the_outbox(make_app) -> None:
    calls: list[str] = []

    def run(job):
        calls.append(job.key)
        if job.key == "auth":
            raise AuthFailed("401 from the portal")
        if job.key == "bad":
            raise PermanentError("serial unknown to the vendor")
        return None

    kinds = plugin("k", register_job_kinds=lambda register: register(JobKind("k.x", run)))
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    from svcbridge.store.jobs import enqueue_job

    with app.store.tx() as conn:
        assert enqueue_job(conn, "k.x", "ok", None, {})
        assert not enqueue_job(conn, "k.x", "ok", None, {"again": True})  # same key: no second job
        assert enqueue_job(conn, "k.x", "bad", None, {})
    out = await app.work.drain()
    by_key = {r["key"]: r["status"] for r in app.work.jobs.list()}
    assert by_key == {"ok": "done", "bad": "dead"}
    assert calls.count("ok") == 1 and {o.status for o in out} == {"done", "dead"}
    # refused credentials park every waiting job of the kind (no retry storm) and raise an alert
    from sqlalchemy import update

    from svcbridge.store import schema

    with app.store.tx() as conn:
        enqueue_job(conn, "k.x", "auth", None, {})
        enqueue_job(conn, "k.x", "later", None, {})
        later = schema.jobs.c.key == "later"
        conn.execute(update(schema.jobs).where(later).values(next_attempt_at=T0 + timedelta(days=3650)))
    await app.work.drain()
    by_key = {r["key"]: r["status"] for r in app.work.jobs.list()}
    assert by_key["auth"] == "parked" and by_key["later"] == "parked" and "job:k.x" in app.work.alerts
    assert calls.count("auth") == 1 and "later" not in calls
    assert app.work.jobs.unpark() == 2  # the next start (recover) gives them another chance
    # a dead job can be retried by hand (svcbridge jobs retry)
    bad = next(r for r in app.work.jobs.list() if r["key"] == "bad")
    assert app.work.jobs.retry(bad["id"]) and app.work.jobs.get(bad["id"])["status"] == "pending"


async def test_a_job_over_its_time_budget_is_retried_and_never_blocks_the_pipeline(make_app, tmp_path) -> None:
    started = asyncio.Event()

    async def slow(job):
        started.set()
        await asyncio.sleep(5)

    kinds = plugin(
        "slow",
        enrich_ticket=lambda draft, jobs: jobs.enqueue("slow.x"),
        register_job_kinds=lambda register: register(JobKind("slow.x", slow, timeout=0.2, backoff_initial=30)),
    )
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    drop(tmp_path, "a", eml())
    t0 = asyncio.get_running_loop().time()
    await app.run_once()
    assert asyncio.get_running_loop().time() - t0 < 3
    (job,) = app.work.jobs.list()
    assert job["status"] == "pending" and job["attempts"] == 1 and "TimeoutError" in job["last_error"]
    assert len(app.store.list_tickets()) == 1


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


async def test_timers_fire_once_at_their_time_can_move_and_be_cancelled(make_app, tmp_path: Path) -> None:
    fired: list[tuple[str, float]] = []

    def on_warning(timer):
        fired.append((timer.name, timer.late.total_seconds()))
        return TicketChange(labels={"sla": "warned"}, note=f"respond-by warning ({timer.data['target']})")

    def enrich_ticket(draft, ticket, jobs):
        if ticket is None:
            jobs.schedule("sla.warn", T0 + timedelta(minutes=10), {"target": "respond_by"})
            jobs.schedule("sla.other", T0 + timedelta(minutes=5))
            jobs.cancel("sla.other")

    kinds = plugin(
        "sla",
        enrich_ticket=enrich_ticket,
        register_timer_kinds=lambda register: (
            register(TimerKind("sla.warn", on_warning)),
            register(TimerKind("sla.other", lambda timer: fired.append(("other", 0)))),
        ),
    )
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    clock = Clock(T0)
    app.work.clock = clock
    drop(tmp_path, "a", eml())
    await app.run_once()
    rows = {r["name"]: r for r in app.work.timers.list()}
    assert rows["sla.warn"]["status"] == "pending" and rows["sla.other"]["status"] == "cancelled"
    assert rows["sla.warn"]["scope"] == "SB-000001"

    clock.now = T0 + timedelta(minutes=9)
    assert await app.work.run_once() == []
    clock.now = T0 + timedelta(minutes=12)  # two minutes late (the daemon was down)
    (out,) = await app.work.run_once()
    assert out.status == "fired" and fired == [("sla.warn", 120.0)]
    assert await app.work.run_once() == []  # once
    t = app.store.get_ticket("SB-000001")
    assert t.labels == {"sla": "warned"}
    (ev,) = [e for e in t.events if e.type == "timer_fired"]
    assert ev.data["late_s"] == 120.0 and ev.actor == "sla"
    assert app.work.timers.list()[0]["late_s"] == 120.0 if app.work.timers.list()[0]["name"] == "sla.warn" else True


async def test_a_timer_fires_once_when_two_replicas_race_for_it(make_app) -> None:
    count = {"n": 0}

    async def fire(timer):
        count["n"] += 1
        await asyncio.sleep(0.05)

    kinds = plugin("t", register_timer_kinds=lambda register: register(TimerKind("t.once", fire)))
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    from svcbridge.store.jobs import schedule_timer

    with app.store.tx() as conn:
        schedule_timer(conn, "", "t.once", None, T0, {})
    clock = Clock(T0 + timedelta(seconds=1))
    a = WorkRunner(app.store, {}, app.work.timer_kinds, worker_id="hostA:1", clock=clock)
    b = WorkRunner(app.store, {}, app.work.timer_kinds, worker_id="hostB:2", clock=clock)
    got = await asyncio.gather(a.run_once(), b.run_once())
    assert sorted(o.status for run in got for o in run) == ["fired"] and count["n"] == 1


async def test_a_timer_scheduled_before_a_restart_fires_after_it(make_app, tmp_path: Path) -> None:
    """The first process schedules and goes away; a new one on the same store fires it, late."""
    fired: list[float] = []

    def build() -> Any:
        kinds = plugin(
            "cb",
            enrich_ticket=lambda draft, jobs: jobs.schedule("callback.due", T0 + timedelta(minutes=5)),
            register_timer_kinds=lambda register: register(
                TimerKind("callback.due", lambda timer: fired.append(timer.late.total_seconds()))
            ),
        )
        return make_app(pm=make_plugin_manager(extra=(kinds,)))

    first = build()
    first.work.clock = Clock(T0)
    drop(tmp_path, "a", eml())
    await first.run_once()
    assert fired == []
    first.store.engine.dispose()
    second = build()
    second.work.clock = Clock(T0 + timedelta(hours=1))
    await second.run_once()
    assert fired == [3300.0]


async def test_a_follow_up_whose_enrichment_changes_the_category_is_stored_and_sent(make_app, tmp_path) -> None:
    desk = Recorder()

    def classify_ticket(draft, ticket):
        if "power" in draft.body_text:
            draft.category = "power"
            draft.labels["symptom"] = "no power"

    pm = make_plugin_manager(extra=(plugin("cat", classify_ticket=classify_ticket), recorder_plugin(desk)))
    app = make_app(pm=pm, routing={"default": ["desk"]})
    drop(tmp_path, "1", eml())
    await app.run_once()
    assert app.store.get_ticket("SB-000001").category is None
    drop(tmp_path, "2", eml(subject="Re: Printer jams", msgid="<m2@example.com>", body="Now it has no power.",
                            extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    t = app.store.get_ticket("SB-000001")
    assert (t.category, t.labels) == ("power", {"symptom": "no power"})
    (ev,) = [e for e in t.events if e.type == "ticket_updated"]
    assert ev.data["plugin"] == "cat" and ev.data["changes"]["category"] == {"from": None, "to": "power"}
    kinds = [(i.kind, i.payload.get("type")) for i in desk.items]
    assert ("update", "ticket_updated") in kinds and ("update", "customer_message") in kinds
    # the priority the parser left on the follow-up's draft (P3) did not overwrite anything
    assert "priority" not in ev.data["changes"]


async def test_a_plugin_that_registers_no_kind_for_a_job_leaves_it_waiting(make_app) -> None:
    app = make_app()
    from svcbridge.store.jobs import enqueue_job

    with app.store.tx() as conn:
        enqueue_job(conn, "nobody.here", "k", None, {})
    assert await app.work.run_once() == []
    assert app.work.jobs.list()[0]["status"] == "pending"


@pytest.mark.parametrize("bad", ["Upper", "", "x" * 200, "has space"])
def test_job_and_timer_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        JobKind(bad, lambda job: None)
    with pytest.raises(ValueError):
        TimerKind(bad, lambda timer: None)


async def test_a_channel_without_a_notifier_falls_back_or_waits_visibly(make_app, tmp_path: Path) -> None:
    """Channels are a registry: a fax ticket is answered by mail when [notifications] says so; without
    a fallback its notice is kept and parked with an alert instead of retried every minute for ever."""
    from svcbridge import RawMessage

    def submit_fax(app: Any, n: int) -> None:
        raw = RawMessage(channel="email", source="faxgw", external_id=f"fax{n}",
                         raw=eml(subject=f"Fax {n}", msgid=f"<fax{n}@gw>"))
        app.store.journal_insert(raw)

    def parse_as_fax(draft):
        if draft.subject.startswith("Fax"):
            draft.channel = "fax"

    fax = plugin("faxchan", normalize_draft=parse_as_fax)
    app = make_app(pm=make_plugin_manager(extra=(fax,)), notifications={"fallback_channels": ["email"]})
    submit_fax(app, 1)
    await app.run_once()
    (n,) = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert (n["target"], n["status"]) == ("notify:email", "done")
    assert (tmp_path / "outgoing").exists() and len(list((tmp_path / "outgoing").glob("*.eml"))) == 1

    app2 = make_app(pm=make_plugin_manager(extra=(fax,)), database_url=str(app.settings.db_url))
    submit_fax(app2, 2)
    await app2.run_once()
    rows = [r for r in app2.delivery.outbox.list() if r["kind"] == "notify" and r["target"] == "notify:fax"]
    assert len(rows) == 1 and rows[0]["status"] == "parked"
    assert "notify:fax" in app2.delivery.alerts


# ---------------------------------------------------------------------- the review's cases
async def test_a_plugin_setting_a_bad_category_or_non_json_label_is_quarantined_by_name(make_app, tmp_path) -> None:
    """A value the store cannot hold fails the plugin that set it, at its stage; the next message goes on
    (on PostgreSQL a too-long value used to surface as a store outage and stop intake)."""

    def classify_ticket(draft):
        if "long" in draft.subject:
            draft.category = "x" * 150
        if "date" in draft.subject:
            draft.labels["seen"] = datetime.now(UTC)

    app = make_app(pm=make_plugin_manager(extra=(plugin("picky", classify_ticket=classify_ticket),)))
    drop(tmp_path, "1", eml(subject="long", msgid="<l@x>"))
    drop(tmp_path, "2", eml(subject="date", msgid="<d@x>"))
    drop(tmp_path, "3", eml(subject="fine", msgid="<f@x>"))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "quarantined", "quarantined"]
    rows = app.store.quarantine_list()
    assert {(q["stage"], q["plugin"]) for q in rows} == {("classify", "picky")}
    assert any("plain JSON" in q["error"] for q in rows)


async def test_setting_a_timer_again_at_its_time_does_not_fire_it_again(make_app, tmp_path) -> None:
    fired: list[str] = []

    def classify_ticket(draft, ticket, jobs):
        jobs.schedule("sla.warn", T0 + timedelta(hours=4))  # on every message, the same time

    kinds = plugin(
        "sla",
        classify_ticket=classify_ticket,
        register_timer_kinds=lambda register: register(TimerKind("sla.warn", lambda t: fired.append(t.name))),
    )
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    app.work.clock = Clock(T0 + timedelta(hours=5))
    drop(tmp_path, "1", eml())
    await app.run_once()
    drop(tmp_path, "2", eml(subject="Re: Printer jams", msgid="<m2@example.com>",
                            extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    assert fired == ["sla.warn"]


async def test_each_run_of_a_job_and_each_stage_of_a_plugin_reaches_the_helpdesk(make_app, tmp_path) -> None:
    desk = Recorder()
    runs = {"n": 0}

    def lookup(job):
        runs["n"] += 1
        return TicketChange(labels={"checked": runs["n"], "at": datetime(2026, 1, 2, tzinfo=UTC)})

    def classify_ticket(draft, ticket):
        if ticket is not None:
            draft.category = "power"

    def enrich_ticket(draft, ticket, jobs):
        if ticket is None:
            jobs.enqueue("w.lookup")
        else:
            draft.labels["symptom"] = "dead"

    kinds = plugin(
        "w",
        classify_ticket=classify_ticket,
        enrich_ticket=enrich_ticket,
        register_job_kinds=lambda register: register(JobKind("w.lookup", lookup)),
    )
    app = make_app(pm=make_plugin_manager(extra=(kinds, recorder_plugin(desk))), routing={"default": ["desk"]})
    drop(tmp_path, "1", eml())
    await app.run_once()
    t = app.store.get_ticket("SB-000001")
    assert t.labels == {"checked": 1, "at": "2026-01-02T00:00:00Z"}  # plain JSON, as stored
    (job,) = app.work.jobs.list()
    assert app.work.jobs.retry(job["id"])  # by hand: its new answer is news for the helpdesk too
    await app.run_once()
    drop(tmp_path, "2", eml(subject="Re: Printer jams", msgid="<m2@example.com>",
                            extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    sent = [i.payload for i in desk.items if i.payload.get("type") == "ticket_updated"]
    assert [p["origin"].split(":")[0] for p in sent] == ["job", "job", "j2", "j2"]
    assert sent[1]["changes"]["labels"]["checked"] == {"from": 1, "to": 2}
    assert set(sent[2]["changes"]) == {"category"} and set(sent[3]["changes"]) == {"labels"}


async def test_a_round_claims_no_more_than_it_runs_at_once(make_app) -> None:
    """Rows waiting behind the others would see their claim run out: another replica would run them too."""
    running = {"now": 0, "most": 0}

    async def run(job):
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.02)
        running["now"] -= 1

    kinds = plugin("c", register_job_kinds=lambda register: register(JobKind("c.x", run)))
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    from svcbridge.store.jobs import enqueue_job

    with app.store.tx() as conn:
        for i in range(20):
            enqueue_job(conn, "c.x", f"k{i}", None, {})
    first = await app.work.run_once()
    assert len(first) == app.work.concurrency == 8
    claimed = [r for r in app.work.jobs.list() if r["status"] == "pending" and r["runs"]]
    assert claimed == []  # nothing left claimed behind the round
    await app.work.drain()
    assert {r["status"] for r in app.work.jobs.list()} == {"done"} and running["most"] <= 8


def test_errors_kept_on_a_job_carry_no_secret_and_no_query_string() -> None:
    from svcbridge import log as logmod
    from svcbridge.jobs import _clean

    logmod.add_secrets(["canary-s3cr3t-value"])
    kept = _clean("NotReady: 503 from https://vendor.test/api/warranty?key=abc123&sn=1 token canary-s3cr3t-value")
    assert "abc123" not in kept and "canary-s3cr3t-value" not in kept and "https://vendor.test/api/warranty?" in kept


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_hook_over_its_budget_fails_that_message_only(make_app, tmp_path: Path, kind: str) -> None:
    """Issue 12 item 10: a plugin cannot stall the pipeline: over its budget, the message is quarantined
    naming the plugin (an async hook is cancelled at the budget), and the next message goes on."""
    import time as _time

    async def slow_async(draft):
        if "slow" in draft.subject:
            await asyncio.sleep(30)

    def slow_sync(draft):
        if "slow" in draft.subject:
            _time.sleep(0.5)

    hook = slow_async if kind == "async" else slow_sync
    app = make_app(pm=make_plugin_manager(extra=(plugin("sloth", enrich_ticket=hook),)),
                   pipeline={"hook_budget": 0.2})
    drop(tmp_path, "1", eml(subject="slow one", msgid="<s@x>"))
    drop(tmp_path, "2", eml(subject="quick one", msgid="<q@x>"))
    t0 = asyncio.get_running_loop().time()
    res = await app.run_once()
    assert asyncio.get_running_loop().time() - t0 < 10
    assert sorted(o.status for o in res["outcomes"]) == ["created", "quarantined"]
    (q,) = app.store.quarantine_list()
    assert (q["stage"], q["plugin"]) == ("enrich", "sloth") and "budget" in q["error"]


async def test_a_status_change_can_stop_a_timer_and_drafts_carry_their_receipt_time(make_app, tmp_path) -> None:
    """An SLA clock stops while the ticket waits for parts: status_updated gets the ticket's WorkQueue."""
    from svcbridge import StatusUpdate, TicketState

    seen: list[Any] = []

    def classify_ticket(draft, ticket, jobs):
        seen.append(draft.received_at)
        # due hours from now, whenever the test runs (a fixed date became due on its own day)
        jobs.schedule("sla.breach", datetime.now(UTC) + timedelta(hours=8))

    def status_updated(ticket, update, jobs):
        if update.state == TicketState.WAITING_PARTS:
            jobs.cancel("sla.breach")

    kinds = plugin(
        "sla",
        classify_ticket=classify_ticket,
        status_updated=status_updated,
        register_timer_kinds=lambda register: register(TimerKind("sla.breach", lambda t: None)),
    )
    app = make_app(pm=make_plugin_manager(extra=(kinds,)))
    drop(tmp_path, "1", eml())
    await app.run_once()
    assert seen and seen[0] is not None and seen[0].tzinfo is not None
    upd = StatusUpdate(ticket_ref="SB-000001", system="local", state=TicketState.WAITING_PARTS,
                       external_event_id="e1")
    assert await app.pipeline.apply_status_update(upd)
    assert [r["status"] for r in app.work.timers.list()] == ["cancelled"]
