"""Business-time arithmetic over calendars (svcbridge_sla.calendars), table-driven.

The 2026 mainland China schedule used below is chinese-calendar's published data: Spring Festival
closed Sunday 15 to Monday 23 February, make-up working Saturdays 14 and 28 February; New Year closed
1-3 January with Sunday 4 January worked.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from svcbridge_sla.calendars import (
    BusinessCalendar,
    CalendarDataMissing,
    add_business_time,
    business_elapsed,
    open_time,
    parse_duration,
    parse_span,
)

SH = ZoneInfo("Asia/Shanghai")
CN_OFFICE = BusinessCalendar(name="cn_office", holidays="CN", windows=["09:00-18:00"])
DUTY = BusinessCalendar(name="duty", days=[1, 2, 3, 4, 5, 6, 7], windows=["08:00-24:00"], holidays="CN")
NIGHT = BusinessCalendar(name="night", days=[1, 2, 3, 4, 5, 6, 7], windows=["22:00-06:00"])
ALWAYS = BusinessCalendar(name="24x7", always=True)
HK = BusinessCalendar(name="hk", timezone="Asia/Hong_Kong", holidays="HK")
BERLIN = BusinessCalendar(
    name="berlin", timezone="Europe/Berlin", days=[1, 2, 3, 4, 5, 6, 7], windows=["01:00-05:00"]
)
NY_ALL = BusinessCalendar(
    name="ny", timezone="America/New_York", days=[1, 2, 3, 4, 5, 6, 7], windows=["00:00-24:00"]
)
NY_OFFICE = BusinessCalendar(
    name="ny_office", timezone="America/New_York", holidays="US", windows=["09:00-17:00"]
)


def sh(*a: int) -> datetime:
    return datetime(*a, tzinfo=SH)  # type: ignore[misc]


ADD_CASES = [
    # (what, calendar, start, duration, expected)
    ("plain weekday", CN_OFFICE, sh(2026, 3, 4, 10, 0), "2h", sh(2026, 3, 4, 12, 0)),
    ("Friday 17:55 + 4h runs into Monday", CN_OFFICE, sh(2026, 3, 6, 17, 55), "4h", sh(2026, 3, 9, 12, 55)),
    ("before opening starts at 9:00", CN_OFFICE, sh(2026, 3, 4, 6, 0), "30m", sh(2026, 3, 4, 9, 30)),
    ("make-up Saturday 14 Feb is worked", CN_OFFICE, sh(2026, 2, 13, 17, 0), "2h", sh(2026, 2, 14, 10, 0)),
    ("Spring Festival closed 15-23 Feb", CN_OFFICE, sh(2026, 2, 14, 17, 0), "2h", sh(2026, 2, 24, 10, 0)),
    ("make-up Saturday 28 Feb is worked", CN_OFFICE, sh(2026, 2, 27, 17, 0), "2h", sh(2026, 2, 28, 10, 0)),
    (
        "24h on office hours is 24 open hours",
        CN_OFFICE,
        sh(2026, 3, 6, 17, 55),
        "24h",
        sh(2026, 3, 11, 14, 55),
    ),
    ("one working day over the festival", CN_OFFICE, sh(2026, 2, 14, 17, 30), "1d", sh(2026, 2, 24, 17, 30)),
    ("5 working days span it", CN_OFFICE, sh(2026, 2, 12, 10, 0), "5d", sh(2026, 2, 26, 10, 0)),
    ("New Year closed, Sunday 4 Jan worked", CN_OFFICE, sh(2025, 12, 31, 17, 0), "2h", sh(2026, 1, 4, 10, 0)),
    ("an ordinary Saturday is closed", CN_OFFICE, sh(2026, 3, 7, 10, 0), "1h", sh(2026, 3, 9, 10, 0)),
    ("duty 8-24: 23:30 + 1h ends 08:30 next day", DUTY, sh(2026, 3, 6, 23, 30), "1h", sh(2026, 3, 7, 8, 30)),
    ("duty 8-24: exactly at midnight", DUTY, sh(2026, 3, 6, 23, 0), "1h", sh(2026, 3, 7, 0, 0)),
    ("duty 8-24 closed on Spring Festival", DUTY, sh(2026, 2, 14, 23, 0), "2h", sh(2026, 2, 24, 9, 0)),
    ("night 22-06 crossing midnight", NIGHT, sh(2026, 3, 2, 5, 0), "2h", sh(2026, 3, 2, 23, 0)),
    ("night window begun yesterday", NIGHT, sh(2026, 3, 3, 1, 0), "3h", sh(2026, 3, 3, 4, 0)),
    ("24x7 ignores weekends", ALWAYS, sh(2026, 3, 7, 23, 0), "10m", sh(2026, 3, 7, 23, 10)),
    ("24x7 days are 24 h", ALWAYS, sh(2026, 2, 14, 12, 0), "2d", sh(2026, 2, 16, 12, 0)),
    (
        "Hong Kong: Lunar New Year 17-19 Feb closed, 14 Feb Saturday too",
        HK,
        datetime(2026, 2, 16, 17, 0, tzinfo=ZoneInfo("Asia/Hong_Kong")),
        "2h",
        datetime(2026, 2, 20, 10, 0, tzinfo=ZoneInfo("Asia/Hong_Kong")),
    ),
    (
        "time zones: a UTC start on a Shanghai calendar",
        CN_OFFICE,
        datetime(2026, 3, 4, 9, 0, tzinfo=UTC),  # 17:00 in Shanghai
        "2h",
        sh(2026, 3, 5, 10, 0),
    ),
    (
        "Berlin spring forward: 01:00-05:00 on 29 Mar is 3 real hours",
        BERLIN,
        datetime(2026, 3, 29, 1, 0, tzinfo=ZoneInfo("Europe/Berlin")),
        "3h",
        datetime(2026, 3, 29, 5, 0, tzinfo=ZoneInfo("Europe/Berlin")),
    ),
    (
        "Berlin fall back: 01:00-05:00 on 25 Oct is 5 real hours",
        BERLIN,
        datetime(2026, 10, 25, 1, 0, tzinfo=ZoneInfo("Europe/Berlin")),
        "4h30m",
        datetime(2026, 10, 25, 4, 30, tzinfo=ZoneInfo("Europe/Berlin")),
    ),
    (
        "New York: Independence Day (observed Fri 3 Jul) closed",
        NY_OFFICE,
        datetime(2026, 7, 2, 16, 0, tzinfo=ZoneInfo("America/New_York")),
        "2h",
        datetime(2026, 7, 6, 10, 0, tzinfo=ZoneInfo("America/New_York")),
    ),
]


@pytest.mark.parametrize(("what", "cal", "start", "dur", "want"), ADD_CASES, ids=[c[0] for c in ADD_CASES])
def test_add_business_time(
    what: str, cal: BusinessCalendar, start: datetime, dur: str, want: datetime
) -> None:
    d = open_time(dur, cal)
    got = add_business_time(start, d, cal)
    assert got == want, f"{what}: {got.astimezone(want.tzinfo)}"
    assert got.tzinfo is not None
    assert business_elapsed(start, got, cal) == d  # and back: the open time between them


ELAPSED_CASES = [
    (
        "NY spring forward Sunday is 23 h",
        NY_ALL,
        "2026-03-08T00:00-05:00",
        "2026-03-09T00:00-04:00",
        timedelta(hours=23),
    ),
    (
        "NY fall back Sunday is 25 h",
        NY_ALL,
        "2026-11-01T00:00-04:00",
        "2026-11-02T00:00-05:00",
        timedelta(hours=25),
    ),
    (
        "Berlin fall back window 01-05 is 5 h",
        BERLIN,
        "2026-10-25T00:00+02:00",
        "2026-10-25T12:00+01:00",
        timedelta(hours=5),
    ),
    # open days: 14 (make-up), 24, 25, 26, 27 and 28 (make-up) February
    (
        "over the festival six working days",
        CN_OFFICE,
        "2026-02-14T00:00+08:00",
        "2026-02-28T23:59+08:00",
        timedelta(hours=9 * 6),
    ),
    ("end before start is zero", CN_OFFICE, "2026-03-05T10:00+08:00", "2026-03-04T10:00+08:00", timedelta(0)),
]


@pytest.mark.parametrize(("what", "cal", "a", "b", "want"), ELAPSED_CASES, ids=[c[0] for c in ELAPSED_CASES])
def test_business_elapsed(what: str, cal: BusinessCalendar, a: str, b: str, want: timedelta) -> None:
    assert business_elapsed(datetime.fromisoformat(a), datetime.fromisoformat(b), cal) == want, what


def test_pauses_and_resumptions() -> None:
    start = sh(2026, 3, 4, 10, 0)
    # waiting for parts 11:00-12:30 on a 24x7 clock: 4 h land at 15:30
    pauses = [(sh(2026, 3, 4, 11, 0), sh(2026, 3, 4, 12, 30))]
    assert add_business_time(start, timedelta(hours=4), ALWAYS, pauses) == sh(2026, 3, 4, 15, 30)
    # two pauses, one overlapping the other and one before the start: merged, the early one ignored
    pauses = [
        (sh(2026, 3, 4, 8, 0), sh(2026, 3, 4, 10, 30)),
        (sh(2026, 3, 4, 11, 0), sh(2026, 3, 4, 12, 0)),
        (sh(2026, 3, 4, 11, 30), sh(2026, 3, 4, 13, 0)),
    ]
    assert add_business_time(start, timedelta(hours=2), ALWAYS, pauses) == sh(2026, 3, 4, 14, 30)
    # a pause in closed time takes nothing off twice: Friday 17:00 paused until Monday 10:00
    pauses = [(sh(2026, 3, 6, 17, 0), sh(2026, 3, 9, 10, 0))]
    assert add_business_time(sh(2026, 3, 6, 16, 0), timedelta(hours=2), CN_OFFICE, pauses) == sh(
        2026, 3, 9, 11, 0
    )
    assert business_elapsed(sh(2026, 3, 6, 16, 0), sh(2026, 3, 9, 11, 0), CN_OFFICE, pauses) == timedelta(
        hours=2
    )
    # still paused (no end): elapsed counts up to the pause, a deadline cannot be known
    open_pause = [(sh(2026, 3, 4, 11, 0), None)]
    assert business_elapsed(start, sh(2026, 3, 5, 0, 0), ALWAYS, open_pause) == timedelta(hours=1)
    assert add_business_time(start, timedelta(minutes=30), ALWAYS, open_pause) == sh(2026, 3, 4, 10, 30)
    with pytest.raises(ValueError, match="paused with no end"):
        add_business_time(start, timedelta(hours=2), ALWAYS, open_pause)
    with pytest.raises(ValueError, match="paused with no end"):
        add_business_time(start, timedelta(hours=8), CN_OFFICE, open_pause)


def test_extra_closed_and_working_days() -> None:
    cal = BusinessCalendar(
        name="site", holidays="CN", closed=[date(2026, 3, 9)], working=[date(2026, 3, 7), date(2026, 2, 16)]
    )
    assert add_business_time(sh(2026, 3, 6, 17, 0), timedelta(hours=2), cal) == sh(2026, 3, 7, 10, 0)
    assert add_business_time(sh(2026, 3, 7, 17, 0), timedelta(hours=2), cal) == sh(2026, 3, 10, 10, 0)
    # an extra working day beats the statutory holiday
    assert cal.is_working_day(date(2026, 2, 16)) and not CN_OFFICE.is_working_day(date(2026, 2, 16))


def test_missing_year_is_an_error_not_a_working_day() -> None:
    with pytest.raises(CalendarDataMissing, match="no holiday data for 2027"):
        add_business_time(sh(2026, 12, 31, 17, 0), timedelta(hours=2), CN_OFFICE)
    with pytest.raises(CalendarDataMissing, match="1990"):
        CN_OFFICE.is_working_day(date(1990, 5, 1))
    hk = BusinessCalendar(name="hk", timezone="Asia/Hong_Kong", holidays="HK", data_until=2026)
    with pytest.raises(CalendarDataMissing, match="trusted until 2026"):
        hk.is_working_day(date(2027, 1, 4))
    # an extra day listed in the config answers without the data
    cal = BusinessCalendar(name="x", holidays="CN", working=[date(2027, 1, 4)])
    assert cal.is_working_day(date(2027, 1, 4))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"windows": ["9-18"]}, "HH:MM-HH:MM"),
        ({"windows": ["09:00-24:30"]}, "not a time of day"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"days": [0, 1]}, "ISO weekdays"),
        ({"holidays": "XX"}, "no country"),
        ({"windows": []}, "needs windows"),
    ],
)
def test_bad_calendars_are_refused(kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        BusinessCalendar(name="bad", **kwargs)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(minutes=90)),
        ("5d", timedelta(days=5)),
        ("90s", timedelta(seconds=90)),
        (300, timedelta(minutes=5)),
        ("2 h", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str | int, want: timedelta) -> None:
    assert parse_duration(text) == want
    days, rest = parse_span(text)
    assert timedelta(days=days) + rest == want and (days == 0) == (want.days == 0 or "d" not in str(text))


@pytest.mark.parametrize("text", ["", "ten minutes", "5x", "h", "-5m", "5m junk"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_time(datetime(2026, 3, 4, 10, 0), timedelta(hours=1), ALWAYS)
