"""``[plugins.sla]``: calendars, classification rules, policies, escalation chain, technicians, surveys.

Checked when the file is loaded: a policy naming an unknown calendar, a bad duration, window or time
zone is a configuration error with its path, not a surprise at the first ticket.
"""

from __future__ import annotations

from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from svcbridge import PluginSettings, Priority

from .calendars import BusinessCalendar, parse_duration
from .classify import Rule, parse_priority
from .policy import Policy

__all__ = ["SlaSettings", "Supervisor"]

ALWAYS = BusinessCalendar(name="24x7", always=True)


def e164(raw: str) -> str:
    try:
        num = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        num = None
    if num is None or not phonenumbers.is_possible_number(num):
        raise ValueError(f"not an international number (E.164): {raw!r}")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


class Supervisor(BaseModel):
    """One step of the escalation chain: who is told, on which channel, how long after the breach."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    channel: str = Field(default="email", description="email or sms: a registered notifier's channel")
    to: str = Field(min_length=3, max_length=320, description="mail address or E.164 number")
    after: str = Field(default="0m", description="after the breach (business time of the target's calendar)")

    @field_validator("after")
    @classmethod
    def _after(cls, v: str) -> str:
        parse_duration(v)
        return v


class SlaSettings(PluginSettings):
    """The SLA engine's table; see docs/sla.md."""

    model_config = ConfigDict(extra="forbid")
    warn_at: float = Field(default=0.8, gt=0, lt=1, description="share of each target at which to warn")
    default_priority: Priority = Priority.P3
    default_fault_level: int = Field(default=3, ge=1, le=4)
    calendars: dict[str, BusinessCalendar] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    policies: list[Policy] = Field(default_factory=list)
    escalation: list[Supervisor] = Field(default_factory=list)
    technicians: list[str] = Field(default_factory=list, description="phones allowed to report milestones")
    survey: bool = Field(default=True, description="ask for a 1-5 score when a ticket is resolved")
    survey_window: str | None = Field(
        default="7d",
        description="a bare SMS score (no SB- reference) from the customer's number answers the survey "
        "sent this long before (plain time, d = 24 h); none: only answers quoting the reference count",
    )
    followup_call_after: str | None = Field(
        default="1d", description="a follow-up call is due this long after resolution; none: no call"
    )

    @field_validator("followup_call_after", "survey_window")
    @classmethod
    def _after(cls, v: str | None) -> str | None:
        if v:
            parse_duration(v)
        return v or None

    @field_validator("default_priority", mode="before")
    @classmethod
    def _prio(cls, v: Any) -> Any:
        return parse_priority(v)

    @field_validator("technicians")
    @classmethod
    def _phones(cls, v: list[str]) -> list[str]:
        return [e164(x) for x in v]

    @field_validator("calendars", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        if isinstance(v, dict):  # the table's key is the calendar's name
            return {k: {**c, "name": k} if isinstance(c, dict) else c for k, c in v.items()}
        return v

    @model_validator(mode="after")
    def _check(self) -> SlaSettings:
        for p in self.policies:
            for name, target in p.targets.items():
                if target.calendar not in self.calendar_names:
                    raise ValueError(
                        f"policy {p.name!r} target {name!r}: no calendar {target.calendar!r} "
                        f"(known: {', '.join(sorted(self.calendar_names))})"
                    )
        names = [p.name for p in self.policies]
        if len(names) != len(set(names)):
            raise ValueError("policy names must be unique")
        return self

    @property
    def calendar_names(self) -> set[str]:
        return {"24x7", *self.calendars}

    def calendar(self, name: str) -> BusinessCalendar:
        return self.calendars.get(name) or ALWAYS

    def policy(self, name: str | None) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)
