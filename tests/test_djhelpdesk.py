"""The django-helpdesk connector, against a real django-helpdesk 2.6.1 (PyPI, SQLite, gunicorn, private port).

Covered: idempotent create (twice, and after a crash before the link was recorded; a look-alike ticket is
not taken), byte-exact attachments (files the server would refuse stay in svcbridge and are named),
customer follow-ups (idempotent, literal text although django-helpdesk renders comments as templates),
a ticket change (priority patched, the rest one private follow-up, not polled back),
agent replies / internal notes / status changes back through ``poll_changes`` without echoing svcbridge's
own follow-ups, the real follow-up webhook (token in the path) deduplicated against the poll, the mail ->
django-helpdesk -> mail round trip of issue 4 in-process and as a real daemon killed with SIGKILL at each
step, and a wrong token parking the target. Failure classification runs against a fake transport.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import eml, free_port
from dh_server import DhServer, running_dh
from helpdesk_helpers import (
    BIN,
    PNG,
    crash_at,
    crash_then_recover,
    daemon_config,
    drop,
    item_for,
    mail_with_files,
    outbox,
    outgoing,
    poll,
    text_of,
)
from svcbridge import AuthFailed, Contact, DeliveryItem, NotReady, PermanentError, Ticket, TicketState
from svcbridge.web import build_web
from svcbridge_djhelpdesk import DjHelpdeskSettings, DjHelpdeskSink, template_safe

HOOK_TOKEN = "hooktoken-0123456789abcdefghij"
SINK = "djhelpdesk"


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="session")
def dh_session() -> Iterator[DhServer]:
    with running_dh() as server:
        yield server


@pytest.fixture
def dh(dh_session: DhServer) -> DhServer:
    """The session's django-helpdesk back at its pristine DB: no tickets, ticket ids from 1."""
    dh_session.reset()
    return dh_session


def dh_app(make_app: Any, dh: DhServer, **extra: Any) -> Any:
    return make_app(routing={"default": [SINK]}, outbound_allow=["127.0.0.1/32"],
                    plugins={SINK: dh.plugin_config(**extra)})


def tagged(dh: DhServer, ref: str = "SB-000001") -> list[dict[str, Any]]:
    return [t for t in dh.tickets() if f"[{ref}]" in t["title"]]


# ---------------------------------------------------------------------- without a server
def _item(kind: str = "create") -> DeliveryItem:
    t = Ticket(id=1, ref="SB-000001", channel="email", subject="x", contact=Contact(email="a@example.com"))
    return DeliveryItem(id=1, kind=kind, target=SINK, idempotency_key=f"SB-000001:{kind}:{SINK}", ticket=t)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(429, headers={"Retry-After": "30"}), NotReady),
        (httpx.Response(502, text="bad gateway"), NotReady),
        (httpx.ReadTimeout("slow"), NotReady),
        (httpx.Response(401, json={"detail": "Invalid token."}), AuthFailed),
        (httpx.Response(403, json={"detail": "You do not have permission to perform this action."}), AuthFailed),
        (httpx.Response(422, json={"priority": ["This field is required."]}), PermanentError),
        (httpx.Response(302, headers={"Location": "http://elsewhere.test/helpdesk/api/tickets/"}), PermanentError),
    ],
)
async def test_failures_mean_what_the_host_needs(reply: Any, error: type[Exception]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(reply, Exception):
            raise reply
        return reply

    cfg = DjHelpdeskSettings(url="http://dh.test/helpdesk", token="tok-secret",
                             transport=httpx.MockTransport(handler))
    sink = DjHelpdeskSink(cfg, allow=["dh.test", "elsewhere.test"])
    with pytest.raises(error) as info:
        await sink.deliver(_item())
    assert {r.url.host for r in seen} == {"dh.test"}  # a redirect elsewhere is not followed
    assert all(r.headers["Authorization"] == "Token tok-secret" for r in seen)
    assert str(seen[0].url).startswith("http://dh.test/helpdesk/api/tickets/")
    assert "secret" not in str(info.value)
    if isinstance(reply, httpx.Response) and reply.status_code == 429:
        assert info.value.retry_after == 30  # type: ignore[attr-defined]


def test_settings_maps_priorities_and_webhook_token() -> None:
    s = DjHelpdeskSettings(url="http://dh.test/helpdesk/", token="x", state_map={"from_helpdesk": {"5": "closed"}},
                           valid_extensions=["BIN", ".txt"])
    assert s.api_base == "http://dh.test/helpdesk/api/"
    assert s.state_map.state(5) is TicketState.CLOSED and s.state_map.state(3) is TicketState.RESOLVED
    assert s.state_map.state(9) is None
    assert s.valid_extensions == [".bin", ".txt"]
    with pytest.raises(ValueError, match=r"1\.\.5"):
        DjHelpdeskSettings(url="http://dh.test", token="x", priorities={"P1": 9})
    with pytest.raises(ValueError, match="24 random"):
        DjHelpdeskSettings(url="http://dh.test", token="x", webhook_token="short")
    with pytest.raises(ValueError, match="URL path"):
        DjHelpdeskSettings(url="http://dh.test", token="x", webhook_token="a/b" * 10)


# ---------------------------------------------------------------------- against the real django-helpdesk
@pytest.mark.realserver
async def test_create_is_idempotent_and_attachments_are_byte_exact(make_app: Any, tmp_path: Path, dh: DhServer) -> None:
    app = dh_app(make_app, dh)
    drop(tmp_path, "1", mail_with_files())
    await app.run_once()
    ticket = app.store.get_ticket("SB-000001")
    rid = ticket.link(SINK, "ticket")
    assert rid and [str(t["id"]) for t in tagged(dh)] == [rid]

    # the very bytes svcbridge stored arrived; dump.bin (refused by the server's extension list) is named
    sent = {a.original_name: a.sha256 for a in ticket.attachments}
    assert set(sent) == {"photo.png", "zaehler.txt", "notes.txt", "dump.bin"}
    assert dh.files(rid) == {k: v for k, v in sent.items() if k != "dump.bin"}
    remote = dh.ticket(rid)
    assert "not transferred: dump.bin (131072 bytes)" in remote["description"]
    assert remote["priority"] == 3 and remote["submitter_email"] == "" and remote["status"] == 1

    # delivering the same item again, and after a crash before the link was recorded: still one ticket
    sink = app.delivery.sinks[SINK]
    item = item_for(app, SINK, "SB-000001")
    unlinked = item.model_copy(update={"ticket": item.ticket.model_copy(update={"links": []}), "attempts": 1})
    assert (await sink.deliver(item)).links[0].value == rid
    assert (await sink.reconcile(unlinked)).links[0].value == rid  # type: ignore[union-attr]
    assert (await sink.deliver(unlinked)).links[0].value == rid
    assert [str(t["id"]) for t in dh.tickets()] == [rid]
    assert len(dh.files(rid)) == 3  # the files follow-up was not added twice

    # a ticket an agent typed with the next tag is not taken for svcbridge's
    with dh.agent() as c:
        c.post("tickets/", json={"queue": 1, "title": "[SB-000002] fake", "description": "x", "priority": 3})
    drop(tmp_path, "2", eml(subject="Another one", msgid="<m2@example.com>"))
    await app.run_once()
    second = app.store.get_ticket("SB-000002").link(SINK, "ticket")
    assert second and len(tagged(dh, "SB-000002")) == 2 and second != str(tagged(dh, "SB-000002")[0]["id"])


@pytest.mark.realserver
async def test_a_create_cut_short_before_its_files_is_finished_by_the_retry(
    make_app: Any, tmp_path: Path, dh: DhServer
) -> None:
    app = make_app(routing={"default": ["local"]}, outbound_allow=["127.0.0.1/32"],
                   plugins={SINK: dh.plugin_config()})
    drop(tmp_path, "1", mail_with_files())
    await app.run_once()
    ticket = app.store.get_ticket("SB-000001")
    item = DeliveryItem(id=1, kind="create", target=SINK, idempotency_key=f"SB-000001:create:{SINK}", ticket=ticket,
                        attachments=app.store.attachments_with_data(ticket.id))
    sink = app.delivery.sinks[SINK]
    rid = await sink.create(item)  # the first attempt died here, before the follow-up with the files
    assert dh.files(rid) == {}
    res = await sink.deliver(item.model_copy(update={"attempts": 1}))
    assert res.links[0].value == rid and res.detail == f"found existing django-helpdesk ticket {rid}"
    assert set(dh.files(rid)) == {"photo.png", "zaehler.txt", "notes.txt"}
    await sink.deliver(item)
    assert len(dh.files(rid)) == 3 and len(dh.tickets()) == 1


@pytest.mark.realserver
async def test_followups_replies_and_status_round_trip_without_echo(
    make_app: Any, tmp_path: Path, dh: DhServer
) -> None:
    app = dh_app(make_app, dh, poll_page_size=2)
    assert await poll(app, SINK) == []  # first poll: start after the newest follow-up
    drop(tmp_path, "1", eml())
    await app.run_once()
    rid = app.store.get_ticket("SB-000001").link(SINK, "ticket")

    # the customer's follow-up with a file becomes one private follow-up, its text exactly as written
    text = "Still jamming {{ ticket.title }} {# not a comment #} {% now 'Y' %}, photo attached."
    follow = mail_with_files(subject="Re: Printer jams", msgid="<m2@example.com>", body=text,
                             extra={"In-Reply-To": "<m1@example.com>"}, files=[("jam.png", "image/png", PNG)])
    drop(tmp_path, "2", follow)
    await app.run_once()
    await app.delivery.sinks[SINK].deliver(item_for(app, SINK, "SB-000001", "update"))  # a resend adds nothing
    fus = dh.ticket(rid)["followup_set"]
    relayed = [f for f in fus if "[svcbridge SB-000001:" in f["comment"] and "Still jamming" in f["comment"]]
    assert len(relayed) == 1 and relayed[0]["public"] is False
    assert text in relayed[0]["comment"]
    assert dh.files(rid) == {"jam.png": hashlib.sha256(PNG).hexdigest()}
    assert dh.ticket(rid)["title"] == "[SB-000001] Printer jams"  # follow-ups never rename the ticket
    assert await poll(app, SINK) == []  # svcbridge's own follow-ups are not echoed

    # agent reply, internal note, resolve with a comment: each comes back once, in order (pages of 2 here)
    dh.reply(rid, "Please clean the rollers.")
    dh.reply(rid, "Customer has an old model.", public=False)
    dh.reply(rid, "Rollers replaced.", new_status=3)
    got = await poll(app, SINK)
    assert [(u.public_reply, u.internal_note, u.state) for u in got] == [
        ("Please clean the rollers.", None, None),
        (None, "Customer has an old model.", None),
        ("Rollers replaced.", None, TicketState.RESOLVED),
    ]
    assert all(u.external_ticket_id == rid and u.system == SINK for u in got)
    assert await poll(app, SINK) == []
    assert app.store.get_ticket("SB-000001").state is TicketState.RESOLVED

    # reading the same follow-ups again (a crash before the cursor was stored) changes nothing
    sink = app.delivery.sinks[SINK]
    before = len(app.delivery.outbox.list())
    again, _ = await sink.poll_changes(f"{int(got[0].external_event_id) - 1}:1:2")
    assert [u.external_event_id for u in again] == [u.external_event_id for u in got]
    assert not any([await app.pipeline.apply_status_update(u) for u in again])
    assert len(app.delivery.outbox.list()) == before

    # the customer answers: the ticket is reopened (2) by a marked follow-up that is not reported back
    drop(tmp_path, "3", eml(subject="Re: [SB-000001] Printer jams", msgid="<m3@example.com>",
                            body="It is jamming again.", extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    assert dh.ticket(rid)["status"] == 2
    assert await poll(app, SINK) == []
    assert template_safe("a {{ b }} {# c #}") == 'a {{ "{{" }} b }} {{ "{#" }} c #}'


@pytest.mark.realserver
async def test_a_ticket_change_sets_the_priority_and_adds_one_private_note(
    make_app: Any, tmp_path: Path, dh: DhServer
) -> None:
    """What a job or timer changed (changes.py): the priority by PATCH, the rest as a private follow-up,
    even where customer follow-ups are public; once, however often it is delivered; never polled back."""
    from svcbridge import Priority, TicketChange
    from svcbridge.changes import record

    app = dh_app(make_app, dh, public_followups=True)
    await poll(app, SINK)
    drop(tmp_path, "1", eml())
    await app.run_once()
    ticket = app.store.get_ticket("SB-000001")
    rid = ticket.link(SINK, "ticket")
    assert rid and dh.ticket(rid)["priority"] == 3
    change = TicketChange(priority=Priority.P1, labels={"warranty": "in"}, note="In warranty until 2027-05-01.")
    with app.store.tx() as conn:
        record(conn, app.store, ticket, change, plugin="warranty", origin="job:1")
    await app.delivery.drain()
    [row] = [r for r in app.delivery.outbox.list()
             if r["target"] == SINK and (r["payload"] or {}).get("type") == "ticket_updated"]
    assert row["status"] == "done", row["last_error"]
    sink = app.delivery.sinks[SINK]
    again = DeliveryItem(id=row["id"], kind="update", target=SINK, idempotency_key=row["idempotency_key"],
                         ticket=app.store.get_ticket("SB-000001"), payload=row["payload"], attempts=1)
    assert "note added" not in (await sink.deliver(again)).detail  # found by its marker: not posted twice

    remote = dh.ticket(rid)
    assert remote["priority"] == 1
    notes = [f for f in remote["followup_set"] if "In warranty until 2027-05-01." in f["comment"]]
    assert len(notes) == 1 and notes[0]["public"] is False
    assert notes[0]["comment"].startswith("[svcbridge SB-000001:chg:job:1:warranty:djhelpdesk]")
    assert "priority: 3 → 1" in notes[0]["comment"] and "warranty: (none) → in" in notes[0]["comment"]
    assert await poll(app, SINK) == []  # the note is svcbridge's own: never an agent's reply or note
    assert app.store.get_ticket("SB-000001").priority is Priority.P1


class _Capture(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.realserver
async def test_real_followup_webhook_with_token_in_path(make_app: Any, tmp_path: Path, dh_session: DhServer) -> None:
    """django-helpdesk's own webhook body, captured, then posted to the route; the poll adds nothing more."""
    port = free_port()
    receiver = ThreadingHTTPServer(("127.0.0.1", port), _Capture)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Capture.bodies = []
    try:
        dh_session.reset(webhook=f"http://127.0.0.1:{port}/hook")
        dh = dh_session
        app = dh_app(make_app, dh, webhook_token=HOOK_TOKEN)
        await poll(app, SINK)
        drop(tmp_path, "1", eml())
        await app.run_once()
        rid = app.store.get_ticket("SB-000001").link(SINK, "ticket")
        _Capture.bodies.clear()
        dh.reply(rid, "A technician is on the way.", new_status=2)
        (body,) = _Capture.bodies
    finally:
        receiver.shutdown()
        receiver.server_close()
        dh_session.reset()  # without the webhook: a dead receiver would make every follow-up a 500
    async with httpx.AsyncClient(transport=httpx.ASGITransport(build_web(app)), base_url="http://bridge.test") as web:
        assert (await web.post("/hooks/djhelpdesk/wrong-token-wrong-token-xx", content=body)).status_code == 404
        assert (await web.post("/hooks/djhelpdesk/" + HOOK_TOKEN, content=b"{}")).status_code == 400
        first = await web.post("/hooks/djhelpdesk/" + HOOK_TOKEN, content=body)
        assert first.status_code == 200 and first.json() == {"applied": True}
        again = await web.post("/hooks/djhelpdesk/" + HOOK_TOKEN, content=body)
        assert again.json() == {"applied": False}
    await app.delivery.drain()
    t = app.store.get_ticket("SB-000001")
    assert t.state is TicketState.IN_PROGRESS
    assert [r for r in app.delivery.outbox.list() if r["target"].startswith("notify:")]
    assert json.loads(body)["followup_id"] > 0


@pytest.mark.realserver
async def test_end_to_end_mail_to_djhelpdesk_and_back(make_app: Any, tmp_path: Path, dh: DhServer) -> None:
    """Issue 4, django-helpdesk half: mail -> one ticket with files; agent reply and resolution -> threaded mails."""
    app = dh_app(make_app, dh)
    spool = tmp_path / "outgoing"
    await poll(app, SINK)
    drop(tmp_path, "1", mail_with_files())
    await app.run_once()
    (t,) = tagged(dh)
    assert t["title"] == "[SB-000001] Printer jams" and "alice@example.com" in t["description"]
    assert len(dh.files(t["id"])) == 3
    assert [m["Subject"] for m in outgoing(spool)] == ["[SB-000001] We received your request"]

    dh.reply(t["id"], "We are sending a technician tomorrow.")
    await poll(app, SINK)
    await poll(app, SINK)
    replies = [m for m in outgoing(spool) if "technician" in text_of(m)]
    assert len(replies) == 1
    assert replies[0]["In-Reply-To"] == "<m1@example.com>" and "[SB-000001]" in replies[0]["Subject"]
    assert replies[0]["To"] == "alice@example.com"

    dh.reply(t["id"], "Fuser replaced.", new_status=3)
    await poll(app, SINK)
    await poll(app, SINK)
    notices = [m for m in outgoing(spool) if m["Subject"] == "[SB-000001] Your request is now resolved"]
    assert len(notices) == 1 and notices[0]["In-Reply-To"] == "<m1@example.com>"
    assert app.store.get_ticket("SB-000001").state is TicketState.RESOLVED
    assert list((dh.state / "outbox").iterdir()) == []  # django-helpdesk itself mailed nobody
    assert len(tagged(dh)) == 1


@pytest.mark.realserver
async def test_wrong_token_parks_the_target_and_it_flows_after_the_fix(
    make_app: Any, tmp_path: Path, dh: DhServer
) -> None:
    app = make_app(routing={"default": [SINK]}, outbound_allow=["127.0.0.1/32"],
                   plugins={SINK: dh.plugin_config(token="0" * 40)})
    drop(tmp_path, "1", eml())
    drop(tmp_path, "2", eml(subject="Second", msgid="<m2@example.com>"))
    await app.run_once()
    await app.delivery.drain()
    rows = [r for r in app.delivery.outbox.list() if r["target"] == SINK]
    assert [r["status"] for r in rows] == ["parked", "parked"]
    assert [r["attempts"] for r in rows] == [0, 0]
    assert "401" in app.delivery.alerts[SINK]
    assert dh.tickets() == []

    fixed = dh_app(make_app, dh)
    fixed.delivery.outbox.unpark()
    await fixed.delivery.drain()
    assert {r["status"] for r in fixed.delivery.outbox.list() if r["target"] == SINK} == {"done"}
    assert len(dh.tickets()) == 2


# ---------------------------------------------------------------------- the daemon, killed at each step
def _daemon_config(tmp_path: Path, dh: DhServer, spool: Path | None = None, name: str = "svcbridge.toml") -> Path:
    token = tmp_path / "dh-token"
    token.write_text(dh.svc_token + "\n")
    section = f"""
[plugins.djhelpdesk]
url = "{dh.url}"
token_file = "{token}"
queue = 1
poll_interval = 0.2
"""
    return daemon_config(tmp_path, SINK, section, spool=spool, name=name)


@pytest.mark.realserver
@pytest.mark.slow
def test_daemon_kill_9_at_each_step_gives_one_ticket_and_one_notice_per_event(tmp_path: Path, dh: DhServer) -> None:
    cfg = _daemon_config(tmp_path, dh)
    spool = tmp_path / "outgoing"
    drop(tmp_path, "1", mail_with_files())
    # killed right after journaling; then right after django-helpdesk committed the ticket and its files,
    # before the link was recorded (the mail spool is unusable in that run, so the helpdesk commits first)
    (tmp_path / "no-spool").write_text("a file, so no spool directory can be made here")
    crash_cfg = _daemon_config(tmp_path, dh, spool=tmp_path / "no-spool" / "outgoing", name="crash.toml")
    crash_at(cfg, "after_journal", timeout=60)
    took = {"create": crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=2, crash_cfg=crash_cfg)}
    assert "found existing django-helpdesk ticket 1" in (tmp_path / "daemon.log").read_text()
    (t,) = tagged(dh)
    assert len(dh.files(t["id"])) == 3
    assert len(outgoing(spool)) == 1

    dh.reply(t["id"], "A technician is on the way.")
    took["reply"] = crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=3)
    dh.reply(t["id"], "Fuser replaced.", new_status=3)
    # resolved with a comment: two events (the comment, the state change), so two mails
    took["resolve"] = crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=5)

    # the customer answers: killed right after django-helpdesk took the follow-up; the retry finds its marker
    drop(tmp_path, "2", eml(subject="Re: [SB-000001] Your request is now resolved", msgid="<m9@example.com>",
                            body="It is jamming again.", extra="In-Reply-To: <m1@example.com>\r\n"))
    took["customer"] = crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=6)
    assert f"already on django-helpdesk ticket {t['id']}" in (tmp_path / "daemon.log").read_text()
    relayed = [f for f in dh.ticket(t["id"])["followup_set"] if "jamming again" in f["comment"]]
    assert len(relayed) == 1 and dh.ticket(t["id"])["status"] == 2

    subjects = sorted(m["Subject"] for m in outgoing(spool))
    assert subjects == sorted([
        "[SB-000001] We received your request",
        "[SB-000001] Reply to your request",
        "[SB-000001] Reply to your request",
        "[SB-000001] Your request is now resolved",
    ]), subjects
    bodies = [text_of(m) for m in outgoing(spool)]
    assert sum("technician is on the way" in b for b in bodies) == 1
    assert sum("Fuser replaced." in b for b in bodies) == 1
    assert len(outbox(tmp_path)) == 6  # create, ack, 2 replies, resolved notice, customer follow-up
    assert all(m["In-Reply-To"] == "<m1@example.com>" for m in outgoing(spool))
    assert len(tagged(dh)) == 1
    shown = json.loads(subprocess.run([str(BIN), "--config", str(cfg), "tickets", "show", "SB-000001", "--json"],
                                      capture_output=True, text=True, check=True, cwd=tmp_path).stdout)
    assert shown["state"] == "in_progress"
    print("kill -9 step durations (s):", {k: round(v, 2) for k, v in took.items()})
