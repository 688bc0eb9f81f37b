"""Assets and warranty through the real pipeline (issue 14 items 2-6): a mail naming a serial becomes a ticket
carrying the unit, its customer (the sender is unknown), the warranty per part and unit, the fault category;
out of warranty flags paid service and tells sales through the outbox; repeat failures and batch defects;
the helpdesk's #category and #exclude notes; a vendor's answer arrives after the ticket, never inline."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conftest import eml, free_port
from fakes.vendors import CLIENT_ID, CLIENT_SECRET, VendorFake, serve
from helpdesk_helpers import drop
from svcbridge import AssetPart, AssetRecord, StatusUpdate, metrics
from svcbridge.store.assets import AssetStore

UNITS = [
    AssetRecord(
        serial="7XK2M9P",
        vendor="Dell",
        model="PowerEdge R750",
        product_line="server",
        customer="华东电力",
        region="shanghai",
        invoice_date=date(2025, 6, 1),
        contacts=["ops@hd.example"],
        parts=[AssetPart(category="main", part_number="MB-1"), AssetPart(category="chassis")],
    ),
    AssetRecord(
        serial="OLD1234",
        vendor="Dell",
        model="OptiPlex 7010",
        customer="南京分公司",
        invoice_date=date(2019, 3, 1),
        parts=[AssetPart(category="main")],
    ),
]
for i, cust in enumerate(["台北銀行", "高雄門市", "深圳分行", "广州分行"]):
    UNITS.append(
        AssetRecord(
            serial=f"FOC2231X0A{i}",
            vendor="Cisco",
            model="C9300-48P",
            customer=cust,
            invoice_date=date(2026, 1, 5),
            contacts=[f"net{i}@c{i}.example"],
        )
    )

WARRANTY = {
    "alerts": {
        "sales": {"to": "sales@bridge.test"},
        "service_manager": {"to": "manager@bridge.test"},
        "quality": {"to": "quality@bridge.test"},
        "batch_customers": 3,
    }
}


@pytest.fixture
def app(make_app: Any) -> Any:
    app = make_app(plugins={"assets": WARRANTY})
    register = AssetStore(app.store)
    for u in UNITS:
        register.upsert(u)
    return app


def mail(
    tmp_path: Path, name: str, subject: str, body: str, sender: str = "Someone <x@unknown.example>"
) -> None:
    drop(tmp_path, name, eml(subject=subject, body=body, sender=sender, msgid=f"<{name}@t>"))


def notices(app: Any, template: str) -> list[dict]:
    rows = app.delivery.outbox.list()
    found = [r["payload"]["notification"] for r in rows if r["kind"] == "notify"]
    return [n for n in found if n["template"] == template]


async def once(app: Any) -> None:
    await app.run_once()


def test_mail_with_serial_becomes_ticket_with_unit_customer_warranty_category(
    app: Any, tmp_path: Path
) -> None:
    mail(
        tmp_path,
        "a",
        "服务器无法开机",
        "您好，机身编号：7xk2m9p，今天断电后不开机。订单号 DX20240301，电话 13800138000",
    )
    asyncio.run(once(app))
    (t,) = app.store.list_tickets()
    assert (
        t.asset.serial == "7XK2M9P" and t.asset.model == "PowerEdge R750" and t.asset.product_line == "server"
    )
    assert t.customer == "华东电力"  # the sender is unknown: the unit says whose it is
    assert t.category == "power"
    assert t.labels["serial_candidates"] == [
        {"serial": "7XK2M9P", "where": "body", "how": "label", "known": True}
    ]
    w = t.labels["warranty"]
    assert (w["status"], w["rule"], w["start_source"], w["source"]) == (
        "in",
        "default.main",
        "invoice",
        "rules",
    )
    assert {p["category"]: p["status"] for p in w["parts"]} == {"main": "in", "chassis": "out"}
    assert "paid_service" not in t.labels
    assert notices(app, "warranty_out") == []
    jobs = app.work.jobs.list()
    assert [(j["kind"], j["status"]) for j in jobs] == [("warranty.rules", "done")]
    # after the commit, the entitlement goes to the helpdesks as a note for the agents
    notes = [e.data["note"] for e in app.store.get_ticket("SB-000001").events if e.type == "ticket_updated"]
    assert len(notes) == 1 and notes[0].startswith("Unit 7XK2M9P (Dell PowerEdge R750), customer 华东电力")
    assert "\nWarranty (rules) for 7XK2M9P: IN until 2028-06-01" in notes[0]
    assert "- chassis: out until 2025-12-01 (default.chassis)" in notes[0]
    kept = AssetStore(app.store).last_answer("warranty", "7XK2M9P")
    assert kept is not None and kept[0]["status"] == "in" and kept[0]["ticket"] == "SB-000001"


def test_out_of_warranty_flags_paid_service_and_tells_sales_once(app: Any, tmp_path: Path) -> None:
    mail(
        tmp_path,
        "a",
        "PC won't power on",
        "Serial No. OLD1234, no power since Monday",
        sender="Li <li@nanjing.example>",
    )
    asyncio.run(once(app))
    (t,) = app.store.list_tickets()
    assert t.labels["warranty"]["status"] == "out"
    assert t.labels["paid_service"] == {"why": "out", "expired_parts": ["main"]}
    (n,) = notices(app, "warranty_out")
    assert n["to"] == "sales@bridge.test" and "OLD1234" in n["body"] and "南京分公司" in n["body"]
    asyncio.run(once(app))  # nothing is sent twice
    assert len(notices(app, "warranty_out")) == 1


def test_repeat_failure_flags_replace_unit_and_tells_the_manager(app: Any, tmp_path: Path) -> None:
    mail(tmp_path, "a", "服务器无法开机", "序列号 7XK2M9P 不开机", sender="A <a@hd.example>")
    asyncio.run(once(app))
    mail(tmp_path, "b", "又无法开机了", "序列号：7XK2M9P，电源灯不亮", sender="B <b@hd.example>")
    mail(tmp_path, "c", "屏幕黑屏", "序列号：7XK2M9P 黑屏", sender="C <c@hd.example>")  # another category
    asyncio.run(once(app))
    tickets = {t.ref: t for t in app.store.list_tickets()}
    assert "replace_unit" not in tickets["SB-000001"].labels
    second = tickets["SB-000002"]
    assert second.labels["replace_unit"]["earlier"] == ["SB-000001"]
    assert "replace_unit" not in tickets["SB-000003"].labels  # display is no repeat of power
    (n,) = notices(app, "repeat_failure")
    assert n["to"] == "manager@bridge.test" and "SB-000001" in n["body"]
    full = app.store.get_ticket("SB-000002")
    assert [e.type for e in full.events].count("repeat_failure") == 1


def test_batch_defect_alerts_quality_once_when_the_third_customer_reports(app: Any, tmp_path: Path) -> None:
    for i in range(4):
        mail(
            tmp_path,
            f"m{i}",
            "交換機無法連線",
            f"機身編號: FOC2231X0A{i}，網路斷了",
            sender=f"N <n{i}@c{i}.example>",
        )
        asyncio.run(once(app))
    tickets = sorted(app.store.list_tickets(), key=lambda t: t.ref)
    assert [("batch_defect" in t.labels) for t in tickets] == [False, False, True, True]
    assert tickets[2].labels["batch_defect"]["customers"] == 3
    (n,) = notices(app, "batch_defect")
    assert n["to"] == "quality@bridge.test" and "notify-owners" in n["body"]


def test_helpdesk_overrides_category_and_applies_an_exclusion(app: Any, tmp_path: Path) -> None:
    mail(tmp_path, "a", "服务器无法开机", "机身编号 7XK2M9P 不开机")
    asyncio.run(once(app))
    note = StatusUpdate(
        ticket_ref="SB-000001",
        system="rt",
        internal_note="checked on site\n#category display",
        external_event_id="rt-1",
    )
    assert asyncio.run(app.pipeline.apply_status_update(note))
    asyncio.run(once(app))
    t = app.store.get_ticket("SB-000001")
    assert t.category == "display" and t.labels["category_override"]["category"] == "display"
    assert [e.data for e in t.events if e.type == "category_override"] == [{"from": "power", "to": "display"}]
    # a later message with power words does not undo the agent's category
    drop(
        tmp_path,
        "b",
        eml(
            subject="Re: [SB-000001] 服务器无法开机",
            body="还是不开机",
            msgid="<b@t>",
            sender="Someone <x@unknown.example>",
        ),
    )
    asyncio.run(once(app))
    assert app.store.get_ticket("SB-000001").category == "display"
    excl = StatusUpdate(
        ticket_ref="SB-000001", system="rt", internal_note="#exclude misuse", external_event_id="rt-2"
    )
    assert asyncio.run(app.pipeline.apply_status_update(excl))
    asyncio.run(once(app))
    t = app.store.get_ticket("SB-000001")
    assert t.labels["warranty"]["status"] == "excluded" and t.labels["warranty"]["exclusion"] == "misuse"
    assert t.labels["paid_service"]["why"] == "excluded"
    assert [e.data["reason"] for e in t.events if e.type == "warranty_exclusion"] == ["misuse"]


def test_unknown_serial_is_kept_and_no_customer_is_made_up(app: Any, tmp_path: Path) -> None:
    mail(tmp_path, "a", "Switch down", "S/N: FDO2145Y1ZZ link down, call +86 138 0013 8000")
    asyncio.run(once(app))
    (t,) = app.store.list_tickets()
    assert t.asset.serial == "FDO2145Y1ZZ" and t.customer is None
    assert t.labels["serial_candidates"] == [
        {"serial": "FDO2145Y1ZZ", "where": "body", "how": "label", "vendor": "cisco"}
    ]
    assert "warranty" not in t.labels  # nothing known locally: no answer rather than a wrong one


@pytest.fixture
def vendor(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = VendorFake()
    port = free_port()
    server = serve(fake, port)
    monkeypatch.setenv("TEST_VENDOR_SECRET", CLIENT_SECRET)
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True


def test_vendor_outage_gives_the_ticket_at_once_and_the_entitlement_later(
    make_app: Any, tmp_path: Path, vendor: Any
) -> None:
    fake, root = vendor
    fake.units["dell"]["ABC1234"] = [("2024-01-01", "2029-01-01", "ProSupport")]
    fake.mode["dell"] = "down"
    dell = {
        "base_url": f"{root}/dell",
        "token_url": f"{root}/dell/auth/oauth/v2/token",
        "client_id": CLIENT_ID,
        "client_secret_env": "TEST_VENDOR_SECRET",
        "breaker_threshold": 5,
        "retry_initial": 0.3,
        "retry_max": 0.3,
    }
    app = make_app(outbound_allow=["127.0.0.1"], plugins={"assets": {"vendors": {"dell": dell}}})
    mail(tmp_path, "a", "Dell laptop dead", "Service Tag ABC1234 won't turn on")
    asyncio.run(once(app))
    (t,) = app.store.list_tickets()  # the ticket is there at once, without the vendor's answer
    assert t.asset.serial == "ABC1234" and "vendor_warranty" not in t.labels
    (job,) = [j for j in app.work.jobs.list() if j["kind"] == "warranty.vendor:dell"]
    assert job["status"] == "pending" and "503" in job["last_error"]
    time.sleep(0.35)
    asyncio.run(once(app))  # still down: failing twice in a row is an alert (/readyz) and counted
    assert "job:warranty.vendor:dell" in app.work.alerts
    assert "HTTP 503" in app.work.alerts["job:warranty.vendor:dell"]
    counted = metrics.JOBS.labels(kind="warranty.vendor:dell", outcome="retry")._value.get()
    assert counted >= 2
    fake.mode["dell"] = "ok"  # the vendor is back: the retry brings the answer
    time.sleep(0.35)
    asyncio.run(once(app))
    t = app.store.get_ticket("SB-000001")
    assert (
        t.labels["vendor_warranty"]["status"] == "in" and t.labels["vendor_warranty"]["end"] == "2029-01-01"
    )
    assert any(
        e.type == "ticket_updated" and "dell warranty for ABC1234: in" in e.data.get("note", "")
        for e in t.events
    )
    assert json.dumps(t.labels).count("s3cret") == 0
    assert "job:warranty.vendor:dell" not in app.work.alerts  # the alert ends with the first success


@pytest.mark.parametrize("chained", [False, True])
def test_a_fax_unit_is_found_in_its_ocr_text_when_that_arrives(
    make_app: Any, tmp_path: Path, chained: bool
) -> None:
    """Without ``then_jobs`` the identify job waits for the OCR (retried); with it, the fax plugin asks
    for the identification in the transaction that stores the text (as fax.ocr does) and none waits."""
    from sqlalchemy import update

    from helpdesk_helpers import plugin
    from svcbridge import TicketChange, WorkQueue, utcnow
    from svcbridge import changes as ch
    from svcbridge.plugins import make_plugin_manager
    from svcbridge.store import schema
    from svcbridge.store.jobs import write_work

    def as_fax(draft: Any) -> None:  # stands for the fax plugin's parser: the text is on the pages
        draft.channel, draft.body_text = "fax", ""

    pm = make_plugin_manager(extra=(plugin("faxlike", normalize_draft=as_fax),))
    fax = {"fax": {"ocr": {"then_jobs": ["warranty.identify"]}}} if chained else {}
    app = make_app(pm=pm, plugins={"assets": WARRANTY, **fax})
    for u in UNITS:
        AssetStore(app.store).upsert(u)
    mail(tmp_path, "a", "FAX", "")
    asyncio.run(once(app))
    waiting = [j for j in app.work.jobs.list() if j["kind"] == "warranty.identify"]
    if chained:
        assert waiting == []
    else:
        (job,) = waiting
        assert job["status"] == "pending" and "waiting for the fax's OCR" in job["last_error"]
    ticket = app.store.get_ticket("SB-000001")
    assert ticket.asset.serial is None
    # the fax plugin's OCR job answers (as fax.ocr records it): the unit is found in the text
    ocr = TicketChange(labels={"ocr_text": "保修申请\n序列号: OLD1234\n故障: 无法开机", "ocr": {"pages": 1}})
    with app.store.tx() as conn:
        ch.record(conn, app.store, ticket, ocr, plugin="fax", origin="job:ocr")
        if chained:
            work = WorkQueue(ticket.ref, ticket.id)
            work.enqueue("warranty.identify", {"after": "fax.ocr"}, key="SB-000001:fax.ocr:warranty.identify")
            write_work(conn, app.store, work)
        conn.execute(update(schema.jobs).values(next_attempt_at=utcnow()))
    asyncio.run(once(app))
    t = app.store.get_ticket("SB-000001")
    assert t.asset.serial == "OLD1234" and t.customer == "南京分公司"
    assert t.labels["serial_candidates"] == [
        {"serial": "OLD1234", "where": "ocr", "how": "label", "known": True}
    ]
    assert t.labels["warranty"]["status"] == "out" and t.labels["paid_service"]["why"] == "out"
    (n,) = notices(app, "warranty_out")
    assert "OLD1234" in n["body"] and "南京分公司" in n["body"]
    assert [j["status"] for j in app.work.jobs.list() if j["kind"] == "warranty.identify"] == ["done"]


@pytest.mark.parametrize(
    ("tell", "subject", "body", "line"),
    [
        (True, "电脑无法开机", "序列号：OLD1234 不开机", "根据我们的记录，该设备已过保修期"),
        (
            True,
            "PC won't power on",
            "Serial No. OLD1234, no power",
            "out of warranty: the repair is offered as a paid",
        ),
        (False, "电脑无法开机", "序列号：OLD1234 不开机", None),
    ],
)
def test_the_acknowledgement_can_say_paid_service(
    make_app: Any, tmp_path: Path, tell: bool, subject: str, body: str, line: str | None
) -> None:
    from helpdesk_helpers import outgoing, text_of

    app = make_app(plugins={"assets": {"alerts": {"tell_customer": tell}}})
    for u in UNITS:
        AssetStore(app.store).upsert(u)
    mail(tmp_path, "a", subject, body, sender="Li <li@nanjing.example>")
    asyncio.run(once(app))
    (ack,) = outgoing(tmp_path / "outgoing")
    text = text_of(ack)
    if line is None:
        assert "保修期" not in text and "paid service" not in text
    else:
        assert line in text


def test_follow_ups_keep_the_category_and_a_cli_exclusion_counts_for_new_tickets(
    app: Any, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from svcbridge.cli import main

    mail(tmp_path, "a", "服务器无法开机", "机身编号 7XK2M9P 不开机", sender="A <a@hd.example>")
    asyncio.run(once(app))
    drop(
        tmp_path,
        "b",
        eml(
            subject="Re: [SB-000001] 服务器无法开机",
            body="屏幕也黑屏了",
            msgid="<b@t>",
            sender="A <a@hd.example>",
        ),
    )
    asyncio.run(once(app))
    assert app.store.get_ticket("SB-000001").category == "power"  # a follow-up does not re-categorise
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/var"\n[http]\nenabled = false\n')
    res = CliRunner().invoke(main, ["--config", str(cfg), "assets", "exclude", "7XK2M9P", "force_majeure"])
    assert res.exit_code == 0, res.output
    mail(tmp_path, "c", "服务器无法开机", "机身编号 7XK2M9P 又不开机了，机房进水", sender="A <a@hd.example>")
    asyncio.run(once(app))
    t = app.store.get_ticket("SB-000002")
    assert (
        t.labels["warranty"]["status"] == "excluded" and t.labels["warranty"]["exclusion"] == "force_majeure"
    )
    assert t.labels["paid_service"]["why"] == "excluded"


def test_an_erp_answering_asset_lookup_identifies_the_unit(make_app: Any, tmp_path: Path) -> None:
    from helpdesk_helpers import plugin
    from svcbridge.plugins import make_plugin_manager

    asked: list[tuple[str, bool]] = []

    def asset_lookup(serial: str, register: Any, inline: bool) -> Any:
        asked.append((serial, inline))
        if serial == "PF3ABCD1":  # a mirror of the ERP's units, answered locally at intake
            return AssetRecord(
                serial=serial,
                vendor="Lenovo",
                model="ThinkPad T14",
                customer="深圳分行",
                invoice_date=date(2026, 3, 1),
                source="erp",
            )
        return None

    pm = make_plugin_manager(extra=(plugin("erp", asset_lookup=asset_lookup),))
    app = make_app(pm=pm, plugins={"assets": {}})
    mail(tmp_path, "a", "笔记本蓝屏", "联想笔记本 PF3ABCD1 一直蓝屏，订单号 PO2026001")
    asyncio.run(once(app))
    t = app.store.get_ticket("SB-000001")
    assert asked[0] == ("PF3ABCD1", True)
    assert t.customer == "深圳分行" and t.asset.model == "ThinkPad T14" and t.category == "boot"
    assert t.labels["asset"]["source"] == "erp" and t.labels["warranty"]["unit_source"] == "erp"
    assert t.labels["warranty"]["status"] == "in"


def test_batch_defect_alerts_once_when_the_reports_arrive_together(app: Any, tmp_path: Path) -> None:
    # three customers' mails in one intake round: every rules job sees the other two tickets already
    # committed, so "the ticket that crossed the line" cannot be told from the store; the alert is
    # made once by a store-level key (a job per model, category and window) and is never lost
    for i in range(3):
        mail(
            tmp_path,
            f"m{i}",
            "Switch offline",
            f"S/N: FOC2231X0A{i} the network link is down",
            sender=f"N <n{i}@c{i}.example>",
        )
    asyncio.run(once(app))
    asyncio.run(once(app))
    tickets = app.store.list_tickets()
    assert len(tickets) == 3 and all("batch_defect" in t.labels for t in tickets)
    (n,) = notices(app, "batch_defect")
    assert n["to"] == "quality@bridge.test" and "C9300-48P" in n["subject"]
    # a later report of the same model and category in the same window alerts no more
    mail(tmp_path, "m3", "Switch offline", "S/N: FOC2231X0A3 network down", sender="N <n3@c3.example>")
    asyncio.run(once(app))
    asyncio.run(once(app))
    assert len(notices(app, "batch_defect")) == 1


def test_out_of_warranty_found_on_a_follow_up_tells_sales_once(app: Any, tmp_path: Path) -> None:
    """The first mail names no serial; the customer's reply does, and the unit is out of warranty: the
    ticket is flagged paid service and sales must hear of it (the notice was composed only for a NEW
    ticket), once, however many replies follow."""
    mail(tmp_path, "a", "PC won't power on", "No power since Monday", sender="Li <li@nanjing.example>")
    asyncio.run(once(app))
    assert notices(app, "warranty_out") == []
    for name in ("b", "c"):
        drop(
            tmp_path,
            name,
            eml(
                subject="Re: [SB-000001] PC won't power on",
                body="The label says Serial No. OLD1234",
                msgid=f"<{name}@t>",
                sender="Li <li@nanjing.example>",
            ),
        )
        asyncio.run(once(app))
        asyncio.run(once(app))
    t = app.store.get_ticket("SB-000001")
    assert t.asset.serial == "OLD1234" and t.labels["paid_service"]["why"] == "out"
    (n,) = notices(app, "warranty_out")
    assert n["to"] == "sales@bridge.test" and "OLD1234" in n["body"] and "SB-000001" in n["subject"]
