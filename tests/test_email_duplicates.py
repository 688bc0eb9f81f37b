"""Duplicates never swallow another sender (issue 13 item 7), and a true duplicate leaves a trace."""

from __future__ import annotations

import email
from pathlib import Path

from conftest import eml
from svcbridge import RawMessage


def _sent(tmp_path: Path) -> list[email.message.Message]:
    d = tmp_path / "outgoing"
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(d.glob("*.eml"))] if d.exists() else []


def _raw(source: str, xid: str, data: bytes) -> RawMessage:
    return RawMessage(channel="email", source=source, external_id=xid, raw=data)


ATTACHED = (
    "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
    "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the log.\r\n"
    "--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=log.bin\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b1--\r\n"
)


def _with_attachment(sender: str, msgid: str) -> bytes:
    return (f"From: {sender}\r\nTo: support@bridge.test\r\nSubject: Scanner log\r\nMessage-ID: {msgid}\r\n"
            + ATTACHED).encode()


async def test_same_content_and_message_id_from_another_sender_is_its_own_ticket(make_app, tmp_path: Path) -> None:
    # a form mailer that derives the Message-ID from the content: two customers, one id
    app = make_app()
    ctx = app.context("maildir")
    await ctx.submit(_raw("maildir", "1", _with_attachment("Alice <alice@example.com>", "<form@example.com>")))
    await ctx.submit(_raw("maildir", "2", _with_attachment("Bob <bob@example.org>", "<form@example.com>")))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created", "created"]
    t1, t2 = app.store.get_ticket("SB-000001"), app.store.get_ticket("SB-000002")
    assert {t1.contact.email, t2.contact.email} == {"alice@example.com", "bob@example.org"}
    assert all(len(t.attachments) == 1 and t.description.strip() == "Please see the log." for t in (t1, t2))
    assert sorted(m["To"] for m in _sent(tmp_path)) == ["alice@example.com", "bob@example.org"]


async def test_same_text_without_message_id_from_two_senders_is_two_tickets(make_app) -> None:
    app = make_app()
    ctx = app.context("maildir")
    for i, who in enumerate(("Alice <alice@example.com>", "Bob <bob@example.org>")):
        await ctx.submit(_raw("maildir", str(i), eml(sender=who, msgid=None, subject="Same", body="Same")))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created", "created"]


async def test_true_duplicate_across_mailboxes_adds_a_received_again_event(make_app, tmp_path: Path) -> None:
    app = make_app()
    mail = eml(subject="Both boxes", msgid="<both@example.com>")
    await app.context("imap:sales").submit(_raw("imap:sales", "1:7", b"Delivered-To: sales@bridge.test\r\n" + mail))
    await app.context("imap:support").submit(
        _raw("imap:support", "9:3", b"Delivered-To: support@bridge.test\r\n" + mail)
    )
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created", "duplicate"]
    t = app.store.get_ticket("SB-000001")
    (again,) = [e for e in t.events if e.type == "received_again"]
    assert again.data["source"] == "imap:support"
    assert again.data["text"] == "received again via imap:support"
    assert len(_sent(tmp_path)) == 1  # no second acknowledgement
    assert [e.type for e in t.events].count("message_received") == 0


async def test_the_same_bytes_again_in_a_later_batch_add_an_event(make_app) -> None:
    app = make_app()
    mail = eml(subject="Twice", msgid=None)
    await app.context("maildir").submit(_raw("maildir", "1", mail))
    await app.run_once()
    await app.context("imap:support").submit(_raw("imap:support", "5:1", mail))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["duplicate"]
    t = app.store.get_ticket("SB-000001")
    assert [e.data["source"] for e in t.events if e.type == "received_again"] == ["imap:support"]
