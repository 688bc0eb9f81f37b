"""IMAP logins against a real, private Dovecot: TLS (implicit with a private CA, STARTTLS, STARTTLS
missing/refused/broken with nothing sent in the clear), settings that refuse plaintext to a remote host,
one failing account among several, XOAUTH2 end to end (token flows against a fake token endpoint,
httpx.MockTransport), and no credential in any log.
"""

from __future__ import annotations

import base64
import logging
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import eml
from dovecot import OAUTH_USER, Dovecot
from fake_idp import SCOPE, TOKEN_URL, FakeIdp, at, provider, rt
from imap_helpers import box, fresh, imap_app, subjects
from svcbridge import AuthFailed, ConfigError, NotReady

BIN = Path(sys.executable).parent / "svcbridge"


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
