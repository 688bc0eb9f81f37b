"""Business calendars: when an SLA clock runs, and business-time arithmetic over them.

A calendar is either ``24x7`` (the clock always runs) or a set of daily opening windows in a time
zone on working days. Which days are working days:

1. ``working`` (extra working days from the config) are working days, whatever else says;
2. ``closed`` (extra closed days) are not;
3. with ``holidays = "CN"`` mainland China's statutory holidays come from ``chinese-calendar``
   *with the make-up working days* (调休: the Saturday or Sunday worked to bridge a holiday is a
   working day); any other country code (``HK``, ``TW``, ``DE``, ``US`` ...) comes from the
   ``holidays`` package (its ``weekend_workdays`` where the country has them, Taiwan does);
4. else the weekday must be in ``days`` (Monday = 1 ... Sunday = 7).

A year the holiday data does not cover raises ``CalendarDataMissing`` instead of silently counting
that year's holidays as working days (chinese-calendar only knows years the State Council has
published; ``data_until`` caps a ``holidays`` country the same way).

Windows are local wall-clock times; ``08:00-24:00`` ends at midnight and ``22:00-06:00`` crosses it
(the window belongs to the day it starts on). Times are converted to UTC per day through
``zoneinfo``, so a DST change shortens or lengthens that day's window by the real hour.

``add_business_time`` and ``business_elapsed`` take pause intervals (waiting for the customer or
for parts): paused time never counts, whether the calendar is open or not.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

__all__ = [
    "BusinessCalendar",
    "CalendarDataMissing",
    "Interval",
    "add_business_time",
    "business_elapsed",
    "open_time",
    "parse_duration",
]

Interval = tuple[datetime, datetime | None]  # a pause: (start, end); end None = still paused
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
MAX_SCAN_DAYS = 3700  # ten years without an open minute: a calendar that never opens


class CalendarDataMissing(ValueError):
    """The holiday data of a calendar does not cover a year (too early, or not yet published)."""


def parse_span(text: str | int | float) -> tuple[float, timedelta]:
    """``"10m"``, ``"1h30m"``, ``"5d"``, ``"90s"`` or a number of seconds: (days, the rest).

    Days stay apart because a day means a *working day* of a calendar (``open_time``): ``24h`` on a
    9:00-18:00 calendar is 24 open hours, ``1d`` is 9.
    """
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return 0.0, timedelta(seconds=float(text))
    s = text.strip()
    pos, days, rest = 0, 0.0, timedelta(0)
    for m in _DURATION.finditer(s):
        if s[pos : m.start()].strip():
            break
        n, unit = float(m.group(1)), m.group(2).lower()
        if unit == "d":
            days += n
        else:
            rest += {"h": timedelta(hours=n), "m": timedelta(minutes=n)}.get(unit, timedelta(seconds=n))
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"not a duration: {text!r} (use e.g. 10m, 4h, 1h30m, 5d)")
    return days, rest


def parse_duration(text: str | int | float) -> timedelta:
    """A duration in plain time (``d`` = 24 h), e.g. an escalation step's delay."""
    days, rest = parse_span(text)
    return timedelta(days=days) + rest


def open_time(text: str | int | float, calendar: BusinessCalendar) -> timedelta:
    """How much open time ``text`` promises on ``calendar``: ``5d`` is five of its working days."""
    days, rest = parse_span(text)
    return calendar.day_length * days + rest


class BusinessCalendar(BaseModel):
    """``[plugins.sla.calendars.<name>]``: a 24x7 clock or working hours in a time zone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    always: bool = Field(default=False, description="24x7: the clock always runs (holidays ignored)")
    timezone: str = "Asia/Shanghai"
    days: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], description="ISO weekdays, Mon=1")
    windows: list[str] = Field(default_factory=lambda: ["09:00-18:00"], description="local, may cross 24:00")
    holidays: str | None = Field(default=None, description="CN (chinese-calendar with 调休), HK, TW, DE, ...")
    subdivision: str | None = Field(default=None, description="holidays' subdivision, e.g. BY, NY")
    closed: list[date] = Field(default_factory=list, description="extra closed days")
    working: list[date] = Field(default_factory=list, description="extra working days")
    data_until: int | None = Field(default=None, description="last year the holiday data may be trusted")
    _tz: ZoneInfo = PrivateAttr()
    _windows: list[tuple[time, timedelta]] = PrivateAttr(default_factory=list)
    _open_days: dict[date, bool] = PrivateAttr(default_factory=dict)  # answers per date, the config is frozen

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(d < 1 or d > 7 for d in v):
            raise ValueError("days are ISO weekdays 1 (Monday) to 7 (Sunday)")
        return sorted(set(v))

    @model_validator(mode="after")
    def _compile(self) -> BusinessCalendar:
        try:
            self._tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        wins: list[tuple[time, timedelta]] = []
        for w in self.windows:
            m = _WINDOW.match(w)
            if not m:
                raise ValueError(f"window {w!r}: write HH:MM-HH:MM, e.g. 09:00-18:00 or 22:00-06:00")
            h1, m1, h2, m2 = (int(x) for x in m.groups())
            if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
                raise ValueError(f"window {w!r}: not a time of day")
            start, end = h1 * 60 + m1, h2 * 60 + m2
            length = end - start if end > start else end + 1440 - start  # crossing midnight
            wins.append((time(h1, m1), timedelta(minutes=length)))
        if not self.always and not wins:
            raise ValueError("a calendar needs windows, or always = true")
        self._windows = sorted(wins)
        if self.holidays and self.holidays.upper() != "CN":
            _country(self.holidays.upper(), self.subdivision, 2000)  # an unknown code fails at load
        return self

    # ------------------------------------------------------------------ days
    @property
    def day_length(self) -> timedelta:
        """Nominal open time of one working day (24 h for 24x7): what a ``d`` in a target means."""
        if self.always:
            return timedelta(hours=24)
        return sum((w for _, w in self._windows), timedelta(0))

    def is_working_day(self, day: date) -> bool:
        """Whether ``day`` (local date) opens; raises ``CalendarDataMissing`` for a year without data."""
        found = self._open_days.get(day)
        if found is None:
            found = self._open_days[day] = _is_working(self, day)
        return found

    def open_intervals(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals (UTC) that end after ``start``, in order, clipped to begin at ``start``."""
        start = _utc(start)
        if self.always:
            yield start, _FAR
            return
        # private attributes once: pydantic's attribute lookup for them costs more than the loop
        tz, windows, known = self._tz, self._windows, self._open_days
        # a window that started yesterday may still be open (22:00-06:00)
        day = start.astimezone(tz).date() - timedelta(days=1)
        for _ in range(MAX_SCAN_DAYS):
            is_open = known.get(day)
            if is_open is None:
                is_open = known[day] = _is_working(self, day)
            if is_open:
                for begin, length in windows:
                    s = datetime.combine(day, begin, tzinfo=tz)
                    # the end is local wall time too: 08:00 + 16 h on a DST day is still 24:00
                    e_local = datetime.combine(day, begin) + length
                    s_utc = s.astimezone(UTC)
                    e_utc = e_local.replace(tzinfo=tz).astimezone(UTC)
                    if e_utc > start:
                        yield max(s_utc, start), e_utc
            day += timedelta(days=1)
        raise ValueError(f"calendar {self.name!r} has no open time in {MAX_SCAN_DAYS} days")


@functools.lru_cache(maxsize=64)
def _country(code: str, subdivision: str | None, year: int) -> Any:
    import holidays  # heavy import: only calendars that name a country pay for it

    try:
        return holidays.country_holidays(code, subdiv=subdivision, years=year)
    except NotImplementedError as exc:
        where = f"{code}/{subdivision}" if subdivision else code
        raise ValueError(f"holidays has no country {where!r}") from exc


@functools.lru_cache(maxsize=8192)
def _cn_day(day: date) -> tuple[bool, bool]:
    """(statutory holiday, make-up working day) for a mainland China date."""
    import chinese_calendar

    try:
        is_holiday, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError as exc:
        raise CalendarDataMissing(
            f"chinese-calendar has no holiday data for {day.year} ({exc}); update the package "
            f"(pip install -U chinesecalendar) once the State Council publishes that year, or list the "
            f"year's days under closed/working"
        ) from exc
    makeup = not is_holiday and name is not None  # a weekend day worked for a holiday
    return bool(is_holiday and name is not None), makeup


def _is_working(cal: BusinessCalendar, day: date) -> bool:
    if day in cal.working:
        return True
    if day in cal.closed:
        return False
    code = cal.holidays.upper() if cal.holidays else None
    if code and cal.data_until is not None and day.year > cal.data_until:
        raise CalendarDataMissing(
            f"calendar {cal.name!r}: holiday data for {code} is trusted until {cal.data_until}, "
            f"{day.isoformat()} is past it (raise data_until once that year's days are known)"
        )
    if code == "CN":
        statutory, makeup = _cn_day(day)
        if makeup:
            return True
        if statutory:
            return False
    elif code:
        h = _country(code, cal.subdivision, day.year)
        if day in getattr(h, "weekend_workdays", ()):
            return True
        if day in h:
            return False
    return day.isoweekday() in cal.days


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("SLA times must be timezone-aware")
    return at.astimezone(UTC)


_FAR = datetime.max.replace(tzinfo=UTC)


def _pauses(pauses: Sequence[Interval], until: datetime | None = None) -> list[tuple[datetime, datetime]]:
    out = sorted((_utc(s), _utc(e) if e is not None else (until or _FAR)) for s, e in pauses)
    merged: list[tuple[datetime, datetime]] = []
    for s, e in out:
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def _minus(
    a: datetime, b: datetime, pauses: list[tuple[datetime, datetime]]
) -> Iterator[tuple[datetime, datetime]]:
    """[a, b) without the paused parts."""
    cur = a
    for s, e in pauses:
        if e <= cur:
            continue
        if s >= b:
            break
        if s > cur:
            yield cur, s
        cur = max(cur, e)
        if cur >= b:
            return
    if cur < b:
        yield cur, b


def add_business_time(
    start: datetime,
    duration: timedelta,
    calendar: BusinessCalendar,
    pauses: Sequence[Interval] = (),
) -> datetime:
    """The moment ``duration`` of open, unpaused time has passed after ``start`` (UTC).

    ``open_time`` turns a contract's "5d" into open time first. An open-ended pause (still
    waiting) that the remaining time would run into raises ValueError: the deadline is unknown
    until the clock runs again.
    """
    if duration < timedelta(0):
        raise ValueError("a duration cannot be negative")
    left = duration
    cut = _pauses(pauses)
    start = _utc(start)
    if left == timedelta(0):
        for s, e in calendar.open_intervals(start):
            for ps, _pe in _minus(s, e, cut):
                return ps
        raise AssertionError("unreachable")  # pragma: no cover - open_intervals raises first
    for s, e in calendar.open_intervals(start):
        for ps, pe in _minus(s, e, cut):
            if pe - ps >= left:
                return ps + left
            left -= pe - ps
        if cut and cut[-1][1] == _FAR and e >= cut[-1][0]:  # all that is left is paused
            raise ValueError("the clock is paused with no end: no deadline until it runs again")
    raise AssertionError("unreachable")  # pragma: no cover - open_intervals raises first


def business_elapsed(
    start: datetime, end: datetime, calendar: BusinessCalendar, pauses: Sequence[Interval] = ()
) -> timedelta:
    """Open, unpaused time between ``start`` and ``end`` (zero when ``end`` is not after ``start``)."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        return timedelta(0)
    cut = _pauses(pauses, until=end)
    total = timedelta(0)
    for s, e in calendar.open_intervals(start):
        if s >= end:
            break
        for ps, pe in _minus(s, min(e, end), cut):
            total += pe - ps
    return total
