"""RMAs with the real Request Tracker (issue 16 items 6-7): an agent's ``/rma`` Comment in RT opens one
RMA (acted on once, however often RT is read), the request goes to the vendor's mailbox once, RT gets
the answer as a Comment once; the vendor's reply with its RMA number moves the RMA and RT hears it once.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import eml
from helpdesk_helpers import drop, poll
from svcbridge import RmaState

pytestmark = pytest.mark.realserver


@pytest.fixture(scope="module")
def rt() -> Iterator[Any]:
    from rt_server import running_rt

    with running_rt() as server:
        yield server


def comments(rt: Any, ticket_id: str, needle: str) -> list[str]:
    from test_warranty_e2e import rt_texts

    return [text for kind, text in rt_texts(rt, ticket_id) if needle in text]


async def test_rma_command_in_rt_acts_once_and_the_vendor_reply_reaches_rt_once(
    make_app, tmp_path: Path, rt
) -> None:
    rt.reset()
    app = make_app(
        routing={"default": ["rt"]},
        outbound_allow=["127.0.0.1"],
        plugins={"rt": rt.plugin_config(), "rma": {"mail": {"vendors": {"huawei": "rma@huawei.example"}}}},
    )
    drop(tmp_path, "c1", eml(subject="服务器电源故障", body="电源模块坏了", msgid="<c1@cust.example>"))
    await app.run_once()
    (t,) = rt.tickets("Subject LIKE '[SB-000001]'")
    await poll(app, "rt")  # the cursor: RT's history before now is not news
    rt.reply(t["id"], '需要返修。\n/rma HUAWEI part=PSU-900W:2102311ABC fault="12 V 无输出"', kind="comment")
    await poll(app, "rt")
    await app.run_once()
    await poll(app, "rt")  # our own answer is not read back as a command
    await app.run_once()
    (rma,) = app.rmas.by_ticket("SB-000001")
    assert (rma.vendor, rma.state, rma.source) == ("HUAWEI", RmaState.REQUESTED, "helpdesk:rt")
    assert len(comments(rt, t["id"], "/rma done: RMA 1 (HUAWEI): requested")) == 1
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted((tmp_path / "outgoing").glob("*.eml"))
    ]
    requests = [m for m in mails if m["To"] == "rma@huawei.example"]
    assert len(requests) == 1 and "[SB-000001]" in requests[0]["Subject"]

    drop(
        tmp_path,
        "v1",
        eml(
            subject=f"Re: {requests[0]['Subject']}",
            body="已受理，RMA编号：HW-2026-0001",
            sender="rma@huawei.example",
            msgid="<v1@huawei.example>",
        ),
    )
    await app.run_once()
    await app.run_once()
    assert app.rmas.get(rma.id).number == "HW-2026-0001"
    await poll(app, "rt")
    await app.run_once()
    assert len(comments(rt, t["id"], "requested -> approved (mail:HUAWEI")) == 1
    assert len(app.rmas.by_ticket("SB-000001")) == 1
