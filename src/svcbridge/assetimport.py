"""Reading an asset register file (CSV or XLSX) into units, row by row, with a reason for every refusal.

One row is one unit, or one more part of a unit already named above (same serial): a spreadsheet
exported from an ERP usually repeats the unit's columns on each part row. A cell left empty means
"not given": an import never blanks what the register holds (``merge``). A row that cannot be read
(bad date, unknown time zone, no serial, a unit column contradicting an earlier row of the same
serial) is refused with its line number and the reason; the other rows go on.

Headers are matched case-insensitively, with spaces and dashes as underscores, and accept the
Chinese names these files use (序列号, 机身编号, 型号, 客户, 发票日期, 生产日期, ...).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from .assets import UNIT_FIELDS, AssetPart, AssetRecord, normalize_serial
from .textcodec import UndecodableText, decode_legacy

UNIT = UNIT_FIELDS
EXTRA = ("product_number",)  # kept in the unit's ``extra``: HP's warranty API wants the product number
PART = (
    "part_category",
    "part_number",
    "part_serial",
    "part_installed",
    "part_replaced_from",
    "part_paid_repair",
)
ALIASES = {
    "序列号": "serial",
    "序號": "serial",
    "機身編號": "serial",
    "机身编号": "serial",
    "sn": "serial",
    "s/n": "serial",
    "serial_no": "serial",
    "serial_number": "serial",
    "service_tag": "serial",
    "厂商": "vendor",
    "品牌": "vendor",
    "型号": "model",
    "型號": "model",
    "产品线": "product_line",
    "产品号": "product_number",
    "pn": "product_number",
    "客户": "customer",
    "客戶": "customer",
    "站点": "site",
    "地点": "site",
    "区域": "region",
    "合同": "contract",
    "合同号": "contract",
    "时区": "timezone",
    "发票日期": "invoice_date",
    "發票日期": "invoice_date",
    "生产日期": "production_date",
    "生產日期": "production_date",
    "联系人": "contacts",
    "部件类别": "part_category",
    "部件号": "part_number",
    "部件序列号": "part_serial",
    "安装日期": "part_installed",
    "替换自": "part_replaced_from",
    "有偿维修": "part_paid_repair",
}
KNOWN = {"serial", *UNIT, *EXTRA, *PART}
TRUE = {"1", "true", "yes", "y", "是", "x"}
FALSE = {"", "0", "false", "no", "n", "否"}
MAX_ROWS = 200_000
EXCEL_EPOCH = date(1899, 12, 30)  # day 0 of Excel's 1900 system (its 1900-02-29 bug folded in)
EXCEL_DAYS = (10_000, 100_000)  # 1927 .. 2173: a number outside is no date


class ImportFileError(ValueError):
    """The file as a whole cannot be read (no serial column, not CSV/XLSX, unreadable)."""


@dataclass
class RowResult:
    line: int
    serial: str
    result: str  # added | changed | unchanged | refused
    detail: str = ""


@dataclass
class Parsed:
    """The units read from a file (by serial, in file order) and the rows refused on the way."""

    units: dict[str, tuple[int, dict[str, Any], list[AssetPart]]] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    refused: list[RowResult] = field(default_factory=list)


def header_key(name: Any) -> str:
    key = re.sub(r"[\s\-]+", "_", str(name or "").strip().lower())
    return ALIASES.get(key, key)


def read_rows(path: Path, encoding: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``(line, {column: value})`` for every data row of a CSV or XLSX file (line 1 is the header).
    ``encoding`` names a CSV's encoding (``big5``); by default UTF-8 (with or without BOM), else GB18030
    or Big5, whichever reads as plausible text (``textcodec.decode_legacy``)."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _xlsx_rows(path)
    if suffix in (".csv", ".txt", ""):
        return _csv_rows(path.read_bytes(), encoding)
    raise ImportFileError(f"{path.name}: not a .csv or .xlsx file")


def _decode(data: bytes, encoding: str | None) -> str:
    """The CSV's text, strictly: a byte that does not decode refuses the file (U+FFFD stored in the
    register without a word helps nobody)."""
    if encoding:
        try:
            return data.decode(encoding)
        except LookupError:
            raise ImportFileError(f"unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"not {encoding}: byte {exc.start} cannot be read") from None
    # Excel on Chinese Windows writes CSV in GB18030 (GBK) or Big5; Big5 bytes mostly decode as
    # GB18030 too, into other characters: textcodec picks the reading with plausible characters
    try:
        return decode_legacy(data)[0]
    except UndecodableText as exc:
        raise ImportFileError(f"{exc}: name it with --encoding (big5hkscs, ...)") from None


def _csv_rows(data: bytes, encoding: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    text = _decode(data, encoding)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = list(reader)
    if not rows:
        raise ImportFileError("the file is empty")
    if len(rows) - 1 > MAX_ROWS:  # refused whole: a register cut short without a word is worse
        raise ImportFileError(f"more than {MAX_ROWS} rows: split the file")
    return _keyed(rows[0], [(i + 2, r) for i, r in enumerate(rows[1:])])


def _xlsx_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    import openpyxl  # only an XLSX import needs it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException for broken files
        raise ImportFileError(f"{path.name}: not a readable XLSX file ({type(exc).__name__})") from exc
    try:
        sheet = book.worksheets[0]
        it = sheet.iter_rows(values_only=True)
        header = next(it, None)
        if header is None:
            raise ImportFileError("the sheet is empty")
        data = []
        for i, row in enumerate(it):
            if i >= MAX_ROWS:  # refused whole: a register cut short without a word is worse
                raise ImportFileError(f"more than {MAX_ROWS} rows: split the file")
            data.append((i + 2, list(row)))
        return _keyed(list(header), data)
    finally:
        book.close()


def _keyed(header: list[Any], rows: list[tuple[int, list[Any]]]) -> list[tuple[int, dict[str, Any]]]:
    keys = [header_key(h) for h in header]
    if "serial" not in keys:
        raise ImportFileError("no serial column (serial, 序列号, 机身编号, S/N)")
    out = []
    for line, row in rows:
        if all(v is None or str(v).strip() == "" for v in row):
            continue  # blank lines between blocks are common in hand-made sheets
        out.append((line, {k: (row[i] if i < len(row) else None) for i, k in enumerate(keys) if k in KNOWN}))
    return out


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():  # a part number typed as a number in Excel
        v = int(v)
    s = str(v).strip()
    return s or None


def _date(v: Any, column: str) -> date | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    s = str(v).strip()
    serial = v if isinstance(v, int | float) and not isinstance(v, bool) else None
    if serial is None and re.fullmatch(r"\d{5}", s):
        serial = int(s)  # the same number in a CSV export
    if serial is not None:  # a date cell formatted "General": Excel's day count (1900 system)
        if not EXCEL_DAYS[0] <= serial < EXCEL_DAYS[1]:
            raise ValueError(f"{column}: {s!r} is not a date (YYYY-MM-DD or an Excel date)")
        return EXCEL_EPOCH + timedelta(days=int(serial))
    # a date-time cell exported to CSV ("2024/3/1 0:00"): the day counts
    m = re.fullmatch(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?", s)
    if not m:
        raise ValueError(f"{column}: {s!r} is not a date (YYYY-MM-DD)")
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError as exc:
        raise ValueError(f"{column}: {s!r}: {exc}") from None


def _bool(v: Any, column: str) -> bool:
    s = str(v if v is not None else "").strip().lower()
    if s in TRUE:
        return True
    if s in FALSE:
        return False
    raise ValueError(f"{column}: {s!r} is not yes/no")


def unit_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The unit's columns the row gives (empty cells left out), validated; ValueError says why not."""
    got: dict[str, Any] = {}
    for col in UNIT:
        v = row.get(col)
        if col in ("invoice_date", "production_date"):
            d = _date(v, col)
            if d is not None:
                got[col] = d
        elif col == "contacts":
            s = _text(v)
            if s:
                got[col] = [c.strip() for c in re.split(r"[;,\uff0c\uff1b\s]+", s) if c.strip()]
        else:
            s = _text(v)
            if s is not None:
                got[col] = s
    extra = {col: v for col in EXTRA if (v := _text(row.get(col))) is not None}
    if extra:
        got["extra"] = extra
    if "timezone" in got:
        try:
            ZoneInfo(got["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {got['timezone']!r}") from None
    return got


def part_of(row: dict[str, Any]) -> AssetPart | None:
    """The part the row names (``part_category`` given), else ``None``."""
    category = _text(row.get("part_category"))
    if category is None:
        if any(_text(row.get(c)) for c in PART):
            raise ValueError("part columns given without part_category")
        return None
    return AssetPart(
        category=category,
        part_number=_text(row.get("part_number")) or "",
        serial=_text(row.get("part_serial")),
        installed=_date(row.get("part_installed"), "part_installed"),
        replaced_from=_text(row.get("part_replaced_from")),
        paid_repair=_bool(row.get("part_paid_repair"), "part_paid_repair"),
    )


def parse(rows: list[tuple[int, dict[str, Any]]]) -> Parsed:
    """Group rows into units; every row that cannot be read is refused with its reason."""
    out = Parsed()
    for line, row in rows:
        raw_serial = _text(row.get("serial")) or ""
        try:
            serial = normalize_serial(raw_serial)
            fields = unit_fields(row)
            part = part_of(row)
            AssetRecord(serial=serial, **fields)  # each field valid on its own (lengths)
        except (ValueError, ValidationError) as exc:
            out.refused.append(RowResult(line, raw_serial[:64], "refused", _reason(exc)))
            continue
        if serial in out.units:
            first, known, parts = out.units[serial]
            clash = [k for k, v in fields.items() if k in known and known[k] != v]
            if clash:
                why = f"contradicts line {first} on {', '.join(clash)}"
                out.refused.append(RowResult(line, serial, "refused", why))
                continue
            known.update(fields)
        else:
            out.units[serial] = (line, fields, [])
            parts = out.units[serial][2]
        if part is not None:
            parts.append(part)
        out.lines.setdefault(serial, []).append(line)
    return out


def merge(
    old: AssetRecord | None, serial: str, fields: dict[str, Any], parts: list[AssetPart]
) -> AssetRecord:
    """The unit after the import: what the file gives over what the register holds; the file's
    parts replace the register's when it gives any."""
    base: dict[str, Any] = old.model_dump() if old else {"serial": serial}
    base.update(fields)
    if parts:
        base["parts"] = [p.model_dump() for p in parts]
    base["source"] = "register"
    return AssetRecord(**base)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())[:300]
    return str(exc)[:300]
