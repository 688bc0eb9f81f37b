"""The asset register (issue 14 item 1): import from CSV / XLSX with a per-row report, show, list,
exclusions, the batch-defect owner notice, and the asset_lookup hook answering before the register."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from svcbridge import AssetPart, AssetRecord, hookimpl
from svcbridge.assetlookup import HostAssets
from svcbridge.cli import main
from svcbridge.plugins import make_plugin_manager
from svcbridge.store import db
from svcbridge.store.assets import AssetStore
from svcbridge.store.repo import Store

CONFIG = """
data_dir = "{d}/var"
[http]
enabled = false
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
transport = "spool"
spool_dir = "{d}/outgoing"
"""

HEADER = (
    "serial,vendor,model,product_line,customer,region,timezone,invoice_date,production_date,contacts,"
    "part_category,part_number,part_installed,part_replaced_from,part_paid_repair\n"
)
GOOD = (
    HEADER
    + "7XK2M9P,Dell,PowerEdge R750,server,华东电力,sh,Asia/Shanghai,2024-02-29,2023-12-01,ops@hd.example;+8613800138000,main,PSU-750,,,\n"
    + "7xk2m9p,,,,,,,,,,chassis,CH-2U,,,\n"
    + "FOC2231X0AB,Cisco,C9300-48P,network,台北銀行,tw,Asia/Taipei,,2022-05-10,net@tpb.example,,,,,\n"
)
BAD_ROWS = (
    HEADER
    + ",Dell,X,,,,,,,,,,,,\n"  # no serial
    + "AB1234C,Dell,X,,,,,2023-02-29,,,,,,,\n"  # no such day
    + "AB1234D,Dell,X,,,,Mars/Olympus,,,,,,,,\n"  # unknown zone
    + "AB1234E,Dell,Latitude 7440,,acme,,,2025-01-15,,,main,P1,,,maybe\n"  # paid repair not yes/no
    + "AB1234F,Dell,Latitude 7440,,acme,,,2025-01-15,,,,,,,\n"  # good
    + "AB1234F,HP,,,,,,,,,,,,,\n"  # contradicts the vendor two lines up
    + "序列号!,Dell,X,,,,,,,,,,,,\n"  # not a serial
)


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for k in [k for k in __import__("os").environ if k.startswith("SVCBRIDGE_")]:
        monkeypatch.delenv(k)
    p = tmp_path / "svcbridge.toml"
    p.write_text(CONFIG.format(d=tmp_path))
    return p


def run(cfg: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(cfg), *args])


def report(res) -> list[dict]:
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def test_import_csv_adds_groups_parts_and_reports_per_row(cfg: Path, tmp_path: Path) -> None:
    f = tmp_path / "units.csv"
    f.write_text(GOOD, encoding="utf-8")
    res = run(cfg, "assets", "import", str(f), "--json")
    assert res.exit_code == 0, res.output
    assert [(r["line"], r["serial"], r["result"]) for r in report(res)] == [
        (2, "7XK2M9P", "added"),
        (3, "7XK2M9P", "added"),
        (4, "FOC2231X0AB", "added"),
    ]
    shown = json.loads(run(cfg, "assets", "show", "7xk2m9p", "--json").stdout)
    assert shown["customer"] == "华东电力" and shown["invoice_date"] == "2024-02-29"
    assert [p["category"] for p in shown["parts"]] == ["main", "chassis"]
    assert shown["contacts"] == ["ops@hd.example", "+8613800138000"]
    # the same file again changes nothing; a new invoice date is a change, named
    again = run(cfg, "assets", "import", str(f), "--json")
    assert {r["result"] for r in report(again)} == {"unchanged"}
    f.write_text(GOOD.replace("2024-02-29", "2024-03-01"), encoding="utf-8")
    dry = run(cfg, "assets", "import", str(f), "--json", "--dry-run")
    assert [r["detail"] for r in report(dry) if r["result"] == "changed"] == ["invoice_date", "invoice_date"]
    assert json.loads(run(cfg, "assets", "show", "7XK2M9P", "--json").stdout)["invoice_date"] == "2024-02-29"
    run(cfg, "assets", "import", str(f))
    assert json.loads(run(cfg, "assets", "show", "7XK2M9P", "--json").stdout)["invoice_date"] == "2024-03-01"
    listed = run(cfg, "assets", "list")
    assert "FOC2231X0AB" in listed.stdout and "7XK2M9P" in listed.stdout


def test_bad_rows_are_refused_with_line_and_reason_and_the_rest_imported(cfg: Path, tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(BAD_ROWS, encoding="utf-8")
    res = run(cfg, "assets", "import", str(f), "--json")
    assert res.exit_code == 1  # a refused row is noticed by a scheduled import
    rows = {r["line"]: r for r in report(res)}
    assert rows[2]["result"] == "refused" and "serial" in rows[2]["detail"]
    assert rows[3]["result"] == "refused" and "invoice_date" in rows[3]["detail"]
    assert rows[4]["result"] == "refused" and "Mars/Olympus" in rows[4]["detail"]
    assert rows[5]["result"] == "refused" and "part_paid_repair" in rows[5]["detail"]
    assert rows[6]["result"] == "added"
    assert rows[7]["result"] == "refused" and "contradicts line 6 on vendor" in rows[7]["detail"]
    assert rows[8]["result"] == "refused"
    assert run(cfg, "assets", "show", "AB1234F", "--json").exit_code == 0
    assert run(cfg, "assets", "show", "AB1234E").exit_code == 1
    assert "1 added" in res.stderr and "6 refused" in res.stderr


def test_import_xlsx_with_chinese_headers_and_excel_dates(cfg: Path, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(
        ["机身编号", "厂商", "型号", "客户", "发票日期", "生产日期", "部件类别", "部件号", "有偿维修"]
    )
    sheet.append(
        ["PF3ABCD1", "Lenovo", "ThinkPad T14", "深圳分行", date(2025, 1, 31), None, "main", 5001, "否"]
    )
    sheet.append(["PF3ABCD1", None, None, None, None, None, "other", "KB-01", "是"])
    sheet.append(["CN12345678", "HP", "LaserJet M507", "高雄門市", "2024/12/31", None, None, None, None])
    f = tmp_path / "units.xlsx"
    book.save(f)
    res = run(cfg, "assets", "import", str(f), "--json")
    assert res.exit_code == 0, res.output
    assert [r["result"] for r in report(res)] == ["added", "added", "added"]
    unit = json.loads(run(cfg, "assets", "show", "PF3ABCD1", "--json").stdout)
    assert unit["invoice_date"] == "2025-01-31"
    assert [(p["part_number"], p["paid_repair"]) for p in unit["parts"]] == [("5001", False), ("KB-01", True)]
    assert (
        json.loads(run(cfg, "assets", "show", "CN12345678", "--json").stdout)["invoice_date"] == "2024-12-31"
    )


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("x.pdf", b"%PDF", "not a .csv or .xlsx"),
        ("no_serial.csv", b"model,vendor\nX,Dell\n", "no serial column"),
        ("broken.xlsx", b"PK\x03\x04 not really", "not a readable XLSX"),
    ],
)
def test_unreadable_files_are_refused_whole(
    cfg: Path, tmp_path: Path, name: str, content: bytes, why: str
) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    res = run(cfg, "assets", "import", str(f))
    assert res.exit_code == 2 and why in res.stderr


def test_gbk_csv_from_excel_is_read(cfg: Path, tmp_path: Path) -> None:
    f = tmp_path / "gbk.csv"
    f.write_bytes("序列号,型号,客户\nJ1ABCDE,OptiPlex 7010,南京分公司\n".encode("gb18030"))
    assert run(cfg, "assets", "import", str(f)).exit_code == 0
    assert json.loads(run(cfg, "assets", "show", "J1ABCDE", "--json").stdout)["customer"] == "南京分公司"


def test_exclusion_is_recorded_on_unit_and_ticket(cfg: Path, tmp_path: Path) -> None:
    from conftest import eml

    f = tmp_path / "u.csv"
    f.write_text(GOOD, encoding="utf-8")
    run(cfg, "assets", "import", str(f))
    assert CliRunner().invoke(main, ["--config", str(cfg), "ingest", "-"], input=eml()).exit_code == 0
    res = run(cfg, "assets", "exclude", "7XK2M9P", "misuse", "--ticket", "SB-000001", "--note", "dropped")
    assert res.exit_code == 0, res.output
    unit = json.loads(run(cfg, "assets", "show", "7XK2M9P", "--json").stdout)
    assert [(e["reason"], e["ticket"]) for e in unit["exclusions"]] == [("misuse", "SB-000001")]
    shown = json.loads(run(cfg, "tickets", "show", "SB-000001", "--json").stdout)
    assert any(e["type"] == "warranty_exclusion" for e in shown["events"])
    assert shown["labels"]["warranty_exclusions"][0]["reason"] == "misuse"
    assert run(cfg, "assets", "exclude", "NOSUCH1", "misuse").exit_code == 1
    assert run(cfg, "assets", "exclude", "7XK2M9P", "bored").exit_code == 2  # not a reason


def test_notify_owners_once_per_contact(cfg: Path, tmp_path: Path) -> None:
    from conftest import eml

    f = tmp_path / "u.csv"
    f.write_text(
        HEADER
        + "AAA1111,Dell,R750,,c1,,,,,a@one.example,,,,,\n"
        + "AAA2222,Dell,R750,,c2,,,,,b@two.example;+8613800138000,,,,,\n"
        + "AAA3333,Dell,R750,,c1,,,,,a@one.example,,,,,\n"
        + "BBB1111,Dell,R650,,c3,,,,,c@three.example,,,,,\n",
        encoding="utf-8",
    )
    run(cfg, "assets", "import", str(f))
    CliRunner().invoke(main, ["--config", str(cfg), "ingest", "-"], input=eml())
    args = [
        "assets",
        "notify-owners",
        "r750",
        "--ticket",
        "SB-000001",
        "--subject",
        "PSU recall",
        "--body",
        "x",
    ]
    res = run(cfg, *args)
    assert res.exit_code == 0, res.output
    assert "a@one.example (2 units)" in res.stdout and "b@two.example (1 units)" in res.stdout
    assert "c@three.example" not in res.stdout
    assert "2 notices queued, the last due in 2 s" in res.stdout  # --per-minute 30: one every 2 s
    outbox = json.loads(run(cfg, "outbox", "list", "--json").stdout)
    notices = [o for o in outbox if o["kind"] == "notify" and "batch_defect" in json.dumps(o["payload"])]
    assert len(notices) == 2
    due = sorted(datetime.fromisoformat(str(o["next_attempt_at"])) for o in notices)
    assert 1.5 <= (due[1] - due[0]).total_seconds() <= 2.5  # spread out in the outbox, not sent at once
    again = run(cfg, *args)
    assert "already notified" in again.stdout
    shown = json.loads(run(cfg, "tickets", "show", "SB-000001", "--json").stdout)
    assert sorted(e["data"]["to"] for e in shown["events"] if e["type"] == "batch_notice") == [
        "a@one.example",
        "b@two.example",
    ]


class ERP:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    @hookimpl
    def asset_lookup(self, serial: str, register, inline: bool):
        self.calls.append((serial, inline))
        if serial == "ERP0001":
            return AssetRecord(serial=serial, customer="from erp", source="erp")
        if serial == "BOOM001":
            raise ConnectionError("erp down")
        return None


def test_asset_lookup_hook_answers_before_the_register(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path}/s.db")
    db.upgrade(engine)
    register = AssetStore(Store(engine))
    register.upsert(AssetRecord(serial="LOCAL01", customer="local"))
    pm = make_plugin_manager(entrypoints=False)
    erp = ERP()
    pm.register(erp, name="erp")
    inline = HostAssets(pm, register, inline=True)
    job = HostAssets(pm, register, inline=False)
    got = asyncio.run(inline.get(" erp0001 "))
    assert got is not None and got.customer == "from erp" and got.source == "erp"
    assert asyncio.run(inline.get("local01")).customer == "local"  # the ERP did not know it
    assert asyncio.run(inline.get("BOOM001")) is None  # inline: the ERP's failure never stops intake
    with pytest.raises(ConnectionError):  # in a job it propagates: the job is retried
        asyncio.run(job.get("BOOM001"))
    assert asyncio.run(inline.get("not a serial!")) is None
    assert erp.calls == [("ERP0001", True), ("LOCAL01", True), ("BOOM001", True), ("BOOM001", False)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_register_store_on_sqlite_and_postgresql(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    from datetime import UTC, datetime, timedelta

    from svcbridge import Ticket

    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/s.db"
    engine = db.make_engine(url)
    db.upgrade(engine)
    store = Store(engine)
    register = AssetStore(store)
    unit = AssetRecord(
        serial="7XK2M9P",
        model="PowerEdge R750",
        customer="华东电力",
        invoice_date=date(2024, 2, 29),
        contacts=["ops@hd.example"],
        parts=[
            AssetPart(category="main", installed=date(2024, 3, 1)),
            AssetPart(category="other", paid_repair=True),
        ],
    )
    assert register.upsert(unit) == ("added", [])
    assert register.upsert(unit) == ("unchanged", [])
    moved = unit.model_copy(update={"customer": "华东电网", "parts": unit.parts[:1]})
    assert register.upsert(moved, dry_run=True) == ("changed", ["customer", "parts"])
    assert register.get("7xk2m9p").customer == "华东电力"  # a dry run wrote nothing
    assert register.upsert(moved) == ("changed", ["customer", "parts"])
    got = register.get("7XK2M9P")
    assert got.customer == "华东电网" and [p.installed for p in got.parts] == [date(2024, 3, 1)]
    assert [u.serial for u in register.by_model("poweredge r750")] == ["7XK2M9P"]
    assert set(register.get_many(["7xk2m9p", "nope123", "bad serial!"])) == {"7XK2M9P"}
    register.add_exclusion("7XK2M9P", "misuse", actor="cli", part="main", ticket_ref="SB-000001")
    assert [(e["reason"], e["part"]) for e in register.exclusions("7xk2m9p")] == [("misuse", "main")]
    with pytest.raises(KeyError):
        register.add_exclusion("NOSUCH1", "misuse", actor="cli")
    register.keep_answer("vendor:dell", "7XK2M9P", {"status": "in"})
    register.keep_answer("vendor:dell", "7XK2M9P", {"status": "out"})
    answer, at = register.last_answer("vendor:dell", "7xk2m9p")
    assert answer == {"status": "out"} and at.tzinfo is not None
    # faults: tickets of a category since a time, with their unit
    now = datetime.now(UTC)
    with store.tx() as conn:
        for i, (cat, ago) in enumerate([("power", 1), ("power", 40), ("display", 1)], start=1):
            t = Ticket(
                id=i,
                ref=f"SB-{i:06d}",
                channel="email",
                customer="华东电力",
                category=cat,
                created_at=now - timedelta(days=ago),
            )
            t.asset.serial, t.asset.model = "7XK2M9P", "PowerEdge R750"
            store.insert_ticket(conn, t, None)
    found = register.faults("power", now - timedelta(days=30))
    assert [(f["ticket"], f["serial"], f["model"], f["customer"]) for f in found] == [
        ("SB-000001", "7XK2M9P", "PowerEdge R750", "华东电力")
    ]


def test_product_number_is_kept_for_hp(cfg: Path, tmp_path: Path) -> None:
    f = tmp_path / "hp.csv"
    f.write_text("serial,vendor,model,product_number\nCND1234XYZ,HP,LaserJet M507,1PV87A\n", encoding="utf-8")
    assert run(cfg, "assets", "import", str(f)).exit_code == 0
    assert json.loads(run(cfg, "assets", "show", "CND1234XYZ", "--json").stdout)["extra"] == {
        "product_number": "1PV87A"
    }


def test_show_and_list_print_register_text_inert(cfg: Path, tmp_path: Path) -> None:
    f = tmp_path / "evil.csv"
    f.write_text(
        "serial,customer,model,part_category\nEVIL123,ACME\x1b[31m[bold]red[/bold],[link=http://x]M1[/link],main\n",
        encoding="utf-8",
    )
    assert run(cfg, "assets", "import", str(f)).exit_code == 0
    for args in (("assets", "show", "EVIL123"), ("assets", "list")):
        out = run(cfg, *args).stdout
        assert "\x1b" not in out and "\u241b" in out  # ESC shown as a symbol, never sent to the terminal
    shown = run(cfg, "assets", "show", "EVIL123").stdout
    assert "[bold]red[/bold]" in shown and "[link=http://x]M1[/link]" in shown  # markup shown as text


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_a_file_over_the_row_limit_is_refused_whole_never_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """Rows past MAX_ROWS were dropped without a word: the import reported success for a part of the file."""
    from svcbridge import assetimport

    monkeypatch.setattr(assetimport, "MAX_ROWS", 3)
    rows = [["serial", "customer"], *[[f"AB{i:05d}", "acme"] for i in range(4)]]
    path = tmp_path / f"big{suffix}"
    if suffix == ".csv":
        path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    else:
        book = openpyxl.Workbook()
        for r in rows:
            book.active.append(r)
        book.save(path)
    with pytest.raises(assetimport.ImportFileError, match="more than 3 rows"):
        assetimport.read_rows(path)
    # exactly at the limit: every row read
    exact = tmp_path / "exact.csv"
    exact.write_text("\n".join(",".join(r) for r in rows[:4]) + "\n", encoding="utf-8")
    assert [r["serial"] for _line, r in assetimport.read_rows(exact)] == ["AB00000", "AB00001", "AB00002"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (45352, date(2024, 3, 1)),  # an XLSX cell holding the date as a number (format "General")
        (45351.0, date(2024, 2, 29)),
        (45352.75, date(2024, 3, 1)),  # a date and time: the day counts
        ("45352", date(2024, 3, 1)),  # the same number exported to CSV
        ("2024/3/1 0:00", date(2024, 3, 1)),  # Excel's CSV of a date-time cell
        ("2024-03-01 13:45:00", date(2024, 3, 1)),
        ("2024年3月1日", date(2024, 3, 1)),
    ],
)
def test_excel_dates_as_serial_numbers_and_with_a_time(value: object, expected: date) -> None:
    from svcbridge.assetimport import _date

    assert _date(value, "invoice_date") == expected


@pytest.mark.parametrize("value", ["45", "1234567", -3, 3_000_000, "2024-13-01", "03/01/2024"])
def test_numbers_that_are_no_excel_date_are_refused(value: object) -> None:
    from svcbridge.assetimport import _date

    with pytest.raises(ValueError, match="invoice_date"):
        _date(value, "invoice_date")


def test_big5_csv_from_traditional_chinese_excel_is_read_with_encoding(cfg: Path, tmp_path: Path) -> None:
    """Excel on Traditional Chinese Windows saves CSV in Big5 (cp950); naming it still works."""
    f = tmp_path / "big5.csv"
    f.write_bytes("serial,model,customer\nFOC2231X0AB,C9300-48P,台北銀行\n".encode("cp950"))
    res = run(cfg, "assets", "import", "--encoding", "big5", str(f))
    assert res.exit_code == 0, res.output
    assert json.loads(run(cfg, "assets", "show", "FOC2231X0AB", "--json").stdout)["customer"] == "台北銀行"


# zh-TW files as Excel on Traditional Chinese Windows saves them (cp950) and zh-CN ones as on
# Simplified Chinese Windows (GBK); "both" marks the files whose bytes decode cleanly as GB18030 AND
# as Big5, where only the plausibility of the text can tell (Big5 bytes practically always decode as
# GB18030: every Big5 file is such a case)
BIG5_FILES = [
    (
        "序號,型號,客戶,發票日期\nFOC2231X0AB,C9300-48P 網路交換器,台北銀行,2024-01-02\n",
        "customer",
        "台北銀行",
        True,
    ),
    (
        "機身編號,品牌,型號,客戶\n7XK2M9P,戴爾,PowerEdge R740 伺服器,長庚紀念醫院\n",
        "customer",
        "長庚紀念醫院",
        True,
    ),
    ("serial,model,customer\nFOC2231X0AB,電源供應器,中華電信\n", "customer", "中華電信", True),
    ("serial,model,customer\nFOC2231X0AB,華碩筆記型電腦,國立臺灣大學\n", "model", "華碩筆記型電腦", True),
]
GBK_FILES = [
    (
        "序列号,型号,客户,发票日期\nJ1ABCDE,联想服务器电源,华东电力,2024-01-02\n",
        "customer",
        "华东电力",
        False,
    ),
    ("serial,model,customer\nJ1ABCDE,网络交换机,中国银行\n", "customer", "中国银行", True),
    ("serial,model,customer\nJ1ABCDE,笔记本电脑,华东电力\n", "model", "笔记本电脑", True),  # a tie: GB
    ("机身编号,品牌,型号,客户\nJ1ABCDE,华为,不间断电源,北京大学\n", "customer", "北京大学", True),
]


def _both_decode(data: bytes) -> bool:
    try:
        data.decode("gb18030"), data.decode("cp950")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("text", "encoding", "field", "value", "both"),
    [(*f[:1], "cp950", *f[1:]) for f in BIG5_FILES] + [(*f[:1], "gbk", *f[1:]) for f in GBK_FILES],
    ids=[f"big5-{i}" for i in range(len(BIG5_FILES))] + [f"gbk-{i}" for i in range(len(GBK_FILES))],
)
def test_a_chinese_csv_is_read_in_its_encoding_without_being_told(
    cfg: Path, tmp_path: Path, text: str, encoding: str, field: str, value: str, both: bool
) -> None:
    """Without --encoding a Big5 file was read as GB18030 (it decodes without an error, into other
    characters): 台北銀行 became four odd symbols in the register."""
    data = text.encode(encoding)
    assert _both_decode(data) == both  # the hard cases are really there
    f = tmp_path / "units.csv"
    f.write_bytes(data)
    res = run(cfg, "assets", "import", str(f))
    assert res.exit_code == 0, res.output
    serial = text.splitlines()[1].split(",")[0]
    assert json.loads(run(cfg, "assets", "show", serial, "--json").stdout)[field] == value


def test_the_detector_names_the_encoding_and_refuses_what_none_reads() -> None:
    from svcbridge.textcodec import UndecodableText, decode_legacy

    for text, *_ in BIG5_FILES:
        assert decode_legacy(text.encode("cp950")) == (text, "big5")
    for text, *_ in GBK_FILES:
        assert decode_legacy(text.encode("gb18030")) == (text, "gb18030")
    assert decode_legacy("序號,客戶\n".encode("utf-8-sig")) == ("序號,客戶\n", "utf-8")
    # Hong Kong: Big5-HKSCS characters (嘅) are not in cp950; GB18030 decodes the bytes, wrongly
    hk = "序號,型號,客戶\nHK1,印表機,香港中文大學 嘅 分部\n"
    assert decode_legacy(hk.encode("big5hkscs")) == (hk, "big5hkscs")
    with pytest.raises(UndecodableText) as got:
        decode_legacy(b"serial,customer\nAB12345,\xff\xfeACME\x80\n")
    assert got.value.start == 24


@pytest.mark.parametrize(
    ("data", "args", "message"),
    [
        # bytes that are neither UTF-8 nor GB18030 were replaced by U+FFFD and stored without a word
        (b"serial,customer\nAB12345,\xff\xfeACME\x80\n", [], "neither UTF-8, GB18030 nor Big5"),
        ("serial,customer\nAB12345,台北銀行\n".encode("cp950") + b"\xff", ["--encoding", "big5"], "big5"),
        (b"serial\nAB12345\n", ["--encoding", "klingon"], "unknown encoding"),
    ],
)
def test_undecodable_csv_is_refused_whole_with_the_reason(
    cfg: Path, tmp_path: Path, data: bytes, args: list[str], message: str
) -> None:
    f = tmp_path / "bad.csv"
    f.write_bytes(data)
    res = run(cfg, "assets", "import", *args, str(f))
    assert res.exit_code == 2 and message in res.output
    assert run(cfg, "assets", "show", "AB12345").exit_code != 0  # nothing imported


def test_the_unit_columns_are_every_field_of_a_record_but_its_key_parts_and_provenance() -> None:
    # the import reads them and the store compares them: a field added to AssetRecord must be in both
    from svcbridge.assets import UNIT_FIELDS

    assert set(UNIT_FIELDS) == set(AssetRecord.model_fields) - {"serial", "parts", "source", "extra"}
