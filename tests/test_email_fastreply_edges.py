"""fastreply's folding must never write what the stdlib path does not: a header line of white space only.

RFC 5322 (3.2.2) forbids generating a folded line made of white space alone; a parser that reads it as
the empty line ending the header block takes Date, Message-ID, Auto-Submitted and X-Loop (the loop
protection) for body text. Trailing spaces of a subject made one on either path (the stdlib's folder
too, for an ASCII subject); they are dropped, and the fast path's folder refuses such a line.
An address with an encoded word in it is refused on both paths (the stdlib decoded it into another
recipient).
"""

from __future__ import annotations

import email
import email.policy

import pytest

from svcbridge import DeliveryItem, PermanentError, Ticket
from svcbridge_email import fastreply
from svcbridge_email.outbound import build_reply, reply


def notice(subject: str) -> DeliveryItem:
    ticket = Ticket(id=7, ref="SB-000007", channel="email", subject=subject)
    # no subject in the notification: the ticket's own subject is used as it is
    note = {"to": "alice@example.com", "subject": "", "body": "Received.", "template": "acknowledgement"}
    return DeliveryItem(
        id=3,
        kind="notify",
        target="notify:email",
        idempotency_key="k",
        ticket=ticket,
        payload={"notification": note},
    )


@pytest.mark.parametrize("subject", ["printer broken" + " " * 120, " " * 300, "a" * 70 + " " * 40])
def test_no_header_line_of_white_space_only(subject: str) -> None:
    fast, _named, _msg = reply(notice(subject), "support@bridge.test", "bridge.test")
    msg = build_reply(notice(subject), "support@bridge.test", "bridge.test")
    for data in (fast, msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))):  # both paths
        head = data.split(b"\r\n\r\n", 1)[0]
        assert all(line.strip() for line in head.split(b"\r\n")), head
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert parsed["X-Loop"] == "bridge.test" and parsed["Auto-Submitted"] == "auto-replied"
        assert str(parsed["Subject"]) == f"[SB-000007] {subject}".rstrip()


def test_fold_refuses_a_white_space_only_continuation() -> None:
    with pytest.raises(fastreply.Unusual):
        fastreply.fold("Subject", "x" * 70 + " " * 20)


ENCODED_TO = "=?utf-8?q?ceo=40bank.test=2C?=@evil.test"  # a plain address to Contact's validator


@pytest.mark.parametrize("subject", ["printer broken", "why =? here"], ids=["fast", "stdlib"])
def test_an_address_holding_an_encoded_word_is_refused_not_decoded_into_another_recipient(
    subject: str,
) -> None:
    """The stdlib's header parser decodes an encoded word even inside an address: the stdlib path wrote
    this one as ``To: ceo@bank.test,@evil.test`` (a pickup or send_message mails ceo@bank.test, a
    recipient the customer chose); the fast path wrote it raw, which a mail reader shows decoded. Such
    an address names no mailbox (the mail parser refuses it as a sender): the notice is not sent."""
    ticket = Ticket(id=7, ref="SB-000007", channel="email", subject="s")
    note = {"to": ENCODED_TO, "subject": subject, "body": "Received.", "template": "acknowledgement"}
    it = DeliveryItem(
        id=3,
        kind="notify",
        target="notify:email",
        idempotency_key="k",
        ticket=ticket,
        payload={"notification": note},
    )
    with pytest.raises(PermanentError):
        reply(it, "support@bridge.test", "bridge.test")
    with pytest.raises(PermanentError):
        build_reply(it, "support@bridge.test", "bridge.test")
