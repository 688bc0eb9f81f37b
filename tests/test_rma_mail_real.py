"""RMA by e-mail through the real mail servers (issue 16 item 7): the customer's mail and the vendor's
replies arrive through a private Dovecot (IMAPS), the request leaves through a real SMTP relay (aiosmtpd
with STARTTLS and AUTH): sent once, the vendor's reply with its RMA number threads onto the RMA, and the
helpdesk hears of the change once.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from conftest import eml
from helpdesk_helpers import Recorder, recorder_plugin
from imap_helpers import box, fresh
from svcbridge import RmaState, StatusUpdate
from svcbridge.plugins import make_plugin_manager
from test_smtp import PASSWORD, USER, cert, smtp  # noqa: F401 - fixtures

pytestmark = pytest.mark.realserver


async def test_request_over_smtp_and_replies_over_imap(make_app, tmp_path: Path, dovecot, smtp, cert) -> None:  # noqa: F811
    sink, ctl = smtp
    fresh(
        dovecot,
        "alice",
        [
            eml(
                subject="服务器电源故障",
                body="电源模块坏了",
                sender="客户 <ops@cust.example>",
                msgid="<c1@cust.example>",
            )
        ],
    )
    desk = Recorder()
    pm = make_plugin_manager(extra=(recorder_plugin(desk),))
    out = {
        "host": "127.0.0.1",
        "port": ctl.port,
        "tls": "starttls",
        "username": USER,
        "password": PASSWORD,
        "timeout": 5,
        "ca_file": str(cert / "cert.pem"),
    }
    app = make_app(
        pm=pm,
        routing={"default": ["desk"]},
        plugins={
            "email": {
                "imap": [box(dovecot, "alice")],
                "maildir": None,
                "outbound": {"transport": "smtp", "smtp": out},
            },
            "rma": {"mail": {"vendors": {"huawei": "rma@huawei.example"}}},
        },
    )
    await app.run_once()
    (t,) = app.store.list_tickets()
    await app.context("desk").apply_status_update(
        StatusUpdate(
            ticket_ref=t.ref,
            system="desk",
            internal_note="/rma HUAWEI part=PSU-900W:2102311ABC",
            external_event_id="n1",
        )
    )
    await app.run_once()
    await app.run_once()
    sent = [
        email.message_from_bytes(raw, policy=email.policy.default)
        for _f, to, raw in sink.messages
        if to == ["rma@huawei.example"]
    ]
    assert len(sent) == 1 and f"[{t.ref}]" in sent[0]["Subject"]
    request = sent[0]

    dovecot.append(
        "alice",
        eml(
            subject=f"Re: {request['Subject']}",
            body="已受理。RMA编号：HW-2026-0042",
            sender="华为售后 <rma@huawei.example>",
            msgid="<v1@huawei.example>",
            extra=f"In-Reply-To: {request['Message-ID']}\r\n",
        ),
    )

    async def approved() -> bool:
        await app.run_once()
        return app.rmas.get(1).state == RmaState.APPROVED

    for _ in range(40):
        if await approved():
            break
    assert (app.rmas.get(1).number, len(app.store.list_tickets())) == ("HW-2026-0042", 1)
    await app.run_once()
    notes = [i.payload.get("note") or "" for i in desk.items if i.kind == "update"]
    assert len([n for n in notes if "requested -> approved (mail:HUAWEI" in n]) == 1
    assert len([1 for _f, to, _r in sink.messages if to == ["rma@huawei.example"]]) == 1
