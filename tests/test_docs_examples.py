"""The four examples in docs/plugins.md run as printed (issue 11 item 9).

Each ``<!-- example: NAME -->`` marker is followed by a fenced python block. The block is taken out of
the markdown, exec()'d into a module of its own (named as its entry point would be: the plugin's name
is what events and jobs record) and registered as a plugin with ``make_plugin_manager(extra=(module,))``.
The real pipeline, store, outbox, job runner and timers then do what the guide says they do. The only
fakes are the remote systems (a chat gateway, a helpdesk, a vendor), as ``httpx.MockTransport``s handed
in through ``PluginSettings.transport``, exactly the seam the guide documents.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import svcbridge
from conftest import eml
from helpdesk_helpers import Recorder, drop, plugin, recorder_plugin
from svcbridge import Priority, StatusUpdate, TicketState, utcnow
from svcbridge.plugins import make_plugin_manager

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
MARKER = re.compile(r"<!-- example: ([a-z-]+) -->\n```python\n(.*?)^```", re.S | re.M)
EXAMPLES = ("channel", "sink", "enrichment", "timer")


def examples() -> dict[str, tuple[int, str]]:
    """name -> (line of the block's first code line in the markdown, code)."""
    text = GUIDE.read_text(encoding="utf-8")
    return {m.group(1): (text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in MARKER.finditer(text)}


def load_example(name: str, module: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The example's code as a fresh module called ``module`` (a new process would import it anew)."""
    line, code = examples()[name]
    mod = types.ModuleType(module)
    mod.__file__ = f"{GUIDE}#{name}"
    monkeypatch.setitem(sys.modules, module, mod)  # pydantic and dataclasses look their module up
    # padded so a traceback's line number is the line in docs/plugins.md
    exec(compile("\n" * (line - 1) + code, str(GUIDE), "exec"), mod.__dict__)
    return mod


async def settle(app: Any, rounds: int = 40) -> None:
    """run --once until the outbox has nothing pending (a retry waits out the test backoff)."""
    for _ in range(rounds):
        await app.run_once()
        if not app.delivery.outbox.list(status="pending"):
            return
        await asyncio.sleep(0.06)
    raise AssertionError(f"outbox still pending: {app.delivery.outbox.list(status='pending')}")


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------------ the guide
def test_the_guide_has_the_four_examples_and_they_use_only_the_public_api() -> None:
    found = examples()
    assert set(EXAMPLES) <= set(found), f"docs/plugins.md lacks examples {set(EXAMPLES) - set(found)}"
    for name in EXAMPLES:
        tree = ast.parse(found[name][1])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "svcbridge":
                assert node.module == "svcbridge", f"{name}: imports from {node.module}"
                private = [a.name for a in node.names if a.name not in svcbridge.__all__]
                assert not private, f"{name}: {private} are not in svcbridge.__all__"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("svcbridge") for a in node.names), (
                    f"{name}: import svcbridge.x"
                )


def test_the_examples_load_as_plugins_without_being_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    mods = [load_example(n, f"docs_{n}", monkeypatch) for n in EXAMPLES]
    pm = make_plugin_manager(entrypoints=False, strict=True, extra=tuple(mods))  # strict: refusal raises
    assert {f"docs_{n}" for n in EXAMPLES} <= {n for n, i in pm.infos.items() if i.status == "loaded"}


# ------------------------------------------------------------------------------------------ (a) channel
class FakeChat:
    """The chat gateway: GET /api/messages?after=N, POST /api/messages (deduplicated by Idempotency-Key)."""

    def __init__(self) -> None:
        self.inbox: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.asked_after: list[int] = []
        self.auth: set[str] = set()
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers.get("authorization", ""))
        if request.url.path != "/api/messages":
            return httpx.Response(404)
        if request.method == "GET":
            after = int(request.url.params["after"])
            self.asked_after.append(after)
            return httpx.Response(200, json=[m for m in self.inbox if m["id"] > after])
        key = request.headers["idempotency-key"]
        for s in self.sent:
            if s["key"] == key:
                return httpx.Response(200, json={"id": s["id"]})
        self.sent.append({"id": 900 + len(self.sent), "key": key, **json.loads(request.content)})
        return httpx.Response(201, json={"id": self.sent[-1]["id"]})


async def test_channel_example_journals_threads_and_answers_in_the_chat(
    make_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chat = FakeChat()
    phone = "+8613800138000"
    chat.inbox.append(
        {"id": 1, "from": phone, "name": "Li Wei", "text": "The kiosk screen is black\nsince 8:00"}
    )
    token = tmp_path / "chat-token"
    token.write_text("s3cret-token\n")  # a secret through <name>_file
    mod = load_example("channel", "chat", monkeypatch)
    app = make_app(
        pm=make_plugin_manager(extra=(mod,)),
        outbound_allow=["chat.test"],
        plugins={
            "chat": {"url": "https://chat.test/api", "token_file": str(token), "transport": chat.transport}
        },
    )
    assert "chat" in app.sources and "chat" in app.delivery.notifiers

    res = await app.run_once()
    assert res["processed"] == 1
    (t,) = app.store.list_tickets()
    assert (t.channel, t.contact.phone, t.contact.name) == ("chat", phone, "Li Wei")
    assert t.subject == "The kiosk screen is black"
    assert chat.auth == {"Bearer s3cret-token"}
    (ack,) = chat.sent  # the acknowledgement, in the chat, to the customer's number
    assert ack["to"] == phone and t.ref in ack["text"]
    assert mod.GATEWAY.client is None  # shutdown closed the client

    # the next message from that number continues the ticket; the checkpoint kept message 1 out
    chat.inbox.append({"id": 2, "from": phone, "text": "Restarted it, still black."})
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup"]
    assert chat.asked_after[-1] == 1 and len(app.store.list_tickets()) == 1
    assert len(chat.sent) == 1  # a follow-up is not acknowledged again

    # the helpdesk's reply and state change go back into the chat
    update = StatusUpdate(
        ticket_ref=t.ref,
        system="local",
        state=TicketState.IN_PROGRESS,
        public_reply="A technician is on the way.",
    )
    assert await app.pipeline.apply_status_update(update)
    await app.run_once()
    replies = [s for s in chat.sent[1:] if s["to"] == phone]
    assert any("A technician is on the way." in s["text"] for s in replies)
    assert app.delivery.outbox.list(status="pending") == []
    assert chat.asked_after[-1] == 2  # every poll asked after the last journaled message


# ------------------------------------------------------------------------------------------ (b) sink
class FakeDesk:
    """The AcmeDesk REST API, in memory: tickets by external_ref, comments by external_id."""

    def __init__(self) -> None:
        self.tickets: dict[int, dict[str, Any]] = {}
        self.fail_after_next_create = False  # store the ticket, then answer 502 (a crash after its commit)
        self.keys: set[str] = set()
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.keys.add(request.headers.get("x-api-key", ""))
        parts = request.url.path.removeprefix("/api/").split("/")
        method, params = request.method, request.url.params
        if parts == ["tickets"] and method == "GET":
            ref = params["external_ref"]
            return httpx.Response(200, json=[x for x in self.tickets.values() if x["external_ref"] == ref])
        if parts == ["tickets"] and method == "POST":
            tid = 17 + len(self.tickets)
            self.tickets[tid] = {**json.loads(request.content), "id": tid, "status": "new", "comments": []}
            if self.fail_after_next_create:
                self.fail_after_next_create = False
                return httpx.Response(502, text="Bad Gateway")
            return httpx.Response(201, json={"id": tid})
        ticket = self.tickets.get(int(parts[1])) if len(parts) > 1 and parts[1].isdigit() else None
        if ticket is None:
            return httpx.Response(404, json={"error": "no such ticket"})
        if len(parts) == 2 and method == "PATCH":
            ticket.update(json.loads(request.content))
            return httpx.Response(200, json={"id": ticket["id"]})
        if parts[2:] == ["comments"] and method == "GET":
            return httpx.Response(
                200, json=[c for c in ticket["comments"] if c["external_id"] == params["external_id"]]
            )
        if parts[2:] == ["comments"] and method == "POST":
            ticket["comments"].append(json.loads(request.content))
            return httpx.Response(201, json={"id": len(ticket["comments"])})
        return httpx.Response(405)


def desk_settings(desk: FakeDesk) -> dict[str, Any]:
    return {"url": "https://desk.test/api", "api_key": "desk-key", "transport": desk.transport}


def triage() -> Any:
    """A test-side classification: an urgent follow-up raises the priority and sets a category."""

    def classify_ticket(draft, ticket):
        if ticket is not None and "urgent" in draft.body_text.lower():
            draft.priority = Priority.P1
            draft.category = "outage"

    return plugin("triage", classify_ticket=classify_ticket)


async def test_sink_example_creates_once_and_carries_follow_ups_and_changes(
    make_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    desk = FakeDesk()
    mod = load_example("sink", "acmedesk", monkeypatch)
    app = make_app(
        pm=make_plugin_manager(extra=(mod, triage())),
        routing={"default": ["acmedesk"]},
        outbound_allow=["desk.test"],
        plugins={"acmedesk": desk_settings(desk)},
    )
    sent: list[Any] = []
    deliver = mod.DESK.deliver

    async def recording(item):
        sent.append(item)
        return await deliver(item)

    monkeypatch.setattr(mod.DESK, "deliver", recording)

    # create: the helpdesk stores the ticket and then answers 502; the retry's reconcile finds it
    desk.fail_after_next_create = True
    drop(tmp_path, "1", eml())
    await settle(app)
    (remote,) = desk.tickets.values()
    assert (remote["external_ref"], remote["title"], remote["priority"]) == (
        "SB-000001",
        "[SB-000001] Printer jams",
        3,
    )
    assert desk.keys == {"desk-key"}
    t = app.store.get_ticket("SB-000001")
    assert t.link("acmedesk", "ticket") == "17"
    assert [i.kind for i in sent] == ["create"]  # sent once; the retry was answered by reconcile

    # a follow-up: the customer's message as a public comment, triage's change as fields and a note
    body = "It is urgent now: the whole floor cannot print."
    drop(
        tmp_path,
        "2",
        eml(
            subject="Re: Printer jams",
            msgid="<m2@example.com>",
            body=body,
            extra="In-Reply-To: <m1@example.com>\r\n",
        ),
    )
    await settle(app)
    assert len(desk.tickets) == 1
    assert (remote["priority"], remote["category"]) == (1, "outage")
    public = [c for c in remote["comments"] if not c["internal"]]
    internal = [c for c in remote["comments"] if c["internal"]]
    assert len(public) == 1 and body in public[0]["body"] and public[0]["author"] == "alice@example.com"
    assert len(internal) == 1
    assert "Updated by triage" in internal[0]["body"] and "- priority: 3 -> 1" in internal[0]["body"]
    assert "- category: None -> outage" in internal[0]["body"]
    kinds = sorted((i.kind, i.payload.get("type")) for i in sent)
    assert kinds == [("create", None), ("update", "customer_message"), ("update", "ticket_updated")]

    # at least once: every item delivered again changes nothing in the helpdesk
    await app.pm.lifecycle("startup", app=app)
    try:
        for item in list(sent):
            await deliver(item)
        again = await mod.DESK.reconcile(sent[0])
    finally:
        await app.pm.lifecycle("shutdown", app=app)
    assert again is not None and again.links[0].value == "17"
    assert len(desk.tickets) == 1 and len(remote["comments"]) == 2


# ------------------------------------------------------------------------------------------ (c) enrichment
class FakeVendor:
    """The vendor's warranty API: 503 while down, 404 for a serial it does not know."""

    def __init__(self) -> None:
        self.up = False
        self.calls: list[str] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        serial = request.url.path.rsplit("/", 1)[-1]
        self.calls.append(serial)
        if not self.up:
            return httpx.Response(503, text="portal maintenance")
        if serial != "CNB7K12345":
            return httpx.Response(404, json={"error": "unknown serial"})
        return httpx.Response(200, json={"covered": True, "until": "2027-05-01", "model": "LaserJet M404"})


def vendor_settings(vendor: FakeVendor) -> dict[str, Any]:
    return {"url": "https://vendor.test/api", "api_key": "vendor-key", "transport": vendor.transport}


async def test_enrichment_example_when_the_vendor_is_down_the_ticket_is_created_and_the_answer_comes_later(
    make_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    vendor, desk = FakeVendor(), Recorder()
    mod = load_example("enrichment", "warranty", monkeypatch)
    app = make_app(
        pm=make_plugin_manager(extra=(mod, recorder_plugin(desk))),
        routing={"default": ["desk"]},
        outbound_allow=["vendor.test"],
        plugins={"warranty": vendor_settings(vendor)},
    )
    drop(tmp_path, "1", eml(body="It jams on every page.\r\nS/N: cnb7k12345"))
    res = await app.run_once()

    # the ticket is there at once, in the helpdesk, without the answer
    assert [o.status for o in res["outcomes"]] == ["created"]
    (t,) = app.store.list_tickets()
    assert t.asset.serial == "CNB7K12345" and "warranty" not in t.labels
    assert [i.kind for i in desk.items] == ["create"]
    (job,) = app.work.jobs.list()
    assert (job["kind"], job["status"], job["attempts"]) == ("warranty.lookup", "pending", 1)
    assert job["data"] == {"serial": "CNB7K12345"} and "503" in job["last_error"]
    assert vendor.calls == ["CNB7K12345"]

    vendor.up = True
    await app.run_once()
    assert len(vendor.calls) == 1  # backing off: a minute at least before the next attempt

    app.work.clock = lambda: utcnow() + timedelta(hours=2)  # past the backoff
    await app.run_once()
    assert len(vendor.calls) == 2 and app.work.jobs.list()[0]["status"] == "done"
    t = app.store.get_ticket(t.ref)
    assert t.labels == {"warranty": "in", "warranty_until": "2027-05-01"}
    (ev,) = [e for e in t.events if e.type == "ticket_updated"]
    assert ev.actor == "warranty" and ev.data["plugin"] == "warranty"
    assert ev.data["changes"]["labels"]["warranty"] == {"from": None, "to": "in"}
    assert ev.data["note"] == "Warranty of CNB7K12345 (LaserJet M404): in, until 2027-05-01."
    (row,) = [r for r in app.delivery.outbox.list() if r["kind"] == "update"]
    assert (row["target"], row["status"], row["payload"]["type"]) == ("desk", "done", "ticket_updated")
    (item,) = [i for i in desk.items if i.kind == "update"]
    assert item.payload["note"] == ev.data["note"] and item.payload["fields"]["labels"]["warranty"] == "in"

    await app.run_once()  # nothing runs twice
    assert len(vendor.calls) == 2 and len([i for i in desk.items if i.kind == "update"]) == 1


async def test_enrichment_and_sink_examples_together_the_answer_is_a_note_in_the_helpdesk(
    make_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    vendor, desk = FakeVendor(), FakeDesk()
    vendor.up = True
    warranty = load_example("enrichment", "warranty", monkeypatch)
    acmedesk = load_example("sink", "acmedesk", monkeypatch)
    app = make_app(
        pm=make_plugin_manager(extra=(warranty, acmedesk)),
        routing={"default": ["acmedesk"]},
        outbound_allow=["vendor.test", "desk.test"],
        plugins={"warranty": vendor_settings(vendor), "acmedesk": desk_settings(desk)},
    )
    drop(tmp_path, "1", eml(body="Paper jam.\r\nSerial number: CNB7K12345"))
    await settle(app)
    (remote,) = desk.tickets.values()
    (note,) = remote["comments"]
    assert note["internal"] and note["author"] == "svcbridge"
    assert "Updated by warranty" in note["body"] and "- warranty: None -> in" in note["body"]
    assert note["body"].endswith("Warranty of CNB7K12345 (LaserJet M404): in, until 2027-05-01.")

    # a serial the vendor does not know: 404 is PermanentError, the job is dead and nothing is sent
    drop(tmp_path, "2", eml(subject="Another one", msgid="<m9@example.com>", body="S/N: XX000000"))
    await settle(app)
    dead = [j for j in app.work.jobs.list() if j["data"] == {"serial": "XX000000"}]
    assert [j["status"] for j in dead] == ["dead"]
    other = next(x for x in desk.tickets.values() if x["external_ref"] == "SB-000002")
    assert other["comments"] == []


# ------------------------------------------------------------------------------------------ (d) timer
async def test_timer_example_fires_after_a_restart_and_says_how_late(
    make_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def start() -> Any:  # a process: the plugin imported anew, the app built on the same store
        return make_app(pm=make_plugin_manager(extra=(load_example("timer", "sla", monkeypatch),)))

    first = start()
    drop(tmp_path, "1", eml())
    before = utcnow()
    await first.run_once()
    (row,) = first.work.timers.list()
    assert (row["name"], row["status"], row["scope"]) == ("sla.warn", "pending", "SB-000001")
    respond_by = first.store.get_ticket("SB-000001").deadlines["respond_by"]
    assert timedelta(hours=8) <= respond_by - before < timedelta(hours=8, minutes=1)  # P3
    due = aware(row["due_at"])
    assert due == respond_by - timedelta(hours=2)  # a quarter of the time left

    first.work.clock = lambda: due - timedelta(minutes=1)
    assert await first.work.run_once() == []  # not yet
    first.store.engine.dispose()  # the daemon stops ...

    second = start()  # ... and starts again two hours after the warning was due
    second.work.clock = lambda: due + timedelta(hours=2)
    await second.run_once()
    t = second.store.get_ticket("SB-000001")
    assert t.labels == {"sla": "at_risk"}
    (fired,) = [e for e in t.events if e.type == "timer_fired"]
    assert fired.actor == "sla" and fired.data["late_s"] == 7200.0
    (upd,) = [e for e in t.events if e.type == "ticket_updated"]
    assert upd.data["plugin"] == "sla"
    assert (
        upd.data["note"]
        == f"SLA: the first response is due by {respond_by.isoformat()}. This warning is 120 min late."
    )
    assert second.work.timers.list()[0]["status"] == "fired"
    assert await second.work.run_once() == []  # once


async def test_timer_example_says_nothing_for_a_ticket_somebody_is_on(
    make_app, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make_app(pm=make_plugin_manager(extra=(load_example("timer", "sla", monkeypatch),)))
    drop(tmp_path, "1", eml())
    drop(tmp_path, "2", eml(subject="Scanner offline", msgid="<m2@example.com>"))
    await app.run_once()
    assert len(app.store.list_tickets()) == 2
    busy = StatusUpdate(ticket_ref="SB-000002", system="local", state=TicketState.IN_PROGRESS)
    assert await app.pipeline.apply_status_update(busy)
    due = max(aware(r["due_at"]) for r in app.work.timers.list())
    app.work.clock = lambda: due + timedelta(seconds=30)  # on time: no lateness in the note
    out = await app.work.run_once()
    assert sorted(o.status for o in out) == ["fired", "fired"]
    first, second = app.store.get_ticket("SB-000001"), app.store.get_ticket("SB-000002")
    assert first.labels == {"sla": "at_risk"}
    (note,) = [e.data["note"] for e in first.events if e.type == "ticket_updated"]
    assert "late" not in note
    assert second.labels == {} and not [e for e in second.events if e.type == "ticket_updated"]
