"""IMAP intake against a real, private Dovecot (tests/dovecot.py); nothing of IMAP is mocked.

Checkpoints and ``\\Seen``, after-actions (also without MOVE/UIDPLUS), UIDVALIDITY rescans, TLS (implicit
with a private CA, STARTTLS, STARTTLS missing/refused/broken with nothing sent in the clear), one failing
account among several, XOAUTH2 end to end, IDLE (push, re-IDLE watchdog, kicked connection, no IDLE on
the server), crash safety (exception and real kill -9 between journal and acknowledgement), connection
lost mid-batch, failing after-actions, poison (unparseable FETCH reply, a mail the server dies on), no
credential in any log. OAuth2 token flows run against a fake token endpoint (httpx.MockTransport).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import imapclient.imapclient
import pytest

from conftest import eml, require_binary
from dovecot import LEGACY_HOST, OAUTH_USER, Dovecot, start_dovecot
from fake_idp import SCOPE, TOKEN_URL, FakeIdp, at, provider, rt
from svcbridge import AuthFailed, ConfigError, NotReady
from svcbridge_email import imap as imap_mod
from svcbridge_email.imap import MAX_STRIKES, ImapSource

BIN = Path(sys.executable).parent / "svcbridge"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    binary = require_binary("dovecot", "/usr/sbin/dovecot")
    dv = start_dovecot(binary)
    yield dv
    dv.stop()


def box(dv: Dovecot, user: str, **kw: Any) -> dict[str, Any]:
    cfg = {
        "name": f"imap:{user}",
        "host": "127.0.0.1",
        "port": dv.imaps_port,
        "tls": "implicit",
        "ca_file": str(dv.cafile),
        "username": user,
        "password": dv.users.get(user),
        "poll_interval": 0.2,
        "idle_timeout": 30,
    }
    return cfg | kw


def imap_app(make_app: Callable[..., Any], *boxes: dict[str, Any], **kw: Any) -> Any:
    return make_app(plugins={"email": {"imap": list(boxes), "maildir": None}}, **kw)


def mails(n: int, tag: str) -> list[bytes]:
    return [
        eml(subject=f"{tag} case {i}", msgid=f"<{tag}{i}@example.com>", body=f"body {i}") for i in range(n)
    ]


def fresh(dv: Dovecot, user: str, raws: list[bytes] = ()) -> None:  # type: ignore[assignment]
    dv.reset_mailbox(user)
    for raw in raws:
        dv.append(user, raw)


def subjects(app: Any) -> list[str]:
    return sorted(t.subject for t in app.store.list_tickets(limit=1000))


async def until(cond: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------------------- polling
async def test_poll_ingests_everything_once_including_seen_mail(make_app: Any, dovecot: Dovecot) -> None:
    user = "user1"
    dovecot.reset_mailbox(user)
    for i, raw in enumerate(mails(5, "p")):
        dovecot.append(user, raw, flags="\\Seen" if i == 2 else "")  # read on a phone first
    app = imap_app(make_app, box(dovecot, user))
    res = await app.run_once()
    assert res["polled"] == 5
    assert subjects(app) == [f"p case {i}" for i in range(5)]
    flags = dovecot.flags(user)
    assert [("\\Seen" in f) for f in flags.values()] == [False, False, True, False, False]  # BODY.PEEK[]
    again = await app.run_once()
    assert again["polled"] == 0 and app.store.count_tickets() == 5
    dovecot.append(user, eml(subject="p late", msgid="<plate@x>"))
    assert (await app.run_once())["polled"] == 1 and app.store.count_tickets() == 6
    assert len(dovecot.uids(user)) == 6  # after = none: the mail stays on the server
    assert app.store.get_checkpoint(f"imap:{user}", "last_uid") == str(max(dovecot.uids(user)))


async def test_batches_are_bounded_by_count_and_bytes(make_app: Any, dovecot: Dovecot) -> None:
    user = "user1"
    raws = [eml(subject=f"b case {i}", msgid=f"<b{i}@x>", body="x" * 800) for i in range(7)]
    fresh(dovecot, user, raws)
    app = imap_app(make_app, box(dovecot, user, batch=3, batch_bytes=2 * len(raws[0]) + 10))
    sizes: list[int] = []
    real = app.store.journal_insert_many
    app.store.journal_insert_many = lambda rs: (sizes.append(len(rs)), real(rs))[1]
    await app.run_once()
    assert sizes == [2, 2, 2, 1] and app.store.count_tickets() == 7


async def test_oversize_mail_is_a_headers_only_ticket_and_kept_whole(make_app: Any, dovecot: Dovecot) -> None:
    user = "user1"
    big = eml(subject="scan attached", msgid="<big@x>", body="x" * 8000)
    fresh(dovecot, user, [big, eml(subject="small", msgid="<small@x>")])
    app = imap_app(make_app, box(dovecot, user, max_size=4096))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "created"]
    by_subject = {t.subject: app.store.get_ticket(t.ref) for t in app.store.list_tickets(None, 10)}
    t = by_subject["scan attached"]
    assert t.description.startswith("[svcbridge: this mail is ") and "x" * 100 not in t.description
    assert by_subject["small"].description.strip() == "It jams on every page."
    journal_id = next(o.journal_id for o in res["outcomes"] if o.ticket_ref == t.ref)
    assert app.store.load_raw(journal_id).raw.replace(b"\r\n", b"\n") == big.replace(b"\r\n", b"\n")


@pytest.mark.parametrize(
    ("after", "host"),
    [
        ("flag", "127.0.0.1"),
        ("seen", "127.0.0.1"),
        ("move", "127.0.0.1"),
        ("delete", "127.0.0.1"),
        ("move", LEGACY_HOST),
        ("delete", LEGACY_HOST),
    ],
    ids=["flag", "flag-seen", "move", "delete", "move-copy-expunge", "delete-expunge"],
)
async def test_after_actions_happen_on_the_server(
    make_app: Any, dovecot: Dovecot, after: str, host: str
) -> None:
    user = "user2"
    fresh(dovecot, user, mails(3, after))
    dovecot.append(user, eml(subject="not ours", msgid="<human@x>"), folder="INBOX")
    kw = {"after": "flag", "flag": "\\Seen"} if after == "seen" else {"after": after, "move_to": "Done"}
    app = imap_app(make_app, box(dovecot, user, host=host, **kw))
    await app.run_once()
    assert app.store.count_tickets() == 4
    if after == "flag":
        assert all("$svcbridge" in f for f in dovecot.flags(user).values())
    elif after == "seen":
        assert all("\\Seen" in f for f in dovecot.flags(user).values())
    elif after == "move":  # the folder is created on first use
        assert dovecot.uids(user) == [] and len(dovecot.uids(user, "Done")) == 4
    else:
        assert dovecot.uids(user) == []
    dovecot.append(user, eml(subject="later", msgid="<later@x>"))
    assert (await app.run_once())["polled"] == 1 and app.store.count_tickets() == 5


async def test_uidvalidity_change_rescans_without_duplicates(make_app: Any, dovecot: Dovecot) -> None:
    user = "user3"
    originals = mails(4, "u")
    fresh(dovecot, user, originals)
    app = imap_app(make_app, box(dovecot, user))
    await app.run_once()
    assert app.store.count_tickets() == 4
    old, new = dovecot.rebuild_mailbox(user, [*originals, eml(subject="u new", msgid="<unew@x>")])
    res = await app.run_once()
    assert app.store.get_checkpoint(f"imap:{user}", "uidvalidity") == str(new) != str(old)
    assert res["polled"] == 5  # everything rescanned ...
    assert sorted(o.status for o in res["outcomes"]) == ["created"] + ["duplicate"] * 4  # ... one new ticket
    assert subjects(app) == ["u case 0", "u case 1", "u case 2", "u case 3", "u new"]
    assert (await app.run_once())["polled"] == 0


# ------------------------------------------------------------------------------------- TLS, logins
async def test_implicit_tls_needs_a_trusted_certificate(make_app: Any, dovecot: Dovecot) -> None:
    user = "user4"
    fresh(dovecot, user, [eml(subject="tls ok", msgid="<tls@x>")])
    app = imap_app(
        make_app,
        box(dovecot, user, ca_file=None, name="untrusted"),
        box(dovecot, user, name="private-ca"),
        box(dovecot, user, ca_file=None, verify=False, name="unverified"),
    )
    await app.run_once()
    assert (
        app.health["untrusted"].ok is False and "CERTIFICATE_VERIFY_FAILED" in app.health["untrusted"].detail
    )
    assert app.health["private-ca"].ok and app.health["unverified"].ok
    assert subjects(app) == ["tls ok"]  # the unverified box saw the same bytes: a duplicate, no ticket


async def test_starttls_against_dovecot(make_app: Any, dovecot: Dovecot) -> None:
    user = "alice"
    fresh(dovecot, user, [eml(subject="via starttls", msgid="<st@x>")])
    app = imap_app(make_app, box(dovecot, user, port=dovecot.imap_port, tls="starttls"))
    await app.run_once()
    assert subjects(app) == ["via starttls"]
    logins = [line for line in dovecot.log().splitlines() if "Login: user=<alice>" in line]
    assert logins and all(line.rstrip().endswith(("TLS", ">")) and ", TLS" in line for line in logins)


class FakeImap:
    """A plaintext IMAP server that records every byte and misbehaves around STARTTLS."""

    def __init__(self, mode: str) -> None:
        self.mode, self.received = mode, bytearray()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        caps = b"IMAP4rev1 AUTH=PLAIN LOGIN" + (b"" if self.mode == "absent" else b" STARTTLS")
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        conn.sendall(b"* OK fake ready\r\n")
        try:
            while data := conn.recv(4096):
                self.received += data
                tag = data.split(b" ", 1)[0]
                if b"CAPABILITY" in data.upper():
                    conn.sendall(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
                elif b"STARTTLS" in data.upper() and self.mode == "refused":
                    conn.sendall(tag + b" NO TLS is not available right now\r\n")
                elif b"STARTTLS" in data.upper():  # "broken": agree, then answer the handshake with junk
                    conn.sendall(tag + b" OK Begin TLS negotiation now\r\n")
                    self.received += conn.recv(4096)
                    conn.sendall(b"this is not a TLS server hello\r\n" * 4)
                else:  # a LOGIN would be accepted, which is exactly what must never be sent
                    conn.sendall(tag + b" OK whatever\r\n")
        except OSError:
            pass
        conn.close()

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.mark.parametrize("mode", ["absent", "refused", "broken"])
async def test_no_credential_is_sent_when_starttls_is_missing_refused_or_broken(
    make_app: Any, mode: str
) -> None:
    fake = FakeImap(mode)
    app = imap_app(
        make_app,
        {
            "name": "fake",
            "host": "127.0.0.1",
            "port": fake.port,
            "tls": "starttls",
            "username": "alice",
            "password": "secret-pw-123",
            "timeout": 5,
        },
    )
    with pytest.raises(NotReady, match="credentials were not sent"):
        await app.sources["fake"].poll(app.context("fake"))
    fake.close()
    wire = bytes(fake.received)
    assert b"CAPABILITY" in wire  # the client did talk to the server ...
    assert b"LOGIN" not in wire.upper() and b"AUTHENTICATE" not in wire.upper()  # ... but never logged in
    assert b"secret-pw-123" not in wire and base64.b64encode(b"secret-pw-123")[:12] not in wire


def test_settings_refuse_plaintext_to_a_remote_host_and_read_password_files(
    make_app: Any, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as exc:
        make_app(
            plugins={
                "email": {
                    "imap": [
                        {
                            "name": "x",
                            "host": "imap.example.com",
                            "tls": "none",
                            "username": "u",
                            "password": "p",
                        }
                    ]
                }
            }
        )
    assert exc.value.errors[0][0].startswith("plugins.email.imap.0") and "loopback" in exc.value.errors[0][1]
    with pytest.raises(ConfigError, match="exactly one of password"):
        make_app(plugins={"email": {"imap": [{"name": "x", "host": "imap.example.com", "username": "u"}]}})
    (tmp_path / "pw").write_text("from-a-file\n")
    app = make_app(
        plugins={
            "email": {
                "imap": [
                    {
                        "name": "x",
                        "host": "::1",
                        "tls": "none",
                        "username": "u",
                        "password_file": str(tmp_path / "pw"),
                    }
                ]
            }
        }
    )
    assert app.sources["x"].cfg.password.get_secret_value() == "from-a-file"


async def test_one_failing_account_does_not_stop_the_others(make_app: Any, dovecot: Dovecot) -> None:
    user = "user4"
    fresh(dovecot, user, [eml(subject="still flowing", msgid="<flow@x>")])
    app = imap_app(
        make_app,
        box(dovecot, "user5", password="wrong-password"),
        box(dovecot, user),
        box(dovecot, "bob", port=1, name="unreachable"),
    )
    res = await app.run_once()  # never sys.exit, never an exception out of the pass
    assert res["polled"] == 1 and subjects(app) == ["still flowing"]
    bad = app.health["imap:user5"]
    assert bad.ok is False and "login refused" in bad.detail and "wrong-password" not in bad.detail
    assert app.health["unreachable"].ok is False and "cannot connect" in app.health["unreachable"].detail
    assert app.health[f"imap:{user}"].ok is True
    with pytest.raises(AuthFailed):
        await app.sources["imap:user5"].poll(app.context("imap:user5"))


# -------------------------------------------------------------------------------------------- OAuth2
async def test_xoauth2_end_to_end_with_refresh_rotation_and_revocation(
    make_app: Any, dovecot: Dovecot, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    """Dovecot's oauth2 passdb checks the token at a local introspection endpoint, so the SASL XOAUTH2
    string is exactly right when Dovecot accepts it and logs the user in."""
    fresh(dovecot, OAUTH_USER, [eml(subject="via oauth", msgid="<oauth1@x>")])
    fresh(dovecot, "user6")
    (tmp_path / "refresh.token").write_text(f"{rt(0)}\n")
    oauth2 = {
        "flow": "refresh_token",
        "token_url": TOKEN_URL,
        "client_id": "cid",
        "scope": SCOPE,
        "client_secret": "client-secret-value",
        "refresh_token_file": str(tmp_path / "refresh.token"),
    }
    app = imap_app(make_app, box(dovecot, OAUTH_USER, password=None, oauth2=oauth2), box(dovecot, "user6"))
    src = app.sources[f"imap:{OAUTH_USER}"]
    idp = FakeIdp()
    src.tokens = provider(src.cfg.oauth2, idp)
    dovecot.grant_token(at(1))
    caplog.set_level(logging.DEBUG)
    await app.run_once()
    assert subjects(app) == ["via oauth"]
    assert idp.calls[0] == {
        "grant_type": "refresh_token",
        "refresh_token": rt(0),
        "client_id": "cid",
        "client_secret": "client-secret-value",
        "scope": SCOPE,
    }
    assert (tmp_path / "refresh.token").read_text() == f"{rt(1)}\n"  # the rotated token is persisted
    assert dovecot.introspection.seen[-1] == at(1)
    assert "Login: user=<oauth>, method=XOAUTH2" in dovecot.log()

    # the server stops accepting the cached token: AuthFailed, and the next attempt gets a fresh one
    dovecot.introspection.tokens.pop(at(1))
    dovecot.append(OAUTH_USER, eml(subject="after re-auth", msgid="<oauth2@x>"))
    await app.run_once()
    assert app.health[src.name].ok is False and "login refused" in app.health[src.name].detail
    dovecot.grant_token(at(2))
    await app.run_once()
    assert app.health[src.name].ok and subjects(app) == ["after re-auth", "via oauth"]
    assert [c["refresh_token"] for c in idp.calls] == [rt(0), rt(1)]

    # the refresh token is revoked at the identity provider: this mailbox is reported failing at the
    # next attempt, the other mailbox in the same app goes on
    src.tokens.invalidate()
    idp.answer = [
        httpx.Response(
            400,
            json={
                "error": "invalid_grant",
                "error_description": "AADSTS50173: The provided grant has expired due to it being revoked. Trace ID: x",
            },
        )
    ]
    dovecot.append("user6", eml(subject="other box", msgid="<other@x>"))
    await app.run_once()
    detail = app.health[src.name].detail
    assert app.health[src.name].ok is False and "invalid_grant, AADSTS50173" in detail
    assert "other box" in subjects(app)
    out = capsys.readouterr()
    logs = caplog.text + out.out + out.err
    assert "AUTHENTICATE" in logs  # imapclient did log the commands at DEBUG ...
    for secret in (rt(0), rt(1), rt(2), at(1), at(2), "client-secret-value"):  # ... but no secret
        assert secret not in logs and secret not in detail
    sasl = base64.b64encode(f"user=oauth\x01auth=Bearer {at(1)}\x01\x01".encode()).decode()
    assert sasl not in logs


async def test_no_password_in_debug_logs(make_app: Any, dovecot: Dovecot, caplog, capsys) -> None:
    user = "user6"
    fresh(dovecot, user, [eml(subject="logged", msgid="<log@x>")])
    app = imap_app(
        make_app,
        box(dovecot, user),
        box(dovecot, "user5", password="Wrong-Pass-42"),
        box(dovecot, "bob", port=dovecot.imap_port, tls="starttls", name="starttls"),
    )
    with caplog.at_level(logging.DEBUG):
        await app.run_once()
    out = capsys.readouterr()
    assert "LOGIN" in caplog.text  # imapclient did log the commands at DEBUG ...
    for secret in (dovecot.users[user], "Wrong-Pass-42", dovecot.users["bob"]):  # ... without any password
        assert secret not in caplog.text and secret not in out.out and secret not in out.err


# ---------------------------------------------------------------------------------------------- IDLE
class Counter:
    """Counts calls of an IMAPClient method (the real one still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.n = 0
        real = getattr(imapclient.IMAPClient, name)

        def wrapped(client: Any, *a: Any, **kw: Any) -> Any:
            self.n += 1
            return real(client, *a, **kw)

        monkeypatch.setattr(imapclient.IMAPClient, name, wrapped)


async def stop(app: Any, task: asyncio.Task[None]) -> None:
    app.stopping.set()
    await asyncio.wait_for(task, timeout=15)  # returns promptly once asked to stop
    app.stopping.clear()


async def test_idle_turns_an_append_into_a_journaled_message_without_polling(
    make_app: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "bob"
    fresh(dovecot, user)
    idles = Counter(monkeypatch, "idle")
    app = imap_app(make_app, box(dovecot, user, poll_interval=3600))
    src, ctx = app.sources[f"imap:{user}"], app.context(f"imap:{user}")
    task = asyncio.create_task(src.run(ctx))
    try:
        await until(lambda: idles.n >= 1)
        t0 = time.monotonic()
        await asyncio.to_thread(dovecot.append, user, eml(subject="pushed", msgid="<idle@x>"))
        await until(lambda: app.store.journal_counts().get("pending", 0) == 1)
        print(f"APPEND -> journaled via IDLE: {time.monotonic() - t0:.3f} s")
    finally:
        await stop(app, task)
    await app.pipeline.drain()
    assert subjects(app) == ["pushed"] and app.health[src.name].ok


async def test_idle_is_renewed_and_survives_a_dropped_connection(
    make_app: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "carol"
    fresh(dovecot, user)
    idles, logins = Counter(monkeypatch, "idle"), Counter(monkeypatch, "login")
    app = imap_app(make_app, box(dovecot, user, poll_interval=3600, idle_timeout=0.3))
    src, ctx = app.sources[f"imap:{user}"], app.context(f"imap:{user}")
    task = asyncio.create_task(src.run(ctx))
    try:
        await until(lambda: idles.n >= 3)  # re-IDLE after idle_timeout, on the same connection
        assert logins.n == 1
        await asyncio.to_thread(dovecot.kick, user)  # the server drops the connection
        await until(lambda: logins.n == 2 and idles.n >= 5)  # noticed, reconnected, idling again
        await asyncio.to_thread(dovecot.append, user, eml(subject="after kick", msgid="<kick@x>"))
        await until(lambda: app.store.journal_counts().get("pending", 0) == 1)
    finally:
        await stop(app, task)
    assert app.health[src.name].ok


async def test_without_idle_on_the_server_run_polls(
    make_app: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "alice"
    fresh(dovecot, user)
    idles, selects = Counter(monkeypatch, "idle"), Counter(monkeypatch, "select_folder")
    app = imap_app(make_app, box(dovecot, user, host=LEGACY_HOST, poll_interval=0.1))
    src, ctx = app.sources[f"imap:{user}"], app.context(f"imap:{user}")
    task = asyncio.create_task(src.run(ctx))
    try:
        await until(lambda: selects.n >= 2)
        await asyncio.to_thread(dovecot.append, user, eml(subject="polled", msgid="<poll@x>"))
        await until(lambda: app.store.journal_counts().get("pending", 0) == 1)
    finally:
        await stop(app, task)
    assert idles.n == 0


# ------------------------------------------------------------------------------------ crash safety
async def test_exception_between_journal_and_acknowledgement(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user1"
    fresh(dovecot, user, mails(3, "c"))
    app = imap_app(make_app, box(dovecot, user, after="flag"))
    src = app.sources[f"imap:{user}"]

    def crash(client: Any, uids: list[int]) -> None:
        raise RuntimeError("killed before STORE")

    monkeypatch.setattr(src, "_after", crash)
    with pytest.raises(RuntimeError):
        await src.poll(app.context(src.name))
    assert app.store.journal_counts() == {"pending": 3}
    assert not any("$svcbridge" in f for f in dovecot.flags(user).values())
    monkeypatch.undo()
    res = await app.run_once()
    assert res["polled"] == 3 and app.store.journal_counts() == {
        "processed": 3
    }  # recognised, not re-journaled
    assert app.store.count_tickets() == 3
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())  # acknowledged now


def daemon_config(tmp_path: Path, dv: Dovecot, user: str, **extra: Any) -> list[str]:
    """A config file for a real ``svcbridge`` process with one IMAP mailbox; returns the command prefix."""
    (tmp_path / "pw").write_text(dv.users[user])
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    (tmp_path / "svcbridge.toml").write_text(f"""
data_dir = "{tmp_path}/var"
shutdown_grace = 5
[http]
enabled = false
[log]
format = "json"
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
spool_dir = "{tmp_path}/outgoing"
[[plugins.email.imap]]
name = "imap:proc"
host = "127.0.0.1"
port = {dv.imaps_port}
ca_file = "{dv.cafile}"
username = "{user}"
password_file = "{tmp_path}/pw"
{lines}""")
    return [str(BIN), "--config", str(tmp_path / "svcbridge.toml")]


ENV = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}


def cli_tickets(cmd: list[str], cwd: Path) -> list[str]:
    out = subprocess.run([*cmd, "tickets", "list", "--json"], env=ENV, cwd=cwd, capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    return [t["subject"] for t in json.loads(out)]


def test_kill_9_after_journal_then_restart_gives_one_ticket(dovecot: Dovecot, tmp_path: Path) -> None:
    user = "user2"
    fresh(dovecot, user, [eml(subject="survives kill -9", msgid="<k9@x>")])
    cmd = daemon_config(tmp_path, dovecot, user, after="flag")
    died = subprocess.run([*cmd, "run", "--once"], env=ENV | {"SVCBRIDGE_FAULTS": "after_journal"}, cwd=tmp_path,
                          capture_output=True, timeout=60)  # fmt: skip
    assert died.returncode == -signal.SIGKILL, died.stdout.decode()[-2000:]
    assert not any("$svcbridge" in f for f in dovecot.flags(user).values())  # journaled, not acknowledged
    ok = subprocess.run([*cmd, "run", "--once"], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "polled 1, processed 1" in ok.stdout, ok.stdout + ok.stderr
    assert cli_tickets(cmd, tmp_path) == ["survives kill -9"]
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())


def test_daemon_idles_and_stops_on_sigterm(dovecot: Dovecot, tmp_path: Path) -> None:
    """The real daemon drives ``run``: with a one-hour poll interval only IDLE can bring the mail in."""
    user = "user5"
    fresh(dovecot, user)
    cmd = daemon_config(tmp_path, dovecot, user, poll_interval=3600)
    proc = subprocess.Popen([*cmd, "run"], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not dovecot.idling(user):
            assert time.monotonic() < deadline and proc.poll() is None, "daemon did not start idling"
            time.sleep(0.1)
        t0 = time.monotonic()
        dovecot.append(user, eml(subject="pushed to the daemon", msgid="<dmn@x>"))
        while cli_tickets(cmd, tmp_path) != ["pushed to the daemon"]:
            assert time.monotonic() - t0 < 30, "no ticket"
            time.sleep(0.1)
        print(f"APPEND -> ticket via the daemon's IDLE: {time.monotonic() - t0:.3f} s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0 and '"event": "stopped"' in out, out[-2000:]


async def test_connection_lost_mid_batch(make_app: Any, dovecot: Dovecot, monkeypatch) -> None:
    user = "user3"
    fresh(dovecot, user, mails(5, "d"))
    app = imap_app(make_app, box(dovecot, user, after="flag", batch=2))
    src = app.sources[f"imap:{user}"]
    real, calls = ImapSource._fetch, []

    def fetch(self: ImapSource, client: Any, uids: list[int], uv: str) -> Any:
        calls.append(uids)
        if len(calls) == 2:
            client.socket().shutdown(socket.SHUT_RDWR)  # the network goes away mid-FETCH
        return real(self, client, uids, uv)

    monkeypatch.setattr(ImapSource, "_fetch", fetch)
    with pytest.raises(imap_mod.CONNECTION_ERRORS):
        await src.poll(app.context(src.name))
    flagged = [u for u, f in dovecot.flags(user).items() if "$svcbridge" in f]
    assert app.store.journal_counts() == {"pending": 2} and len(flagged) == 2  # the first batch is done
    res = await app.run_once()
    assert res["processed"] == 5 and app.store.count_tickets() == 5
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())


# ------------------------------------------------------------------------------ after-action failures
async def test_refused_store_is_logged_and_not_retried(make_app: Any, dovecot: Dovecot) -> None:
    user = "user4"
    fresh(dovecot, user, mails(2, "s"))
    app = imap_app(make_app, box(dovecot, user, after="flag", flag="\\Bogus"))  # the server answers BAD
    res = await app.run_once()
    assert res["polled"] == 2 and app.store.count_tickets() == 2 and app.health[f"imap:{user}"].ok
    assert (await app.run_once())["polled"] == 0 and app.store.count_tickets() == 2


async def test_mail_expunged_elsewhere_before_the_move(make_app: Any, dovecot: Dovecot, monkeypatch) -> None:
    user = "user5"
    fresh(dovecot, user, mails(3, "e"))
    app = imap_app(make_app, box(dovecot, user, after="move", move_to="Done"))
    real = ImapSource._fetch

    def fetch_then_colleague_deletes(self: ImapSource, client: Any, uids: list[int], uv: str) -> Any:
        out = real(self, client, uids, uv)
        dovecot.expunge(user, uids[:1])  # someone deletes the first mail on their phone
        return out

    monkeypatch.setattr(ImapSource, "_fetch", fetch_then_colleague_deletes)
    res = await app.run_once()  # MOVE answers NO [EXPUNGEISSUED]: logged, journaled mail kept
    assert res["polled"] == 3 and app.store.count_tickets() == 3 and app.health[f"imap:{user}"].ok
    monkeypatch.undo()
    assert (await app.run_once())["polled"] == 0 and app.store.count_tickets() == 3


# ------------------------------------------------------------------------------------------- poison
def poison_parser(monkeypatch: pytest.MonkeyPatch, marker: bytes) -> None:
    """imapclient cannot parse the FETCH reply of any mail containing ``marker`` (the server's reply
    itself is real and complete; only the client-side parse fails, like an odd literal would)."""
    real = imapclient.imapclient.parse_fetch_response

    def parse(data: Any, *a: Any) -> Any:
        if marker in repr(data).encode():
            raise imapclient.exceptions.ProtocolError("unparseable FETCH response")
        return real(data, *a)

    monkeypatch.setattr(imapclient.imapclient, "parse_fetch_response", parse)


async def test_unparseable_fetch_reply_still_journals_the_bytes(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user2"
    raws = mails(4, "x")
    raws[1] = eml(subject="POISON but readable", msgid="<px@x>")
    fresh(dovecot, user, raws)
    poison_parser(monkeypatch, b"POISON")
    app = imap_app(make_app, box(dovecot, user, after="delete"))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created"] * 4
    assert "POISON but readable" in subjects(app) and dovecot.uids(user) == []
    (entry,) = [
        r for r in app.store.load_raws(list(range(1, 5))).values() if r.metadata.get("fetch_fallback")
    ]
    assert entry.raw == raws[1]  # byte-exact through the imaplib fallback


async def test_poison_first_in_the_box_does_not_use_up_the_batch(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user3"
    fresh(dovecot, user, [eml(subject=f"POISON {i}", msgid=f"<pz{i}@x>") for i in range(3)] + mails(2, "y"))
    poison_parser(monkeypatch, b"POISON")
    monkeypatch.setattr(imap_mod, "_raw_fetch", lambda client, uid: None)  # and no bytes to be had
    app = imap_app(make_app, box(dovecot, user, after="delete", batch=2))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created"] * 2 + ["quarantined"] * 3
    assert subjects(app) == ["y case 0", "y case 1"]
    quarantined = app.store.quarantine_list()
    assert len(quarantined) == 3 and all(
        q["external_id"].split(":")[1] in {"1", "2", "3"} for q in quarantined
    )
    assert dovecot.uids(user) == [1, 2, 3]  # poison is left on the server, the rest deleted
    assert (await app.run_once())["polled"] == 0 and len(app.store.quarantine_list()) == 3


async def test_a_mail_the_server_dies_on_is_quarantined_after_strikes(
    make_app: Any, dovecot: Dovecot
) -> None:
    """Dovecot answers a FETCH of an unreadable mail file with BYE: the real thing, no mock."""
    user = "user6"
    fresh(dovecot, user, mails(4, "z"))
    dovecot.make_unreadable(user, 2)
    app = imap_app(make_app, box(dovecot, user, after="delete"))
    src = app.sources[f"imap:{user}"]
    passes = 0
    while app.store.count_tickets() < 3 or not app.health[src.name].ok:
        passes += 1
        assert passes <= MAX_STRIKES + 3, "poison stalled the mailbox"
        await app.run_once()
    (q,) = app.store.quarantine_list()
    raw = app.store.load_raw(q["journal_id"])
    assert q["external_id"].endswith(":2") and "connection dropped 3 times" in raw.metadata["fetch_error"]
    assert subjects(app) == ["z case 0", "z case 2", "z case 3"]
    assert dovecot.uids(user) == [2]  # left for a human; the others deleted after journaling
    assert (await app.run_once())["polled"] == 0 and len(app.store.quarantine_list()) == 1
