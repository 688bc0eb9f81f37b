"""Second-engineer review of the SLA engine (issue 15): defects found and pinned by a test each."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from svcbridge import Ticket, TicketEvent
from svcbridge.reports.charts import bar_chart
from svcbridge.reports.compute import sla_report
from svcbridge.reports.render import render

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def _ticket(n: int, on_time: bool) -> Ticket:
    evs = [
        TicketEvent(type="received", at=T0, actor="t", data={}),
        TicketEvent(
            type="sla_met",
            at=T0 + timedelta(minutes=5),
            actor="sla",
            data={"target": "acknowledge", "on_time": on_time, "used_s": 60.0, "allowed_s": 600.0},
        ),
    ]
    return Ticket(id=n, ref=f"SB-{n:06d}", channel="email", events=evs)


@pytest.mark.parametrize(
    ("timely", "counted", "meets"),
    [
        (189, 199, False),  # 94.97 %: shown rounded as 95.0, still below the promise
        (190, 200, True),  # exactly 95 %
        (19, 20, True),
        (18, 20, False),
    ],
)
def test_timeliness_promise_is_judged_on_counts_not_the_rounded_rate(
    timely: int, counted: int, meets: bool
) -> None:
    tickets = [_ticket(i, i <= timely) for i in range(1, counted + 1)]
    tl = sla_report(tickets, T0 + timedelta(days=1))["timeliness"]
    assert (tl["tickets_timely"], tl["tickets_counted"]) == (timely, counted)
    assert tl["meets_promise"] is meets


@pytest.mark.parametrize("label", ["a $x^$ b", "cost $5 to $10", "$\\frac{$", "单价 $3"])
def test_chart_labels_from_customers_are_text_not_mathtext(label: str) -> None:
    svg = bar_chart("Faults by category", {label: 3, "power": 1})
    # drawn as written: matplotlib would parse $...$ as TeX math (and raise on a bad one)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert html.escape(label, quote=False) in texts
    page = render(
        {
            "report": "faults",
            "month": "2026-03",
            "customer": None,
            "tz": "UTC",
            "tickets": 1,
            "by_category": {label: 1},
            "by_model": {},
            "by_part": {},
            "by_fault_level": {},
            "by_priority": {},
            "repeat_failures": [],
        },
        "html",
    )
    assert "<figure>" in page
