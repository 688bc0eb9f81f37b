"""The operator console in headless Chromium (Debian's, driven by Playwright; no browser download)
against a real ``svcbridge run`` process with a real Dovecot behind a gate the test can cut.

One daemon and one browser for the module; each test uses mail of its own. Screenshots go to
tests/artifacts/ (ignored by git). Under CI=true a missing chromium or playwright fails these tests.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import eml, free_port, require_binary, require_server
from console_helpers import PASSWORD
from tcpgate import TcpGate
from test_daemon import BIN, _healthy, start, stop, wait_for

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
    from playwright.sync_api import expect as pw_expect
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

GATE_PLUGIN = '''"""Test plugin: a message tagged [needs-fix] fails enrichment until the file 'fixed' exists."""
from pathlib import Path

from svcbridge import hookimpl

FLAG = Path(__file__).with_name("fixed")


@hookimpl
def enrich_ticket(draft):
    if "[needs-fix]" in draft.subject and not FLAG.exists():
        raise RuntimeError("warranty service not configured yet")
'''

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def chinese_mail_with_pdf(msgid: str) -> bytes:
    m = EmailMessage()
    m["From"] = "王小明 <wang@example.cn>"
    m["To"] = "support@bridge.test"
    m["Subject"] = "打印机卡纸，急需维修"
    m["Message-ID"] = msgid
    m.set_content("您好：\n我们的打印机从昨天开始每页都卡纸，序列号 SN-4471-CN。\n附件是故障报告。\n王小明", charset="utf-8")
    m.add_attachment(PDF, maintype="application", subtype="pdf", filename="故障报告.pdf")
    return m.as_bytes()


HOSTILE_HTML = (
    b"From: Mallory <mallory@example.com>\r\nTo: support@bridge.test\r\nSubject: hostile html\r\n"
    b"Message-ID: <hostile-browser@example.com>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplease look\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    b"<p>please look<script>document.title='pwned';alert('script')</script>"
    b"<img src=\"data:,x\" onerror=\"document.title='pwned';alert('onerror')\">"
    b'<a id="js" href="javascript:alert(\'link\')">click me</a></p>\r\n'
    b"--b--\r\n"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_server("playwright (pip, the dev extra)", sync_playwright is not None)
    require_binary("chromium", CHROMIUM)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Daemon:
    def __init__(self, root: Path, port: int, gate: TcpGate, proc: subprocess.Popen[bytes]) -> None:
        self.root, self.port, self.gate, self.proc = root, port, gate, proc
        self.url = f"http://127.0.0.1:{port}"

    def drop(self, raw: bytes, name: str) -> None:
        """A mail into the Maildir, written in tmp/ and renamed into new/ as an MTA does."""
        tmp = self.root / "maildir" / "tmp" / name
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        tmp.rename(self.root / "maildir" / "new" / name)


@pytest.fixture(scope="module")
def daemon(dovecot: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("console")
    for d in ("maildir/new", "maildir/cur", "maildir/tmp", "plugins"):
        (root / d).mkdir(parents=True)
    (root / "plugins" / "gate.py").write_text(GATE_PLUGIN)
    (root / "outgoing").write_text("a file where the spool directory should be: notices fail")
    (root / "imap-pw").write_text(dovecot.users["alice"])
    dovecot.reset_mailbox("alice")
    gate = TcpGate(dovecot.imaps_port)
    gate.open()
    port = free_port()
    cfg = root / "svcbridge.toml"
    cfg.write_text(f"""
data_dir = "{root}/var"
plugins_dir = "{root}/plugins"
shutdown_grace = 5
[http]
port = {port}
[console]
refresh_seconds = 0.5
source_fail_threshold = 1
timezone = "Asia/Shanghai"
[outbox]
max_attempts = 1
poll_interval = 0.1
[log]
format = "json"
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.maildir]
path = "{root}/maildir"
interval = 0.1
settle = 0
[plugins.email.outbound]
spool_dir = "{root}/outgoing"
[[plugins.email.imap]]
name = "imap:alice"
host = "127.0.0.1"
port = {gate.port}
ca_file = "{dovecot.cafile}"
username = "alice"
password_file = "{root}/imap-pw"
poll_interval = 0.3
idle = false
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
    for user, role in (("ops", "admin"), ("guest", "readonly")):
        subprocess.run([str(BIN), "--config", str(cfg), "users", "add", user, "--role", role, "--password-stdin"],
                       input=PASSWORD + "\n", text=True, env=env, cwd=root, check=True, capture_output=True)
    proc = start(cfg)
    try:
        wait_for(lambda: _healthy(port), timeout=30)
        yield Daemon(root, port, gate, proc)
    finally:
        stop(proc)
        gate.close()
        log = proc.stdout.read().decode() if proc.stdout else ""
        (ARTIFACTS / "daemon.log").write_text(log) if ARTIFACTS.exists() else None
        assert PASSWORD not in log and dovecot.users["alice"] not in log


def logged_in(browser: Browser, daemon: Daemon, locale: str = "en-US", user: str = "ops") -> Page:
    ctx = browser.new_context(locale=locale, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    page.goto(daemon.url + "/")
    assert "/login" in page.url  # not logged in: the login page, nothing else
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-submit")
    page.wait_for_url(daemon.url + "/")
    return page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_ticket(page: Page, daemon: Daemon, text: str) -> str:
    """Search for ``text`` until one ticket matches (the pipeline may still be at work), open it."""
    def found() -> bool:
        page.goto(f"{daemon.url}/tickets?q={text}")
        return page.locator("#ticket-list a").count() == 1

    wait_for(found, timeout=30, step=0.3)
    page.locator("#ticket-list a").first.click()
    page.wait_for_selector("#ticket-ref")
    return page.locator("#ticket-ref").inner_text().split()[0]


# ---------------------------------------------------------------------------------------------- tests
def test_login_and_the_overview_updates_without_a_reload(browser: Browser, daemon: Daemon) -> None:
    page = logged_in(browser, daemon, locale="zh-CN")
    assert page.locator("nav").inner_text().count("工单") >= 1  # zh-CN when the browser asks for it
    page.evaluate("window.__sameDocument = 'yes'")  # gone if the page were reloaded
    before = int(page.locator("#tickets-24h").inner_text())
    daemon.drop(eml(subject="overview live", msgid="<live@example.com>"), "live.eml")
    pw_expect(page.locator("#tickets-24h")).to_have_text(str(before + 1), timeout=20_000)
    assert page.evaluate("window.__sameDocument") == "yes"
    shot(page, "overview-zh")
    page.context.close()


def test_failing_imap_source_turns_red_and_recovers(browser: Browser, daemon: Daemon) -> None:
    page = logged_in(browser, daemon)
    row = page.locator('tr[data-source="imap:alice"]')
    pw_expect(row).to_have_attribute("data-state", "ok", timeout=20_000)
    daemon.gate.close()  # the mail server's host is gone
    try:
        pw_expect(row).to_have_attribute("data-state", "down", timeout=20_000)
        pw_expect(page.locator("#readiness")).to_have_class(re.compile("not-ready"))
        pw_expect(page.locator('tr.problem[data-kind="source_failing"]')).to_contain_text("imap:alice")
        # the red row; an auto-retrying assertion, because the live refresh replaces the row every few
        # seconds and a one-shot evaluate() can land on the detached old one
        pw_expect(row.locator("td").first).to_have_css("background-color", "rgb(253, 236, 236)")
        shot(page, "source-down")
        assert httpx.get(daemon.url + "/readyz").status_code == 503  # /readyz says the same
    finally:
        daemon.gate.open()
    # the next try comes after the source's exponential backoff (0.3 s doubling per failure): the longer
    # a loaded machine took to show "down", the longer the wait
    pw_expect(row).to_have_attribute("data-state", "ok", timeout=60_000)
    shot(page, "source-recovered")
    page.context.close()


def test_chinese_mail_with_a_pdf_read_and_downloaded(browser: Browser, daemon: Daemon, dovecot: Any) -> None:
    dovecot.append("alice", chinese_mail_with_pdf("<zh-pdf@example.cn>"))
    page = logged_in(browser, daemon, locale="zh-CN")
    ref = open_ticket(page, daemon, "SN-4471")
    body = page.locator("article.message").first.inner_text()
    assert "每页都卡纸" in body and "打印机卡纸，急需维修" in body
    pw_expect(page.locator("h2", has_text="附件")).to_be_visible()  # Chinese UI
    link = page.locator("a.attachment")
    assert link.count() == 1
    with page.expect_download() as dl:
        link.click()
    download = dl.value
    saved = ARTIFACTS / "downloaded.pdf"
    download.save_as(saved)
    assert saved.read_bytes() == PDF
    assert download.suggested_filename == "故障报告.pdf"  # the customer's name, offered safely
    assert page.url.endswith(ref)  # a download, not a navigation to the file
    shot(page, "ticket-zh")
    page.context.close()


def test_quarantined_message_retried_becomes_a_ticket(browser: Browser, daemon: Daemon) -> None:
    daemon.drop(eml(subject="[needs-fix] fan noise", msgid="<fix@example.com>"), "needs-fix.eml")
    page = logged_in(browser, daemon)

    def quarantined() -> bool:
        page.goto(daemon.url + "/quarantine")
        return page.locator("#quarantine tr", has_text="warranty service not configured yet").count() == 1

    wait_for(quarantined, timeout=30, step=0.3)
    row = page.locator("#quarantine tr", has_text="warranty service not configured yet")
    assert "enrich" in row.inner_text() and "gate" in row.inner_text()  # stage and plugin
    shot(page, "quarantine")
    (daemon.root / "plugins" / "fixed").write_text("")  # the operator fixes the cause
    row.locator("button.retry").click()
    page.wait_for_selector("#flash")
    open_ticket(page, daemon, "needs-fix")
    assert "[needs-fix] fan noise" in page.locator("#ticket-ref").inner_text()
    page.goto(daemon.url + "/audit")
    assert page.locator("#audit tr", has_text="quarantine_retry").count() == 1
    page.context.close()


def test_dead_letter_replayed(browser: Browser, daemon: Daemon) -> None:
    page = logged_in(browser, daemon)
    # acknowledgements could not be written (the spool is a file): each went dead after one attempt
    def dead_rows() -> int:
        page.goto(daemon.url + "/outbox?status=dead")
        return page.locator('#items tr[data-status="dead"]').count()

    wait_for(dead_rows, timeout=30, step=0.3)
    before = dead_rows()
    assert "FileExistsError" in page.locator("#items").inner_text() or "Errno" in page.locator("#items").inner_text()
    shot(page, "outbox-dead")
    spool = daemon.root / "outgoing"
    spool.unlink()  # the operator fixes the spool directory
    spool.mkdir()
    page.locator('#items tr[data-status="dead"] button.replay').first.click()
    page.wait_for_selector("#flash")
    wait_for(lambda: any(spool.glob("*.eml")), timeout=20)
    assert dead_rows() == before - 1
    page.goto(daemon.url + "/audit")
    assert page.locator("#audit tr", has_text="outbox_replay").count() == 1
    page.context.close()


def test_hostile_mail_html_does_nothing(browser: Browser, daemon: Daemon) -> None:
    daemon.drop(HOSTILE_HTML, "hostile.eml")
    page = logged_in(browser, daemon)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    open_ticket(page, daemon, "hostile")
    page.locator("details summary").first.click()
    frame_el = page.locator("iframe.html-body")
    assert frame_el.get_attribute("sandbox") == ""
    frame = frame_el.element_handle().content_frame()
    frame.wait_for_selector("a#js, a", state="attached")
    assert frame.locator("script").count() == 0
    assert frame.locator("[onerror]").count() == 0
    href = frame.locator("a").first.get_attribute("href")
    assert href is None or not href.lower().startswith("javascript")
    with contextlib.suppress(Exception):
        frame.locator("a").first.click(timeout=2000)
    page.wait_for_timeout(500)
    assert dialogs == [] and page.title() != "pwned"
    shot(page, "hostile-html")
    page.context.close()


class _Evil(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        body = (f'<form id="f" method="post" action="{self.target}">'
                '<input name="state" value="closed"><input name="csrf" value="guess"></form>'
                "<script>document.getElementById('f').submit()</script>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_cross_site_form_post_and_read_only_do_nothing(browser: Browser, daemon: Daemon) -> None:
    page = logged_in(browser, daemon)
    ref = open_ticket(page, daemon, "overview live")
    state = page.locator("#ticket-state").inner_text()
    # another site, opened in the same logged-in browser, posts a form to the console
    _Evil.target = f"{daemon.url}/tickets/{ref}/state"
    evil = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        other = page.context.new_page()
        with other.expect_response(lambda r: r.request.method == "POST") as resp:
            other.goto(f"http://127.0.0.2:{evil.server_address[1]}/")
        assert resp.value.status in (401, 403)  # the SameSite=Strict cookie stayed home
        other.close()
    finally:
        evil.shutdown()
    page.reload()
    assert page.locator("#ticket-state").inner_text() == state
    page.context.close()
    # a read-only operator sees the ticket but has no actions
    guest = logged_in(browser, daemon, user="guest")
    open_ticket(guest, daemon, "overview live")
    assert guest.locator("#state-form").count() == 0
    guest.context.close()



def test_deadline_countdowns_turn_amber_and_red(browser: Browser, daemon: Daemon) -> None:
    """Deadlines the SLA engine fills (written straight into the daemon's store here): overdue is red,
    less than a quarter of the time left is amber, the rest plain; the countdown runs in the page."""
    import sqlite3
    from datetime import UTC, datetime, timedelta

    daemon.drop(eml(subject="deadline colours", msgid="<deadlines@example.com>"), "deadlines.eml")
    page = logged_in(browser, daemon)
    ref = open_ticket(page, daemon, "deadline colours")
    now = datetime.now(UTC)
    created = now - timedelta(hours=4)
    due = {"resolution": now + timedelta(hours=20), "response": now - timedelta(minutes=5),
           "onsite": now + timedelta(minutes=30)}
    with sqlite3.connect(daemon.root / "var" / "svcbridge.db") as db:
        db.execute("UPDATE tickets SET deadlines = ?, created_at = ? WHERE ref = ?",
                   (json.dumps({k: v.isoformat() for k, v in due.items()}), created.isoformat(), ref))
    page.reload()
    items = {li.inner_text().split(":")[0]: li.locator(".countdown") for li in page.locator("#deadlines li").all()}
    pw_expect(items["response"]).to_have_class(re.compile(r"\bred\b"))
    pw_expect(items["onsite"]).to_have_class(re.compile(r"\bamber\b"))
    assert "red" not in (items["resolution"].get_attribute("class") or "")
    assert "amber" not in (items["resolution"].get_attribute("class") or "")
    first = items["onsite"].inner_text()
    page.wait_for_timeout(1200)
    assert items["onsite"].inner_text() != first  # it counts down without a reload
    assert items["response"].inner_text().startswith("overdue")
    shot(page, "deadlines")
    page.context.close()
