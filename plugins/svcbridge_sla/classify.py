"""Priority (urgent / severe / normal -> P1-P3) and fault level 1-4 from configurable rules.

A ``[[plugins.sla.rules]]`` entry matches when every condition it names holds (values inside one
condition are alternatives): keywords in subject or body (case-insensitive; Chinese, Traditional
Chinese and English alike: 紧急, 無法使用, down ...), customer, customer tier (the directory's
``labels.tier``), channel and labels (a missed hotline call: channel ``phone``, ``call.kind = missed``),
asset criticality (``labels.asset_criticality`` from the asset register, when present), fault
category (``draft.category``, set by the categoriser). Every matching rule counts and the most
severe result wins: a P1 keyword beats a P3 channel. What matched is kept in ``labels.sla_class``.

Fault levels map onto ``svcbridge.FaultLevel``: 1 critical (service down), 2 major (degraded),
3 minor, 4 question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from svcbridge import FaultLevel, Priority

__all__ = ["FAULT_LEVELS", "Classification", "Rule", "classify", "level_of", "parse_priority"]

FAULT_LEVELS = {1: FaultLevel.CRITICAL, 2: FaultLevel.MAJOR, 3: FaultLevel.MINOR, 4: FaultLevel.QUESTION}
_LEVEL_OF = {v: k for k, v in FAULT_LEVELS.items()}
_WORDS = {"urgent": Priority.P1, "severe": Priority.P2, "normal": Priority.P3, "low": Priority.P4}


def parse_priority(v: Any) -> Priority:
    """``P1``/``urgent``, ``P2``/``severe``, ``P3``/``normal``, ``P4``/``low`` or 1-4."""
    if isinstance(v, Priority):
        return v
    if isinstance(v, int):
        return Priority(v)
    text = str(v).strip().lower()
    if text in _WORDS:
        return _WORDS[text]
    if text.upper() in Priority.__members__:
        return Priority[text.upper()]
    raise ValueError(f"priority {v!r}: use P1-P4 or urgent / severe / normal / low")


def level_of(fault: FaultLevel | None) -> int | None:
    """The 1-4 level of a ticket's ``FaultLevel``."""
    return _LEVEL_OF.get(fault) if fault is not None else None


class Rule(BaseModel):
    """One classification rule; an empty condition is no condition."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    keywords: list[str] = Field(default_factory=list)
    customers: list[str] = Field(default_factory=list)
    tiers: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    labels: dict[str, list[Any]] = Field(
        default_factory=dict, description="label name or dotted path (call.kind) -> accepted values"
    )
    criticality: list[str] = Field(default_factory=list, description="labels.asset_criticality values")
    categories: list[str] = Field(default_factory=list)
    priority: Priority | None = None
    fault_level: int | None = Field(default=None, ge=1, le=4)

    @field_validator("priority", mode="before")
    @classmethod
    def _prio(cls, v: Any) -> Any:
        return None if v is None else parse_priority(v)

    @field_validator("keywords")
    @classmethod
    def _kw(cls, v: list[str]) -> list[str]:
        out = [k.strip().casefold() for k in v if k.strip()]
        if len(out) != len(v):
            raise ValueError("an empty keyword would match every message")
        return out

    def matches(self, facts: Facts) -> bool:
        if self.keywords and not any(k in facts.text for k in self.keywords):
            return False
        if self.customers and facts.customer not in self.customers:
            return False
        if self.tiers and facts.tier not in self.tiers:
            return False
        if self.channels and facts.channel not in self.channels:
            return False
        if self.criticality and facts.criticality not in self.criticality:
            return False
        if self.categories and facts.category not in self.categories:
            return False
        return all(_label(facts.labels, k) in vals for k, vals in self.labels.items())


def _label(labels: dict[str, Any], path: str) -> Any:
    """A label by name, or inside one by a dotted path: ``call.kind`` (the phone plugin's label)."""
    found: Any = labels
    for part in path.split("."):
        if not isinstance(found, dict):
            return None
        found = found.get(part)
    return found


@dataclass
class Facts:
    """What the rules look at, read once from a draft or a ticket."""

    text: str
    customer: str | None
    tier: str | None
    channel: str
    criticality: str | None
    category: str | None
    labels: dict[str, Any]


@dataclass
class Classification:
    priority: Priority
    fault_level: int
    matched: list[str] = field(default_factory=list)

    @property
    def fault(self) -> FaultLevel:
        return FAULT_LEVELS[self.fault_level]


def facts_of(
    subject: str, body: str, customer: str | None, channel: str, category: str | None, labels: dict[str, Any]
) -> Facts:
    tier = labels.get("tier")
    crit = labels.get("asset_criticality")
    return Facts(
        text=f"{subject}\n{body[:20000]}".casefold(),  # a 2 MB pasted log is not read for keywords
        customer=customer,
        tier=str(tier) if tier is not None else None,
        channel=channel,
        criticality=str(crit) if crit is not None else None,
        category=category,
        labels=labels,
    )


def classify(
    facts: Facts, rules: list[Rule], default_priority: Priority, default_level: int
) -> Classification:
    """The most severe priority and fault level of all matching rules (defaults when none match)."""
    prio, level, matched = default_priority, default_level, []
    for rule in rules:
        if rule.matches(facts):
            matched.append(rule.name)
            if rule.priority is not None:
                prio = min(prio, rule.priority)
            if rule.fault_level is not None:
                level = min(level, rule.fault_level)
    return Classification(prio, level, matched)
