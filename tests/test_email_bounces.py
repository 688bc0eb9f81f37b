"""Bounces and auto-replies do not open tickets (issue 13 item 8): realistic DSNs through the real pipeline
(make_app + Maildir + run_once) after a real notice was sent (the spool transport records its Message-ID)."""

from __future__ import annotations

from pathlib import Path

from conftest import eml
from helpdesk_helpers import drop, sent


def rfc3464(notice_id: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        "To: support@bridge.test\r\nSubject: Delivery Status Notification (Failure)\r\n"
        "Message-ID: <dsn-1@mx.example.net>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="XX"\r\n\r\n'
        "--XX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "Delivery to the following recipient failed permanently:\r\n\r\n     gone@example.com\r\n\r\n"
        "--XX\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\nArrival-Date: Thu, 3 Dec 2026 10:00:00 +0000\r\n\r\n"
        "Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Remote-MTA: dns; mx.example.com\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown\r\n\r\n"
        "--XX\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@bridge.test\r\nTo: gone@example.com\r\nMessage-ID: {notice_id}\r\n"
        "Subject: We received your request\r\n\r\n--XX--\r\n"
    ).encode()


def postfix_plain(ref: str) -> bytes:
    # an old Postfix/qmail style bounce: no Auto-Submitted, no multipart/report, original quoted inline
    return (
        "Return-Path: <>\r\nFrom: MAILER-DAEMON@mail.example.org (Mail Delivery System)\r\n"
        "To: support@bridge.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <pf-1@mail.example.org>\r\nContent-Type: text/plain\r\n\r\n"
        "This is the mail system at host mail.example.org.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients.\r\n\r\n"
        "<nobody@example.org>: host mx.example.org[192.0.2.7] said: 550 5.1.1\r\n"
        "    <nobody@example.org>: Recipient address rejected: User unknown (in reply to RCPT TO command)\r\n\r\n"
        "--- Below this line is a copy of the message.\r\n\r\n"
        f"From: support@bridge.test\r\nTo: nobody@example.org\r\nSubject: {ref} We received your request\r\n"
    ).encode()


def exchange_ndr(notice_id: str) -> bytes:
    return (
        "From: postmaster@contoso.example\r\nTo: support@bridge.test\r\n"
        "Subject: Undeliverable: We received your request\r\nMessage-ID: <ndr-1@contoso.example>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="NDR"\r\n\r\n'
        "--NDR\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "Delivery has failed to these recipients or groups:\r\n\r\nmiller@contoso.example\r\n"
        "The e-mail address you entered couldn't be found.\r\n\r\nDiagnostic information for administrators:\r\n"
        "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'\r\n"
        "--NDR\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: support@bridge.test\r\nTo: miller@contoso.example\r\nMessage-ID: {notice_id}\r\n"
        "Subject: We received your request\r\n\r\nThank you.\r\n--NDR--\r\n"
    ).encode()


def out_of_office(notice_id: str, headers: str, subject: str) -> bytes:
    return (
        f"From: Alice <alice@example.com>\r\nTo: support@bridge.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <ooo-{abs(hash(headers))}@example.com>\r\nIn-Reply-To: {notice_id}\r\n{headers}"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nI am away until Monday.\r\n"
    ).encode()


async def _notice(app, tmp_path: Path, sender: str = "Alice <alice@example.com>") -> str:
    drop(tmp_path, "1", eml(sender=sender))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]
    (ack,) = sent(tmp_path)
    return str(ack["Message-ID"])


async def test_rfc3464_dsn_is_an_event_and_marks_the_address_failing(make_app, tmp_path: Path) -> None:
    app = make_app()
    notice = await _notice(app, tmp_path, "Gone <gone@example.com>")
    drop(tmp_path, "b", rfc3464(notice))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup"]
    assert app.store.count_tickets() == 1 and len(sent(tmp_path)) == 1  # never answered
    t = app.store.get_ticket("SB-000001")
    (ev,) = [e for e in t.events if e.type == "message_received"]
    assert ev.data["automated"]
    assert ev.data["body"].startswith(
        "notice to gone@example.com bounced: 550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    )
    failing = t.labels["email_failing"]
    assert failing["address"] == "gone@example.com" and failing["status"].startswith("550 5.1.1") and failing["at"]
    assert t.state == "new"


async def test_postfix_bounce_without_auto_submitted_threads_by_reference(make_app, tmp_path: Path) -> None:
    app = make_app()
    await _notice(app, tmp_path, "Nobody <nobody@example.org>")
    drop(tmp_path, "b", postfix_plain("[SB-000001]"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup"]
    t = app.store.get_ticket("SB-000001")
    (ev,) = [e for e in t.events if e.type == "message_received"]
    assert ev.data["body"].startswith("notice to nobody@example.org bounced: 550 5.1.1")
    assert t.labels["email_failing"]["address"] == "nobody@example.org"
    assert len(sent(tmp_path)) == 1


async def test_exchange_ndr_threads_by_the_enclosed_notice(make_app, tmp_path: Path) -> None:
    app = make_app()
    notice = await _notice(app, tmp_path, "Miller <miller@contoso.example>")
    drop(tmp_path, "b", exchange_ndr(notice))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup"]
    t = app.store.get_ticket("SB-000001")
    (ev,) = [e for e in t.events if e.type == "message_received"]
    assert ev.data["body"].startswith("notice to miller@contoso.example bounced: 550 5.1.10 RESOLVER.ADR")
    assert t.labels["email_failing"]["address"] == "miller@contoso.example"
    assert len(sent(tmp_path)) == 1


async def test_out_of_office_replies_are_events_never_answered(make_app, tmp_path: Path) -> None:
    app = make_app()
    notice = await _notice(app, tmp_path)
    drop(tmp_path, "o1", out_of_office(notice, "Auto-Submitted: auto-replied\r\n", "Automatic reply: received"))
    drop(tmp_path, "o2", out_of_office(notice, "X-Autoreply: yes\r\n", "Out of Office"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup", "followup"]
    t = app.store.get_ticket("SB-000001")
    evs = [e for e in t.events if e.type == "message_received"]
    assert len(evs) == 2 and all(e.data["automated"] for e in evs)
    assert all(e.data["body"].startswith("auto-reply from alice@example.com") for e in evs)
    assert "email_failing" not in t.labels
    assert len(sent(tmp_path)) == 1


async def test_unmatched_bounce_and_auto_reply_open_no_ticket(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "b", rfc3464("<unknown@elsewhere.example>"))
    drop(tmp_path, "o", out_of_office("<unknown2@elsewhere.example>", "X-Autoreply: yes\r\n", "Out of Office"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["quarantined", "quarantined"]
    assert app.store.count_tickets() == 0 and app.store.list_tickets() == []
    assert all("matches no ticket" in q["error"] for q in app.store.quarantine_list())
    assert sent(tmp_path) == []


async def test_binary_junk_is_quarantined_as_not_a_mail(make_app, tmp_path: Path) -> None:
    app = make_app()
    drop(tmp_path, "j", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    drop(tmp_path, "m", eml(subject="A real one", msgid="<real@example.com>"))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "quarantined"]
    (q,) = app.store.quarantine_list()
    assert "not a mail message" in q["error"]
