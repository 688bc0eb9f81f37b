"""Second-engineer review of the SLA engine (issue 15): defects found and pinned by a test each."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

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


def _status(at: datetime, to: str) -> TicketEvent:
    return TicketEvent(type="status_changed", at=at, actor="helpdesk", data={"to": to})


@pytest.mark.parametrize("target", ["resolution", "restoration", "unsolved"])
def test_a_reopened_ticket_is_not_resolved_and_its_resolved_time_does_not_count(target: str) -> None:
    from svcbridge_sla.clock import plan
    from svcbridge_sla.engine import evaluate
    from svcbridge_sla.policy import Policy, Target
    from svcbridge_sla.settings import SlaSettings

    cfg = SlaSettings()
    policy = Policy(name="p", targets={target: Target(within="8h")})
    received = TicketEvent(type="received", at=T0, actor="t", data={})
    resolved = [received, _status(T0 + timedelta(hours=1), "resolved")]
    reopened = [*resolved, _status(T0 + timedelta(hours=3), "in_progress")]
    again = [*reopened, _status(T0 + timedelta(hours=5), "resolved")]
    now = T0 + timedelta(days=3)

    def state(evs: list[TicketEvent]) -> tuple[Any, Any]:
        tk = Ticket(id=1, ref="SB-000001", channel="email", events=evs)
        (ts,) = evaluate(tk, policy, cfg, now)
        return ts, plan(tk, policy, cfg, now)

    ts, p = state(resolved)
    assert ts.met_at == T0 + timedelta(hours=1) and ts.on_time
    # reopened: open again; 1 h used before, the 2 h resolved do not count -> due at T0 + 10 h
    ts, p = state(reopened)
    assert ts.met_at is None
    assert ts.deadline == T0 + timedelta(hours=10)
    assert ts.breached(now) and f"sla_breach:{target}" in p.schedule
    # resolved again after 1 + 2 h of work: met then, 3 h used
    ts, p = state(again)
    assert ts.met_at == T0 + timedelta(hours=5) and ts.used == timedelta(hours=3) and ts.on_time


def test_resolved_again_after_a_reopening_records_a_new_sla_met_and_the_report_reads_it() -> None:
    from svcbridge.reports.trail import outcomes
    from svcbridge_sla.clock import plan
    from svcbridge_sla.policy import Policy, Target
    from svcbridge_sla.settings import SlaSettings

    cfg = SlaSettings()
    policy = Policy(name="p", targets={"resolution": Target(within="4h")})
    first_met = TicketEvent(
        type="sla_met",
        at=T0 + timedelta(hours=1, minutes=1),
        actor="sla",
        data={"target": "resolution", "on_time": True, "used_s": 3600.0, "allowed_s": 14400.0},
    )
    evs = [
        TicketEvent(type="received", at=T0, actor="t", data={}),
        _status(T0 + timedelta(hours=1), "resolved"),
        first_met,
        _status(T0 + timedelta(hours=2), "in_progress"),  # reopened
        _status(T0 + timedelta(hours=8), "resolved"),  # 1 + 6 h of work: late
    ]
    now = T0 + timedelta(hours=8, minutes=1)
    tk = Ticket(id=1, ref="SB-000001", channel="email", events=evs)
    (met,) = plan(tk, policy, cfg, now).events
    assert met.type == "sla_met" and met.data["on_time"] is False and met.data["used_s"] == 7 * 3600
    # recorded again: nothing new
    tk2 = Ticket(id=1, ref="SB-000001", channel="email", events=[*evs, met])
    assert plan(tk2, policy, cfg, now).events == []
    (o,) = outcomes(tk2, now)
    assert o.status == "missed" and o.late_s == 3 * 3600


@pytest.mark.parametrize(
    ("received", "typed", "want"),
    [
        # texted at 00:05 Shanghai about 23:50: yesterday's 23:50, not the time of the text
        (datetime(2026, 3, 9, 16, 5, tzinfo=UTC), (23, 50), datetime(2026, 3, 9, 15, 50, tzinfo=UTC)),
        (datetime(2026, 3, 9, 2, 0, tzinfo=UTC), (9, 40), datetime(2026, 3, 9, 1, 40, tzinfo=UTC)),
        # a time later than the text that would fall before the ticket: the text's time
        (datetime(2026, 3, 9, 2, 0, tzinfo=UTC), (10, 30), datetime(2026, 3, 9, 2, 0, tzinfo=UTC)),
    ],
)
def test_sms_milestone_time_before_midnight_is_yesterdays(
    received: datetime, typed: tuple[int, int], want: datetime
) -> None:
    from svcbridge_sla import _local_time
    from svcbridge_sla.settings import SlaSettings

    start = datetime(2026, 3, 8, 15, 0, tzinfo=UTC)  # Mar 8 23:00 Shanghai
    tk = Ticket(
        id=1,
        ref="SB-000001",
        channel="email",
        events=[TicketEvent(type="received", at=start, actor="t", data={})],
    )
    assert _local_time(tk, SlaSettings(), received, *typed) == want


class _Jobs:
    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any], str]] = []

    def enqueue(self, kind: str, data: dict[str, Any], key: str) -> None:
        self.asked.append((kind, data, key))


def test_a_customer_reply_that_reopens_a_resolved_ticket_restarts_its_resolution_clock() -> None:
    from svcbridge import TicketDraft, TicketState
    from svcbridge_sla import _followup
    from svcbridge_sla.engine import evaluate
    from svcbridge_sla.policy import Policy, Target
    from svcbridge_sla.settings import SlaSettings

    cfg = SlaSettings(policies=[Policy(name="p", targets={"resolution": Target(within="8h")})])
    evs = [
        TicketEvent(type="received", at=T0, actor="t", data={}),
        _status(T0 + timedelta(hours=1), "resolved"),
    ]
    tk = Ticket(
        id=1, ref="SB-000001", channel="email", events=evs, state=TicketState.RESOLVED, sla_policy="p"
    )
    # the customer writes again (not a survey answer): the pipeline reopens, the SLA must recompute
    jobs = _Jobs()
    draft = TicketDraft(channel="email", subject="Re: 打印机又坏了", body_text="still broken / 还是不行")
    draft.received_at = T0 + timedelta(hours=3)
    _followup(draft, tk, cfg, jobs)
    assert [k for k, _, _ in jobs.asked] == ["sla.recompute"]
    # the pipeline's trail of that reopening: a "reopened" event, no status_changed
    reopened = tk.model_copy(
        update={
            "state": TicketState.IN_PROGRESS,
            "events": [
                *evs,
                TicketEvent(type="reopened", at=T0 + timedelta(hours=3), data={"by": "customer"}),
            ],
        }
    )
    (ts,) = evaluate(reopened, cfg.policies[0], cfg, T0 + timedelta(days=1))
    assert ts.met_at is None and ts.deadline == T0 + timedelta(hours=10)
    # a technician's milestone text on the resolved ticket is no new problem: it does not reopen it
    tk = tk.model_copy(update={"labels": {}})
    cfg = cfg.model_copy(update={"technicians": ["+8613800138000"]})
    sms = TicketDraft(channel="sms", body_text="解决 SB-000001 10:00")
    sms.contact.phone = "+8613800138000"
    sms.received_at = T0 + timedelta(hours=4)
    jobs = _Jobs()
    _followup(sms, tk, cfg, jobs)
    assert sms.labels.get("_keep_closed") is True
    ((_, data, _),) = jobs.asked
    assert data["milestone"]["milestone"] == "resolved"


def test_first_contact_resolution_is_not_undone_by_the_survey_answer() -> None:
    from svcbridge.reports.compute import satisfaction_report

    def tk(n: int, *evs: tuple[int, str, dict[str, Any]]) -> Ticket:
        trail = [TicketEvent(type="received", at=T0, actor="t", data={})]
        trail += [TicketEvent(type=k, at=T0 + timedelta(hours=h), actor="t", data=d) for h, k, d in evs]
        return Ticket(id=n, ref=f"SB-{n:06d}", channel="email", events=trail)

    resolved = (2, "status_changed", {"to": "resolved"})
    survey = (2, "notified", {"template": "survey"})
    answer = [(3, "message_received", {}), (3, "survey_reply", {"score": 5})]  # the answer is a message
    tickets = [
        tk(1, resolved, survey, *answer),  # first contact: the answer came after the resolution
        tk(2, (1, "message_received", {}), resolved),  # the customer had to write again: not
        tk(3, resolved, (4, "message_received", {}), (4, "reopened", {"by": "customer"})),  # reopened
        tk(
            4,
            resolved,
            (5, "status_changed", {"to": "in_progress"}),
            (6, "status_changed", {"to": "resolved"}),
        ),
    ]
    now = T0 + timedelta(days=1)
    assert [satisfaction_report([t], now)["first_contact_resolution"] for t in tickets] == [1, 0, 0, 0]
    s = satisfaction_report(tickets, now)
    assert (s["resolved"], s["first_contact_resolution"], s["replies"]) == (4, 1, 1)


def test_chinese_chart_labels_are_measured_with_a_cjk_font() -> None:
    # DejaVu Sans has no CJK glyphs: without a CJK family after it matplotlib measured 故障 as empty
    # boxes (a "Glyph ... missing" warning and a clipped axis); .ci/run installs fonts-noto-cjk
    import os
    import warnings

    from matplotlib import font_manager

    if not any("CJK" in f.name for f in font_manager.fontManager.ttflist):
        if os.environ.get("CI") == "true":
            pytest.fail("no CJK font installed (fonts-noto-cjk, see .ci/run)")
        pytest.skip("no CJK font installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        svg = bar_chart("按类别的故障", {"电源": 3, "顯示器": 2, "打印机 卡纸": 1})
    assert "CJK" in svg and "电源" in svg
