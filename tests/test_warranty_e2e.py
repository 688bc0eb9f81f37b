"""End to end with the real Request Tracker (issue 14 item 7): a mail naming a serial becomes an RT ticket
carrying asset, customer, entitlement and category; the entitlement arrives in RT as a comment; a vendor
outage during intake still gives the ticket at once and the vendor's entitlement later; ``kill -9`` during a
vendor lookup (the daemon killed while the vendor holds the request) runs the lookup once more, and its
answer reaches RT once."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conftest import eml, free_port
from fakes.vendors import CLIENT_ID, CLIENT_SECRET, VendorFake, serve
from helpdesk_helpers import daemon_config, drop, log_tail, start
from rt_server import RtServer, running_rt
from svcbridge import AssetPart, AssetRecord
from svcbridge.store.assets import AssetStore
from test_daemon import cli, wait_for

pytestmark = pytest.mark.realserver


@pytest.fixture(scope="module")
def rt_module() -> Iterator[RtServer]:
    with running_rt() as server:
        yield server


@pytest.fixture
def rt(rt_module: RtServer) -> RtServer:
    rt_module.reset()
    return rt_module


@pytest.fixture
def vendor() -> Iterator[tuple[VendorFake, str]]:
    fake = VendorFake()
    port = free_port()
    server = serve(fake, port)
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True


def rt_texts(rt: RtServer, ticket_id: str) -> list[tuple[str, str]]:
    """(transaction type, text) of every text/plain part RT holds for the ticket, oldest first."""
    with rt.agent() as c:
        types = {str(h["id"]): h["Type"] for h in rt.history(ticket_id)}
        r = c.get(
            f"ticket/{ticket_id}/attachments",
            params={"fields": "ContentType,Content,TransactionId", "per_page": 100},
        )
        r.raise_for_status()
        out = []
        for a in r.json()["items"]:
            if a.get("ContentType") == "text/plain" and a.get("Content"):
                tx = (
                    a["TransactionId"]["id"]
                    if isinstance(a["TransactionId"], dict)
                    else str(a["TransactionId"])
                )
                out.append((types.get(tx, "?"), _text(a["Content"])))
        return out


def _text(content: str) -> str:
    """RT's listing gives a text part's content as text, the single attachment endpoint as base64."""
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return content


def dell(root: str, **extra: Any) -> dict[str, Any]:
    return {
        "base_url": f"{root}/dell",
        "token_url": f"{root}/dell/auth/oauth/v2/token",
        "client_id": CLIENT_ID,
        "client_secret_env": "TEST_VENDOR_SECRET",
        **extra,
    }


async def test_mail_to_rt_with_entitlement_comments_and_vendor_outage(
    make_app: Any, tmp_path: Path, rt: RtServer, vendor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, root = vendor
    monkeypatch.setenv("TEST_VENDOR_SECRET", CLIENT_SECRET)
    fake.units["dell"]["7XK2M9P"] = [("2025-06-01", "2030-06-01", "ProSupport Plus")]
    fake.mode["dell"] = "down"  # the vendor is down while the mail comes in
    app = make_app(
        routing={"default": ["rt"]},
        outbound_allow=["127.0.0.1/32"],
        plugins={
            "rt": rt.plugin_config(),
            "assets": {"vendors": {"dell": dell(root, retry_initial=0.3, retry_max=0.3)}},
        },
    )
    AssetStore(app.store).upsert(
        AssetRecord(
            serial="7XK2M9P",
            vendor="Dell",
            model="PowerEdge R750",
            customer="华东电力",
            invoice_date=date(2025, 6, 1),
            parts=[AssetPart(category="main"), AssetPart(category="chassis")],
        )
    )
    drop(
        tmp_path,
        "1",
        eml(
            subject="服务器无法开机",
            body="机身编号：7XK2M9P，断电后不开机。电话 13800138000",
            sender="值班 <duty@unknown.example>",
        ),
    )
    await app.run_once()
    (t,) = rt.tickets("Subject LIKE '[SB-000001]'")  # in RT at once, whatever the vendor does
    ticket = app.store.get_ticket("SB-000001")
    assert (ticket.asset.serial, ticket.customer, ticket.category) == ("7XK2M9P", "华东电力", "power")
    assert ticket.labels["warranty"]["status"] == "in" and "vendor_warranty" not in ticket.labels
    notes = [text for kind, text in rt_texts(rt, t["id"]) if "Warranty (rules) for 7XK2M9P: IN" in text]
    assert len(notes) == 1
    # the agent sees in RT which unit, whose, which fault, and the entitlement per part
    assert "Unit 7XK2M9P (Dell PowerEdge R750), customer 华东电力, fault category power" in notes[0]
    assert "- chassis: out until 2025-12-01" in notes[0]
    assert [k for k, text in rt_texts(rt, t["id"]) if "Warranty (rules)" in text] == ["Comment"]
    assert not any("dell warranty" in text for _k, text in rt_texts(rt, t["id"]))
    (job,) = [j for j in app.work.jobs.list() if j["kind"] == "warranty.vendor:dell"]
    assert job["status"] == "pending" and "503" in job["last_error"]  # failing visibly, retried
    fake.mode["dell"] = "ok"  # back: the retried lookup brings the vendor's entitlement
    time.sleep(0.35)
    await app.run_once()
    time.sleep(0.35)
    await app.run_once()
    vendor_notes = [(k, text) for k, text in rt_texts(rt, t["id"]) if "dell warranty for 7XK2M9P: in" in text]
    assert [k for k, _ in vendor_notes] == ["Comment"]
    assert "until 2030-06-01" in vendor_notes[0][1]
    assert app.store.get_ticket("SB-000001").labels["vendor_warranty"]["end"] == "2030-06-01"


@pytest.mark.slow
def test_kill_9_during_a_vendor_lookup_runs_it_once_more_and_rt_gets_it_once(
    tmp_path: Path, rt: RtServer, vendor: Any
) -> None:
    fake, root = vendor
    fake.units["dell"]["ABC1234"] = [("2024-03-01", "2029-03-01", "Basic")]
    fake.mode["dell"] = "hang"  # the vendor holds the request: the daemon dies in the middle of the lookup
    token = tmp_path / "rt-token"
    token.write_text(rt.svc_token + "\n")
    secret = tmp_path / "dell-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    section = f"""
[plugins.rt]
url = "{rt.url}"
token_file = "{token}"
queue = "General"
poll_interval = 0.5
[plugins.assets.vendors.dell]
base_url = "{root}/dell"
token_url = "{root}/dell/auth/oauth/v2/token"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
timeout = 20
retry_initial = 0.5
retry_max = 1
"""
    cfg = daemon_config(tmp_path, "rt", section)
    drop(tmp_path, "1", eml(subject="Dell laptop dead", body="Dell Service Tag ABC1234 won't turn on"))
    proc = start(cfg)
    try:
        # the ticket is in RT at once, whatever the vendor does; then kill -9 while the vendor holds a lookup
        wait_for(lambda: rt.tickets("Subject LIKE '[SB-000001]'"), timeout=60, step=0.3)
        wait_for(lambda: fake.in_flight["dell"] > 0, timeout=60)
        before = fake.calls.count(("dell", "entitlements ABC1234"))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    fake.mode["dell"] = "ok"
    proc = start(cfg)
    try:

        def answered() -> bool:  # read the store directly: a CLI process per poll costs a second here
            db = tmp_path / "var" / "svcbridge.db"
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
                labels = conn.execute("select labels from tickets where ref = 'SB-000001'").fetchone()
                states = [r[0] for r in conn.execute("select status from outbox")]
            return bool(labels) and "vendor_warranty" in json.loads(labels[0]) and set(states) == {"done"}

        wait_for(answered, timeout=60, step=0.3)
        time.sleep(1.0)  # a few more rounds: room for a (wrong) second comment
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_tail(cfg)
    asked = [c for c in fake.calls if c == ("dell", "entitlements ABC1234")]
    assert len(asked) == before + 1  # once more after the crash, not more
    (t,) = rt.tickets("Subject LIKE '[SB-000001]'")
    notes = [k for k, text in rt_texts(rt, t["id"]) if "dell warranty for ABC1234: in" in text]
    assert notes == ["Comment"]  # once into the helpdesk
    jobs = json.loads(cli(cfg, "jobs", "list", "--json"))
    assert {j["kind"]: j["status"] for j in jobs}["warranty.vendor:dell"] == "done"
