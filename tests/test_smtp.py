"""Outbound mail over real SMTP (plugins/svcbridge_email/outbound.py) into an aiosmtpd sink on loopback:
STARTTLS with a private CA and AUTH, threading and loop headers on the wire, CRLF only, an HTML
alternative; a refused login parks the target, a refused recipient dead-letters one item, and a relay
without STARTTLS never sees the password."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import eml, free_port, require_binary
from dovecot import _cert

USER, PASSWORD = "bridge", "smtp-pa55word"


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 <nobody@example.com>: Recipient address rejected"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd itself answers 235 or 535 (True would mean we already replied)
        return AuthResult(success=(login, password) == (USER, PASSWORD), handled=False)


@pytest.fixture
def cert(tmp_path: Path) -> Path:
    require_binary("openssl")
    _cert(tmp_path)
    return tmp_path


def relay(sink: Sink, cert: Path | None) -> Controller:
    import ssl

    tls = None
    if cert is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert / "cert.pem", cert / "key.pem")
    return Controller(
        sink, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=tls is not None,
        authenticator=sink.authenticate, auth_require_tls=tls is not None, auth_required=True,
        auth_exclude_mechanism=["LOGIN"],  # one mechanism: smtplib then tries exactly one login
    )  # fmt: skip


@pytest.fixture
def smtp(cert: Path) -> Iterator[tuple[Sink, Controller]]:
    sink = Sink()
    ctl = relay(sink, cert)
    ctl.start()
    yield sink, ctl
    ctl.stop()


def smtp_app(make_app: Any, ctl: Controller, cert: Path | None, password: str = PASSWORD) -> Any:
    smtp = {"host": "127.0.0.1", "port": ctl.port, "tls": "starttls", "username": USER, "password": password,
            "timeout": 5}
    if cert is not None:
        smtp["ca_file"] = str(cert / "cert.pem")
    return make_app(plugins={"email": {"outbound": {"transport": "smtp", "smtp": smtp}}})


def drop(tmp_path: Path, name: str, data: bytes) -> None:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / name).write_bytes(data)


async def test_acknowledgement_over_starttls_and_auth(make_app, tmp_path: Path, smtp, cert: Path) -> None:
    sink, ctl = smtp
    app = smtp_app(make_app, ctl, cert)
    drop(tmp_path, "1", eml(subject="Printer jams", msgid="<m1@example.com>"))
    await app.run_once()
    assert sink.logins == [(USER, PASSWORD)]
    ((mail_from, rcpts, raw),) = sink.messages
    assert (mail_from, rcpts) == ("support@bridge.test", ["alice@example.com"])
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only on the wire
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "[SB-000001] We received your request"
    assert (msg["In-Reply-To"], msg["References"]) == ("<m1@example.com>", "<m1@example.com>")
    assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Loop"] == "bridge.test"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    assert text is not None and text.get_content().startswith("Ticket SB-000001 was opened for: Printer jams")
    (row,) = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert row["status"] == "done"


async def test_refused_login_parks_and_refused_recipient_dead_letters(
    make_app, tmp_path: Path, smtp, cert: Path
) -> None:
    sink, ctl = smtp
    app = smtp_app(make_app, ctl, cert, password="wrong")
    drop(tmp_path, "1", eml())
    await app.run_once()
    assert sink.messages == [] and sink.logins == [(USER, "wrong")]
    (row,) = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert row["status"] == "parked" and "SMTP login refused (535)" in row["last_error"]
    assert "wrong" not in row["last_error"]

    app = smtp_app(make_app, ctl, cert)
    drop(tmp_path, "2", eml(sender="Nobody <nobody@example.com>", msgid="<n@example.com>", subject="x"))
    await app.run_once()
    rows = {r["payload"]["notification"]["to"]: r for r in app.delivery.outbox.list() if r["kind"] == "notify"}
    assert rows["nobody@example.com"]["status"] == "dead"
    assert "recipient refused" in rows["nobody@example.com"]["last_error"]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_relay_without_starttls_never_gets_the_password(make_app, tmp_path: Path) -> None:
    sink = Sink()
    ctl = relay(sink, cert=None)  # no TLS offered at all, AUTH allowed in clear text
    ctl.start()
    try:
        app = smtp_app(make_app, ctl, cert=None)
        drop(tmp_path, "1", eml())
        await app.run_once()
    finally:
        ctl.stop()
    assert sink.logins == [] and sink.messages == []
    (row,) = [r for r in app.delivery.outbox.list() if r["kind"] == "notify"]
    assert row["status"] != "done" and "STARTTLS" in row["last_error"]


def test_plaintext_smtp_only_to_loopback() -> None:
    from svcbridge_email import SmtpSettings

    SmtpSettings(host="127.0.0.1", tls="none")
    with pytest.raises(ValueError, match="loopback"):
        SmtpSettings(host="smtp.example.com", tls="none")
