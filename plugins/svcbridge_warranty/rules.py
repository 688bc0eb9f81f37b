"""The warranty rules engine: terms per product line and part category, answered per part and for the unit.

The terms these contracts use, configured in TOML (``[plugins.assets.terms.<product line>]``,
``default`` for every line not named): main parts 3 years, other parts 1 year, the chassis 6 months.
A part's period starts:

- for a part the unit shipped with: the **invoice date**, else the **production date plus a grace**
  (``production_grace_days``), else it is unknown (never "out": an unknown start is said so);
- for a **replacement** (``replaced_from``): its install date with a **new** full term, or the
  **remaining** period of the part it replaced (``replacement = "new" | "remaining"``; that part's
  own period when the unit lists it by part number or serial, else the category's term), at least
  ``replacement_minimum_days`` from the install date;
- for a part fitted in a **paid repair**: its install date plus ``paid_repair_months`` (3).
  Either of these without its install date is ``unknown`` (never the unit's term).

An **exclusion** an agent applied (misuse, unauthorised repair or modification, force majeure,
consumables) on the unit or one part category makes that part ``excluded``. The unit's answer is its
``unit_category`` part (default ``main``): in when that is in, its end date the unit's.

Dates are calendar dates in the contract's time zone: "today" is the date there now, a period of
months ends on the same day of the month (clamped: 2024-02-29 + 1 year = 2025-02-28, 08-31 + 6
months = 02-28/29), and the end date is the last covered day.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from svcbridge import AssetPart, AssetRecord

_TERM = re.compile(r"^\s*(\d{1,3})\s*(y|m|d)\s*$", re.IGNORECASE)


def parse_term(text: str) -> tuple[int, str]:
    """``"3y"`` -> ``(3, "y")``; years, months or days; ValueError otherwise."""
    m = _TERM.match(text)
    if not m:
        raise ValueError(f"warranty term {text!r}: a number and y, m or d (3y, 6m, 90d)")
    return int(m[1]), m[2].lower()


def add_term(start: date, term: str) -> date:
    """The last covered day of a period of ``term`` from ``start`` (its anniversary, clamped to the
    month's end: 2024-02-29 + 1y = 2025-02-28)."""
    n, unit = parse_term(term)
    if unit == "d":
        return start + timedelta(days=n)
    months = n * 12 if unit == "y" else n
    y, m = divmod(start.month - 1 + months, 12)
    year, month = start.year + y, m + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def today_in(tz: str, now: datetime) -> date:
    """The calendar date in the contract's time zone at ``now`` (aware)."""
    return now.astimezone(ZoneInfo(tz)).date()


@dataclass(frozen=True)
class Terms:
    """What the engine needs from the settings (``WarrantySettings.terms_model``)."""

    terms: dict[str, dict[str, str]]  # product line -> part category -> term ("default" line; "other")
    production_grace_days: int = 90
    replacement: str = "new"  # new | remaining
    replacement_minimum_days: int = 0
    paid_repair_months: int = 3
    unit_category: str = "main"

    def term_for(self, product_line: str | None, category: str) -> tuple[str, str]:
        """``(term, rule name)``: the line's term for the category, else its ``other`` term, else the
        default line's (``server.main``, ``default.other``)."""
        for line in ([product_line.lower()] if product_line else []) + ["default"]:
            table = self.terms.get(line, {})
            if category in table:
                return table[category], f"{line}.{category}"
        for line in ([product_line.lower()] if product_line else []) + ["default"]:
            table = self.terms.get(line, {})
            if "other" in table:
                return table["other"], f"{line}.other"
        raise ValueError(f"no warranty term for {category!r} (add 'other' to [plugins.assets.terms.default])")


def unit_start(unit: AssetRecord, terms: Terms) -> tuple[date | None, str]:
    """When the unit's warranty starts and why: ``invoice``, ``production+<n>d``, or ``unknown``."""
    if unit.invoice_date:
        return unit.invoice_date, "invoice"
    if unit.production_date:
        grace = terms.production_grace_days
        return unit.production_date + timedelta(days=grace), f"production+{grace}d"
    return None, "unknown"


def _excluded(exclusions: list[dict[str, Any]], category: str) -> dict[str, Any] | None:
    for ex in exclusions:
        if ex.get("part") in (None, "", category):
            return ex
    return None


def part_answer(
    unit: AssetRecord,
    part: AssetPart,
    terms: Terms,
    today: date,
    exclusions: list[dict[str, Any]],
    replaced: dict[str, AssetPart] | None = None,
) -> dict[str, Any]:
    """One part's answer: status (in | out | excluded | unknown), start, end, rule, start_source."""
    base: dict[str, Any] = {"category": part.category, "part_number": part.part_number, "source": "rules"}
    start: date | None
    end: date | None
    new_term = part.replaced_from and terms.replacement == "new"
    if (part.paid_repair or new_term) and not part.installed:
        # its period counts from the day it was fitted: the unit's invoice would be a guess either way
        # (a wrong "in" for a paid-repair part, a wrong "out" and paid service for a new-term one)
        if part.paid_repair:
            rule = f"paid_repair.{terms.paid_repair_months}m"
        else:
            rule = terms.term_for(unit.product_line, part.category)[1] + ".replacement_new"
        start, end, why = None, None, "installed date missing"
    elif part.paid_repair and part.installed:
        start, why = part.installed, "installed (paid repair)"
        end, rule = (
            add_term(start, f"{terms.paid_repair_months}m"),
            f"paid_repair.{terms.paid_repair_months}m",
        )
    else:
        term, rule = terms.term_for(unit.product_line, part.category)
        start, why = unit_start(unit, terms)
        end = add_term(start, term) if start else None
        if part.replaced_from and part.installed:
            if terms.replacement == "new" or end is None:
                start, why, end = (
                    part.installed,
                    "installed (replacement, new term)",
                    add_term(part.installed, term),
                )
                rule += ".replacement_new"
            else:  # the remaining period of the part it replaced, at least the minimum
                old = (replaced or {}).get(part.replaced_from.upper())
                if old is not None and old is not part:  # its own period (a paid repair, a replacement)
                    # the map shrinks by one part a step: a chain ends, a cycle (A <- B <- A) too
                    rest = {k: v for k, v in (replaced or {}).items() if v is not old}
                    prior = part_answer(unit, old, terms, today, [], rest)
                    end = date.fromisoformat(prior["end"]) if prior["end"] else end
                floor = part.installed + timedelta(days=terms.replacement_minimum_days)
                why = "replaced part's start (remaining term)"
                rule += ".replacement_remaining"
                if floor > end:
                    end, rule = floor, rule + f"+min{terms.replacement_minimum_days}d"
    answer = {**base, "rule": rule, "start_source": why}
    answer["start"] = start.isoformat() if start else None
    answer["end"] = end.isoformat() if end else None
    ex = _excluded(exclusions, part.category)
    if ex is not None:
        answer.update(status="excluded", exclusion=ex.get("reason"))
    elif end is None:
        answer["status"] = "unknown"
    else:
        answer["status"] = "in" if today <= end else "out"
    return answer


def replaced_of(unit: AssetRecord, part: AssetPart) -> dict[str, AssetPart]:
    """The unit's other parts by part number and serial (upper case), for the one ``part`` replaced;
    without ``part`` itself, so a chain of replacements ends."""
    out: dict[str, AssetPart] = {}
    for p in unit.parts:
        if p is part:
            continue
        for key in (p.part_number, p.serial):
            if key:
                out.setdefault(key.upper(), p)
    return out


def unit_answer(
    unit: AssetRecord, terms: Terms, now: datetime, exclusions: list[dict[str, Any]]
) -> dict[str, Any]:
    """The unit's answer with every part's: ``{status, end, rule, start, start_source, source, parts,
    expired_parts, today, timezone}``. A unit without parts is answered for its ``unit_category``."""
    today = today_in(unit.timezone, now)
    parts = list(unit.parts) or [AssetPart(category=terms.unit_category)]
    answers = [part_answer(unit, p, terms, today, exclusions, replaced_of(unit, p)) for p in parts]
    # the unit is its main part as shipped (not a replacement, not a paid repair) when it has one
    shipped = [
        a
        for a, p in zip(answers, parts, strict=True)
        if p.category == terms.unit_category and not p.replaced_from and not p.paid_repair
    ]
    if shipped:
        head = shipped[0]
    else:
        head = part_answer(unit, AssetPart(category=terms.unit_category), terms, today, exclusions)
    return {
        "status": head["status"],
        "end": head["end"],
        "start": head["start"],
        "rule": head["rule"],
        "start_source": head["start_source"],
        "source": "rules",
        "unit_source": unit.source,  # where the unit's dates and parts came from: register, erp, cmdb
        "exclusion": head.get("exclusion"),
        "today": today.isoformat(),
        "timezone": unit.timezone,
        "parts": answers,
        "expired_parts": [
            a["category"] + (f" {a['part_number']}" if a["part_number"] else "")
            for a in answers
            if a["status"] in ("out", "excluded")
        ],
    }
