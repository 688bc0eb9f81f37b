"""Monthly reports computed from the event trail: ``svcbridge report sla|faults|satisfaction``.

``build(store, kind, month, customer)`` returns a plain dict (the JSON format is exactly it);
``render(data, fmt)`` turns it into a terminal table, CSV, JSON or a self-contained HTML page whose
charts are inline SVG drawn by matplotlib (no script, no CDN, nothing fetched when it is opened).

- ``sla``: compliance per target, priority, region and customer; the service-timeliness rate
  (tickets whose every decided target was met) against the promised 95 %; response and on-site
  time distributions; the breaches.
- ``faults``: faults by category, model, part and fault level; repeat failures of one unit.
- ``satisfaction``: survey replies (score 1-5, comments), response rate, first-contact resolution,
  follow-up calls and their outcomes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import utcnow
from ..store.repo import Store
from .compute import faults_report, satisfaction_report, sla_report
from .render import render

__all__ = ["build", "render"]

KINDS = {"sla": sla_report, "faults": faults_report, "satisfaction": satisfaction_report}


def build(
    store: Store,
    kind: str,
    month: str,
    customer: str | None = None,
    tz: str = "UTC",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report ``kind`` for ``month`` (``YYYY-MM``) as of ``now`` (an open target past its deadline
    counts as missed); ValueError for a bad month or kind."""
    if kind not in KINDS:
        raise ValueError(f"no report {kind!r}: one of {', '.join(KINDS)}")
    from .trail import month_tickets

    tickets = month_tickets(store, month, customer, tz)
    data = KINDS[kind](tickets, now or utcnow())
    return {"report": kind, "month": month, "customer": customer, "tz": tz, "tickets": len(tickets), **data}
