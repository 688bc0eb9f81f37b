"""SLA policies: which targets a ticket is promised, each on a named calendar, chosen by rules.

A ``[[plugins.sla.policies]]`` entry names its conditions (customers, tiers, priorities, fault
levels, regions, sites, channels: all must hold, values are alternatives) and its targets; the
FIRST policy whose conditions hold is the ticket's (write the specific ones first, a catch-all
last). Targets: ``acknowledge``, ``first_response``, ``callback``, ``solution``, ``onsite``,
``restoration``, ``resolution`` and ``unsolved`` (escalate when not resolved after this long: no
warning, only the escalation). Each target has ``within`` (``10m``, ``4h``, ``5d`` = five working
days of its calendar), ``calendar`` (a name under ``[plugins.sla.calendars]``; ``24x7`` is built
in), ``pause_in`` (states that stop its clock; default waiting_customer and waiting_parts) and
``warn_at`` (share of ``within`` at which a warning fires; the plugin's default when unset).

"On site within 1 h in the city, 24 h elsewhere in the province" is two policies: one with
``regions = ["city"]`` and ``onsite.within = "1h"``, the next with ``onsite.within = "24h"``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from svcbridge import Priority, TicketState

from .calendars import BusinessCalendar, open_time, parse_span
from .classify import parse_priority

__all__ = ["TARGETS", "Policy", "Target", "select_policy"]

TARGETS = (
    "acknowledge",
    "first_response",
    "callback",
    "solution",
    "onsite",
    "restoration",
    "resolution",
    "unsolved",
)
DEFAULT_PAUSE = [TicketState.WAITING_CUSTOMER, TicketState.WAITING_PARTS]


class Target(BaseModel):
    """One promise of a policy."""

    model_config = ConfigDict(extra="forbid")
    within: str = Field(description="10m, 4h, 1h30m; 5d = five working days of the calendar")
    calendar: str = "24x7"
    pause_in: list[TicketState] = Field(default_factory=lambda: list(DEFAULT_PAUSE))
    warn_at: float | None = Field(default=None, gt=0, lt=1)

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, v: Any) -> Any:
        days, rest = parse_span(v)
        if days <= 0 and rest.total_seconds() <= 0:
            raise ValueError("a target needs a positive time")
        return str(v) if isinstance(v, int | float) else v

    def allowed(self, cal: BusinessCalendar) -> Any:
        """The open time this target allows on ``cal`` (a timedelta)."""
        return open_time(self.within, cal)


class Policy(BaseModel):
    """One ``[[plugins.sla.policies]]`` entry."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    customers: list[str] = Field(default_factory=list)
    tiers: list[str] = Field(default_factory=list)
    priorities: list[Priority] = Field(default_factory=list)
    fault_levels: list[int] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    sites: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    targets: dict[str, Target]
    followup_call_after: str | None = Field(
        default=None, description="a follow-up call is due this long after resolution (default: the plugin's)"
    )

    @field_validator("priorities", mode="before")
    @classmethod
    def _prios(cls, v: Any) -> Any:
        return [parse_priority(x) for x in v] if isinstance(v, list) else v

    @field_validator("fault_levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if any(x < 1 or x > 4 for x in v):
            raise ValueError("fault levels are 1 to 4")
        return v

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: dict[str, Target]) -> dict[str, Target]:
        bad = sorted(set(v) - set(TARGETS))
        if bad:
            raise ValueError(f"unknown target(s) {bad}; known: {', '.join(TARGETS)}")
        if not v:
            raise ValueError("a policy needs at least one target")
        return v

    def matches(self, f: dict[str, Any]) -> bool:
        checks = (
            (self.customers, f.get("customer")),
            (self.tiers, f.get("tier")),
            (self.priorities, f.get("priority")),
            (self.fault_levels, f.get("fault_level")),
            (self.regions, f.get("region")),
            (self.sites, f.get("site")),
            (self.channels, f.get("channel")),
        )
        return all(not want or have in want for want, have in checks)


def select_policy(policies: list[Policy], facts: dict[str, Any]) -> Policy | None:
    """The first policy whose conditions hold for ``facts`` (customer, tier, priority, fault_level,
    region, site, channel), or None."""
    for p in policies:
        if p.matches(facts):
            return p
    return None
