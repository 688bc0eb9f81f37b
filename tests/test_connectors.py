"""Every SaaS helpdesk connector, one table: the same cases against each service's contract fake.

The real pipeline runs (Maildir -> journal -> ticket -> outbox -> sink -> fake over an httpx transport),
status comes back through svcbridge's real Starlette app (signed webhooks) or ``poll_changes``.

Adding a connector = one ``Connector`` subclass and one entry in ``CONNECTORS``:

- ``name``: its ``[plugins.<name>]`` section and sink name; ``make_fake()``: a ``tests.fakes`` service;
- ``config(fake)``: the section pointed at the fake (``transport = fake.transport``);
- ``tickets(fake)``: the fake's tickets as ``RemoteTicket`` / ``RemoteMessage`` (``fake.view()``);
- ``agent_reply(fake, rid, text, internal)``, ``agent_state(fake, rid, state)``: act as an agent (the fake
  fires its signed webhook, or records what ``poll_changes`` will find);
- ``attachments``: False when the contract has no way to transfer files (their names must then be in
  the ticket text); ``hook_path``: the ``/hooks/...`` path, or None for a poll-only connector;
  ``followup_method``: the HTTP method that posts a customer's follow-up (ServiceNow PATCHes);
- ``priority_p1``: the remote priority (``RemoteTicket.priority``) after a ticket change to P1, None
  where the change reaches the agents as a note only; ``priority_method``: the HTTP method that sets it;
- ``secrets``: credential values that must never appear in an error or reach another host.

Faults come from the fake (``fail_next``, see ``tests/fakes/base.py``); the expected outcomes are the
outbox's: 429/503/timeout retry (Retry-After honoured), 401/403 park the target with one call and an alert,
invalid input dead-letters that item only, a redirect to another host is refused without following it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from fakes.base import ELSEWHERE, FakeService, RemoteTicket
from fakes.glpi import FakeGlpi
from fakes.jsm import FakeJsm
from fakes.servicenow import FakeServiceNow
from fakes.zammad import FakeZammad
from helpdesk_helpers import mail_with_files
from svcbridge import AuthFailed, DeliveryItem, NotReady, PermanentError, TicketState, utcnow
from svcbridge.web import build_web

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + bytes(range(256)) * 8
LATIN1 = "Zählerstand: 4711 Grüße\r\n".encode("latin-1")
BLOB = hashlib.sha256(b"seed").digest() * 512  # 16 KiB of incompressible bytes
FILES = [("photo.png", "image/png", PNG), ("zaehler.txt", "text/plain", LATIN1), ("dump.bin", "application/octet-stream", BLOB)]


# ---------------------------------------------------------------------- the table
class Connector:
    name: ClassVar[str]
    attachments: ClassVar[bool] = True
    hook_path: ClassVar[str | None] = None
    followup_method: ClassVar[str] = "POST"
    priority_p1: ClassVar[str | None] = None
    priority_method: ClassVar[str] = "PUT"

    def make_fake(self) -> FakeService:
        raise NotImplementedError

    def config(self, fake: Any) -> dict[str, Any]:
        raise NotImplementedError

    def secrets(self, fake: Any) -> list[str]:
        raise NotImplementedError

    def tickets(self, fake: Any) -> list[RemoteTicket]:
        return fake.view()  # type: ignore[no-any-return]

    def agent_reply(self, fake: Any, rid: str, text: str, internal: bool) -> None:
        raise NotImplementedError

    def agent_state(self, fake: Any, rid: str, state: TicketState) -> None:
        raise NotImplementedError


class ZammadConnector(Connector):
    name = "zammad"
    hook_path = "/hooks/zammad"
    priority_p1 = "3 high"
    STATES: ClassVar[dict[TicketState, str]] = {
        TicketState.RESOLVED: "pending close",
        TicketState.WAITING_CUSTOMER: "pending reminder",
        TicketState.CLOSED: "closed",
    }

    def make_fake(self) -> FakeZammad:
        return FakeZammad()

    def config(self, fake: FakeZammad) -> dict[str, Any]:
        return {
            "url": f"http://{fake.host}",
            "token": fake.token,
            "group": "Support",
            "webhook_secret": fake.hook_secret,
            "transport": fake.transport,
        }

    def secrets(self, fake: FakeZammad) -> list[str]:
        return [fake.token, fake.hook_secret]

    def agent_reply(self, fake: FakeZammad, rid: str, text: str, internal: bool) -> None:
        fake.agent_article(int(rid), f"<p>{text}</p>", internal=internal)

    def agent_state(self, fake: FakeZammad, rid: str, state: TicketState) -> None:
        fake.agent_state(int(rid), self.STATES[state])


class GlpiConnector(Connector):
    name = "glpi"
    hook_path = "/hooks/glpi"
    attachments = False  # the contract has no Document upload
    priority_p1 = "5"  # urgency "very high"; GLPI derives the priority from it
    STATES: ClassVar[dict[TicketState, int]] = {
        TicketState.RESOLVED: 5,
        TicketState.WAITING_CUSTOMER: 4,
        TicketState.CLOSED: 6,
    }

    def make_fake(self) -> FakeGlpi:
        return FakeGlpi()

    def config(self, fake: FakeGlpi) -> dict[str, Any]:
        return {
            "url": f"http://{fake.host}",
            "user_token": fake.user_token,
            "app_token": fake.app_token,
            "webhook_secret": fake.hook_secret,
            "transport": fake.transport,
        }

    def secrets(self, fake: FakeGlpi) -> list[str]:
        return [fake.user_token, str(fake.app_token), fake.hook_secret, *fake.sessions]

    def agent_reply(self, fake: FakeGlpi, rid: str, text: str, internal: bool) -> None:
        fake.agent_followup(int(rid), f"<p>{text}</p>", private=internal)

    def agent_state(self, fake: FakeGlpi, rid: str, state: TicketState) -> None:
        fake.agent_status(int(rid), self.STATES[state])


class JsmConnector(Connector):
    name = "jsm"
    hook_path = "/hooks/jsm"
    attachments = False  # the contract has no attachment call (attachTemporaryFile is not in §1.4)
    STATES: ClassVar[dict[TicketState, str]] = {
        TicketState.RESOLVED: "Resolved",
        TicketState.WAITING_CUSTOMER: "Waiting for customer",
        TicketState.CLOSED: "Closed",
    }

    def make_fake(self) -> FakeJsm:
        return FakeJsm()

    def config(self, fake: FakeJsm) -> dict[str, Any]:
        return {
            "url": f"http://{fake.host}",
            "email": fake.email,
            "api_token": fake.api_token,
            "service_desk_id": fake.service_desk_id,
            "request_type_id": "10",
            "webhook_secret": fake.hook_secret,
            "transport": fake.transport,
        }

    def secrets(self, fake: FakeJsm) -> list[str]:
        basic = base64.b64encode(f"{fake.email}:{fake.api_token}".encode()).decode()
        return [fake.api_token, basic, fake.oauth_token, fake.hook_secret]

    def agent_reply(self, fake: FakeJsm, rid: str, text: str, internal: bool) -> None:
        fake.agent_comment(rid, text, public=not internal)

    def agent_state(self, fake: FakeJsm, rid: str, state: TicketState) -> None:
        fake.agent_status(rid, self.STATES[state])


class JsmPriorityConnector(JsmConnector):
    """JSM with ``send_priority`` and a request type whose form has the priority field."""

    priority_p1 = "Highest"

    def config(self, fake: FakeJsm) -> dict[str, Any]:
        return {**super().config(fake), "request_type_id": "11", "send_priority": True}


class ServiceNowConnector(Connector):
    name = "servicenow"
    hook_path = None  # no signed webhook of its own (§1.5): poll_changes on sys_updated_on
    attachments = False  # the Attachment API is not in the contract
    followup_method = "PATCH"  # comments are a field of the incident
    priority_p1 = "urgency 1, impact 1"  # ServiceNow derives the priority from the pair
    priority_method = "PATCH"
    STATES: ClassVar[dict[TicketState, str]] = {
        TicketState.RESOLVED: "6",
        TicketState.WAITING_CUSTOMER: "3",
        TicketState.CLOSED: "7",
    }

    def make_fake(self) -> FakeServiceNow:
        return FakeServiceNow()

    def config(self, fake: FakeServiceNow) -> dict[str, Any]:
        return {
            "url": f"http://{fake.host}",
            "username": fake.username,
            "password": fake.password,
            "transport": fake.transport,
        }

    def secrets(self, fake: FakeServiceNow) -> list[str]:
        basic = base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
        return [fake.password, basic, fake.token]

    def agent_reply(self, fake: FakeServiceNow, rid: str, text: str, internal: bool) -> None:
        fake.agent_comment(rid, text, work_note=internal)

    def agent_state(self, fake: FakeServiceNow, rid: str, state: TicketState) -> None:
        fake.agent_state(rid, self.STATES[state])


CONNECTORS: list[Connector] = [ZammadConnector(), GlpiConnector(), JsmConnector(), ServiceNowConnector()]


# ---------------------------------------------------------------------- environment
@dataclass
class Env:
    c: Connector
    fake: Any
    app: Any
    web: httpx.AsyncClient
    tmp: Path

    @property
    def sink(self) -> Any:
        return self.app.delivery.sinks[self.c.name]

    def ours(self) -> list[RemoteTicket]:
        return [t for t in self.c.tickets(self.fake) if re.search(r"\[SB-\d+\]", t.title)]

    def rows(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = [r for r in self.app.delivery.outbox.list() if r["target"] == self.c.name]
        return [r for r in rows if kind is None or r["kind"] == kind]

    def events(self, ref: str = "SB-000001", kind: str | None = None) -> list[Any]:
        evs = self.app.store.get_ticket(ref).events
        return [e for e in evs if kind is None or e.type == kind]


@pytest.fixture(params=CONNECTORS, ids=lambda c: c.name)
async def env(request: Any, make_app: Any, tmp_path: Path) -> AsyncIterator[Env]:
    c: Connector = request.param
    fake = c.make_fake()
    app = make_app(
        routing={"default": [c.name]},
        outbound_allow=[fake.host, ELSEWHERE],  # the guard must not be what stops a redirect
        # retries are never due within one drain (a slow machine would otherwise retry before the test
        # looked); due_now() makes them due when a test wants them
        outbox={"concurrency": 1, "backoff_initial": 30.0, "backoff_max": 60.0},
        plugins={c.name: c.config(fake)},
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(build_web(app)), base_url="http://bridge.test") as web:
        yield Env(c, fake, app, web, tmp_path)
    close = getattr(app.delivery.sinks.get(c.name), "aclose", None)
    if close is not None:
        await close()


def mail(
    subject: str = "Printer jams",
    msgid: str = "<m1@example.com>",
    body: str = "It jams on every page.",
    files: list[tuple[str, str, bytes]] | None = None,
    reply_to: str | None = None,
) -> bytes:
    """Alice's mail, without files unless given (the RT / django-helpdesk builder adds four by default)."""
    extra = {"In-Reply-To": reply_to} if reply_to else None
    return mail_with_files(subject, msgid, body, extra=extra, files=files or [])


async def receive(env: Env, *mails: bytes) -> None:
    """Drop mails into the Maildir, run the pipeline, deliver what is due now."""
    new = env.tmp / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    start = len(list(new.iterdir())) + len(list((env.tmp / "maildir" / "cur").glob("*")))
    for i, data in enumerate(mails, start):  # named in order: the Maildir is read in name order
        (new / f"{i:04d}-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
    await env.app.poll_sources_once()
    await env.app.pipeline.drain()
    await env.app.delivery.drain()


async def due_now(env: Env) -> None:
    """Make retries due (the backoff is real) and deliver again."""
    from sqlalchemy import update

    from svcbridge.store import schema

    with env.app.store.tx() as conn:
        conn.execute(update(schema.outbox).where(schema.outbox.c.status == "pending").values(next_attempt_at=utcnow()))
    await env.app.delivery.drain()


def item_for(env: Env, ref: str, kind: str) -> DeliveryItem:
    """The DeliveryItem the outbox built for `ref`'s last `kind` row, to send it again by hand."""
    ticket = env.app.store.get_ticket(ref)
    row = [r for r in env.rows(kind) if r["ticket_id"] == ticket.id][-1]
    payload = row["payload"] or {}
    journal = int(payload["journal_id"]) if payload.get("journal_id") else None
    atts = env.app.store.attachments_with_data(ticket.id, journal) if journal else env.app.store.attachments_with_data(ticket.id)
    return DeliveryItem(id=row["id"], kind=kind, target=env.c.name, idempotency_key=row["idempotency_key"],
                        ticket=ticket, payload=payload, attempts=1, attachments=atts)


async def sync(env: Env) -> list[dict[str, Any]]:
    """Bring the helpdesk's changes to svcbridge: post the fired webhooks, or run one poll round."""
    answers: list[dict[str, Any]] = []
    if env.c.hook_path:
        for hook in env.fake.take_hooks():
            r = await env.web.post(env.c.hook_path, content=hook.body, headers=hook.headers)
            assert r.status_code == 200, r.text
            answers.append(r.json())
    else:
        key = f"sink:{env.c.name}"
        cursor = env.app.store.get_checkpoint(key, "cursor")
        updates, new = await env.sink.poll_changes(cursor)
        for upd in updates:
            answers.append({"applied": await env.app.pipeline.apply_status_update(upd)})
        if new is not None:
            env.app.store.set_checkpoint(key, "cursor", new)
    await env.app.delivery.drain()
    return answers


def remote_id(env: Env, ref: str = "SB-000001") -> str:
    rid = env.app.store.get_ticket(ref).link(env.c.name, "ticket")
    assert rid, f"no {env.c.name} link on {ref}"
    return str(rid)


def files_of(t: RemoteTicket) -> dict[str, bytes]:
    return {name: data for m in t.messages for name, data in m.files.items()}


def assert_files(env: Env, t: RemoteTicket, files: list[tuple[str, str, bytes]]) -> None:
    if env.c.attachments:
        assert files_of(t) == {name: data for name, _, data in files}  # byte-exact, each once
    else:  # the contract cannot carry them: they are named in the text, kept in svcbridge
        text = "\n".join(m.text for m in t.messages)
        assert all(name in text for name, _, _ in files), text


# ---------------------------------------------------------------------- create and follow-up
async def test_create_once_with_attachments_even_when_the_reply_is_lost(env: Env) -> None:
    env.fake.fail_next("timeout", method="POST", commit=True)  # created remotely, the answer never came
    await receive(env, mail(files=FILES))
    assert env.rows("create")[0]["status"] == "pending"
    await due_now(env)  # the retry reconciles: finds the ticket by reference, finishes it
    [t] = env.ours()
    assert env.rows("create")[0]["status"] == "done"
    assert remote_id(env) == t.id and "[SB-000001] Printer jams" in t.title
    assert "It jams on every page." in "\n".join(m.text for m in t.messages)
    assert_files(env, t, FILES)

    count = len(t.messages)
    result = await env.sink.deliver(item_for(env, "SB-000001", "create"))  # a redelivery by hand
    assert [ln.value for ln in result.links] == [t.id]
    [again] = env.ours()
    assert len(again.messages) == count and files_of(again) == files_of(t)


async def test_customer_followup_is_posted_once(env: Env) -> None:
    await receive(env, mail())
    env.fake.fail_next("503", method=env.c.followup_method, commit=True)
    extra = [("log.txt", "text/plain", LATIN1)]
    await receive(env, mail(subject="Re: Printer jams", msgid="<m2@example.com>", body="Still jams.",
                            files=extra, reply_to="<m1@example.com>"))
    [row] = env.rows("update")
    assert row["status"] == "pending" and "503" in row["last_error"]
    await due_now(env)
    assert env.rows("update")[0]["status"] == "done"
    await env.sink.deliver(item_for(env, "SB-000001", "update"))  # and once more by hand
    [t] = env.ours()
    followups = [m for m in t.messages if "Still jams." in m.text]
    assert len(followups) == 1
    assert not followups[0].by_agent
    if env.c.attachments:
        assert followups[0].files == {"log.txt": LATIN1}


async def test_a_ticket_change_reaches_the_helpdesk_once_as_a_note(env: Env) -> None:
    """What a job or timer found (changes.py) goes to the helpdesk through the outbox, idempotently,
    and the note svcbridge posted never comes back as an agent's reply."""
    from svcbridge import TicketChange
    from svcbridge.changes import record

    await receive(env, mail())
    ticket = env.app.store.get_ticket("SB-000001")
    change = TicketChange(labels={"warranty": "in"}, category="printer", note="In warranty until 2027-05-01.")
    with env.app.store.tx() as conn:
        record(conn, env.app.store, ticket, change, plugin="warranty", origin="job:1")
    env.fake.fail_next("503", method=env.c.followup_method, commit=True)  # posted, the answer lost
    await env.app.delivery.drain()
    await due_now(env)
    [row] = [r for r in env.rows("update") if r["payload"]["type"] == "ticket_updated"]
    assert row["status"] == "done", row["last_error"]
    await env.sink.deliver(item_for(env, "SB-000001", "update"))  # and once more by hand
    [t] = env.ours()
    notes = [m for m in t.messages if "In warranty until 2027-05-01." in m.text]
    assert len(notes) == 1 and "warranty: (none) → in" in notes[0].text
    assert notes[0].internal and not notes[0].by_agent  # for the agents: the customer never sees it
    assert "[svcbridge SB-000001:chg:job:1:warranty:" in notes[0].text
    answers = await sync(env)
    echoed = env.events(kind="agent_reply") + env.events(kind="internal_note")
    assert not [e for e in echoed if "In warranty" in str(e.data)], answers


# every connector; JSM once more with send_priority (its request type "11" has the field)
@pytest.mark.parametrize("env", [*CONNECTORS, JsmPriorityConnector()], indirect=True,
                         ids=lambda c: c.name + ("+priority" if isinstance(c, JsmPriorityConnector) else ""))
async def test_a_priority_change_sets_the_remote_priority_where_it_is_carried(env: Env) -> None:
    """A change to P1 becomes the helpdesk's own priority on connectors that carry it (a priority call
    whose answer was lost is made again, the note still posted once), and reaches the others as an
    internal note only; either way nothing comes back from the helpdesk as an agent's words."""
    from svcbridge import Priority, TicketChange
    from svcbridge.changes import record

    await receive(env, mail())
    [before] = env.ours()
    ticket = env.app.store.get_ticket("SB-000001")
    assert ticket.priority is Priority.P3
    with env.app.store.tx() as conn:
        record(conn, env.app.store, ticket, TicketChange(priority=Priority.P1), plugin="sla", origin="timer:1:1")
    carried = env.c.priority_p1 is not None
    if carried:
        assert "priority" in env.sink.fields
        env.fake.fail_next("503", method=env.c.priority_method, commit=True)  # set, the answer lost
    await env.app.delivery.drain()
    [row] = [r for r in env.rows("update") if r["payload"]["type"] == "ticket_updated"]
    if carried:
        assert row["status"] == "pending" and "503" in row["last_error"]
        await due_now(env)
    [row] = [r for r in env.rows("update") if r["payload"]["type"] == "ticket_updated"]
    assert row["status"] == "done", row["last_error"]
    await env.sink.deliver(item_for(env, "SB-000001", "update"))  # and once more by hand

    [t] = env.ours()
    assert t.priority == (env.c.priority_p1 if carried else before.priority)
    assert t.priority != before.priority or not carried
    if not carried:  # no call tried to set it
        assert not [r for r in env.fake.seen() if r.method == env.c.priority_method]
    notes = [m for m in t.messages if "priority: 3 → 1" in m.text]
    assert len(notes) == 1 and notes[0].internal and "Ticket updated by sla" in notes[0].text
    answers = await sync(env)  # the helpdesk's hooks about the change, or a poll round
    assert env.events(kind="agent_reply") == [] and env.events(kind="internal_note") == [], answers
    assert env.app.store.get_ticket("SB-000001").priority is Priority.P1


# ---------------------------------------------------------------------- back from the helpdesk
async def test_agent_reply_note_and_state_come_back_but_our_own_posts_do_not(env: Env) -> None:
    await receive(env, mail(files=FILES))
    await receive(env, mail(subject="Re: Printer jams", msgid="<m2@example.com>", body="Still jams.",
                            reply_to="<m1@example.com>"))
    await sync(env)  # whatever the helpdesk reports about svcbridge's own posts
    assert env.events(kind="agent_reply") == [] and env.events(kind="internal_note") == []

    rid = remote_id(env)
    env.c.agent_reply(env.fake, rid, "Fuser replaced, please try again.", internal=False)
    env.c.agent_reply(env.fake, rid, "Part 4711 taken from van stock.", internal=True)
    env.c.agent_state(env.fake, rid, TicketState.RESOLVED)
    await sync(env)
    [reply] = env.events(kind="agent_reply")
    assert "Fuser replaced, please try again." in reply.data["body"] and "<p>" not in reply.data["body"]
    [note] = env.events(kind="internal_note")
    assert "Part 4711 taken from van stock." in note.data["body"]
    assert env.app.store.get_ticket("SB-000001").state is TicketState.RESOLVED
    notices = [r for r in env.app.delivery.outbox.list() if r["kind"] == "notify"]
    told = "\n".join(str((r["payload"] or {}).get("notification", {}).get("body", "")) for r in notices)
    assert "Fuser replaced" in told and "Part 4711" not in told  # the note stays internal


# only connectors whose contract has a signed webhook (ServiceNow reports by polling)
@pytest.mark.parametrize("env", [c for c in CONNECTORS if c.hook_path], indirect=True, ids=lambda c: c.name)
async def test_webhook_signature_is_checked_and_redelivery_ignored(env: Env) -> None:
    await receive(env, mail())
    env.fake.take_hooks()
    env.c.agent_reply(env.fake, remote_id(env), "Technician comes at 10:00.", internal=False)
    *_, hook = env.fake.take_hooks()  # Jira sends an issue update before comment_created
    tampered = await env.web.post(env.c.hook_path, content=hook.body + b" ", headers=hook.headers)
    assert tampered.status_code == 401
    unsigned = {k: v for k, v in hook.headers.items() if "signature" not in k.lower()}
    assert (await env.web.post(env.c.hook_path, content=hook.body, headers=unsigned)).status_code == 401
    assert env.events(kind="agent_reply") == []
    first = await env.web.post(env.c.hook_path, content=hook.body, headers=hook.headers)
    again = await env.web.post(env.c.hook_path, content=hook.body, headers=hook.headers)
    assert (first.json(), again.json()) == ({"applied": True}, {"applied": False})
    assert len(env.events(kind="agent_reply")) == 1


# ---------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    ("kind", "error"),
    [("429", NotReady), ("503", NotReady), ("timeout", NotReady), ("401", AuthFailed), ("403", AuthFailed),
     ("422", PermanentError), ("reject", PermanentError), ("redirect", PermanentError)],
)
async def test_each_failure_means_what_the_outbox_needs(env: Env, kind: str, error: type[Exception]) -> None:
    await receive(env, mail())
    item = item_for(env, "SB-000001", "create")
    env.fake.fail_next(kind)  # the very next request, whichever the connector makes first
    with pytest.raises(error) as info:
        await env.sink.deliver(item)
    assert not any(s in str(info.value) for s in env.c.secrets(env.fake))
    if kind == "429":
        assert info.value.retry_after == 30  # type: ignore[attr-defined]
    assert env.fake.seen(ELSEWHERE) == []  # a redirect to another host is never followed


async def test_rate_limit_and_outage_retry_with_retry_after(env: Env) -> None:
    env.fake.fail_next("429", retry_after=120)
    before = utcnow()
    await receive(env, mail())
    [row] = env.rows("create")
    assert row["status"] == "pending" and "429" in row["last_error"]
    assert row["next_attempt_at"] >= before + timedelta(seconds=119)
    env.fake.fail_next("503", n=2)
    await due_now(env)
    await due_now(env)
    await due_now(env)
    assert env.rows("create")[0]["status"] == "done" and len(env.ours()) == 1


@pytest.mark.parametrize("status", ["401", "403"])
async def test_refused_credentials_park_the_target_without_a_retry_storm(env: Env, status: str) -> None:
    env.fake.fail_next(status, n=1000)
    await receive(env, mail(), mail(subject="Second", msgid="<m2@example.com>"),
                  mail(subject="Third", msgid="<m3@example.com>"))
    assert [r["status"] for r in env.rows()] == ["parked"] * 3
    assert [r["attempts"] for r in env.rows()] == [0, 0, 0]
    assert status in env.app.delivery.alerts[env.c.name]
    calls = len(env.fake.seen())
    assert calls == 1  # one refused call, then nothing
    await asyncio.sleep(0.1)
    await env.app.delivery.drain()
    assert len(env.fake.seen()) == calls

    env.fake.faults.clear()  # credentials fixed; the daemon unparks on its next start
    env.app.delivery.outbox.unpark()
    await env.app.delivery.drain()
    assert {r["status"] for r in env.rows()} == {"done"} and len(env.ours()) == 3


@pytest.mark.parametrize("kind", ["422", "reject", "redirect"])
async def test_a_rejected_item_is_dead_lettered_and_the_next_one_delivers(env: Env, kind: str) -> None:
    env.fake.fail_next(kind, method="POST")  # the first create call
    await receive(env, mail(), mail(subject="Second", msgid="<m2@example.com>"))
    assert [r["status"] for r in env.rows("create")] == ["dead", "done"]
    assert [t.title for t in env.ours()] == ["[SB-000002] Second"]
    assert env.fake.seen(ELSEWHERE) == []
