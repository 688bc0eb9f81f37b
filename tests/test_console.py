"""The operator console in process (Starlette TestClient): accounts and the users CLI, login, sessions,
CSRF, the read-only role, the admin token, rate limiting, hostile mail HTML, attachments, search, the
actions, /readyz telling the truth, and both languages. The browser tests (test_console_browser.py) drive
the same pages in Chromium against a running daemon."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from starlette.testclient import TestClient

from conftest import eml
from console_helpers import PASSWORD, csrf, login
from svcbridge.cli import main
from svcbridge.console import i18n
from svcbridge.console.accounts import AccountError, Accounts
from svcbridge.models import TicketEvent
from svcbridge.store import schema as t
from svcbridge.web import build_web

HOSTILE = (
    "From: Mallory <m@example.com>\r\nTo: support@bridge.test\r\nSubject: =?utf-8?b?5omT5Y2w5py6?=\r\n"
    "Message-ID: <hostile@example.com>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n打印机坏了 printer broken\r\n"
    "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    "<p>打印机坏了<script>document.title='pwned'</script>"
    '<img src="x" onerror="document.title=\'pwned\'"><a href="javascript:alert(1)">click</a></p>\r\n'
    "--b--\r\n"
).encode()


@pytest.fixture(autouse=True)
def cheap_hashes(request, monkeypatch):
    """argon2id at a test's cost (the real parameters take ~0.3 s a hash on a loaded CI box); the test
    of the hashing itself keeps the library's defaults."""
    if "argon2id" not in request.node.name:
        from argon2 import PasswordHasher

        from svcbridge.console import accounts

        monkeypatch.setattr(accounts, "_HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def app(make_app, tmp_path):
    return make_app(console={"source_fail_threshold": 0})


def deliver(app, tmp_path: Path, *mails: bytes) -> None:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(mails):  # unique names: the journal is unique on (source, file name)
        (new / f"{i:03d}-{uuid.uuid4().hex}.eml").write_bytes(m)
    asyncio.run(app.run_once())


@pytest.fixture
def client(app):
    Accounts(app.store.engine).add("ops", PASSWORD)
    Accounts(app.store.engine).add("viewer", PASSWORD, "readonly")
    return TestClient(build_web(app))


# ---------------------------------------------------------------------------------------------- accounts
def test_accounts_hash_with_argon2id_and_password_change_ends_sessions(app) -> None:
    acc = Accounts(app.store.engine)
    op = acc.add("li.wei", PASSWORD, "admin", "Asia/Shanghai")
    with app.store.engine.connect() as conn:
        stored = conn.execute(select(t.operators.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$") and PASSWORD not in stored  # RFC 9106 profile 2
    assert acc.verify("li.wei", PASSWORD) == op and acc.verify("li.wei", "wrong password!") is None
    assert acc.verify("nobody", PASSWORD) is None
    token, _ = acc.open_session(op, 60)
    assert acc.session(token).operator.username == "li.wei"
    acc.passwd("li.wei", "another long password")
    assert acc.session(token) is None  # a stolen cookie dies with the old password
    acc.remove("li.wei")
    assert acc.get("li.wei") is None
    actions = [r["action"] for r in acc.audit_list()]
    assert actions == ["user_removed", "user_password_changed", "user_added"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("a", "short"), "too short"),
        (("a b", PASSWORD), "user names"),
        (("a", PASSWORD, "root"), "role must be"),
        (("a", PASSWORD, "admin", "Mars/Olympus"), "unknown time zone"),
    ],
)
def test_refused_accounts(app, args, error) -> None:
    with pytest.raises(AccountError, match=error):
        Accounts(app.store.engine).add(*args)


def test_users_cli(tmp_path, base_settings, monkeypatch) -> None:
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/var"\n[http]\nenabled = false\n')
    run = CliRunner().invoke
    res = run(main, ["--config", str(cfg), "users", "add", "zhang", "--role", "readonly", "--tz", "Asia/Shanghai",
                     "--password-stdin"], input=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert PASSWORD not in res.output
    res = run(main, ["--config", str(cfg), "users", "add", "zhang", "--password-stdin"], input=PASSWORD + "\n")
    assert res.exit_code == 1 and "exists" in res.output
    rows = json.loads(run(main, ["--config", str(cfg), "users", "list", "--json"]).output)
    assert [(r["username"], r["role"], r["tz"]) for r in rows] == [("zhang", "readonly", "Asia/Shanghai")]
    res = run(main, ["--config", str(cfg), "users", "passwd", "zhang", "--password-stdin"], input="short\n")
    assert res.exit_code == 1 and "too short" in res.output
    assert run(main, ["--config", str(cfg), "users", "passwd", "zhang", "--password-stdin"],
               input="a new long password\n").exit_code == 0
    assert run(main, ["--config", str(cfg), "users", "remove", "zhang"]).exit_code == 0
    assert run(main, ["--config", str(cfg), "users", "remove", "zhang"]).exit_code == 1
    import getpass

    from svcbridge.store import db

    engine = db.make_engine(f"sqlite:///{tmp_path}/var/svcbridge.db")
    trail = [(r["actor"], r["action"], r["target"]) for r in Accounts(engine).audit_list()]
    me = f"cli:{getpass.getuser()}"
    assert trail == [(me, "user_removed", "zhang"), (me, "user_password_changed", "zhang"), (me, "user_added", "zhang")]


# ---------------------------------------------------------------------------------------------- authentication
GETS = ["/", "/tickets", "/tickets/SB-000001", "/tickets/SB-000001/attachments/1", "/quarantine",
        "/quarantine/1/raw", "/outbox", "/plugins", "/audit", "/sla", "/assets", "/rma"]
POSTS = ["/tickets/SB-000001/state", "/tickets/SB-000001/reply", "/tickets/SB-000001/note",
         "/quarantine/1/retry", "/quarantine/1/drop", "/outbox/1/replay", "/outbox/target/unpark",
         "/outbox/target/replay", "/logout"]


def _state(app) -> tuple:
    """Everything an action could change."""
    with app.store.engine.connect() as conn:
        return (
            [tuple(r) for r in conn.execute(select(t.tickets.c.state, t.tickets.c.updated_at))],
            conn.execute(select(t.events.c.id)).all(),
            [tuple(r) for r in conn.execute(select(t.outbox.c.id, t.outbox.c.status))],
            [tuple(r) for r in conn.execute(select(t.quarantine.c.id, t.quarantine.c.resolved))],
        )


def test_unauthenticated_requests_do_nothing(app, client, tmp_path) -> None:
    deliver(app, tmp_path, eml(), b"not a mail at all")
    before = _state(app)
    for path in GETS:
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
        assert "SB-000001" not in r.text
    assert client.get("/api/overview").status_code == 401
    assert client.get("/overview/live", follow_redirects=False).status_code == 401  # fetched by console.js
    for path in POSTS:
        r = client.post(path, data={"state": "closed", "text": "x", "confirm": "yes", "target": "notify:email"})
        assert r.status_code == 401, path
    assert _state(app) == before
    assert client.get("/healthz").status_code == 200  # probes and metrics stay open
    assert client.get("/metrics").status_code == 200


def test_cross_site_posts_and_stale_tokens_do_nothing(app, client, tmp_path) -> None:
    deliver(app, tmp_path, eml())
    login(client)
    page = client.get("/tickets/SB-000001")
    token = csrf(page.text)
    before = _state(app)
    evil = {"Origin": "http://evil.example"}
    cases = [
        ({"state": "closed", "csrf": token}, evil),  # a foreign page, even knowing the token
        ({"state": "closed"}, {}),  # no token
        ({"state": "closed", "csrf": "x" * 43}, {}),  # a guessed token
        ({"state": "closed", "csrf": token}, {"Origin": "null"}),  # sandboxed frame
    ]
    for data, headers in cases:
        r = client.post("/tickets/SB-000001/state", data=data, headers=headers)
        assert r.status_code == 403, (data, headers)
    # a stale token: the session it belonged to ended (log out, log in again)
    client.post("/logout", data={"csrf": token})
    login(client)
    r = client.post("/tickets/SB-000001/state", data={"state": "closed", "csrf": token})
    assert r.status_code == 403
    assert _state(app) == before
    refused = [r["action"] for r in Accounts(app.store.engine).audit_list()].count("refused_csrf")
    assert refused == 5
    # and with the fresh token it works: the refusals were about the token, not the action
    fresh = csrf(client.get("/tickets/SB-000001").text)
    r = client.post("/tickets/SB-000001/state", data={"state": "closed", "csrf": fresh})
    assert r.status_code == 200 and app.store.get_ticket("SB-000001").state == "closed"


def test_cookie_flags_and_security_headers(app, client) -> None:
    r = login(client, follow=False)
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("sb_session="))
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "secure" not in low
    https = TestClient(build_web(app), base_url="https://console.test")
    r = login(https, follow=False)
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("sb_session="))
    assert "secure" in cookie.lower()
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"


def test_behind_a_tls_proxy_the_public_origin_is_ours_and_cookies_are_secure(make_app, tmp_path) -> None:
    app = make_app(http={"public_url": "https://bridge.example.com/"})
    Accounts(app.store.engine).add("ops", PASSWORD)
    deliver(app, tmp_path, eml())
    client = TestClient(build_web(app))  # plain HTTP from the proxy on loopback
    ours, evil = {"Origin": "https://bridge.example.com"}, {"Origin": "https://bridge.example.com.evil.test"}
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    form = {"username": "ops", "password": PASSWORD, "login_token": token}
    assert client.post("/login", data=form, headers=evil, follow_redirects=False).status_code == 403
    page = client.get("/login")
    form["login_token"] = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    # Secure cookies: httpx keeps them off plain HTTP; the browser sends them over the proxy's https
    client.cookies.set("sb_login", page.cookies["sb_login"])
    r = client.post("/login", data=form, headers=ours, follow_redirects=False)
    assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
    client.cookies.set("sb_session", r.cookies["sb_session"])
    token = csrf(client.get("/tickets/SB-000001").text)
    bad = client.post("/tickets/SB-000001/note", data={"csrf": token, "text": "x"}, headers=evil)
    assert bad.status_code == 403
    ok = client.post("/tickets/SB-000001/note", data={"csrf": token, "text": "x"}, headers=ours)
    assert ok.status_code == 200 and app.store.get_ticket("SB-000001").events[-1].type == "internal_note"


def test_readonly_role_sees_but_cannot_act(app, client, tmp_path) -> None:
    deliver(app, tmp_path, eml())
    login(client, "viewer")
    page = client.get("/tickets/SB-000001")
    assert page.status_code == 200 and 'id="state-form"' not in page.text
    before = _state(app)
    r = client.post("/tickets/SB-000001/state", data={"state": "closed", "csrf": csrf(page.text)})
    assert r.status_code == 403 and _state(app) == before


def test_login_rate_limit(app, client) -> None:
    for _ in range(5):
        assert login(client, password="wrong password").status_code == 401
    r = login(client)  # the right password, too late
    assert r.status_code == 429 and client.get("/", follow_redirects=False).status_code == 303
    actions = [r["action"] for r in Accounts(app.store.engine).audit_list()]
    assert actions.count("login_failed") == 5 and "login_throttled" in actions


def test_login_form_from_elsewhere_is_refused(client) -> None:
    r = client.post("/login", data={"username": "ops", "password": PASSWORD, "login_token": "forged"})
    assert r.status_code == 403 and "sb_session" not in r.headers.get("set-cookie", "")


def test_admin_token_for_scripts(make_app, tmp_path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-0123456789abcdef\n")
    app = make_app(console={"admin_token_file": str(secret)})
    client = TestClient(build_web(app))
    deliver(app, tmp_path, eml())
    ok = {"Authorization": "Bearer tok-0123456789abcdef"}
    assert client.get("/api/overview", headers=ok).json()["tickets_24h"] == 1
    assert client.get("/api/overview", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.post("/tickets/SB-000001/note", data={"text": "from a script"}, headers=ok, follow_redirects=False)
    assert r.status_code == 303
    ev = app.store.get_ticket("SB-000001").events[-1]
    assert (ev.type, ev.actor, ev.data["body"]) == ("internal_note", "console:token", "from a script")
    audit = Accounts(app.store.engine).audit_list()[0]
    assert (audit["actor"], audit["action"], audit["target"]) == ("token", "ticket_note", "SB-000001")
    # a token from a file is no SecretStr of the settings: the console adds it to the log redaction
    import io

    import structlog

    from svcbridge import log as logmod

    buf = io.StringIO()
    logmod.configure("json", "debug", stream=buf)
    structlog.get_logger("test").error("careless_plugin", header="Bearer tok-0123456789abcdef")
    out = buf.getvalue()
    assert "careless_plugin" in out and "tok-0123456789abcdef" not in out and logmod.MASK in out


# ---------------------------------------------------------------------------------------------- pages
def test_hostile_mail_html_is_never_executable(app, client, tmp_path) -> None:
    deliver(app, tmp_path, HOSTILE)
    login(client)
    page = client.get("/tickets/SB-000001")
    assert "打印机坏了" in page.text
    frame = re.search(r'<iframe class="html-body" sandbox="" [^>]*srcdoc="([^"]*)"', page.text)
    assert frame, "the HTML is shown only inside a sandboxed iframe"
    inner = frame.group(1)
    for bad in ("<script", "onerror", "javascript:", "&lt;script"):
        assert bad not in inner, bad
    assert "<script>document" not in page.text and "onerror=" not in page.text
    assert "javascript:alert" not in page.text


def test_attachments_download_as_files_never_inline(app, client, tmp_path) -> None:
    mail = (
        "From: a@example.com\r\nTo: support@bridge.test\r\nSubject: files\r\nMessage-ID: <f@x>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee files\r\n"
        '--b\r\nContent-Type: text/html; name="x.html"\r\nContent-Disposition: attachment; filename="../x.html"\r\n\r\n'
        "<script>alert(1)</script>\r\n"
        '--b\r\nContent-Type: application/pdf; name="报告.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
        'Content-Disposition: attachment; filename="=?utf-8?b?5oql5ZGKLnBkZg==?="\r\n\r\nJVBERi0xLjQKJSVFT0YK\r\n'
        "--b--\r\n"
    ).encode()
    deliver(app, tmp_path, mail)
    login(client)
    page = client.get("/tickets/SB-000001").text
    links = re.findall(r'href="(/tickets/SB-000001/attachments/\d+)"', page)
    assert len(links) == 2
    seen, names = {}, {}
    for link in links:
        r = client.get(link)
        assert r.headers["content-disposition"].startswith("attachment; filename=")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "/" not in r.headers["content-disposition"].split("filename=")[1].split(";")[0]
        seen[r.headers["content-type"].split(";")[0]] = r.content
        names[r.headers["content-type"].split(";")[0]] = r.headers["content-disposition"].split("filename*=")[-1]
    assert seen["application/pdf"].startswith(b"%PDF-1.4")
    assert b"<script>" in seen["application/octet-stream"]  # the HTML file: bytes, never text/html
    assert names["application/pdf"] == "UTF-8''%E6%8A%A5%E5%91%8A.pdf"  # the customer's name, encoded
    assert names["application/octet-stream"] == "UTF-8''x.html"  # "../" is gone
    assert client.get("/tickets/SB-000001/attachments/999999").status_code == 404


def test_search_filters_and_paging(app, client, tmp_path) -> None:
    mails = [eml(subject=f"Fault {i}", msgid=f"<p{i}@x>", sender=f"c{i}@example.com") for i in range(53)]
    mails.append(eml(subject="打印机 100%_done", msgid="<zh@x>", sender="王 <wang@example.cn>"))
    deliver(app, tmp_path, *mails)
    login(client)
    by_subject = {t_.subject: t_.ref for t_ in app.store.list_tickets(None, 100)}
    zh = by_subject["打印机 100%_done"]
    faults_1 = {by_subject[f"Fault {i}"] for i in [1, *range(10, 20)]}
    with app.store.tx() as conn:  # what the SLA engine records on a breach (plugins/svcbridge_sla)
        for subject in ("Fault 3", "Fault 5"):
            tid = app.store.id_for_ref(by_subject[subject])
            app.store.add_event(conn, tid, TicketEvent(type="sla_breached", actor="sla", data={"target": "response"}))
        conn.execute(update(t.tickets).where(t.tickets.c.id == app.store.id_for_ref(by_subject["Fault 5"]))
                     .values(state="resolved"))
    cases = [
        ({"q": "wang@example"}, {zh}),
        ({"q": "打印机"}, {zh}),
        ({"q": "100%_"}, {zh}),  # LIKE wildcards are plain characters
        ({"q": "%"}, {zh}),
        ({"q": by_subject["Fault 7"]}, {by_subject["Fault 7"]}),
        ({"state": "closed"}, set()),
        ({"q": "Fault 1"}, faults_1),  # 1, 10-19
        ({"q": "Fault 1", "channel": "email", "priority": "3"}, faults_1),
        ({"q": "Fault 1", "channel": "sms"}, set()),
        ({"breach": "1"}, {by_subject["Fault 3"]}),  # Fault 5 was breached too, but is resolved now
        ({"breach": "1", "q": "Fault 5"}, set()),
    ]
    for params, expected in cases:
        html = client.get("/tickets", params=params).text
        assert re.search(rf"<p>{len(expected)} · ", html), params
        assert set(re.findall(r'<a href="/tickets/(SB-\d+)">', html)) == expected, params
    first = re.findall(r'<a href="/tickets/(SB-\d+)">', client.get("/tickets").text)
    page2 = re.findall(r'<a href="/tickets/(SB-\d+)">', client.get("/tickets", params={"page": "2"}).text)
    assert len(first) == 50 and first[0] == "SB-000054"  # newest first, 50 a page
    assert page2 == ["SB-000004", "SB-000003", "SB-000002", "SB-000001"]
    assert 'id="next"' not in client.get("/tickets", params={"page": "99"}).text  # past the end: the last page


def test_ticket_actions_reach_the_customer_and_the_audit(app, client, tmp_path) -> None:
    deliver(app, tmp_path, eml())
    login(client)
    token = csrf(client.get("/tickets/SB-000001").text)
    client.post("/tickets/SB-000001/reply", data={"csrf": token, "text": "换一个新的硒鼓即可。"})
    client.post("/tickets/SB-000001/note", data={"csrf": token, "text": "called the customer"})
    client.post("/tickets/SB-000001/state", data={"csrf": token, "state": "resolved"})
    t_ = app.store.get_ticket("SB-000001")
    assert t_.state == "resolved"
    kinds = [(e.type, e.actor) for e in t_.events][-3:]
    assert kinds == [("agent_reply", "console:ops"), ("internal_note", "console:ops"), ("status_changed", "console:ops")]
    asyncio.run(app.delivery.drain())
    sent = b"".join(p.read_bytes() for p in (tmp_path / "outgoing").rglob("*") if p.is_file())
    assert "换一个新的硒鼓即可".encode() in sent or b"=?utf-8?" in sent
    audit = [(r["actor"], r["action"], r["target"]) for r in Accounts(app.store.engine).audit_list()][:3]
    assert audit == [("ops", "ticket_state", "SB-000001"), ("ops", "ticket_note", "SB-000001"),
                     ("ops", "ticket_reply", "SB-000001")]


def test_quarantine_retry_drop_and_outbox_replay(app, client, tmp_path) -> None:
    deliver(app, tmp_path, b"garbage without headers", b"more garbage")
    login(client)
    page = client.get("/quarantine").text
    qids = re.findall(r'data-qid="(\d+)"', page)
    assert len(qids) == 2
    token = csrf(page)
    raw = client.get(f"/quarantine/{qids[0]}/raw")
    assert raw.content == b"garbage without headers" and raw.headers["content-disposition"].startswith("attachment")
    confirm = client.post(f"/quarantine/{qids[0]}/drop", data={"csrf": token})
    assert 'id="confirm-drop"' in confirm.text and len(app.store.quarantine_list()) == 2  # asked, not dropped
    client.post(f"/quarantine/{qids[0]}/drop", data={"csrf": token, "confirm": "yes"})
    assert [q["id"] for q in app.store.quarantine_list()] == [int(qids[1])]
    client.post(f"/quarantine/{qids[1]}/retry", data={"csrf": token})
    assert app.store.journal_row(app.store.quarantine_get(int(qids[1]))["journal_id"])["status"] == "pending"
    # outbox: a dead letter replayed by id, and a parked target unparked
    deliver(app, tmp_path, eml())
    with app.store.tx() as conn:
        conn.execute(update(t.outbox).values(status="dead", last_error="boom"))
    dead = [r["id"] for r in app.delivery.outbox.list("dead")]
    assert len(dead) >= 2
    client.post(f"/outbox/{dead[0]}/replay", data={"csrf": token})
    assert [r["id"] for r in app.delivery.outbox.list("dead")] == dead[1:]
    client.post("/outbox/target/replay", data={"csrf": token, "target": "notify:email"})
    assert app.delivery.outbox.list("dead") == []
    with app.store.tx() as conn:
        conn.execute(update(t.outbox).values(status="parked", last_error="auth failed: 401"))
    assert "auth failed: 401" in client.get("/outbox").text
    client.post("/outbox/target/unpark", data={"csrf": token, "target": "notify:email"})
    assert {r["target"] for r in app.delivery.outbox.list("parked")} == {"local"}  # only that target


# ---------------------------------------------------------------------------------------------- readiness
def _no_notifier(make_app, tmp_path):
    app = make_app(plugins={"email": {"outbound": None}})
    deliver(app, tmp_path, eml())
    asyncio.run(app.delivery.run_once())
    return app


def _unrouted(make_app, tmp_path):
    return make_app(routing={"default": ["zammad-main"]})


def _parked(make_app, tmp_path):
    app = make_app()
    deliver(app, tmp_path, eml())
    with app.store.tx() as conn:
        conn.execute(update(t.outbox).values(status="parked", last_error="auth failed: 401 Unauthorized"))
    return app


def _failing_source(make_app, tmp_path):
    app = make_app(console={"source_fail_threshold": 0})
    app.context("imap:support").report(False, "OSError: connection refused")
    return app


def _failing_briefly(make_app, tmp_path):
    app = make_app(console={"source_fail_threshold": 300})
    app.context("imap:support").report(False, "OSError: connection refused")
    return app


@pytest.mark.parametrize(
    ("build", "kind", "subject"),
    [
        (_no_notifier, "no_notifier", "notify:email"),
        (_unrouted, "sink_not_configured", "routing.default.0"),
        (_parked, "target_parked", "notify:email"),
        (_failing_source, "source_failing", "imap:support"),
        (_failing_briefly, None, None),  # under its threshold: still ready
    ],
)
def test_readyz_tells_the_truth(make_app, tmp_path, build, kind, subject) -> None:
    app = build(make_app, tmp_path)
    client = TestClient(build_web(app))
    r = client.get("/readyz")
    if kind is None:
        assert r.status_code == 200 and r.json()["problems"] == []
        return
    assert r.status_code == 503 and r.json()["status"] == "not ready"
    found = [(p["kind"], p["subject"]) for p in r.json()["problems"]]
    assert (kind, subject) in found
    # the console shows the same list, each with what to do
    Accounts(app.store.engine).add("ops", PASSWORD)
    login(client)
    overview = client.get("/", headers={"Accept-Language": "en"}).text
    assert "Not ready" in overview and f'data-kind="{kind}"' in overview


def test_a_job_alert_is_shown_but_leaves_the_daemon_ready(app) -> None:
    app.work.alerts["job:warranty.lookup"] = "ConnectError: vendor API unreachable"
    client = TestClient(build_web(app))
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["alerts"] == {"job:warranty.lookup": "ConnectError"}  # anonymous
    Accounts(app.store.engine).add("ops", PASSWORD)
    login(client)
    assert client.get("/readyz").json()["alerts"] == {"job:warranty.lookup": "ConnectError: vendor API unreachable"}
    zh = client.get("/", headers={"Accept-Language": "zh-CN"}).text
    assert 'id="alerts"' in zh and "vendor API unreachable" in zh and "查看错误信息" in zh and "就绪" in zh


def test_healthy_daemon_is_ready(app, tmp_path) -> None:
    deliver(app, tmp_path, eml())
    asyncio.run(app.delivery.drain())
    r = TestClient(build_web(app)).get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# ---------------------------------------------------------------------------------------------- languages
@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh-TW", "zh-CN"),
        ("de-DE,zh;q=0.5", "zh-CN"),
        ("de-DE", "en"),
        ("", "en"),
        ("en;q=0.1,zh;q=0.2", "zh-CN"),
        ("zh;q=0", "en"),
        ("zh;q=abc,en", "en"),
    ],
)
def test_language_choice(header, lang) -> None:
    assert i18n.pick(header) == lang


def test_pages_in_chinese_and_english_with_the_operators_time_zone(app, tmp_path) -> None:
    Accounts(app.store.engine).add("wang", PASSWORD, tz="Asia/Shanghai")
    client = TestClient(build_web(app))
    deliver(app, tmp_path, eml())
    login(client, "wang")
    zh = client.get("/tickets", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    en = client.get("/tickets", headers={"Accept-Language": "en"}).text
    assert "工单" in zh and "下一页" not in zh and "Tickets" in en and "工单" not in en
    created = app.store.get_ticket("SB-000001").created_at
    from zoneinfo import ZoneInfo

    local = created.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M")
    assert local in zh and "Asia/Shanghai" in zh


def test_every_template_text_has_a_chinese_translation() -> None:
    root = Path(i18n.__file__).parent
    used = set()
    for f in (root / "templates").glob("*.html"):
        used |= set(re.findall(r'_\("([^"]+)"\)', f.read_text()))
        used |= set(re.findall(r"_\('([^']+)'\)", f.read_text()))
    from svcbridge.console import views

    used |= set(views.PLACEHOLDERS.values())
    from svcbridge.console import facts

    used |= set(facts.HINTS) | set(facts.HINTS.values())
    used |= {"Wrong user name or password.", "Too many failed logins; try again later.", "Not allowed.",
             "The form expired; reload the page and try again.", "ok", "failing", "down", "unknown",
             "oauth_token_expires_in", "health_facts_error"}
    missing = sorted(u for u in used if u not in i18n.ZH)
    assert not missing, missing


@pytest.mark.parametrize(
    ("original", "ctype", "star", "media"),
    [
        ("故障报告.pdf", "application/pdf", "UTF-8''%E6%95%85%E9%9A%9C%E6%8A%A5%E5%91%8A.pdf", "application/pdf"),
        ("..\\..\\boot.ini", "text/plain", "UTF-8''boot.ini", "text/plain"),
        ("invoice\u202egpj.exe", "application/x-msdownload", "UTF-8''invoicegpj.exe", "application/octet-stream"),
        ('a"b\r\nSet-Cookie: x=1.txt', "text/plain", "UTF-8''abSet-Cookie%20x%3D1.txt", "text/plain"),
        ("page.html", "text/html; charset=utf-8", "UTF-8''page.html", "application/octet-stream"),
        ("pic.svg", "image/svg+xml", "UTF-8''pic.svg", "application/octet-stream"),
        ("att-1.pdf", "application/pdf", None, "application/pdf"),  # the same as the safe name
        (None, "application/pdf", None, "application/pdf"),
        ("...", "application/pdf", None, "application/pdf"),
    ],
)
def test_download_headers(original, ctype, star, media) -> None:
    from svcbridge.console.views import download

    r = download(b"x", "att-1.pdf", ctype, original)
    disp = r.headers["content-disposition"]
    assert disp.startswith('attachment; filename="att-1.pdf"')
    assert (disp.split("filename*=")[1] if "filename*=" in disp else None) == star
    assert r.media_type == media and "\n" not in disp and "\r" not in disp
    assert r.headers["content-security-policy"].startswith("sandbox")
    # a download framed by another site (a PDF viewer in a frame) is clickjacking material too
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "same-origin"


def test_plugins_page_shows_secrets_as_set_or_unset_only(make_app, tmp_path) -> None:
    app = make_app(plugins={"webhook": {"secret": "whsec-very-secret-value"}})
    Accounts(app.store.engine).add("ops", PASSWORD)
    client = TestClient(build_web(app))
    login(client)
    page = client.get("/plugins").text
    assert "whsec-very-secret-value" not in page
    assert re.search(r"<td>secret</td><td>set</td>", page)
    assert "svcbridge_email" in page or "email" in page
    assert re.search(r"<td>admin_token</td><td>unset</td>", page)


def test_settings_view_never_shows_a_secret_nested_in_a_list() -> None:
    from pydantic import BaseModel, SecretStr

    from svcbridge.console.views import _settings_view

    class Box(BaseModel):
        name: str
        password: SecretStr | None = None
        api_token: str = ""

    class Section(BaseModel):
        boxes: list[Box]
        by_name: dict[str, Box]
        hosts: list[str]

    cfg = Section(boxes=[Box(name="a", password=SecretStr("pw-AAAA"), api_token="tk-BBBB"), Box(name="b")],
                  by_name={"c": Box(name="c", api_token="tk-CCCC")}, hosts=["x", "y"])
    rows = dict(_settings_view(cfg))
    assert rows == {
        "boxes.0.name": "a", "boxes.0.password": "set", "boxes.0.api_token": "set",
        "boxes.1.name": "b", "boxes.1.password": "unset", "boxes.1.api_token": "unset",
        "by_name.c.name": "c", "by_name.c.password": "unset", "by_name.c.api_token": "set",
        "hosts": "['x', 'y']",
    }


def test_tickets_per_hour_buckets(app, tmp_path) -> None:
    from datetime import timedelta

    from svcbridge.console import facts
    from svcbridge.models import utcnow

    deliver(app, tmp_path, *[eml(msgid=f"<h{i}@x>", sender=f"h{i}@example.com") for i in range(6)])
    hour = utcnow().replace(minute=0, second=0, microsecond=0)  # buckets are whole clock hours
    created = {1: hour + timedelta(seconds=1), 2: hour - timedelta(minutes=1), 3: hour - timedelta(hours=1),
               4: hour - timedelta(hours=23), 5: hour - timedelta(hours=23, seconds=1), 6: hour - timedelta(days=4)}
    with app.store.tx() as conn:
        for tid, at in created.items():
            conn.execute(update(t.tickets).where(t.tickets.c.id == tid).values(created_at=at))
    o = facts.overview(app)
    expected = [0] * 24
    expected[23] = 1  # this hour
    expected[22] = 2  # the hour before (one a minute before this hour began)
    expected[0] = 1  # 23 hours ago; a second earlier is outside
    assert o["tickets_per_hour"] == expected and o["tickets_24h"] == 4
    again = facts.overview(app)  # nothing changed: the same facts but the sources' clocks (lag)
    assert {k: v for k, v in o.items() if k != "sources"} == {k: v for k, v in again.items() if k != "sources"}


async def test_oauth_token_expiry_on_the_overview(make_app, tmp_path) -> None:
    """The Graph source of the e-mail plugin reports when its access token expires (fake IdP: 3,599 s)."""
    import httpx

    from fake_idp import FakeIdp
    from svcbridge.console import facts
    from svcbridge_email.oauth import TokenProvider
    from test_graph import ALLOW, NAME, graph_cfg

    app = make_app(outbound_allow=ALLOW, plugins={"email": {"graph": [graph_cfg(tmp_path)]}})
    tokens = TokenProvider(app.sources[NAME].cfg.oauth2, transport=httpx.MockTransport(FakeIdp()), allow=ALLOW)
    app.sources[NAME].tokens = tokens
    row = next(s for s in facts.sources(app) if s["name"] == NAME)
    assert row["facts"] == {}  # no token fetched yet: nothing to say
    await tokens.access_token()
    row = next(s for s in facts.sources(app) if s["name"] == NAME)
    assert 3590 < row["facts"]["oauth_token_expires_in"] <= 3599
    Accounts(app.store.engine).add("ops", PASSWORD)
    client = TestClient(build_web(app))
    login(client)
    zh = client.get("/", headers={"Accept-Language": "zh-CN"}).text
    assert re.search(r'data-fact="oauth_token_expires_in">OAuth 令牌剩余有效期: 59 min<', zh)


def test_a_broken_health_facts_does_not_break_the_overview(app) -> None:
    from svcbridge.console import facts

    class Broken:
        name, channel, interval = "broken", "email", 1.0

        def health_facts(self) -> dict:
            raise RuntimeError("plugin bug")

    app.sources["broken"] = Broken()
    row = next(s for s in facts.sources(app) if s["name"] == "broken")
    assert row["facts"] == {"health_facts_error": "RuntimeError: plugin bug"}


@pytest.mark.parametrize(
    ("given", "goes"),
    [
        ("/tickets?q=%E6%89%93&state=new", "/tickets?q=%E6%89%93&state=new"),
        ("/tickets/SB-000001", "/tickets/SB-000001"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        ("tickets", "/"),
    ],
)
def test_login_goes_only_to_a_console_path(given, goes) -> None:
    from svcbridge.console.actions import _next

    assert _next(given) == goes


def test_helpdesk_ticket_links_open_the_helpdesks_own_page(make_app, tmp_path) -> None:
    app = make_app(plugins={"zammad": {"url": "https://zammad.example.com/", "name": "zammad",
                                       "token": "zammad-token-0123456789"}},
                   outbound_allow=["zammad.example.com"])
    deliver(app, tmp_path, eml())
    from svcbridge.models import ExternalLink

    with app.store.tx() as conn:  # as the sink records it on create
        app.store.add_link(conn, 1, ExternalLink(system="zammad", kind="ticket", value="4711"))
        app.store.add_link(conn, 1, ExternalLink(system="zammad", kind="article", value="javascript:alert(1)"))
    Accounts(app.store.engine).add("ops", PASSWORD)
    client = TestClient(build_web(app))
    login(client)
    page = client.get("/tickets/SB-000001").text
    assert '<a href="https://zammad.example.com/#ticket/zoom/4711" rel="noopener noreferrer"' in page
    assert 'href="javascript:' not in page


@pytest.mark.parametrize(
    ("module", "cls", "value", "url"),
    [
        ("svcbridge_zammad.client", "ZammadSink", "12", "https://hd.example.com/#ticket/zoom/12"),
        ("svcbridge_glpi.client", "GlpiSink", "12", "https://hd.example.com/front/ticket.form.php?id=12"),
        ("svcbridge_jsm.client", "JsmSink", "SUP-7", "https://hd.example.com/browse/SUP-7"),
        ("svcbridge_rt.sink", "RtSink", "12", "https://hd.example.com/Ticket/Display.html?id=12"),
        ("svcbridge_zammad.client", "ZammadSink", "1?x=/../", "https://hd.example.com/#ticket/zoom/1%3Fx%3D%2F..%2F"),
    ],
)
def test_sink_ticket_urls(module, cls, value, url) -> None:
    import importlib
    from types import SimpleNamespace

    sink_cls = getattr(importlib.import_module(module), cls)
    sink = object.__new__(sink_cls)  # no HTTP client needed to build a URL
    sink.cfg = SimpleNamespace(url="https://hd.example.com")
    assert sink.ticket_url(value) == url


def test_sla_board_lists_open_sla_tickets_by_next_deadline(app, client, tmp_path) -> None:
    from datetime import timedelta

    from svcbridge.models import utcnow

    deliver(app, tmp_path, *[eml(subject=f"sla {i}", msgid=f"<s{i}@x>", sender=f"s{i}@example.com") for i in range(4)])
    by_subject = {tk.subject: tk for tk in app.store.list_tickets(None, 10)}
    now = utcnow()
    plan = {"sla 0": (now + timedelta(hours=5), "new"), "sla 1": (now - timedelta(minutes=3), "new"),
            "sla 2": (now + timedelta(hours=1), "resolved"), "sla 3": (None, "new")}
    with app.store.tx() as conn:
        for subject, (due, state) in plan.items():
            tk = by_subject[subject]
            values = {"state": state, "sla_policy": "gold" if due else None,
                      "deadlines": {"resolution": due.isoformat()} if due else {}}
            conn.execute(update(t.tickets).where(t.tickets.c.id == tk.id).values(**values))
        app.store.add_event(conn, by_subject["sla 1"].id, TicketEvent(type="sla_breached", actor="sla"))
    login(client)
    page = client.get("/sla").text
    refs = re.findall(r'<tr class="(breached)?" data-ref="(SB-\d+)"', page)
    # open tickets with a policy, the earliest deadline first; resolved and policy-less ones are not listed
    assert refs == [("breached", by_subject["sla 1"].ref), ("", by_subject["sla 0"].ref)]
    assert '<b id="sla-breached">1</b>' in page


def test_asset_register_page(app, client, tmp_path) -> None:
    from svcbridge.assets import AssetPart, AssetRecord
    from svcbridge.store.assets import AssetStore

    reg = AssetStore(app.store)
    reg.upsert(AssetRecord(serial="sn-7xk2", vendor="Acme", model="P-200", customer="上海某医院",
                           parts=[AssetPart(category="main", part_number="MB-1")]))
    reg.upsert(AssetRecord(serial="SN-8ZZ1", vendor="Acme", model="P-300", customer="Other"))
    login(client)
    listing = client.get("/assets").text
    assert re.findall(r'<a href="/assets\?serial=([^"]+)">', listing) == ["SN-7XK2", "SN-8ZZ1"]
    only = client.get("/assets", params={"customer": "上海某医院"}).text
    assert "SN-7XK2" in only and "SN-8ZZ1" not in only
    unit = client.get("/assets", params={"serial": " sn-7xk2 "}).text  # normalised like the register
    assert 'id="unit"' in unit and "P-200" in unit and "MB-1" in unit
    assert 'id="no-unit"' in client.get("/assets", params={"serial": "NOPE-1"}).text


# ---------------------------------------------------------------------------------------------- review (second engineer)
def test_readonly_operator_can_log_out(app, client) -> None:
    """Log out is the one POST a read-only operator may make: refusing it left the session alive."""
    login(client, "viewer")
    token = csrf(client.get("/").text)
    r = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303  # the session is gone
    with app.store.engine.connect() as conn:
        assert conn.execute(select(t.console_sessions)).all() == []
    assert Accounts(app.store.engine).audit_list()[0]["action"] == "logout"


@pytest.mark.parametrize(
    ("path", "form", "action"),
    [
        ("/tickets/SB-000001/state", {"state": "no-such-state"}, "ticket_state"),
        ("/tickets/SB-999999/state", {"state": "closed"}, "ticket_state"),
        ("/tickets/SB-000001/note", {"text": "   "}, "ticket_note"),
        ("/tickets/SB-000001/reply", {"text": ""}, "ticket_reply"),
        ("/quarantine/999/retry", {}, "quarantine_retry"),
        ("/quarantine/999/drop", {"confirm": "yes"}, "quarantine_drop"),
        ("/outbox/target/replay", {"target": ""}, "outbox_replay_target"),
        ("/outbox/target/bogus", {"target": "local"}, "outbox_bogus_target"),
    ],
)
def test_refused_actions_are_audited(app, client, tmp_path, path, form, action) -> None:
    """Every action is an audit row, a refused one too (who tried what, on what, and that it was refused)."""
    deliver(app, tmp_path, eml())
    login(client)
    token = csrf(client.get("/tickets/SB-000001").text)
    r = client.post(path, data={"csrf": token, **form}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("msg=refused")
    row = Accounts(app.store.engine).audit_list()[0]
    assert (row["actor"], row["action"]) == ("ops", action) and row["detail"].get("applied") is False


def test_login_rate_limit_holds_against_parallel_attempts(app, client) -> None:
    """Attempts in flight count: checking the limit, then verifying for ~0.3 s, then counting let a burst of
    parallel guesses all through (the check saw none of them yet)."""
    import httpx

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as ac:
            page = await ac.get("/login")
            token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
            form = {"username": "ops", "password": "wrong password", "login_token": token}
            # the form's own cookie on each (every answer sets a fresh one in the client's jar)
            jar = {"Cookie": f"sb_login={page.cookies['sb_login']}"}
            got = await asyncio.gather(*[ac.post("/login", data=form, headers=jar) for _ in range(20)])
            return [g.status_code for g in got]

    codes = asyncio.run(burst())
    assert codes.count(401) == 5 and codes.count(429) == 15, codes
    actions = [r["action"] for r in Accounts(app.store.engine).audit_list()]
    assert actions.count("login_failed") == 5


def test_session_ends_after_idle_time_but_not_while_used(make_app, tmp_path) -> None:
    app = make_app(console={"idle_minutes": 30})
    Accounts(app.store.engine).add("ops", PASSWORD)
    client = TestClient(build_web(app))
    login(client)
    assert client.get("/", follow_redirects=False).status_code == 200

    def age(minutes: float) -> None:  # the session as if it were last used that long ago
        from datetime import timedelta

        from svcbridge.models import utcnow

        with app.store.tx() as conn:
            conn.execute(update(t.console_sessions).values(expires_at=utcnow() + timedelta(minutes=30 - minutes)))

    age(20)
    assert client.get("/", follow_redirects=False).status_code == 200  # used: the idle clock starts again
    with app.store.engine.connect() as conn:
        left = t.aware(conn.execute(select(t.console_sessions.c.expires_at)).scalar_one())
    from svcbridge.models import utcnow

    assert (left - utcnow()).total_seconds() > 29 * 60
    age(31)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_session_ends_at_its_absolute_lifetime_even_when_used(make_app, tmp_path) -> None:
    from datetime import timedelta

    from svcbridge.models import utcnow

    app = make_app(console={"idle_minutes": 30, "session_hours": 1})
    Accounts(app.store.engine).add("ops", PASSWORD)
    client = TestClient(build_web(app))
    login(client)
    with app.store.tx() as conn:  # logged in 59 min ago, used a moment ago
        conn.execute(update(t.console_sessions).values(created_at=utcnow() - timedelta(minutes=59)))
    assert client.get("/", follow_redirects=False).status_code == 200
    got = Accounts(app.store.engine).session(client.cookies["sb_session"], 3600, 1800)
    assert got is not None and (got.expires_at - utcnow()).total_seconds() <= 61  # not past created + 1 h
    with app.store.tx() as conn:
        conn.execute(update(t.console_sessions).values(created_at=utcnow() - timedelta(minutes=61)))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_live_fragment_of_an_ended_session_is_401_not_the_login_page(app, client) -> None:
    """console.js reloads the page on a 401; a redirect was followed by fetch() and the login form was put
    into the overview's live section (a page inside the page) every few seconds, never reloading."""
    login(client)
    assert client.get("/overview/live").status_code == 200
    client.post("/logout", data={"csrf": csrf(client.get("/").text)})
    r = client.get("/overview/live", follow_redirects=True)
    assert r.status_code == 401 and 'name="password"' not in r.text
    js = (Path(__file__).parents[1] / "src/svcbridge/console/static/console.js").read_text()
    assert "r.status === 401" in js and "window.location.reload()" in js


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("https://svc:Hunter2-pw@rt.example.com/REST/2.0/", "https://svc:***@rt.example.com/REST/2.0/"),
        ("postgresql://bridge:pg-pass@db/svc", "postgresql://bridge:***@db/svc"),
        ("https://rt.example.com/", "https://rt.example.com/"),
        ("https://hooks.example.com/in?token=abc123&x=1", "https://hooks.example.com/in?token=***&x=1"),
        ("https://hooks.example.com/in?sig=s3&api_key=k", "https://hooks.example.com/in?sig=***&api_key=***"),
        ("user@example.com", "user@example.com"),
    ],
)
def test_plugins_page_hides_credentials_inside_urls(value, shown) -> None:
    """A password in a URL's userinfo or a token in its query is a secret although the field is 'url'."""
    from pydantic import BaseModel

    from svcbridge.console.views import _settings_view

    class Section(BaseModel):
        url: str

    assert dict(_settings_view(Section(url=value))) == {"url": shown}


def test_a_plugin_that_failed_to_load_makes_the_daemon_not_ready(make_app, tmp_path) -> None:
    """A source or sink plugin that failed (bad settings, import error) means intake or delivery that is
    silently missing: /readyz said ok while the Plugins page said failed."""
    app = make_app()
    app.pm.mark_failed("svcbridge_imap_demo", ValueError("imap: host is required"))
    client = TestClient(build_web(app))
    r = client.get("/readyz")
    assert r.status_code == 503
    assert ("plugin_failed", "svcbridge_imap_demo") in [(p["kind"], p["subject"]) for p in r.json()["problems"]]
    Accounts(app.store.engine).add("ops", PASSWORD)
    login(client)
    zh = client.get("/", headers={"Accept-Language": "zh-CN"}).text
    assert 'data-kind="plugin_failed"' in zh and "插件加载失败" in zh and "imap: host is required" in zh


@pytest.mark.parametrize(
    ("addr", "key"),
    [
        ("192.0.2.7", "addr:192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "addr:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "addr:2001:db8:1:2::/64"),  # the same subscriber's /64
        ("::ffff:192.0.2.7", "addr:192.0.2.7"),
        ("testclient", "addr:testclient"),
    ],
)
def test_login_limit_counts_an_ipv6_client_by_its_64(addr, key) -> None:
    """One IPv6 subscriber holds 2^64 addresses: counted per address, it was never limited."""
    from svcbridge.console.actions import _addr_key

    assert _addr_key(addr) == key


@pytest.mark.parametrize(("token", "works"), [("admin", False), ("x" * 15, False), ("tok-0123456789ab", True)])
def test_a_guessable_admin_token_is_refused(make_app, tmp_path, token, works) -> None:
    """Bearer guesses are not rate limited (scripts must not lock themselves out), so the token itself must
    be unguessable: one shorter than 16 characters is refused, and said so at start."""
    secret = tmp_path / "token"
    secret.write_text(token + "\n")
    app = make_app(console={"admin_token_file": str(secret)})
    client = TestClient(build_web(app))
    r = client.get("/api/overview", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == (200 if works else 401)


def test_a_throttled_login_flood_writes_one_audit_row_not_one_per_request(app, client) -> None:
    """Anyone can fetch a login form: an audit row per refused request let an anonymous client fill the
    store at HTTP speed. The throttle is noted once per window and key."""
    for _ in range(5):
        login(client, password="wrong password")
    for _ in range(30):
        assert login(client, password="wrong password").status_code == 429
    actions = [r["action"] for r in Accounts(app.store.engine).audit_list(500)]
    assert actions.count("login_failed") == 5 and actions.count("login_throttled") == 1


def test_plugins_page_and_readyz_never_show_a_secret_inside_an_error(make_app, tmp_path) -> None:
    """A plugin's failure reason, a source's error and an alert are exception texts: a library that
    puts the URL or the header it used into its message carries the secret along."""
    canary = "zammad-canary-5f1e2d3c4b5a"
    app = make_app(plugins={"zammad": {"url": "https://zammad.example.com/", "name": "zammad", "token": canary}},
                   outbound_allow=["zammad.example.com"], console={"source_fail_threshold": 0})
    app.pm.mark_failed("svcbridge_demo", ValueError(f"bad header 'Authorization: Token {canary}'"))
    app.context("imap:support").report(False, f"LoginError: token {canary} refused")
    app.delivery.alerts["zammad"] = f"401 for Token token={canary}"
    client = TestClient(build_web(app))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and canary not in ready.text
    Accounts(app.store.engine).add("ops", PASSWORD)
    login(client)
    for path in ("/plugins", "/", "/overview/live", "/api/overview"):
        r = client.get(path)
        assert r.status_code == 200 and canary not in r.text, path


def test_logging_in_again_ends_the_session_the_browser_had(app, client) -> None:
    """A new session id at each login, and the old one ends: a second login on a shared browser (or over
    a cookie someone planted) left the previous session alive behind the new cookie."""
    login(client)
    old = client.cookies["sb_session"]
    login(client, "viewer")
    new = client.cookies["sb_session"]
    assert new != old
    acc = Accounts(app.store.engine)
    assert acc.session(old) is None and acc.session(new).operator.username == "viewer"


def test_replaying_a_delivered_item_asks_first(app, client, tmp_path) -> None:
    """Replaying a done item sends it again (a customer gets the notice twice): one press of the Replay
    button on the 'done' list did that. Now it asks, like drop; a dead letter replays at once."""
    deliver(app, tmp_path, eml())
    asyncio.run(app.delivery.drain())
    done = app.delivery.outbox.list("done")
    assert done
    login(client)
    token = csrf(client.get("/outbox?status=done").text)
    item = done[0]["id"]
    ask = client.post(f"/outbox/{item}/replay", data={"csrf": token}, headers={"Accept-Language": "zh-CN"})
    assert ask.status_code == 200 and 'id="confirm-replay"' in ask.text and "再次发送" in ask.text
    assert {r["id"] for r in app.delivery.outbox.list("done")} == {r["id"] for r in done}  # nothing yet
    client.post(f"/outbox/{item}/replay", data={"csrf": token, "confirm": "yes"})
    assert item not in {r["id"] for r in app.delivery.outbox.list("done")}
    audit = Accounts(app.store.engine).audit_list()[0]
    assert (audit["action"], audit["target"], audit["detail"]["applied"]) == ("outbox_replay", str(item), True)


@pytest.mark.parametrize(
    "path",
    [
        "/tickets/SB-99999999999999999999999",
        "/tickets/SB-99999999999999999999999/attachments/1",
        "/tickets/SB-000001/attachments/99999999999999999999999",
        "/quarantine/99999999999999999999999/raw",
        "/tickets/SB-" + "9" * 5000,
    ],
)
def test_ids_past_the_database_range_are_not_found_not_500(app, client, path) -> None:
    login(client)
    assert client.get(path).status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/outbox/99999999999999999999999/replay", "/quarantine/99999999999999999999999/retry",
     "/quarantine/99999999999999999999999/drop"],
)
def test_actions_on_ids_past_the_database_range_are_refused_not_500(app, client, path) -> None:
    login(client)
    token = csrf(client.get("/").text)
    r = client.post(path, data={"csrf": token, "confirm": "yes"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("msg=refused")


def test_public_readyz_names_the_failing_component_but_never_quotes_its_error(make_app, tmp_path) -> None:
    """Error texts quote what a server said: a mailbox address, a phone number, a customer's subject. The
    anonymous /readyz names the component and the error class; the text needs a session or the token."""
    mail, phone, name = "jane.canary@example.org", "+86 138 0013 8123", "Canary Customer GmbH"
    secret = tmp_path / "token"
    secret.write_text("tok-0123456789abcdef\n")
    app = make_app(console={"source_fail_threshold": 0, "admin_token_file": str(secret)})
    deliver(app, tmp_path, eml())
    with app.store.tx() as conn:
        conn.execute(update(t.outbox).values(status="parked", last_error=f"AuthFailed: 401 for {mail}"))
    app.context("imap:support").report(False, f"LoginError: mailbox {mail} ({phone}) refused")
    app.pm.mark_failed("svcbridge_demo", ValueError(f"subject 'Printer of {name}' unreadable"))
    app.work.alerts["job:warranty.lookup"] = f"ConnectError: lookup for {name} {phone}"
    client = TestClient(build_web(app))
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not ready"
    for canary in (mail, phone, name, "jane.canary", "0013"):
        assert canary not in r.text, canary
    got = {(p["kind"], p["subject"], p["error"]) for p in r.json()["problems"]}
    assert {("source_failing", "imap:support", "LoginError"), ("target_parked", "notify:email", "AuthFailed"),
            ("plugin_failed", "svcbridge_demo", "ValueError")} <= got
    assert r.json()["failing_sources"] == {"imap:support": "LoginError"}
    assert r.json()["alerts"] == {"job:warranty.lookup": "ConnectError"}
    # a wrong token or a forged cookie is anonymous
    assert mail not in client.get("/readyz", headers={"Authorization": "Bearer tok-0123456789abcdeX"}).text
    client.cookies.set("sb_session", "forged")
    assert mail not in client.get("/readyz").text
    client.cookies.clear()
    # the operator sees the texts: the admin token and a console session
    detailed = client.get("/readyz", headers={"Authorization": "Bearer tok-0123456789abcdef"})
    assert detailed.status_code == 503 and mail in detailed.text and phone in detailed.text and name in detailed.text
    Accounts(app.store.engine).add("ops", PASSWORD)
    login(client)
    assert mail in client.get("/readyz").text
