"""The mail spool's receipts (svcbridge_email/outbound.py ``MailNotifier._spool``) under the conditions a
review found them wrong: a receipt keyed by the outbox id alone swallowed another notice with the same id
(another store on the same spool, SQLite reusing the id of a pruned row), and a kill between the rename
and the receipt let a resend write a notice a pickup had already taken."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from svcbridge import DeliveryItem, Ticket
from svcbridge_email import OutboundSettings, outbound
from svcbridge_email.outbound import RECEIPTS, MailNotifier


class Killed(BaseException):
    """kill -9 at this point: nothing after it runs."""


def notice(oid: int, key: str, to: str = "alice@example.com") -> DeliveryItem:
    ticket = Ticket(id=oid, ref=f"SB-{oid:06d}", channel="email", subject="printer broken")
    note = {"to": to, "subject": "printer broken", "body": "Received.", "template": "acknowledgement"}
    return DeliveryItem(
        id=oid,
        kind="notify",
        target="notify:email",
        idempotency_key=key,
        ticket=ticket,
        payload={"notification": note},
    )


def notifier(spool: Path) -> MailNotifier:
    return MailNotifier("support@bridge.test", OutboundSettings(spool_dir=spool))


def mails(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.eml"))


async def test_another_notice_with_the_same_outbox_id_is_spooled(tmp_path: Path) -> None:
    spool = tmp_path / "outgoing"
    first = notifier(spool)
    await first.send(notice(5, "ack-of-store-a", to="alice@example.com"))
    mails(spool)[0].unlink()  # the pickup took it
    # a second store on the same spool (or SQLite handing out a pruned row's id again): same id 5,
    # another notice; it must be written, not taken for a resend of the first
    await notifier(spool).send(notice(5, "ack-of-store-b", to="bob@example.com"))
    got = mails(spool)
    assert len(got) == 1 and b"To: bob@example.com" in got[0].read_bytes()


async def test_killed_after_the_rename_a_resend_writes_nothing_after_a_pickup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "outgoing"
    n = notifier(spool)

    def durable(path: Path, directory: Path) -> None:
        raise Killed  # the mail is in place, waiting for its group's fsync: the process dies here

    monkeypatch.setattr(n._synced, "durable", durable)
    with pytest.raises(Killed):
        n._spool(b"From: a@b.test\r\n\r\nx\r\n", notice(9, "k9"))
    assert len(mails(spool)) == 1
    mails(spool)[0].unlink()  # a pickup took it before the restart
    monkeypatch.undo()
    again = notifier(spool)  # the restarted process sends the unrecorded item again
    await again.send(notice(9, "k9"))
    assert mails(spool) == []  # not a second copy


async def test_killed_before_the_rename_a_resend_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "outgoing"
    n = notifier(spool)
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        if str(dst).endswith(".eml"):
            raise Killed  # written, not yet in place
        real(src, dst)

    monkeypatch.setattr(outbound.os, "replace", replace)
    with pytest.raises(Killed):
        n._spool(b"From: a@b.test\r\n\r\nx\r\n", notice(11, "k11"))
    monkeypatch.undo()
    assert mails(spool) == []
    await notifier(spool).send(notice(11, "k11"))
    got = mails(spool)
    assert [p.name for p in got] == ["00000011.eml"] and b"To: alice@example.com" in got[0].read_bytes()
    assert not list(spool.glob(".*.tmp"))  # the leftover was used, not left behind
    assert len(list((spool / RECEIPTS).iterdir())) == 1
