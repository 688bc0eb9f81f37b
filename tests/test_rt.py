"""The Request Tracker 5 connector, against a real RT (Debian request-tracker5 on a private port).

Covered: idempotent create (twice, and after a crash before the link was recorded), byte-exact
attachments, customer follow-ups as correspondence (idempotent too), agent replies / comments / status
changes back through ``poll_changes`` without echoing the customer's own messages, the mail -> RT -> mail
round trip of issue 4 in-process and as a real daemon killed with SIGKILL at each step, and a wrong token
parking the target. Failure classification (429/5xx/timeout/401/400/redirect) runs against a fake
transport, without RT.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from conftest import eml
from helpdesk_helpers import (
    BIN,
    LATIN1,
    PNG,
    UTF8,
    crash_at,
    crash_then_recover,
    daemon_config,
    drop,
    item_for,
    mail_with_files,
    outgoing,
    poll,
)
from rt_server import RtServer, running_rt
from svcbridge import (
    Attachment,
    AuthFailed,
    Contact,
    DeliveryItem,
    HelpdeskSink,
    NotReady,
    PermanentError,
    StateMap,
    Ticket,
    TicketState,
)
from svcbridge_rt import RtSettings, RtSink
from svcbridge_rt.client import rt_file_type

SINK = "rt"


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="session")
def rt_session() -> Iterator[RtServer]:
    with running_rt() as server:
        yield server


@pytest.fixture
def rt(rt_session: RtServer) -> RtServer:
    """The session's RT back at its pristine DB: no tickets, ticket ids from 1."""
    rt_session.reset()
    return rt_session


def rt_app(make_app: Any, rt: RtServer, **rt_extra: Any) -> Any:
    return make_app(
        routing={"default": ["rt"]},
        outbound_allow=["127.0.0.1/32"],
        plugins={"rt": rt.plugin_config(**rt_extra)},
    )


def tagged(rt: RtServer, ref: str = "SB-000001") -> list[dict[str, Any]]:
    return rt.tickets(f"Subject LIKE '[{ref}]'")


# ---------------------------------------------------------------------- without RT
def _sink(handler: Any, **cfg: Any) -> RtSink:
    settings = RtSettings(url="http://rt.test", token="1-2-secret", **cfg)
    return RtSink(settings, allow=["rt.test", "elsewhere.test"], transport=httpx.MockTransport(handler))


def _item(kind: str = "create") -> DeliveryItem:
    t = Ticket(id=1, ref="SB-000001", channel="email", subject="x", contact=Contact(email="a@example.com"))
    return DeliveryItem(id=1, kind=kind, target="rt", idempotency_key=f"SB-000001:{kind}:rt", ticket=t)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (httpx.Response(429, headers={"Retry-After": "30"}), NotReady),
        (httpx.Response(503, text="maintenance"), NotReady),
        (httpx.ReadTimeout("slow"), NotReady),
        (httpx.Response(401, json={"message": "Unauthorized"}), AuthFailed),
        (httpx.Response(403, json={"message": "No permission to create tickets in the queue 'X'"}), AuthFailed),
        (httpx.Response(400, json={"message": "Invalid value"}), PermanentError),
        (httpx.Response(302, headers={"Location": "http://elsewhere.test/REST/2.0/tickets"}), PermanentError),
    ],
)
async def test_failures_mean_what_the_host_needs(reply: Any, error: type[Exception]) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(reply, Exception):
            raise reply
        return reply

    sink = _sink(handler)
    with pytest.raises(error) as info:
        await sink.deliver(_item())
    assert {r.url.host for r in seen} == {"rt.test"}  # a redirect elsewhere is not followed
    assert all(r.headers["Authorization"] == "token 1-2-secret" for r in seen)
    assert "secret" not in str(info.value)
    if isinstance(reply, httpx.Response) and reply.status_code == 429:
        assert info.value.retry_after == 30  # type: ignore[attr-defined]


def test_settings_merge_maps_and_refuse_unknown_states() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shared keys are not deprecated
        s = RtSettings(url="http://rt.test/rt/", token="x", state_map={"from_helpdesk": {"stalled": "waiting_parts"}})
    assert s.api_base == "http://rt.test/rt/REST/2.0/"
    assert s.state_map.state("stalled") is TicketState.WAITING_PARTS
    assert s.state_map.state("resolved") is TicketState.RESOLVED  # defaults kept
    assert s.state_map.state("unknown") is None
    with pytest.raises(ValueError, match="unknown svcbridge states"):
        RtSettings(url="http://rt.test", token="x", state_map={"from_helpdesk": {"open": "working"}})


def test_old_state_map_keys_are_read_with_a_deprecation_warning() -> None:
    old = {"from_rt": {"Stalled": "waiting_parts", "rejected": ""}, "to_rt": {"in_progress": "working"}}
    with capture_logs() as logs, pytest.warns(DeprecationWarning) as caught:
        s = RtSettings(url="http://rt.test", token="x", state_map=old)
    assert sorted(str(w.message) for w in caught) == [
        "[plugins.rt.state_map] from_rt is deprecated; use from_helpdesk (same entries)",
        "[plugins.rt.state_map] to_rt is deprecated; use to_helpdesk (same entries)",
    ]
    said = [(e["log_level"], e["event"], e["key"], e["use"]) for e in logs]
    assert said == [
        ("warning", "deprecated_setting", "plugins.rt.state_map.from_rt", "plugins.rt.state_map.from_helpdesk"),
        ("warning", "deprecated_setting", "plugins.rt.state_map.to_rt", "plugins.rt.state_map.to_helpdesk"),
    ]
    # mapped onto the shared keys, merged over the defaults like them
    assert s.state_map.state("stalled") is TicketState.WAITING_PARTS
    assert s.state_map.state("rejected") is None
    assert s.state_map.state("resolved") is TicketState.RESOLVED
    assert s.state_map.remote(TicketState.IN_PROGRESS) == "working"
    assert s.state_map.remote(TicketState.RESOLVED) == "resolved"
    assert "from_rt" not in s.state_map.model_dump()

    # both spellings: the new key wins where they differ; bad entries under the old key are still refused
    with pytest.warns(DeprecationWarning):
        both = RtSettings(url="http://rt.test", token="x", state_map={
            "from_rt": {"stalled": "waiting_parts", "new": "new"}, "from_helpdesk": {"stalled": "on_site"}})
    assert both.state_map.state("stalled") is TicketState.ON_SITE
    assert both.state_map.state("new") is TicketState.NEW
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="unknown svcbridge states"):
        RtSettings(url="http://rt.test", token="x", state_map={"from_rt": {"open": "working"}})


def test_rt_is_on_the_shared_helpdesk_flow() -> None:
    sink = RtSink(RtSettings(url="http://rt.test", token="x"))
    assert isinstance(sink, HelpdeskSink) and isinstance(sink.state_map, StateMap)
    # the flow is HelpdeskSink's, not a fork: RT supplies only the remote calls
    assert RtSink.deliver is HelpdeskSink.deliver and RtSink.reconcile is HelpdeskSink.reconcile
    for step in ("find", "create", "find_message", "add_message", "remote_state", "set_state"):
        assert getattr(RtSink, step) is not getattr(HelpdeskSink, step), step


async def test_the_shared_flow_speaks_rt_rest2() -> None:
    """Create, follow-up with its marker (once), reopen and a note, against a small fake of RT's REST2."""
    statuses: dict[int, str] = {}
    subjects: list[str] = []  # of correspondence, in order
    calls: list[str] = []
    notes: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path, q = request.url.path.removeprefix("/REST/2.0/"), request.url.params.get("query", "")
        calls.append(f"{request.method} {path}")
        body = json.loads(request.content) if request.content else {}
        if path == "tickets":
            hit = [{"id": str(i), "Subject": "[SB-000001] x"} for i in statuses if "[SB-000001]" in q]
            return httpx.Response(200, json={"items": hit})
        if path == "ticket":
            assert body["Subject"] == "[SB-000001] x" and body["Requestor"] == "a@example.com"
            statuses[7] = "new"
            return httpx.Response(201, json={"id": 7})
        if path == "transactions":
            like = q.rsplit("Data LIKE '", 1)[-1].rstrip("'")  # a substring match, as in RT
            hit = [{"id": n, "Data": sub} for n, sub in enumerate(subjects, 100) if like in sub]
            return httpx.Response(200, json={"items": hit})
        if path == "ticket/7/correspond":
            subjects.append(body["Subject"])
            return httpx.Response(201, json=["ok"], headers={"Location": f"/REST/2.0/transaction/{99 + len(subjects)}"})
        if path == "ticket/7/comment":
            notes.append((body["Subject"], body["Content"]))
            return httpx.Response(201, json=["ok"], headers={"Location": "/REST/2.0/transaction/500"})
        if path == "ticket/7" and request.method == "GET":
            return httpx.Response(200, json={"id": 7, "Status": statuses[7]})
        if path == "ticket/7" and request.method == "PUT":
            statuses[7] = body["Status"]
            return httpx.Response(200, json=["Status changed"])
        return httpx.Response(404, json={"message": "not here"})

    sink = _sink(handler)
    created = await sink.deliver(_item())
    assert created.links[0].value == "7" and calls == ["GET tickets", "POST ticket"]
    assert (await sink.deliver(_item())).detail == "found existing RT ticket 7"

    update = _item("update")
    update = update.model_copy(update={
        "ticket": update.ticket.model_copy(update={"links": created.links}),
        "payload": {"type": "customer_message", "body": "again", "reopen": True}})
    statuses[7] = "resolved"
    first = await sink.deliver(update)
    assert first.detail == "follow-up on RT ticket 7 as 100, reopened" and statuses[7] == "open"
    assert subjects == ["[svcbridge SB-000001:update:rt] x"]
    statuses[7] = "resolved"  # a retry after a lost answer finds the message and only reopens
    again = await sink.deliver(update)
    assert again.detail == "already on RT ticket 7 as 100, reopened" and len(subjects) == 1
    assert statuses[7] == "open"

    # a note for the agents (a ticket change) is an RT comment, not correspondence the requestor sees
    assert await sink.add_note("7", update, "[svcbridge SB-000001:note:rt]", "warranty: in") == "500"
    assert calls[-1] == "POST ticket/7/comment" and notes == [("[svcbridge SB-000001:note:rt] svcbridge: "
                                                                "ticket updated", "warranty: in")]


async def test_an_html_only_agent_reply_comes_back_as_text() -> None:
    """RT keeps a reply written in its rich-text editor as text/html only: the customer gets it as text."""
    html = ("<html><head><style>p {color: red}</style></head><body><div>Hello Alice,<br></div>"
            "<div><a title='a>b' href='x'>Steps</a>:</div><ul><li>open&nbsp;tray</li><li>pull</li></ul>"
            "<p>Bob</p><!-- signature --></body></html>")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/transaction/5/attachments"):
            return httpx.Response(200, json={"items": [
                {"id": 8, "ContentType": "multipart/alternative", "ContentLength": "0"},
                {"id": 9, "ContentType": "text/html; charset=utf-8", "ContentLength": str(len(html))}]})
        if request.url.path.endswith("/attachment/9"):
            return httpx.Response(200, json={"Content": base64.b64encode(html.encode()).decode()})
        return httpx.Response(404, json={})

    text = await _sink(handler)._message_text("5")
    assert text == "Hello Alice,\nSteps:\n\nopen tray\npull\n\nBob"


def test_text_that_rt_would_transcode_goes_in_as_octet_stream() -> None:
    def att(data: bytes, ctype: str) -> Attachment:
        return Attachment.from_bytes(data, original_name="a.txt", content_type=ctype)

    assert rt_file_type(att(UTF8, "text/plain")) == "text/plain"
    assert rt_file_type(att(LATIN1, "text/plain")) == "application/octet-stream"
    assert rt_file_type(att(b"abc", "text/plain; charset=gb2312")) == "application/octet-stream"
    assert rt_file_type(att(PNG, "image/png")) == "image/png"


# ---------------------------------------------------------------------- against the real RT
@pytest.mark.realserver
@pytest.mark.parametrize("custom_field", [None, "svcbridge-ref"])
async def test_create_is_idempotent_and_attachments_are_byte_exact(
    make_app: Any, tmp_path: Path, rt: RtServer, custom_field: str | None
) -> None:
    extra = {"ref_custom_field": custom_field} if custom_field else {}
    app = rt_app(make_app, rt, **extra)
    drop(tmp_path, "1", mail_with_files())
    await app.run_once()
    ticket = app.store.get_ticket("SB-000001")
    rid = ticket.link("rt", "ticket")
    assert rid and [t["id"] for t in tagged(rt)] == [rid]

    # the very bytes svcbridge stored, per original file name, arrived in RT
    sent = {a.original_name: a.sha256 for a in ticket.attachments}
    assert set(sent) == {"photo.png", "zaehler.txt", "notes.txt", "dump.bin"}
    assert rt.files(rid) == sent

    # delivering the same item again, and after a crash before the link was recorded: still one ticket
    sink = app.delivery.sinks["rt"]
    item = item_for(app, SINK, "SB-000001")
    unlinked = item.model_copy(update={"ticket": item.ticket.model_copy(update={"links": []}), "attempts": 1})
    assert (await sink.deliver(item)).links[0].value == rid
    assert (await sink.reconcile(unlinked)).links[0].value == rid  # type: ignore[union-attr]
    assert (await sink.deliver(unlinked)).links[0].value == rid
    assert [t["id"] for t in rt.tickets()] == [rid]

    # a ticket someone else made with the same tag (a customer mailing RT) is not taken for ours
    if not custom_field:
        with rt.agent() as c:
            c.post("ticket", json={"Queue": "General", "Subject": "[SB-000002] fake"}).raise_for_status()
        drop(tmp_path, "2", eml(subject="Another one", msgid="<m2@example.com>"))
        await app.run_once()
        second = app.store.get_ticket("SB-000002").link("rt", "ticket")
        assert second and len(tagged(rt, "SB-000002")) == 2 and second != tagged(rt, "SB-000002")[0]["id"]


@pytest.mark.realserver
async def test_followups_replies_and_status_round_trip_without_echo(
    make_app: Any, tmp_path: Path, rt: RtServer
) -> None:
    app = rt_app(make_app, rt, poll_page_size=2)
    assert await poll(app, SINK) == []  # first poll: start at RT's newest transaction
    drop(tmp_path, "1", eml())
    await app.run_once()
    rid = app.store.get_ticket("SB-000001").link("rt", "ticket")

    # the customer's follow-up with a file becomes correspondence on the same RT ticket, once
    follow = mail_with_files(subject="Re: Printer jams", msgid="<m2@example.com>", body="Still jamming, photo attached.",
                             extra={"In-Reply-To": "<m1@example.com>"}, files=[("jam.png", "image/png", PNG)])
    drop(tmp_path, "2", follow)
    await app.run_once()
    upd = item_for(app, SINK, "SB-000001", "update")
    await app.delivery.sinks["rt"].deliver(upd)  # a resend after a lost answer adds nothing
    corr = [h for h in rt.history(rid) if h["Type"] == "Correspond"]
    assert len(corr) == 1 and corr[0]["Creator"]["id"] == "svcbridge"
    assert rt.files(rid) == {"jam.png": hashlib.sha256(PNG).hexdigest()}
    with rt.agent() as c:
        parts = c.get(f"transaction/{corr[0]['id']}/attachments", params={"fields": "Content,ContentType"}).json()
    assert any("Still jamming, photo attached." in (p.get("Content") or "") for p in parts["items"])

    # the customer's own message (and RT opening the ticket because of it) is not echoed back
    assert await poll(app, SINK) == []

    # the customer mails RT directly (rt-mailgate): a requestor's correspondence is not an agent reply
    direct = eml(subject=f"[svcbridge.test #{rid}] one more thing", msgid="<m3@example.com>")
    subprocess.run(["rt-mailgate", "--queue", "General", "--action", "correspond", "--url", rt.url + "/"],
                   input=direct, check=True, timeout=60)
    assert any(h["Creator"]["id"] == "alice@example.com" for h in rt.history(rid))
    assert await poll(app, SINK) == []

    # busy tickets in a queue svcbridge's RT user may not see do not stall the poll (pages of 2 here)
    with rt.agent() as c:
        c.post("queue", json={"Name": "Hidden"}).raise_for_status()
        for n in range(3):
            hidden = c.post("ticket", json={"Queue": "Hidden", "Subject": f"[SB-00000{n + 5}] internal",
                                            "Content": "x", "ContentType": "text/plain"}).json()["id"]
            rt.reply(hidden, "not for svcbridge")

    # agent (root) reply, internal comment, resolve: each comes back once, in order
    rt.reply(rid, "Please clean the rollers.")
    rt.reply(rid, "Customer has an old model.", kind="comment")
    rt.set_status(rid, "resolved")
    got = await poll(app, SINK)
    assert [(u.public_reply, u.internal_note, u.state) for u in got] == [
        ("Please clean the rollers.", None, None),
        (None, "Customer has an old model.", None),
        (None, None, TicketState.RESOLVED),
    ]
    assert all(u.external_ticket_id == rid and u.system == "rt" for u in got)
    assert await poll(app, SINK) == []
    assert app.store.get_ticket("SB-000001").state is TicketState.RESOLVED

    # reading the same transactions again (a crash before the cursor was stored) changes nothing
    sink = app.delivery.sinks["rt"]
    before = len(app.delivery.outbox.list())
    again, _ = await sink.poll_changes(str(int(got[0].external_event_id) - 1))
    assert [u.external_event_id for u in again] == [u.external_event_id for u in got]
    assert not any([await app.pipeline.apply_status_update(u) for u in again])
    assert len(app.delivery.outbox.list()) == before


@pytest.mark.realserver
async def test_end_to_end_mail_to_rt_and_back(make_app: Any, tmp_path: Path, rt: RtServer) -> None:
    """Issue 4, RT half: mail -> one RT ticket with files; agent reply and resolution -> threaded mails."""
    app = rt_app(make_app, rt)
    spool = tmp_path / "outgoing"
    await poll(app, SINK)
    drop(tmp_path, "1", mail_with_files())
    await app.run_once()
    (t,) = tagged(rt)
    assert t["Subject"] == "[SB-000001] Printer jams"
    assert [r["id"] for r in t["Requestor"]] == ["alice@example.com"]
    ticket = app.store.get_ticket("SB-000001")
    assert rt.files(t["id"]) == {a.original_name: a.sha256 for a in ticket.attachments}
    assert [m["Subject"] for m in outgoing(spool)] == ["[SB-000001] We received your request"]

    rt.reply(t["id"], "We are sending a technician tomorrow.")
    await poll(app, SINK)
    await poll(app, SINK)  # a second poll adds nothing
    replies = [m for m in outgoing(spool) if "technician" in m.get_body(preferencelist=("plain",)).get_content()]
    assert len(replies) == 1
    reply = replies[0]
    assert reply["In-Reply-To"] == "<m1@example.com>" and "<m1@example.com>" in reply["References"]
    assert "[SB-000001]" in reply["Subject"] and reply["To"] == "alice@example.com"

    rt.set_status(t["id"], "resolved")
    await poll(app, SINK)
    await poll(app, SINK)
    notices = [m for m in outgoing(spool) if m["Subject"] == "[SB-000001] Your request is now resolved"]
    assert len(notices) == 1 and notices[0]["In-Reply-To"] == "<m1@example.com>"
    assert app.store.get_ticket("SB-000001").state is TicketState.RESOLVED

    # the customer answers the resolution: the RT ticket is reopened, nothing is echoed to the customer
    sent = len(outgoing(spool))
    drop(tmp_path, "2", eml(subject="Re: [SB-000001] Your request is now resolved", msgid="<m9@example.com>",
                            body="It is jamming again.", extra="In-Reply-To: <m1@example.com>\r\n"))
    await app.run_once()
    await poll(app, SINK)
    assert [x["Status"] for x in tagged(rt)] == ["open"]
    assert app.store.get_ticket("SB-000001").state is TicketState.IN_PROGRESS
    assert len(outgoing(spool)) == sent
    assert len(tagged(rt)) == 1


@pytest.mark.realserver
async def test_wrong_token_parks_the_target_and_it_flows_after_the_fix(
    make_app: Any, tmp_path: Path, rt: RtServer
) -> None:
    bad = "1-27-" + "0" * 32
    app = make_app(routing={"default": ["rt"]}, outbound_allow=["127.0.0.1/32"],
                   plugins={"rt": rt.plugin_config(token=bad)})
    drop(tmp_path, "1", eml())
    drop(tmp_path, "2", eml(subject="Second", msgid="<m2@example.com>"))
    await app.run_once()
    await app.delivery.drain()
    rows = [r for r in app.delivery.outbox.list() if r["target"] == "rt"]
    assert [r["status"] for r in rows] == ["parked", "parked"]
    assert [r["attempts"] for r in rows] == [0, 0]  # parked at the first 401, not retried
    assert "401" in app.delivery.alerts["rt"]  # alerted
    assert rt.tickets() == []

    fixed = rt_app(make_app, rt)  # same data dir, right token; the daemon unparks on start
    fixed.delivery.outbox.unpark()
    await fixed.delivery.drain()
    assert {r["status"] for r in fixed.delivery.outbox.list() if r["target"] == "rt"} == {"done"}
    assert len(rt.tickets()) == 2


# ---------------------------------------------------------------------- the daemon, killed at each step
def _daemon_config(tmp_path: Path, rt: RtServer, spool: Path | None = None, name: str = "svcbridge.toml") -> Path:
    token = tmp_path / "rt-token"
    token.write_text(rt.svc_token + "\n")
    section = f"""
[plugins.rt]
url = "{rt.url}"
token_file = "{token}"
queue = "General"
poll_interval = 0.2
"""
    return daemon_config(tmp_path, SINK, section, spool=spool, name=name)


@pytest.mark.realserver
@pytest.mark.slow
def test_daemon_kill_9_at_each_step_gives_one_ticket_and_one_notice_per_event(tmp_path: Path, rt: RtServer) -> None:
    cfg = _daemon_config(tmp_path, rt)
    spool = tmp_path / "outgoing"
    drop(tmp_path, "1", mail_with_files())
    # killed right after journaling the mail; then right after RT committed the new ticket, before the
    # link was recorded (the mail spool is unusable in that run, so RT is the first remote commit)
    (tmp_path / "no-spool").write_text("a file, so no spool directory can be made here")
    crash_cfg = _daemon_config(tmp_path, rt, spool=tmp_path / "no-spool" / "outgoing", name="crash.toml")
    crash_at(cfg, "after_journal", timeout=60)
    crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=2, crash_cfg=crash_cfg)  # create + ack
    assert "found existing RT ticket 1" in (tmp_path / "daemon.log").read_text()  # not created again
    (t,) = tagged(rt)
    assert len(rt.files(t["id"])) == 4
    assert len(outgoing(spool)) == 1

    rt.reply(t["id"], "A technician is on the way.")
    crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=4)  # + reply + "in progress"
    rt.set_status(t["id"], "resolved")
    crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=5)  # + resolution notice

    # the customer answers: killed right after RT took the correspondence; the retry finds it by its marker
    drop(tmp_path, "2", eml(subject="Re: [SB-000001] Your request is now resolved", msgid="<m9@example.com>",
                            body="It is jamming again.", extra="In-Reply-To: <m1@example.com>\r\n"))
    crash_then_recover(cfg, tmp_path, "after_remote_commit", rows=6)
    assert f"already on RT ticket {t['id']}" in (tmp_path / "daemon.log").read_text()
    relayed = [h for h in rt.history(t["id"]) if h["Type"] == "Correspond" and h["Creator"]["id"] == "svcbridge"]
    assert len(relayed) == 1 and [x["Status"] for x in tagged(rt)] == ["open"]

    mails = outgoing(spool)
    subjects = sorted(m["Subject"] for m in mails)
    assert subjects == sorted([
        "[SB-000001] We received your request",
        "[SB-000001] Reply to your request",
        "[SB-000001] Your request is now in progress",
        "[SB-000001] Your request is now resolved",
    ])
    assert all(m["In-Reply-To"] == "<m1@example.com>" for m in mails)
    assert len(tagged(rt)) == 1
    shown = json.loads(subprocess.run([str(BIN), "--config", str(cfg), "tickets", "show", "SB-000001", "--json"],
                                      capture_output=True, text=True, check=True, cwd=tmp_path).stdout)
    assert shown["state"] == "in_progress"  # reopened by the customer, and nothing echoed back to them
