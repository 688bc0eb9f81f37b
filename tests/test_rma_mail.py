"""RMA by e-mail (issue 16 item 5) through the real pipeline, store, outbox and the mail spool: the
request goes to the vendor's RMA mailbox once from the template, the vendor's replies thread by our
[SB-...] tag or by their RMA number, their status words and number move the RMA (once per mail), an
unreadable reply stays on the ticket with a note for the agents; rules read zh-CN, zh-TW and English.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from conftest import eml
from helpdesk_helpers import Recorder, drop, recorder_plugin
from svcbridge import RmaState, StatusUpdate
from svcbridge.plugins import make_plugin_manager
from svcbridge_rma import MailSettings, read_reply

VENDORS = {"huawei": "rma@huawei.example"}


@pytest.mark.parametrize(
    ("text", "number", "state"),
    [
        ("您好，已受理。RMA编号：HW-2026-0001", "HW-2026-0001", RmaState.APPROVED),
        ("RMA No. 88001234 approved, please ship the defective unit", "88001234", RmaState.APPROVED),
        ("RMA HW-2026-0001 备件已发货，顺丰 SF123", "HW-2026-0001", RmaState.REPLACEMENT_SHIPPED),
        ("返修單號：TW-77881 備件已發，請查收", "TW-77881", RmaState.REPLACEMENT_SHIPPED),
        ("We have received the defective part for RMA# R-5512", "R-5512", RmaState.RECEIVED_BY_VENDOR),
        ("经检测为人为损坏，不予受理", None, RmaState.REJECTED),
        ("请提供故障照片", None, None),
    ],
)
def test_reply_rules(text, number, state) -> None:
    assert read_reply(MailSettings(), text) == (number, state)


def spool(tmp_path: Path) -> list[email.message.EmailMessage]:
    files = sorted((tmp_path / "outgoing").glob("*.eml"))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]  # type: ignore[misc]


async def test_request_replies_and_status_once(make_app, tmp_path: Path) -> None:
    desk = Recorder()
    pm = make_plugin_manager(extra=(recorder_plugin(desk),))
    app = make_app(pm=pm, routing={"default": ["desk"]}, plugins={"rma": {"mail": {"vendors": VENDORS}}})
    drop(tmp_path, "a", eml(subject="服务器电源故障", body="电源坏了", msgid="<c1@cust.example>"))
    await app.run_once()
    (t,) = app.store.list_tickets()
    note = '/rma huawei part=PSU-900W:2102311ABC fault="12 V 无输出"'
    await app.context("desk").apply_status_update(
        StatusUpdate(ticket_ref=t.ref, system="desk", internal_note=note, external_event_id="n1")
    )
    await app.run_once()
    await app.run_once()
    requests = [m for m in spool(tmp_path) if m["To"] == "rma@huawei.example"]
    assert len(requests) == 1
    req = requests[0]
    assert f"[{t.ref}]" in req["Subject"] and "RMA request 1: HUAWEI" in req["Subject"]
    body = req.get_content()
    assert "PSU-900W  serial 2102311ABC" in body and "12 V 无输出" in body and t.ref in body
    answers = [
        i.payload["note"]
        for i in desk.items
        if i.kind == "update" and "/rma done" in (i.payload.get("note") or "")
    ]
    assert len(answers) == 1 and "request mailed to rma@huawei.example" in answers[0]

    # the vendor answers our mail (threads by the [SB-...] tag) with their RMA number
    reply = eml(
        subject=f"Re: {req['Subject']}",
        body="您好，已受理。RMA编号：HW-2026-0001",
        sender="华为售后 <rma@huawei.example>",
        msgid="<v1@huawei.example>",
        extra=f"In-Reply-To: {req['Message-ID']}\r\n",
    )
    drop(tmp_path, "v1", reply)
    await app.run_once()
    await app.run_once()
    rma = app.rmas.get(1)
    assert (rma.state, rma.number) == (RmaState.APPROVED, "HW-2026-0001")
    drop(tmp_path, "v1-again", reply)  # the same mail again (another mailbox copy): no second move
    await app.run_once()
    await app.run_once()

    # later, a mail from the vendor's domain without our tag, naming their number
    drop(
        tmp_path,
        "v2",
        eml(
            subject="RMA HW-2026-0001 发货通知",
            body="备件已发货，顺丰 SF1234567890",
            sender="service@huawei.example",
            msgid="<v2@huawei.example>",
        ),
    )
    await app.run_once()
    await app.run_once()
    assert len(app.store.list_tickets()) == 1  # threaded onto the RMA's ticket
    assert app.rmas.get(1).state == RmaState.REPLACEMENT_SHIPPED

    # an answer that says nothing we can read: the mail stays on the ticket, the agents get a note
    drop(
        tmp_path,
        "v3",
        eml(
            subject=f"Re: [{t.ref}] RMA",
            body="请提供故障照片",
            sender="rma@huawei.example",
            msgid="<v3@huawei.example>",
        ),
    )
    await app.run_once()
    await app.run_once()
    assert app.rmas.get(1).state == RmaState.REPLACEMENT_SHIPPED
    ticket = app.store.get_ticket(t.ref)
    trail = [(e.data["to"], e.data["source"]) for e in ticket.events if e.type == "rma"]
    assert trail == [
        ("requested", "helpdesk:desk"),
        ("approved", "mail:HUAWEI"),
        ("replacement_shipped", "mail:HUAWEI"),
    ]
    notes = [i.payload.get("note") or "" for i in desk.items if i.kind == "update"]
    assert len([n for n in notes if "requested -> approved" in n]) == 1
    assert len([n for n in notes if "approved -> replacement_shipped" in n]) == 1
    assert len([n for n in notes if n.startswith("Vendor reply not understood")]) == 1
    assert len([m for m in spool(tmp_path) if m["To"] == "rma@huawei.example"]) == 1  # requested once


@pytest.mark.parametrize(
    "text",
    [
        "RMA HW-A-0001 备件已发货，顺丰 SF1234567890",  # zh-CN, the other ticket's number
        "RMA HW-A-0001 備件已發，請查收",  # zh-TW
        "Replacement shipped for RMA# HW-A-0001",  # en
    ],
)
async def test_a_reply_naming_another_ticket_s_rma_moves_nothing(make_app, tmp_path: Path, text) -> None:
    """A vendor reply on ticket B that names ticket A's RMA number neither moves B's only RMA nor
    gives it A's number (it was taken as 'the ticket's one open RMA')."""
    from svcbridge import Job, RmaPart
    from svcbridge_rma.mail import apply_reply

    app = make_app(plugins={"rma": {"mail": {"vendors": VENDORS}}})
    drop(tmp_path, "a", eml(subject="电源故障 A", body="电源坏了", msgid="<a@cust.example>"))
    drop(
        tmp_path,
        "b",
        eml(subject="電源故障 B", body="電源壞了", msgid="<b@cust2.example>", sender="b@cust2.example"),
    )
    await app.run_once()
    ta, tb = sorted(app.store.list_tickets(), key=lambda t: t.ref)
    ra = app.rmas.open(ta.ref, "huawei", [RmaPart(part="PSU")])
    app.rmas.move(ra.id, RmaState.APPROVED, source="cli", number="HW-A-0001")
    rb = app.rmas.open(tb.ref, "huawei", [RmaPart(part="PSU")])
    job = Job(
        id=1,
        kind="rma.mail_reply",
        key="rma-mail:x",
        data={"text": text, "vendor": "HUAWEI", "message_id": "<x@huawei.example>"},
        ticket=app.store.get_ticket(tb.ref),
    )
    change = apply_reply(MailSettings(vendors=VENDORS), app.rmas, job)
    after = app.rmas.get(rb.id)
    assert (after.state, after.number) == (RmaState.REQUESTED, None)
    assert app.rmas.get(ra.id).state == RmaState.APPROVED
    assert change is not None and "HW-A-0001" in (change.note or "")


@pytest.mark.parametrize(
    "evil",
    [
        "PSU\u2028Bcc: x@evil.example",
        "PSU\u2029X",
        "PSU\x85Bcc: y@evil.example",
        "PSU\r\nBcc: z@evil.example",
    ],
)
def test_line_breaks_in_agent_text_never_reach_a_mail_header(evil: str) -> None:
    """Python's mail headers refuse any str.splitlines() break (U+2028, U+2029, NEL, not only CR/LF):
    a part or tracking number holding one made the vendor request / customer notice undeliverable."""
    from datetime import UTC, datetime
    from email.message import EmailMessage

    from svcbridge import Rma, RmaPart, Ticket
    from svcbridge_rma.customer import CustomerSettings, notices
    from svcbridge_rma.mail import request_mail

    now = datetime(2026, 12, 1, tzinfo=UTC)
    ticket = Ticket.model_validate(
        {
            "id": 1,
            "ref": "SB-000001",
            "subject": "s",
            "channel": "email",
            "created_at": now,
            "updated_at": now,
            "contact": {"email": "c@cust.example"},
            "customer": evil,
        }
    )
    rma = Rma(
        id=1,
        ticket_ref=ticket.ref,
        vendor="HUAWEI",
        parts=[RmaPart(part=evil, serial=evil)],
        asset={"model": evil, "serial": evil},
        fault=evil,
        carrier=evil,
        tracking=evil,
        state=RmaState.REPLACEMENT_SHIPPED,
        created_at=now,
        updated_at=now,
    )
    request = request_mail(MailSettings(vendors=VENDORS), rma, ticket)
    told = notices(CustomerSettings(states=[RmaState.REPLACEMENT_SHIPPED]))(rma, RmaState.APPROVED, ticket)
    # a configured template of several lines: the subject is its start on one line
    two = {"replacement_shipped": {"zh-CN": "您好，备件已发出。\n单号：{tracking}"}}
    told += notices(CustomerSettings(states=[RmaState.REPLACEMENT_SHIPPED], templates=two))(
        rma, RmaState.APPROVED, ticket
    )
    assert request is not None and len(told) == 2 and "\n" in told[1].body
    for n in (request, *told):
        assert len(n.subject.splitlines()) == 1
        EmailMessage(policy=email.policy.default)["Subject"] = n.subject  # refused before


@pytest.mark.parametrize(
    ("sender", "vendor"),
    [
        ("rma@huawei.example", "HUAWEI"),
        ("service@huawei.example", "HUAWEI"),  # the vendor's own domain: any of its mailboxes
        ("Weixiu_Zhan@QQ.com", "STATION"),  # the service station's mailbox itself
        ("zhang.san@qq.com", None),  # a customer at the same public provider is no vendor
        ("li.si@163.com", None),
        ("wang@gmail.com", None),
        ("customer@example.com", None),
    ],
)
def test_a_vendor_on_a_public_mail_provider_is_only_its_own_address(sender: str, vendor: str | None) -> None:
    """Service stations use QQ / 163 / Gmail mailboxes: matching their domain made every customer of
    that provider 'the vendor' (their '已收到' moved an RMA, their mail naming an RMA number threaded
    onto another customer's ticket)."""
    cfg = MailSettings(vendors={**VENDORS, "station": "weixiu_zhan@qq.com", "depot": "fix@163.com"})
    assert cfg.vendor_of(sender) == vendor


@pytest.mark.parametrize(
    ("text", "number", "state"),
    [
        # a reply quoting our request's body "(RMA 1234)": our own id is no vendor number
        ("Approved, please ship.\n> Our reference / 我方单号: SB-000001 (RMA 1234)", None, RmaState.APPROVED),
        ("已受理。\n我方单号: SB-000001 (RMA 1234)", None, RmaState.APPROVED),
        ("已受理。RMA編號：TW-5512\n我方單號: SB-000001 (RMA 1234)", "TW-5512", RmaState.APPROVED),
        ("(RMA 1234) RMA No. 88001234 approved", "88001234", RmaState.APPROVED),
    ],
)
def test_our_own_rma_id_quoted_back_is_no_vendor_number(text, number, state) -> None:
    assert read_reply(MailSettings(), text, ours={"1234"}) == (number, state)
