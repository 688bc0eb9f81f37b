"""Outbox delivery: retries with backoff and Retry-After, parking on auth failure, dead letters,
circuit breaker, order per ticket, reconcile before retry, replay."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from conftest import eml
from svcbridge import (
    AuthFailed,
    DeliveryResult,
    ExternalLink,
    NotReady,
    PermanentError,
    hookimpl,
    utcnow,
)
from svcbridge.plugins import make_plugin_manager


class ScriptedSink:
    """A helpdesk double whose answers are scripted per call; it records what it received."""

    name = "desk"

    def __init__(self) -> None:
        self.script: list[BaseException | None] = []
        self.created: dict[str, str] = {}  # svcbridge ref -> remote id
        self.calls: list[tuple[str, str]] = []
        self.reconciled: list[str] = []

    async def deliver(self, item):
        self.calls.append((item.kind, item.ticket.ref))
        outcome = self.script.pop(0) if self.script else None
        if isinstance(outcome, BaseException) and not getattr(outcome, "after_commit", False):
            raise outcome
        rid = self.created.setdefault(item.ticket.ref, str(100 + len(self.created)))
        if isinstance(outcome, BaseException):  # committed remotely, then the reply got lost
            raise outcome
        return DeliveryResult(links=[ExternalLink(system="desk", kind="ticket", value=rid)])

    async def reconcile(self, item):
        self.reconciled.append(item.ticket.ref)
        rid = self.created.get(item.ticket.ref)
        return DeliveryResult(links=[ExternalLink(system="desk", kind="ticket", value=rid)]) if rid else None


def app_with(make_app, sink: ScriptedSink, **kw):
    class Plugin:
        __name__ = "deskplugin"

        @hookimpl
        def register_sinks(self, register):
            register(sink)

    # long backoff: a failed item is not due again within the same drain (tests move time by hand)
    kw["outbox"] = {"backoff_initial": 60.0, "backoff_max": 120.0, **kw.get("outbox", {})}
    return make_app(pm=make_plugin_manager(extra=(Plugin(),)), routing={"default": ["desk"]}, **kw)


async def make_tickets(app, tmp_path: Path, n: int) -> None:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (new / f"m{i}").write_bytes(eml(subject=f"case {i}", msgid=f"<m{i}@x>"))
    await app.poll_sources_once()
    await app.pipeline.drain()


def desk_rows(app):
    return [r for r in app.delivery.outbox.list() if r["target"] == "desk"]


async def test_retry_then_success_with_one_remote_ticket(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    lost = NotReady("timeout after commit")
    lost.after_commit = True  # the RT gap: remote committed, our side never heard
    sink.script = [lost]
    app = app_with(make_app, sink)
    await make_tickets(app, tmp_path, 1)
    await app.delivery.drain()
    row = desk_rows(app)[0]
    assert row["status"] == "pending" and row["attempts"] == 1
    await _due_now(app)
    await app.delivery.drain()
    assert desk_rows(app)[0]["status"] == "done"
    assert sink.reconciled == ["SB-000001"]
    assert sink.calls == [("create", "SB-000001")]  # reconcile found it: no second create
    t = app.store.get_ticket("SB-000001")
    assert t.link("desk", "ticket") == "100"


async def _due_now(app) -> None:
    from sqlalchemy import update

    from svcbridge.store import schema

    with app.store.tx() as conn:
        conn.execute(update(schema.outbox).values(next_attempt_at=utcnow()))


async def test_retry_after_is_honoured(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [NotReady("429", retry_after=30)]
    app = app_with(make_app, sink)
    await make_tickets(app, tmp_path, 1)
    before = utcnow()
    await app.delivery.drain()
    row = desk_rows(app)[0]
    assert row["status"] == "pending"
    assert row["next_attempt_at"] >= before + timedelta(seconds=29.9)
    assert "429" in row["last_error"]


async def test_auth_failure_parks_the_target_without_retry_storm(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [AuthFailed("401 Unauthorized")]
    app = app_with(make_app, sink, outbox={"concurrency": 1})
    await make_tickets(app, tmp_path, 3)
    await app.delivery.drain()
    assert len(sink.calls) == 1  # one call, then everything for that target is parked (concurrency 1)
    assert {r["status"] for r in desk_rows(app)} == {"parked"}
    assert "desk" in app.delivery.alerts
    # other targets (the customer acknowledgements) still flowed
    assert {r["status"] for r in app.delivery.outbox.list() if r["target"] == "notify:email"} == {"done"}
    # after the credentials are fixed (restart unparks), everything is delivered once
    app.delivery.outbox.unpark("desk")
    await app.delivery.drain()
    assert {r["status"] for r in desk_rows(app)} == {"done"}
    assert sorted(ref for _k, ref in sink.calls[1:]) == ["SB-000001", "SB-000002", "SB-000003"]
    assert "desk" not in app.delivery.alerts


async def test_permanent_error_dead_letters_one_item_and_the_rest_continue(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [PermanentError("422 invalid requester")]
    app = app_with(make_app, sink)
    await make_tickets(app, tmp_path, 3)
    await app.delivery.drain()
    statuses = [r["status"] for r in desk_rows(app)]
    assert statuses == ["dead", "done", "done"]
    dead = app.delivery.outbox.list("dead")
    assert "422 invalid requester" in dead[0]["last_error"]
    assert app.delivery.outbox.replay(dead[0]["id"])
    await app.delivery.drain()
    assert [r["status"] for r in desk_rows(app)] == ["done", "done", "done"]


async def test_max_attempts_dead_letters(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [RuntimeError("boom")] * 3
    app = app_with(make_app, sink, outbox={"max_attempts": 3, "breaker_threshold": 100})
    await make_tickets(app, tmp_path, 1)
    for _ in range(3):
        await _due_now(app)
        await app.delivery.drain()
    (row,) = desk_rows(app)
    assert (row["status"], row["attempts"]) == ("dead", 3)


async def test_circuit_breaker_opens_after_consecutive_failures(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [NotReady("503")] * 2
    app = app_with(make_app, sink, outbox={"breaker_threshold": 2, "breaker_cooldown": 3600, "concurrency": 1})
    await make_tickets(app, tmp_path, 3)
    await app.delivery.drain()
    await _due_now(app)
    await app.delivery.drain()
    assert len(sink.calls) == 2  # the third item was not even tried: the breaker is open
    assert app.delivery.breaker("desk").allow() > 0
    assert all(r["status"] == "pending" for r in desk_rows(app))


async def test_order_is_kept_per_ticket(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [NotReady("down")]
    app = app_with(make_app, sink)
    await make_tickets(app, tmp_path, 1)
    new = tmp_path / "maildir" / "new"
    (new / "f").write_bytes(eml(subject="Re: case 0", msgid="<f@x>", extra="In-Reply-To: <m0@x>\r\n"))
    await app.poll_sources_once()
    await app.pipeline.drain()
    await app.delivery.drain()
    kinds = [(r["kind"], r["status"]) for r in desk_rows(app)]
    assert kinds == [("create", "pending"), ("update", "pending")]
    assert sink.calls == [("create", "SB-000001")]  # the update waited behind the failed create
    await _due_now(app)
    await app.delivery.drain()
    assert sink.calls[-2:] == [("create", "SB-000001"), ("update", "SB-000001")]


async def test_auth_failure_with_concurrency_stops_what_has_not_started(make_app, tmp_path: Path) -> None:
    sink = ScriptedSink()
    sink.script = [AuthFailed("403 Forbidden")] * 10
    app = app_with(make_app, sink, outbox={"concurrency": 3})
    await make_tickets(app, tmp_path, 10)
    await app.delivery.drain()
    assert len(sink.calls) <= 3  # at most what was already in flight
    assert {r["status"] for r in desk_rows(app)} == {"parked"}


async def test_automatic_messages_are_capped_per_recipient(make_app, tmp_path: Path) -> None:
    """An autoresponder that answers every acknowledgement gets 10 in 10 minutes, then nothing."""
    app = make_app()
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(12):
        (new / f"ar{i}").write_bytes(eml(subject=f"ticket {i}", msgid=f"<ar{i}@x>", sender="Bot <bot@example.com>"))
    (new / "other").write_bytes(eml(subject="someone else", msgid="<o@x>", sender="Eve <eve@example.com>"))
    (new / "pm").write_bytes(eml(subject="from postmaster", msgid="<pm@x>", sender="postmaster@example.com"))
    await app.run_once()
    sent = [p.read_bytes() for p in sorted((tmp_path / "outgoing").glob("*.eml"))]
    assert sum(b"To: bot@example.com" in m for m in sent) == 10
    assert sum(b"To: eve@example.com" in m for m in sent) == 1
    assert not any(b"postmaster" in m for m in sent)
    notes = [e for t in app.store.list_tickets(limit=50) for e in app.store.get_ticket(t.ref).events
             if e.type == "notified" and e.data.get("detail", "").startswith("suppressed")]
    assert len(notes) == 2  # the two over the limit, visible in the trail (postmaster got no ack at all)


async def test_a_flood_is_suppressed_without_loading_its_tickets(make_app, tmp_path: Path, monkeypatch) -> None:
    """Items the loop protection stops are sorted out before the round loads tickets for the rest;
    a looked-at but not counted item does not use up the recipient's allowance."""
    app = make_app()
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(25):
        (new / f"ar{i:02d}").write_bytes(eml(subject=f"t{i}", msgid=f"<f{i}@x>", sender="Bot <bot@example.com>"))
    loaded: list[int] = []
    real = app.store.get_tickets

    def spy(ids, events=True):
        loaded.extend(ids)
        return real(ids, events=events)

    monkeypatch.setattr(app.store, "get_tickets", spy)
    await app.poll_sources_once()
    await app.pipeline.drain()  # all 25 acknowledgements are due in one round
    await app.delivery.drain()
    sent = [p.read_bytes() for p in sorted((tmp_path / "outgoing").glob("*.eml"))]
    assert sum(b"To: bot@example.com" in m for m in sent) == 10
    rows = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert len(rows) == 25 and {r["status"] for r in rows} == {"done"}
    # the round saw all 25 as within the limit before any was counted, so all 25 were loaded;
    # the next flood finds the allowance used up and loads none of its tickets
    loaded.clear()
    for i in range(25, 30):
        (new / f"ar{i:02d}").write_bytes(eml(subject=f"t{i}", msgid=f"<f{i}@x>", sender="Bot <bot@example.com>"))
    await app.run_once()
    assert sum(b"To: bot@example.com" in p.read_bytes() for p in (tmp_path / "outgoing").glob("*.eml")) == 10
    assert loaded == []


async def test_recipient_limit_survives_a_restart(make_app, tmp_path: Path) -> None:
    """A daemon restarted (crash loop, deploy) still knows what it sent: no fresh 10 for the bot."""
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(10):
        (new / f"ar{i}").write_bytes(eml(subject=f"ticket {i}", msgid=f"<ar{i}@x>", sender="Bot <bot@example.com>"))
    first = make_app()
    await first.run_once()
    first.store.engine.dispose()
    for i in range(10, 13):
        (new / f"ar{i}").write_bytes(eml(subject=f"ticket {i}", msgid=f"<ar{i}@x>", sender="Bot <bot@example.com>"))
    (new / "other").write_bytes(eml(subject="someone else", msgid="<o@x>", sender="Eve <eve@example.com>"))
    second = make_app()
    await second.run_once()
    sent = [p.read_bytes() for p in sorted((tmp_path / "outgoing").glob("*.eml"))]
    assert sum(b"To: bot@example.com" in m for m in sent) == 10
    assert sum(b"To: eve@example.com" in m for m in sent) == 1


def test_limiter_seed_counts_only_the_window() -> None:
    from svcbridge.delivery import RecipientLimiter

    lim = RecipientLimiter({10: 2, 60: 3})
    lim.seed("a", [30.0, 4000.0], now=5000.0)  # 4000 s ago is outside the longest window
    assert lim.allow("a", now=5000.0) is None
    assert lim.allow("a", now=5001.0) is not None  # 2 within 10 minutes


def test_limiter_windows() -> None:
    from svcbridge.delivery import RecipientLimiter

    lim = RecipientLimiter({10: 2, 60: 3})
    assert [lim.allow("a", now=t) for t in (0, 1)] == [None, None]
    assert lim.allow("a", now=2) is not None and lim.allow("b", now=2) is None
    assert lim.allow("a", now=700) is None  # the 10-minute window moved on
    assert lim.allow("a", now=701) is not None  # but 3 in the last 60 minutes


def test_limiter_forgets_recipients_outside_the_longest_window() -> None:
    """Memory stays bounded by the recipients of the last hour, not everyone ever mailed."""
    from svcbridge.delivery import RecipientLimiter

    lim = RecipientLimiter({10: 2, 60: 3})
    for i in range(RecipientLimiter.PRUNE_EVERY - 2):
        assert lim.allow(f"old{i}", now=0.0) is None
    lim.allow("recent", now=3000.0)
    assert lim.allow("new", now=3700.0) is None  # the sweep: "old*" left the 60-minute window
    assert set(lim.sent) == {"recent", "new"}
    assert lim.allow("recent", now=3701.0) is None  # counting of the ones kept is unchanged


async def test_notices_without_a_notifier_are_kept_parked_and_reported_once(make_app, tmp_path: Path) -> None:
    """No outbound mail configured: acknowledgements wait (nothing lost), one log line says why."""
    from structlog.testing import capture_logs

    app = make_app(plugins={"email": {"outbound": None}})
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (new / f"m{i}").write_bytes(eml(subject=f"t{i}", msgid=f"<t{i}@x>"))
    with capture_logs() as logs:
        await app.run_once()
    missing = [e for e in logs if e["event"] == "no_target"]
    assert len(missing) == 1 and missing[0]["target"] == "notify:email" and missing[0]["waiting"] == 3
    assert "[plugins.email.outbound]" in missing[0]["hint"]
    # kept (nothing lost), parked with a visible alert instead of retried every minute for ever
    waiting = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert len(waiting) == 3 and {r["status"] for r in waiting} == {"parked"}
    assert "notify:email" in app.delivery.alerts
    await app.delivery.run_once()
    assert {r["status"] for r in app.delivery.outbox.list() if r["kind"] == "notify"} == {"parked"}


async def test_a_reply_stored_before_the_create_went_out_posts_its_file_once(make_app, tmp_path: Path) -> None:
    """Issue 12 item 2: the create carried every file of the ticket and the follow-up its own again."""
    from helpdesk_helpers import mail_with_files

    seen: list[tuple[str, list[str]]] = []

    class FileSink(ScriptedSink):
        async def deliver(self, item):
            seen.append((item.kind, sorted(a.original_name or "" for a in item.attachments)))
            return await super().deliver(item)

    sink = FileSink()
    app = app_with(make_app, sink)
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1").write_bytes(mail_with_files(files=[("first.txt", "text/plain", b"one")]))
    (new / "2").write_bytes(mail_with_files(subject="Re: Printer jams", msgid="<m2@example.com>",
                                            extra={"In-Reply-To": "<m1@example.com>"},
                                            files=[("second.txt", "text/plain", b"two")]))
    await app.poll_sources_once()
    await app.pipeline.drain()  # both stored before anything reached the helpdesk
    await app.delivery.drain()
    assert seen == [("create", ["first.txt"]), ("update", ["second.txt"])]
