"""What the SLA timers do when they fire: warn, escalate along the supervisor chain, de-escalate.

Every handler first recomputes the ticket's plan from its trail (``clock.plan``): a target met in the
meantime is recorded as met and nothing is sent; a deadline that moved (the clock was paused) moves
the timer instead. Otherwise:

- ``sla_warn:<target>``: an ``sla_warning`` event and a note for the agents;
- ``sla_breach:<target>``: an ``sla_breached`` event, the priority raised one step in svcbridge and
  (through the ticket change) in the helpdesk, an ``sla_escalated`` event and a notice to the chain's
  first supervisors by mail or SMS through the outbox; the next step of the chain is a timer
  ``sla_escalate:<target>`` at its ``after``;
- ``sla_escalate:<target>``: the next supervisors, while the target is still open.

A timer that fires late (the daemon was down) says so: ``late_s`` in its event and in the note.
When a breached target is met later, ``sla_met`` (on_time false) is followed by ``sla_deescalated``
and the priority goes back to what it was before the escalation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from svcbridge import Notification, Priority, Ticket, TicketChange, TicketEvent, Timer, WorkQueue

from .calendars import add_business_time, parse_duration
from .clock import ACTOR, Plan, plan, recorded, within_text
from .settings import SlaSettings, Supervisor

__all__ = ["deescalations", "fire"]
TOLERANCE = timedelta(seconds=1)


def _policy(ticket: Ticket, cfg: SlaSettings) -> Any:
    return cfg.policy(ticket.sla_policy)


def base_change(ticket: Ticket, p: Plan, events: list[TicketEvent]) -> TicketChange:
    """The recomputation's part of a change: deadlines and the events not yet recorded."""
    evs = [*events, *p.events]
    evs += deescalations(ticket, p, evs)
    if p.error:  # a calendar without data for the year: keep what is stored, say why nothing moves
        return TicketChange(events=evs, labels={"sla_error": p.error})
    # deadlines of other plugins (the phone plugin's callback_by) stay; this policy's are replaced
    owned = {f"{name}_by" for name in p.policy.targets} if p.policy else set()
    kept = {k: v for k, v in ticket.deadlines.items() if k not in owned}
    change = TicketChange(deadlines={**kept, **p.deadlines}, events=evs)
    if ticket.labels.get("sla_error"):
        change.labels = {"sla_error": None}
    back = _priority_back(ticket, evs)
    if back is not None:
        change.priority = back
        change.labels = {**change.labels, "sla_escalated": None}
    return change


def deescalations(ticket: Ticket, p: Plan, new: list[TicketEvent]) -> list[TicketEvent]:
    """``sla_deescalated`` for each escalated target met (late) in this change."""
    out = []
    for ev in new:
        if ev.type == "sla_met" and recorded(ticket, "sla_escalated", ev.data["target"]):
            data = {"target": ev.data["target"], "met_at": ev.data["met_at"], "on_time": ev.data["on_time"]}
            out.append(TicketEvent(type="sla_deescalated", at=ev.at, actor=ACTOR, data=data))
    return out


def _priority_back(ticket: Ticket, evs: list[TicketEvent]) -> Priority | None:
    esc = ticket.labels.get("sla_escalated") or {}
    if not esc or not any(e.type == "sla_deescalated" for e in evs):
        return None
    met = {e.data["target"] for e in [*ticket.events, *evs] if e.type == "sla_met"}
    if set(esc.get("targets", [])) - met:  # another escalated target is still open
        return None
    return Priority(int(esc.get("priority_before", int(ticket.priority))))


def fire(kind: str, timer: Timer, work: WorkQueue, cfg: SlaSettings) -> TicketChange | None:
    """The handler of every SLA timer (``kind`` is warn, breach or escalate)."""
    ticket = timer.ticket
    if ticket is None:
        return None
    target = str(timer.data.get("target", ""))
    policy = _policy(ticket, cfg)
    p = plan(ticket, policy, cfg, timer.fired_at)
    ts = p.state(target)
    if ts is None or ts.met_at is not None or ts.deadline is None:
        p.apply_timers(work)  # met, stopped or no longer promised: record that, send nothing
        return base_change(ticket, p, [])
    late = round(timer.late.total_seconds(), 3)
    data: dict[str, Any] = {
        "target": target,
        "policy": ticket.sla_policy,
        "deadline": ts.deadline.isoformat(),
        "due_at": timer.due_at.isoformat(),
        "late_s": late,
    }
    late_text = f" (fired {within_text(timer.late)} late: svcbridge was not running)" if late > 60 else ""
    if kind == "warn":
        # early (moved), already warned, or the deadline is past too (down until after it): the
        # breach says it all, a warning now would only be noise
        if (
            timer.fired_at + TOLERANCE < timer.due_at
            or recorded(ticket, "sla_warning", target)
            or timer.fired_at >= ts.deadline
        ):
            p.apply_timers(work)
            return base_change(ticket, p, [])
        ev = TicketEvent(type="sla_warning", at=timer.fired_at, actor=ACTOR, data=data)
        p = plan(ticket, policy, cfg, timer.fired_at, [ev])
        p.apply_timers(work)
        change = base_change(ticket, p, [ev])
        change.note = (
            f"SLA warning: {target} is due at {ts.deadline.isoformat(timespec='minutes')}{late_text}"
        )
        return change
    if timer.fired_at + TOLERANCE < ts.deadline:  # the deadline moved on (a pause): the plan moves us
        p.apply_timers(work)
        return base_change(ticket, p, [])
    if kind == "breach":
        if recorded(ticket, "sla_breached", target):
            p.apply_timers(work)
            return base_change(ticket, p, [])
        return _breach(ticket, target, timer, work, cfg, data, late_text)
    return _escalate(ticket, target, int(timer.data.get("step", 1)), timer, work, cfg, data, late_text)


def _breach(
    ticket: Ticket,
    target: str,
    timer: Timer,
    work: WorkQueue,
    cfg: SlaSettings,
    data: dict[str, Any],
    late: str,
) -> TicketChange:
    breached = TicketEvent(type="sla_breached", at=timer.fired_at, actor=ACTOR, data=data)
    p = plan(ticket, _policy(ticket, cfg), cfg, timer.fired_at, [breached])
    p.apply_timers(work)
    change = base_change(ticket, p, [breached])
    raised = Priority(max(1, int(ticket.priority) - 1))
    esc = dict(ticket.labels.get("sla_escalated") or {})
    esc.setdefault("priority_before", int(ticket.priority))
    esc["targets"] = sorted({*esc.get("targets", []), target})
    change.labels = {"sla_escalated": esc}
    change.priority = raised
    step_change = _escalate(ticket, target, 0, timer, work, cfg, data, late)
    change.events += step_change.events
    change.notifications = step_change.notifications
    change.note = (
        f"SLA breached: {target} was due at {data['deadline'][:16]}; priority raised to P{int(raised)}{late}"
    )
    return change


def _steps(cfg: SlaSettings) -> list[tuple[timedelta, list[Supervisor]]]:
    by: dict[timedelta, list[Supervisor]] = {}
    for s in cfg.escalation:
        by.setdefault(parse_duration(s.after), []).append(s)
    return sorted(by.items(), key=lambda x: x[0])


def _escalate(
    ticket: Ticket,
    target: str,
    step: int,
    timer: Timer,
    work: WorkQueue,
    cfg: SlaSettings,
    data: dict[str, Any],
    late: str,
) -> TicketChange:
    steps = _steps(cfg)
    change = TicketChange()
    if step >= len(steps):
        return change
    _after, people = steps[step]
    text = (
        f"{ticket.ref}: SLA target '{target}' breached (due {data['deadline'][:16]} UTC, policy "
        f"{ticket.sla_policy}); priority P{int(ticket.priority)}, state {ticket.state.value}.{late}"
    )
    for s in people:
        change.notifications.append(
            Notification(
                channel=s.channel,
                template="sla_escalation",
                to=s.to,
                subject=f"[{ticket.ref}] SLA breached: {target}",
                body=text,
                automatic=False,  # a supervisor's alarm is never rate-limited away
                data={"target": target, "step": step, "supervisor": s.name},
                key=f"{ticket.ref}:sla_escalation:{target}:{step}:{s.to}",
            )
        )
    names = [s.name for s in people]
    change.events.append(
        TicketEvent(
            type="sla_escalated", at=timer.fired_at, actor=ACTOR, data={**data, "step": step, "to": names}
        )
    )
    if step + 1 < len(steps):
        nxt, _ = steps[step + 1]
        policy = cfg.policy(ticket.sla_policy)
        tgt = policy.targets.get(target) if policy else None
        cal = cfg.calendar(tgt.calendar if tgt else "24x7")
        from datetime import datetime

        deadline = datetime.fromisoformat(data["deadline"])
        at = add_business_time(deadline, nxt, cal)
        work.schedule(f"sla_escalate:{target}", at, {**data, "step": step + 1})
    if step > 0:
        change.note = f"SLA escalation step {step + 1}: {', '.join(names)} told{late}"
    return change
