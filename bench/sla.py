"""SLA engine: deadline computation per ticket, and the timer scan with 100,000 open tickets (SQLite).

1. ``plan`` (classification done): the province P1 policy of tests/sla_helpers.py, five targets on the
   24x7, office (9-18, mainland China holidays with make-up days) and duty calendars, for start times
   spread over 2026 (Spring Festival included): deadlines plus warning times. Target: well under 1 ms.
2. A store with ``--n`` open tickets (default 100,000), each with its warning and breach timers (two
   rows a ticket, spread over the next 30 days), and 8 timers due now: one pass of the runner's scan
   (``due`` + ``next_due_in``, the queries the daemon runs each round) and one full round that claims,
   fires (the SLA handlers recompute each ticket) and records the 8. Target: a pass under 1 s.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

from sqlalchemy import insert

from .common import build_app, report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _deadlines(cfg: Any, n: int = 2000) -> dict[str, float]:
    from svcbridge import Priority, Ticket, TicketEvent
    from svcbridge_sla.clock import plan

    policy = cfg.policy("p1-province")
    base = datetime(2026, 1, 2, 1, 0, tzinfo=UTC)
    starts = [base + timedelta(minutes=227 * i) for i in range(n)]  # every hour of the week, Jan to Nov
    tickets = [
        Ticket(id=i, ref=f"SB-{i}", channel="email", priority=Priority.P1, created_at=s,
               events=[TicketEvent(type="received", at=s)])
        for i, s in enumerate(starts)
    ]  # fmt: skip
    out: dict[str, float] = {}
    # first pass: every date new to the calendars (holiday look-ups); second: as a running daemon
    # has them, its dates seen before
    for label in ("cold", "warm"):
        times = []
        for tk in tickets:
            t0 = time.perf_counter()
            p = plan(tk, policy, cfg, tk.created_at)
            times.append(time.perf_counter() - t0)
            assert len(p.deadlines) == 5 and not p.error
        times.sort()
        out[f"plan_{label}_median_ms"] = round(median(times) * 1000, 3)
        out[f"plan_{label}_p99_ms"] = round(times[int(len(times) * 0.99)] * 1000, 3)
        out[f"plan_{label}_max_ms"] = round(times[-1] * 1000, 3)
    return out


def _fill(app: Any, n: int, now: datetime) -> None:
    from svcbridge.store import schema as t

    rows, timers = [], []
    first = app.store.allocate_ticket_ids(n)[0]
    for i in range(n):
        tid = first + i
        rows.append({
            "id": tid, "ref": app.store.ref_for(tid), "state": "in_progress", "channel": "email",
            "subject": f"ticket {i}", "description": "", "contact": {}, "asset": {}, "priority": 1,
            "deadlines": {}, "labels": {}, "created_at": now, "updated_at": now, "sla_policy": "p1-province",
        })  # fmt: skip
        due = (
            now + timedelta(seconds=60 + (i * 2591) % (30 * 86400)) if i >= 8 else now - timedelta(seconds=5)
        )
        for name, at in (("sla_warn:onsite", due - timedelta(minutes=30)), ("sla_breach:onsite", due)):
            if i < 8 and name == "sla_warn:onsite":
                continue
            timers.append({
                "scope": app.store.ref_for(tid), "name": name, "ticket_id": tid, "due_at": at,
                "data": {"target": "onsite", "deadline": at.isoformat()}, "status": "pending", "attempts": 0,
                "runs": 0, "next_attempt_at": at, "created_at": now, "updated_at": now,
            })  # fmt: skip
    with app.store.engine.begin() as conn:
        for k in range(0, n, 5000):
            conn.execute(insert(t.tickets), rows[k : k + 5000])
        for k in range(0, len(timers), 10000):
            conn.execute(insert(t.timers), timers[k : k + 10000])
        for i in range(8):  # the due ones have a trail the handlers read
            conn.execute(
                insert(t.events),
                {
                    "ticket_id": first + i,
                    "type": "received",
                    "at": now - timedelta(days=2),
                    "actor": "x",
                    "data": {},
                },
            )


def run(args: Any) -> dict[str, Any]:
    from sla_helpers import settings
    from svcbridge_sla.settings import SlaSettings

    cfg = SlaSettings(**settings()["plugins"]["sla"])
    out = _deadlines(cfg)
    n = args.n or 100_000
    tmp = Path(tempfile.mkdtemp(prefix="svcb-sla-"))
    app = build_app(tmp, **settings())
    now = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    app.work.clock = lambda: now
    t0 = time.perf_counter()
    _fill(app, n, now)
    fill_s = time.perf_counter() - t0
    names = set(app.work.timer_kinds)
    scans = []
    for _ in range(5):
        t0 = time.perf_counter()
        due = app.work.timers.due(app.work.concurrency, now, names)
        app.work.next_due_in()
        scans.append(time.perf_counter() - t0)
    assert len(due) == 8, len(due)
    t0 = time.perf_counter()
    fired = asyncio.run(app.work.fire_timers())
    round_s = time.perf_counter() - t0
    assert sorted(o.status for o in fired) == ["fired"] * 8, fired
    # the 8 tickets' other targets (their recomputation scheduled them, already past due) fire now;
    # then the scan of an idle store again
    asyncio.run(app.work.drain())
    t0 = time.perf_counter()
    assert app.work.timers.due(app.work.concurrency, now, names) == []
    app.work.next_due_in()
    idle_s = time.perf_counter() - t0
    out.update(
        open_tickets=n,
        timer_rows=app.work.timers.counts(),
        fill_s=round(fill_s, 2),
        scan_pass_ms=round(median(scans) * 1000, 1),
        fire_round_8_ms=round(round_s * 1000, 1),
        idle_pass_ms=round(idle_s * 1000, 1),
    )
    rows = [(k, v) for k, v in out.items()]
    return report("sla", rows, out)
