"""The warranty rules engine (issue 14 item 3), table-driven on and around every edge: the start (invoice,
production + grace, unknown), leap day, month ends, the contract's time zone, replacement (new / remaining),
paid-repair parts, exclusions, product-line terms."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from svcbridge import AssetPart, AssetRecord
from svcbridge_warranty.rules import add_term, parse_term, unit_answer
from svcbridge_warranty.settings import WarrantySettings

CFG = WarrantySettings.model_validate({"terms": {"server": {"main": "5y", "other": "2y"}}})
TERMS = CFG.terms_model()


def at(day: str, hour: int = 4) -> datetime:
    """04:00 UTC is noon in Shanghai: the same calendar day in both."""
    d = date.fromisoformat(day)
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "term", "end"),
    [
        ("2024-02-29", "1y", "2025-02-28"),  # leap day + 1 year: clamped to the month's end
        ("2024-02-29", "4y", "2028-02-29"),  # ... and back on a leap year
        ("2023-08-31", "6m", "2024-02-29"),  # month end into a leap February
        ("2022-08-31", "6m", "2023-02-28"),
        ("2024-01-31", "1m", "2024-02-29"),
        ("2024-03-31", "3m", "2024-06-30"),
        ("2024-12-15", "3y", "2027-12-15"),
        ("2024-12-31", "90d", "2025-03-31"),
        ("2025-01-01", "0m", "2025-01-01"),
    ],
)
def test_add_term(start: str, term: str, end: str) -> None:
    assert add_term(date.fromisoformat(start), term) == date.fromisoformat(end)


@pytest.mark.parametrize("bad", ["3", "y3", "3 years", "-1y", "1.5y", ""])
def test_bad_terms_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_term(bad)
    with pytest.raises(ValueError):
        WarrantySettings.model_validate({"terms": {"default": {"main": bad}}})


def unit(**kw) -> AssetRecord:
    base = {
        "serial": "7XK2M9P",
        "parts": [AssetPart(category="main"), AssetPart(category="other"), AssetPart(category="chassis")],
    }
    return AssetRecord(**{**base, **kw})


def statuses(answer: dict) -> dict[str, str]:
    return {p["category"]: p["status"] for p in answer["parts"]}


# (name, unit kwargs, now, unit status, unit end, part statuses, start_source)
CASES = [
    (
        "invoice: day before the main end",
        {"invoice_date": date(2024, 2, 29)},
        at("2027-02-27"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "out", "chassis": "out"},
        "invoice",
    ),
    (
        "invoice: on the last covered day",
        {"invoice_date": date(2024, 2, 29)},
        at("2027-02-28"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "out", "chassis": "out"},
        "invoice",
    ),
    (
        "invoice: the day after",
        {"invoice_date": date(2024, 2, 29)},
        at("2027-03-01"),
        "out",
        "2027-02-28",
        {"main": "out", "other": "out", "chassis": "out"},
        "invoice",
    ),
    (
        "chassis 6 months from a leap day: last day",
        {"invoice_date": date(2024, 2, 29)},
        at("2024-08-29"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "in", "chassis": "in"},
        "invoice",
    ),
    (
        "chassis 6 months from a leap day: next day",
        {"invoice_date": date(2024, 2, 29)},
        at("2024-08-30"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "in", "chassis": "out"},
        "invoice",
    ),
    (
        "other 1 year from a leap day: 2025-02-28 in",
        {"invoice_date": date(2024, 2, 29)},
        at("2025-02-28"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "in", "chassis": "out"},
        "invoice",
    ),
    (
        "other 1 year from a leap day: 2025-03-01 out",
        {"invoice_date": date(2024, 2, 29)},
        at("2025-03-01"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "out", "chassis": "out"},
        "invoice",
    ),
    (
        "no invoice: production + 90 days grace",
        {"production_date": date(2023, 12, 1)},
        at("2027-02-28"),
        "in",
        "2027-02-28",
        {"main": "in", "other": "out", "chassis": "out"},
        "production+90d",
    ),
    (
        "no invoice: the day after production + grace + 3y",
        {"production_date": date(2023, 12, 1)},
        at("2027-03-01"),
        "out",
        "2027-02-28",
        {"main": "out", "other": "out", "chassis": "out"},
        "production+90d",
    ),
    (
        "invoice wins over production",
        {"invoice_date": date(2025, 1, 10), "production_date": date(2020, 1, 1)},
        at("2027-01-01"),
        "in",
        "2028-01-10",
        {"main": "in", "other": "out", "chassis": "out"},
        "invoice",
    ),
    (
        "no dates at all: unknown, never out",
        {},
        at("2030-01-01"),
        "unknown",
        None,
        {"main": "unknown", "other": "unknown", "chassis": "unknown"},
        "unknown",
    ),
    (
        "product line terms (server: main 5y, other 2y; chassis from default)",
        {"invoice_date": date(2022, 6, 30), "product_line": "Server"},
        at("2026-07-01"),
        "in",
        "2027-06-30",
        {"main": "in", "other": "out", "chassis": "out"},
        "invoice",
    ),
]


@pytest.mark.parametrize(
    ("name", "kw", "now", "status", "end", "parts", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_unit_and_parts(
    name: str, kw: dict, now: datetime, status: str, end: str | None, parts: dict, source: str
) -> None:
    answer = unit_answer(unit(**kw), TERMS, now, [])
    assert (answer["status"], answer["end"], answer["start_source"]) == (status, end, source)
    assert statuses(answer) == parts
    assert answer["source"] == "rules"
    assert answer["expired_parts"] == [c for c, s in parts.items() if s in ("out", "excluded")]


def test_calendar_date_in_the_contracts_time_zone() -> None:
    u = unit(invoice_date=date(2024, 2, 29))
    late_utc = datetime(2027, 2, 28, 16, 30, tzinfo=UTC)  # 2027-03-01 00:30 in Shanghai
    assert unit_answer(u, TERMS, late_utc, [])["status"] == "out"
    assert unit_answer(u, TERMS, late_utc - timedelta(hours=1), [])["status"] == "in"  # 23:30 on the 28th
    ny = unit(invoice_date=date(2024, 2, 29), timezone="America/New_York")
    assert unit_answer(ny, TERMS, late_utc, [])["status"] == "in"  # still the 28th in New York
    assert unit_answer(ny, TERMS, late_utc, [])["today"] == "2027-02-28"


REPLACED = [
    # (mode, minimum days, installed, now, status, end, rule suffix)
    ("new", 0, date(2026, 5, 1), at("2027-04-30"), "in", "2027-05-01", "default.other.replacement_new"),
    ("new", 0, date(2026, 5, 1), at("2027-05-02"), "out", "2027-05-01", "default.other.replacement_new"),
    (
        "remaining",
        0,
        date(2024, 6, 1),
        at("2025-02-28"),
        "in",
        "2025-02-28",
        "default.other.replacement_remaining",
    ),
    (
        "remaining",
        0,
        date(2024, 6, 1),
        at("2025-03-01"),
        "out",
        "2025-02-28",
        "default.other.replacement_remaining",
    ),
    # replaced a week before the old term ended: the 90-day floor extends it from the install date
    (
        "remaining",
        90,
        date(2025, 2, 21),
        at("2025-05-22"),
        "in",
        "2025-05-22",
        "default.other.replacement_remaining+min90d",
    ),
    (
        "remaining",
        90,
        date(2025, 2, 21),
        at("2025-05-23"),
        "out",
        "2025-05-22",
        "default.other.replacement_remaining+min90d",
    ),
]


@pytest.mark.parametrize(("mode", "floor", "installed", "now", "status", "end", "rule"), REPLACED)
def test_replaced_part(
    mode: str, floor: int, installed: date, now: datetime, status: str, end: str, rule: str
) -> None:
    terms = WarrantySettings(replacement=mode, replacement_minimum_days=floor).terms_model()
    u = unit(
        invoice_date=date(2024, 2, 29),
        parts=[
            AssetPart(category="main"),
            AssetPart(category="other", installed=installed, replaced_from="KB-OLD"),
        ],
    )
    part = unit_answer(u, terms, now, [])["parts"][1]
    assert (part["status"], part["end"], part["rule"]) == (status, end, rule)


@pytest.mark.parametrize(
    ("now", "status"),
    [(at("2026-08-31"), "in"), (at("2026-09-01"), "out")],  # 3 months from 2026-05-31 ends 08-31
)
def test_paid_repair_part_carries_three_months(now: datetime, status: str) -> None:
    u = unit(
        invoice_date=date(2020, 1, 1),
        parts=[
            AssetPart(category="main"),
            AssetPart(category="main", part_number="PSU-2", installed=date(2026, 5, 31), paid_repair=True),
        ],
    )
    answer = unit_answer(u, TERMS, now, [])
    psu = answer["parts"][1]
    assert (psu["status"], psu["end"], psu["rule"], psu["start"]) == (
        status,
        "2026-08-31",
        "paid_repair.3m",
        "2026-05-31",
    )
    assert answer["status"] == "out"  # the unit (its original main part) ran out in 2023


@pytest.mark.parametrize(
    ("exclusions", "unit_status", "parts"),
    [
        ([], "in", {"main": "in", "other": "in", "chassis": "in"}),
        (
            [{"reason": "misuse", "part": None}],
            "excluded",
            {"main": "excluded", "other": "excluded", "chassis": "excluded"},
        ),
        (
            [{"reason": "consumable", "part": "other"}],
            "in",
            {"main": "in", "other": "excluded", "chassis": "in"},
        ),
        (
            [{"reason": "force_majeure", "part": "main"}],
            "excluded",
            {"main": "excluded", "other": "in", "chassis": "in"},
        ),
    ],
)
def test_exclusions(exclusions: list, unit_status: str, parts: dict) -> None:
    answer = unit_answer(unit(invoice_date=date(2026, 1, 1)), TERMS, at("2026-03-01"), exclusions)
    assert answer["status"] == unit_status
    assert statuses(answer) == parts
    if unit_status == "excluded":
        assert answer["exclusion"] == exclusions[0]["reason"]


def test_unit_without_parts_is_answered_for_its_main_term() -> None:
    answer = unit_answer(
        AssetRecord(serial="ABC1234", invoice_date=date(2024, 1, 15)), TERMS, at("2027-01-15"), []
    )
    assert (answer["status"], answer["end"], answer["rule"]) == ("in", "2027-01-15", "default.main")


def test_settings_defaults_and_errors() -> None:
    cfg = WarrantySettings.model_validate({"terms": {"Printer": {"main": "2y"}}})
    assert cfg.terms["printer"] == {"main": "2y"}
    assert cfg.terms["default"] == {"main": "3y", "other": "1y", "chassis": "6m"}
    with pytest.raises(ValueError):
        WarrantySettings.model_validate({"default_timezone": "Mars/Olympus"})
    with pytest.raises(ValueError):
        WarrantySettings.model_validate({"replacement": "sometimes"})


def test_the_commented_example_in_config_is_valid() -> None:
    import tomllib
    from pathlib import Path

    text = (Path(__file__).parent.parent / "config" / "svcbridge.toml").read_text(encoding="utf-8")
    start = text.index("# [plugins.assets]")
    block = text[start : text.find("\n\n", start)]
    toml = "\n".join(ln[2:].split("  #")[0] if ln.startswith("# ") else "" for ln in block.splitlines())
    cfg = WarrantySettings(**tomllib.loads(toml)["plugins"]["assets"])
    assert cfg.terms["server"] == {"main": "5y"} and cfg.terms["default"]["chassis"] == "6m"
    assert set(cfg.vendors) == {"dell", "lenovo", "hp", "cisco"}
    assert cfg.alerts.sales is not None and cfg.alerts.sales.to == "sales@example.com"
    assert [c.serial for c in cfg.extractor().find([("body", "资产编号：ZC-88721")])] == ["ZC-88721"]


@pytest.mark.parametrize(
    ("part", "rule"),
    [
        # fitted in a paid repair (3 months) but its install date is not known: the unit's 5 years from
        # the invoice were given ("in" until 2029) although its own 3 months may be long over
        (AssetPart(category="main", part_number="PSU-2", paid_repair=True), "paid_repair.3m"),
        # a replacement under "new" terms without install date: the unit's term from the invoice was
        # given ("out" since 2023 -> paid service, sales told) although its new term may run
        (
            AssetPart(category="other", part_number="KB-2", replaced_from="KB-1"),
            "server.other.replacement_new",
        ),
    ],
)
def test_part_without_install_date_is_unknown_when_its_term_counts_from_it(
    part: AssetPart, rule: str
) -> None:
    u = unit(product_line="server", invoice_date=date(2021, 6, 1), parts=[AssetPart(category="main"), part])
    answer = unit_answer(u, TERMS, at("2026-05-01"), [])
    got = answer["parts"][1]
    assert (got["status"], got["start"], got["end"], got["rule"]) == ("unknown", None, None, rule)
    assert got["start_source"] == "installed date missing"
    assert answer["expired_parts"] == []  # unknown is never "out"


@pytest.mark.parametrize(
    ("replaced_from", "now", "status", "end"),
    [
        # PSU-3 replaced PSU-2, itself fitted in a paid repair (3 months to 2025-09-01): the remaining
        # period is PSU-2's, not the category's term from the unit's invoice ("other": 1y, 2025-01-02)
        ("PSU-2", at("2025-09-01"), "in", "2025-09-01"),
        ("PSU-2", at("2025-09-02"), "out", "2025-09-01"),
        # by its serial too
        ("SN-PSU-2", at("2025-09-02"), "out", "2025-09-01"),
        # a part the register does not hold: the category's term from the unit's start, as before
        # (long over: the 0-day floor makes it end on its install day)
        ("PSU-OLD", at("2025-09-02"), "out", "2025-08-01"),
    ],
)
def test_remaining_period_is_the_replaced_parts_own(
    replaced_from: str, now: datetime, status: str, end: str
) -> None:
    terms = WarrantySettings(replacement="remaining").terms_model()
    u = unit(
        invoice_date=date(2024, 1, 2),
        parts=[
            AssetPart(category="main", part_number="MB-1"),
            AssetPart(
                category="psu",
                part_number="PSU-2",
                serial="SN-PSU-2",
                installed=date(2025, 6, 1),
                paid_repair=True,
            ),
            AssetPart(
                category="psu", part_number="PSU-3", installed=date(2025, 8, 1), replaced_from=replaced_from
            ),
        ],
    )
    psu3 = unit_answer(u, terms, now, [])["parts"][2]
    assert (psu3["status"], psu3["end"]) == (status, end)


def test_a_cycle_of_replacements_ends() -> None:
    terms = WarrantySettings(replacement="remaining").terms_model()
    u = unit(
        invoice_date=date(2024, 1, 2),
        parts=[
            AssetPart(category="psu", part_number="A", installed=date(2025, 1, 1), replaced_from="B"),
            AssetPart(category="psu", part_number="B", installed=date(2025, 2, 1), replaced_from="A"),
        ],
    )
    answer = unit_answer(u, terms, at("2025-03-01"), [])
    assert [p["status"] for p in answer["parts"]] == ["out", "out"]
