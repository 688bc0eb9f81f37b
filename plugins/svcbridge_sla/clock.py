"""From a ticket's evaluated targets to what is stored: deadlines, ``sla_met`` events and timers.

``plan`` is the one recomputation: at intake (classify), after every state change or milestone (the
``sla.recompute`` job) and whenever a timer fires. It returns the deadlines still open (stored on the
ticket as ``<target>_by``), the ``sla_met`` events not recorded yet, and the timers to set or cancel:
``sla_warn:<target>`` at ``warn_at`` of the target's time and ``sla_breach:<target>`` at its
deadline, each only while the target is open and not already warned / breached (a recorded
warning is never scheduled again, so a recomputation cannot make a timer fire twice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from svcbridge import Ticket, TicketEvent, WorkQueue

from .calendars import CalendarDataMissing, add_business_time
from .engine import TargetState, _pauses, _states, evaluate, met_since, pause_states, start_of
from .policy import Policy
from .settings import SlaSettings

__all__ = ["Plan", "plan", "recorded", "timer_names"]

log = structlog.get_logger("svcbridge_sla")
ACTOR = "sla"


def timer_names(target: str) -> tuple[str, str, str]:
    return f"sla_warn:{target}", f"sla_breach:{target}", f"sla_escalate:{target}"


def recorded(
    ticket: Ticket,
    etype: str,
    target: str,
    extra: list[TicketEvent] = (),  # type: ignore[assignment]
    since: datetime | None = None,
) -> bool:
    """Whether an ``etype`` event for ``target`` is in the trail (or about to be written), at or
    after ``since`` when given (a reopening undid an earlier ``sla_met``)."""
    return any(
        e.type == etype and e.data.get("target") == target and (since is None or e.at >= since)
        for e in [*ticket.events, *extra]
    )


@dataclass
class Plan:
    policy: Policy | None
    states: list[TargetState] = field(default_factory=list)
    deadlines: dict[str, datetime] = field(default_factory=dict)
    events: list[TicketEvent] = field(default_factory=list)
    schedule: dict[str, tuple[datetime, dict[str, Any]]] = field(default_factory=dict)
    cancel: set[str] = field(default_factory=set)
    error: str | None = None

    def apply_timers(self, work: WorkQueue) -> None:
        for name, (at, data) in sorted(self.schedule.items()):
            work.schedule(name, at, data)
        for name in sorted(self.cancel):
            work.cancel(name)

    def state(self, target: str) -> TargetState | None:
        return next((s for s in self.states if s.name == target), None)


def plan(
    ticket: Ticket,
    policy: Policy | None,
    cfg: SlaSettings,
    now: datetime,
    extra: list[TicketEvent] = (),  # type: ignore[assignment]
) -> Plan:
    """Deadlines, new ``sla_met`` events and timer moves for ``ticket`` under ``policy`` at ``now``."""
    out = Plan(policy)
    if policy is None:
        return out
    try:
        out.states = evaluate(ticket, policy, cfg, now)
    except CalendarDataMissing as exc:  # intake goes on without deadlines; the error is shown
        log.error("sla_calendar_data_missing", ticket=ticket.ref, error=str(exc))
        out.error = str(exc)
        return out
    start = start_of(ticket)
    states = _states(ticket, start)
    for ts in out.states:
        warn, breach, esc = timer_names(ts.name)
        if ts.met_at is not None:
            out.cancel.update({warn, breach, esc})  # a pending escalation step is moot too
            since = met_since(ts.name, ticket)
            if not recorded(ticket, "sla_met", ts.name, extra, since):
                out.events.append(
                    TicketEvent(
                        type="sla_met",
                        at=now,
                        actor=ACTOR,
                        data={
                            "target": ts.name,
                            "policy": policy.name,
                            "met_at": ts.met_at.isoformat(),
                            "deadline": ts.deadline.isoformat() if ts.deadline else None,
                            "used_s": ts.used.total_seconds(),
                            "allowed_s": ts.allowed.total_seconds(),
                            "on_time": ts.on_time,
                        },
                    )
                )
            continue
        if ts.deadline is None:  # the clock is stopped: nothing can fire until it runs again
            out.cancel.update({warn, breach})
            continue
        out.deadlines[f"{ts.name}_by"] = ts.deadline
        data = {"target": ts.name, "policy": policy.name, "deadline": ts.deadline.isoformat()}
        if not recorded(ticket, "sla_breached", ts.name, extra):
            out.schedule[breach] = (ts.deadline, data)
        share = ts.target.warn_at or cfg.warn_at
        if ts.name != "unsolved" and not recorded(ticket, "sla_warning", ts.name, extra):
            cal = cfg.calendar(ts.target.calendar)
            pauses = _pauses(states, pause_states(ts.name, ts.target))
            try:
                at = add_business_time(start, ts.allowed * share, cal, pauses)
            except ValueError:  # paused with no end (a missing year failed the deadline already)
                at = None
            if at is not None and at < ts.deadline:
                out.schedule[warn] = (at, {**data, "share": share})
    return out


def within_text(d: timedelta) -> str:
    s = int(d.total_seconds())
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m"
