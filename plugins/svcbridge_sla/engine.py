"""The SLA clock of one ticket, read from its event trail: deadlines, what was met, what is late.

Everything is derived from the trail, never from a running counter, so a restart, a replayed
helpdesk webhook or a report for a past month all see the same numbers:

- the clock starts at the ``received`` event (``draft.received_at`` at intake);
- ``status_changed`` events give the states over time: a target's clock stops while the ticket is
  in one of its ``pause_in`` states;
- a target is met by the first event that answers it (``MET_BY``): the acknowledgement notice for
  ``acknowledge``, an agent reply for ``first_response``, the state ``on_site`` or an ``onsite``
  milestone for ``onsite``, ``resolved`` / ``closed`` for ``resolution`` ... A ``sla_milestone``
  event carries the real time the technician reported (``data.at``), which may be earlier than
  the event was recorded.

``evaluate`` answers per target: the deadline (UTC, or None while the clock is stopped and the
deadline cannot be known), when it was met, business time used, and whether it was on time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from svcbridge import Ticket, TicketEvent, TicketState

from .calendars import CalendarDataMissing, Interval, add_business_time, business_elapsed
from .policy import Policy, Target
from .settings import SlaSettings

__all__ = [
    "MET_BY",
    "TargetState",
    "evaluate",
    "met_since",
    "milestone_time",
    "pause_states",
    "policy_facts",
    "start_of",
]

# target -> (milestones that meet it, states that meet it, event types that meet it)
MET_BY: dict[str, tuple[set[str], set[str], set[str]]] = {
    "acknowledge": ({"acknowledge"}, {"acknowledged", "in_progress", "on_site"}, {"notified", "agent_reply"}),
    "first_response": ({"response"}, set(), {"agent_reply"}),
    "callback": ({"callback"}, set(), set()),
    "solution": ({"solution"}, set(), set()),
    "onsite": ({"onsite"}, {"on_site"}, set()),
    "restoration": ({"restored", "resolved"}, {"resolved", "closed"}, set()),
    "resolution": ({"resolved"}, {"resolved", "closed"}, set()),
    "unsolved": ({"restored", "resolved"}, {"resolved", "closed"}, set()),
}
MILESTONES = ("acknowledge", "response", "callback", "solution", "onsite", "restored", "resolved")


@dataclass
class TargetState:
    name: str
    target: Target
    deadline: datetime | None
    met_at: datetime | None
    used: timedelta  # business time used (until met, or until now)
    allowed: timedelta  # the target's time in open time ("5d" on 9-18 is 45 h)

    @property
    def on_time(self) -> bool | None:
        """True/False once met; None while open."""
        return None if self.met_at is None else self.used <= self.allowed

    def breached(self, now: datetime) -> bool:
        return self.met_at is None and self.deadline is not None and now >= self.deadline


def start_of(ticket: Ticket) -> datetime:
    """When the clock started: the ``received`` event (the source's receive time), else creation."""
    for ev in ticket.events:
        if ev.type == "received":
            return ev.at
    return ticket.created_at


def milestone_time(ev: TicketEvent) -> datetime:
    """A milestone's real time (``data.at``, as the technician reported it), else the event's."""
    at = ev.data.get("at")
    if isinstance(at, str):
        try:
            parsed = datetime.fromisoformat(at)
            if parsed.tzinfo is not None:
                return parsed
        except ValueError:
            pass
    return ev.at


def _states(ticket: Ticket, start: datetime) -> list[tuple[datetime, str]]:
    out = [(start, TicketState.NEW.value)]
    for ev in ticket.events:
        if ev.type == "status_changed" and ev.data.get("to"):
            out.append((ev.at, str(ev.data["to"])))
        elif ev.type == "reopened":  # a customer's message on a closed ticket: back to work
            out.append((ev.at, TicketState.IN_PROGRESS.value))
    out.sort(key=lambda x: x[0])
    return out


def _pauses(states: list[tuple[datetime, str]], pause_in: set[str]) -> list[Interval]:
    found: list[Interval] = []
    since: datetime | None = None
    for at, state in states:
        if state in pause_in and since is None:
            since = at
        elif state not in pause_in and since is not None:
            found.append((since, at))
            since = None
    if since is not None:
        found.append((since, None))
    return found


# targets a reopening undoes: the ticket is not solved after all, and its resolved time is no work
REOPENABLE = {"restoration", "resolution", "unsolved"}
_DONE = {TicketState.RESOLVED.value, TicketState.CLOSED.value}


def pause_states(name: str, target: Target) -> set[str]:
    """States that stop ``target``'s clock: its ``pause_in``, and resolved / closed for a target a
    reopening can undo (the time between resolution and reopening is nobody's work)."""
    found = {s.value for s in target.pause_in}
    return found | _DONE if name in REOPENABLE else found


def met_since(name: str, ticket: Ticket) -> datetime | None:
    """From when an ``sla_met`` of target ``name`` still stands: after the last reopening for a
    target a reopening undoes (an earlier one was undone), else always (None)."""
    if name not in REOPENABLE:
        return None
    return _reopened_at(_states(ticket, start_of(ticket)))


def _reopened_at(states: list[tuple[datetime, str]]) -> datetime | None:
    """The last time the ticket went from resolved / closed back to work, if it did."""
    last = None
    for (_, before), (at, after) in pairwise(states):
        if before in _DONE and after not in _DONE:
            last = at
    return last


def _met_at(name: str, ticket: Ticket, states: list[tuple[datetime, str]]) -> datetime | None:
    milestones, met_states, met_types = MET_BY[name]
    times = [at for at, s in states if s in met_states]
    for ev in ticket.events:
        if ev.type == "sla_milestone" and ev.data.get("milestone") in milestones:
            times.append(milestone_time(ev))
        elif ev.type in met_types:
            if ev.type == "notified" and name == "acknowledge" and not _is_ack(ev):
                continue
            times.append(ev.at)
    reopened = _reopened_at(states) if name in REOPENABLE else None
    if reopened is not None:  # solved before a reopening does not count
        times = [at for at in times if at >= reopened]
    return min(times) if times else None


def _is_ack(ev: TicketEvent) -> bool:
    template = str(ev.data.get("template") or ev.data.get("detail") or "")
    return "ack" in template or not template  # an unnamed notice to the customer answers too


def evaluate(ticket: Ticket, policy: Policy, cfg: SlaSettings, now: datetime) -> list[TargetState]:
    """Every target of ``policy`` for ``ticket`` at ``now`` (see the module docstring)."""
    start = start_of(ticket)
    states = _states(ticket, start)
    out = []
    for name, target in policy.targets.items():
        cal = cfg.calendar(target.calendar)
        pauses = _pauses(states, pause_states(name, target))
        met = _met_at(name, ticket, states)
        allowed = target.allowed(cal)
        try:
            deadline: datetime | None = add_business_time(start, allowed, cal, pauses)
        except CalendarDataMissing:
            raise  # not a stopped clock: the caller says why there is no deadline
        except ValueError:  # stopped with no end yet (waiting for parts): unknown until it runs again
            deadline = None
        until = met or now
        used = business_elapsed(start, until, cal, pauses) if until > start else timedelta(0)
        out.append(TargetState(name, target, deadline, met, used, allowed))
    return out


def policy_facts(
    customer: str | None,
    priority: int,
    fault_level: int | None,
    channel: str,
    labels: dict[str, Any],
    site: Any,
) -> dict[str, Any]:
    """What policies select on."""
    return {
        "customer": customer,
        "tier": labels.get("tier"),
        "priority": priority,
        "fault_level": fault_level,
        "region": labels.get("region"),
        "site": site or labels.get("site"),
        "channel": channel,
    }
