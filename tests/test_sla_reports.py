"""Monthly reports from the event trail, checked by numbers; the HTML opened in headless Chromium.

The trails are written straight into a real store (SQLite) as the engine writes them, so each figure
below can be recomputed by hand from the table at the top.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from svcbridge import Asset, Contact, FaultLevel, Priority, Ticket, TicketEvent, TicketState
from svcbridge.cli import main
from svcbridge.reports import build, render
from svcbridge.reports.trail import month_range

ARTIFACTS = Path(__file__).parent / "artifacts"
M = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def ev(kind: str, at: datetime, **data) -> TicketEvent:
    return TicketEvent(type=kind, at=at, actor="sla", data=data)


def met(target: str, at: datetime, used_min: float, allowed_min: float) -> TicketEvent:
    return ev("sla_met", at, target=target, on_time=used_min <= allowed_min, used_s=used_min * 60,
              allowed_s=allowed_min * 60, met_at=at.isoformat(), deadline=None)  # fmt: skip


# ref, customer, region, priority, category, model, serial, events after "received"
TICKETS = [
    ("A", "City Hospital", "city", 1, "power", "X1", "S1",
     [met("acknowledge", M, 3, 10), met("onsite", M, 50, 60), ev("status_changed", M, to="resolved"),
      ev("notified", M, template="survey"), ev("survey_reply", M, score=5, comment="很好")]),
    ("B", "City Hospital", "city", 1, "display", "X1", "S1",  # the same unit again: a repeat failure
     [met("acknowledge", M, 12, 10), met("onsite", M, 55, 60), ev("message_received", M),
      ev("status_changed", M, to="resolved"), ev("notified", M, template="survey"),
      ev("survey_reply", M, score=2, comment="=HYPERLINK(\"http://x\")")]),
    ("C", "County Clinic", "province", 1, "power", "Y2", "S9",
     [met("acknowledge", M, 4, 10), ev("sla_breached", M, target="onsite", deadline="2026-03-03T01:00:00+00:00"),
      ev("sla_escalated", M, target="onsite")]),
    ("D", "County Clinic", "province", 3, "<b>network</b>", None, None,
     [met("first_response", M, 100, 540), ev("status_changed", M, to="resolved"), ev("notified", M, template="survey")]),
    ("E", "County Clinic", "province", 3, None, None, None, []),  # nothing decided yet: not counted
]  # fmt: skip


# the parts plugin's label (issue 16), and a plain one
PARTS = {
    "A": {"parts": {"erp": "tryton", "items": [{"part": "PSU-500"}]}},
    "B": {"parts": {"erp": "tryton", "items": [{"part": "PSU-500"}, {"part": "FAN-1"}, {"part": "FAN-1"}]}},
    "C": {"part": "FAN-1"},
}


@pytest.fixture
def store(make_app):
    app = make_app()
    s = app.store
    for i, (ref, cust, region, prio, cat, model, serial, evs) in enumerate(TICKETS, 1):
        tid = s.allocate_ticket_id()
        t = Ticket(
            id=tid, ref=s.ref_for(tid), channel="email", customer=cust, priority=Priority(prio),
            fault_level=FaultLevel.CRITICAL if prio == 1 else FaultLevel.MINOR, category=cat,
            asset=Asset(model=model, serial=serial), labels={"region": region, **PARTS.get(ref, {})}, subject=ref,
            contact=Contact(email=f"{ref.lower()}@example.com"), state=TicketState.RESOLVED,
        )  # fmt: skip
        with s.tx() as conn:
            s.insert_ticket(conn, t, "test")
            s.add_event(conn, tid, ev("received", M - timedelta(hours=1) + timedelta(minutes=i)))
            for e in evs:
                s.add_event(conn, tid, e)
    # one ticket of February and one of April must not count
    for day in (datetime(2026, 2, 28, 15, 59, tzinfo=UTC), datetime(2026, 3, 31, 16, 0, tzinfo=UTC)):
        tid = s.allocate_ticket_id()
        with s.tx() as conn:
            s.insert_ticket(conn, Ticket(id=tid, ref=s.ref_for(tid), channel="email"), "test")
            s.add_event(conn, tid, ev("received", day))
            s.add_event(conn, tid, ev("sla_breached", day, target="acknowledge"))
    return s


def test_sla_report_numbers(store) -> None:
    d = build(store, "sla", "2026-03", tz="Asia/Shanghai")  # Feb 28 15:59 UTC is still February there
    assert d["tickets"] == 5
    # A: all met; B: acknowledge 12 > 10 min; C: on-site breached; D: met; E: nothing decided
    assert d["timeliness"] == {"tickets_counted": 4, "tickets_timely": 2, "rate": 50.0, "promise": 95.0,
                               "meets_promise": False}  # fmt: skip
    assert d["by_target"]["acknowledge"] == {"met": 2, "missed": 1, "open": 0, "rate": 66.7}
    assert d["by_target"]["onsite"] == {"met": 2, "missed": 1, "open": 0, "rate": 66.7}
    assert d["by_region"]["city"] == {"met": 3, "missed": 1, "open": 0, "rate": 75.0}
    assert d["by_priority"]["P3"] == {"met": 1, "missed": 0, "open": 0, "rate": 100.0}
    assert d["by_customer"]["County Clinic"]["missed"] == 1
    assert (
        d["response_minutes"]["values"] == [3.0, 4.0, 12.0, 100.0] and d["response_minutes"]["median"] == 8.0
    )
    assert d["onsite_minutes"]["values"] == [50.0, 55.0]
    breaches = {(b["ticket"][-1], b["target"]): b for b in d["breaches"]}
    assert set(breaches) == {("2", "acknowledge"), ("3", "onsite")}
    assert breaches[("2", "acknowledge")]["late_min"] == 2.0 and breaches[("3", "onsite")]["escalated"]
    # per customer
    c = build(store, "sla", "2026-03", customer="City Hospital", tz="Asia/Shanghai")
    assert c["tickets"] == 2 and c["timeliness"]["rate"] == 50.0
    # in UTC the February ticket is not in March either, but the April one (16:00 UTC, Apr 1 in Shanghai) is
    assert build(store, "sla", "2026-03")["tickets"] == 6


def test_faults_and_satisfaction_numbers(store) -> None:
    f = build(store, "faults", "2026-03", tz="Asia/Shanghai")
    assert f["by_category"] == {"power": 2, "-": 1, "<b>network</b>": 1, "display": 1}
    assert f["by_model"] == {"-": 2, "X1": 2, "Y2": 1}
    assert f["by_fault_level"] == {"critical": 3, "minor": 2}
    assert f["by_part"] == {"FAN-1": 2, "PSU-500": 2}  # tickets per part: B's FAN-1 counts once
    assert [r["serial"] for r in f["repeat_failures"]] == ["S1"] and len(
        f["repeat_failures"][0]["tickets"]
    ) == 2
    s = build(store, "satisfaction", "2026-03", tz="Asia/Shanghai")
    assert (s["surveys_sent"], s["replies"], s["response_rate"], s["average"]) == (3, 2, 66.7, 3.5)
    assert s["distribution"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1} and s["satisfied_rate"] == 50.0
    assert (s["resolved"], s["first_contact_resolution"], s["fcr_rate"]) == (3, 2, 66.7)


def test_formats_csv_json_table_and_bad_month(store) -> None:
    d = build(store, "satisfaction", "2026-03", tz="Asia/Shanghai")
    rows = list(csv.reader(io.StringIO(render(d, "csv"))))
    assert rows[0] == ["section", "key", "measure", "value"]
    cells = [c for r in rows for c in r]
    assert '\'=HYPERLINK("http://x")' in cells  # a formula from a customer stays text
    assert json.loads(render(d, "json"))["average"] == 3.5
    assert "average" in render(d, "table")
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_range("2026-13")
    with pytest.raises(ValueError, match="YYYY-MM"):
        build(store, "sla", "March")


def test_cli_report_and_followups(store, make_app, tmp_path, monkeypatch) -> None:
    runner = CliRunner()
    res = runner.invoke(
        main, ["report", "sla", "--month", "2026-03", "--format", "json"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["tickets"] == 6
    res = runner.invoke(main, ["report", "faults", "--month", "2026-3x"])
    assert res.exit_code == 2 and "YYYY-MM" in res.output
    out = tmp_path / "r.html"
    res = runner.invoke(
        main, ["report", "sla", "--month", "2026-03", "--format", "html", "--output", str(out)]
    )
    assert res.exit_code == 0 and out.read_text().startswith("<!DOCTYPE html>")


def test_html_is_self_contained_escaped_and_renders_in_chromium(store) -> None:
    page = render(build(store, "sla", "2026-03", tz="Asia/Shanghai"), "html")
    faults = render(build(store, "faults", "2026-03", tz="Asia/Shanghai"), "html")
    assert "<svg" in page and "http:" not in page.replace('"http://www.w3.org/', "")
    assert "<script" not in page and "src=" not in page
    assert "<b>network</b>" not in faults and "&lt;b&gt;network&lt;/b&gt;" in faults
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs /usr/bin/chromium (apt-get install chromium)")
        pytest.skip("no /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            requests: list[str] = []
            tab.on("request", lambda r: requests.append(r.url))
            tab.set_content(page)
            assert tab.inner_text("#timeliness") == "50 %"
            assert tab.locator("svg").count() == 3
            box = tab.locator("svg").first.bounding_box()
            assert box and box["width"] > 200 and box["height"] > 100
            tab.screenshot(path=str(ARTIFACTS / "sla-report.png"), full_page=True)
            assert requests == []  # nothing fetched: no CDN, no font, no image
        finally:
            browser.close()
    assert (ARTIFACTS / "sla-report.png").stat().st_size > 10_000
