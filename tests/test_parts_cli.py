"""``svcbridge parts lookup|reserve|release`` over the CSV table ERP and the real Tryton (issue 16 item 3)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import eml
from svcbridge.cli import main
from test_parts_jobs import write_table
from tryton_server import TrytonServer, running_tryton

CONFIG = """
data_dir = "{d}/var"
outbound_allow = ["127.0.0.1"]
[http]
enabled = false
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
transport = "spool"
spool_dir = "{d}/outgoing"
[plugins.parts]
erp = "{erp}"
[plugins.parts.regions]
north = ["BJ", "SH"]
"华南" = ["GZ"]
[[plugins.parts.erps]]
name = "shop"
type = "table"
path = "{d}/stock.csv"
"""

TRYTON = """
[[plugins.parts.erps]]
name = "tryton"
type = "tryton"
url = "{url}"
database = "erp"
user = "admin"
password_file = "{secret}"
"""


@pytest.fixture(scope="module")
def tryton() -> Iterator[TrytonServer]:
    with running_tryton() as server:
        yield server


def config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, erp: str = "shop", tryton: TrytonServer | None = None
) -> Path:
    monkeypatch.chdir(tmp_path)
    for k in [k for k in __import__("os").environ if k.startswith("SVCBRIDGE_")]:
        monkeypatch.delenv(k)
    write_table(tmp_path / "stock.csv")
    text = CONFIG.format(d=tmp_path, erp=erp)
    if tryton is not None:
        secret = tryton.plugin_config()["password_file"]
        text += TRYTON.format(url=tryton.url, secret=secret)
    p = tmp_path / "svcbridge.toml"
    p.write_text(text, encoding="utf-8")
    return p


def run(cfg: Path, *args: str, input: bytes | None = None):
    return CliRunner().invoke(main, ["--config", str(cfg), *args], input=input, env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    ("args", "first", "code"),
    [
        (["PSU-750W", "--region", "north"], "BJ", 0),
        (["PSU-750W", "--region", "华南"], "GZ", 0),
        (["PSU-750W"], "SH", 0),  # no region: most available first
        (["--model", "PowerEdge R740", "--category", "PSU"], "SH", 0),
    ],
)
def test_lookup_prints_depots_region_first(tmp_path, monkeypatch, args, first, code) -> None:
    cfg = config(tmp_path, monkeypatch)
    res = run(cfg, "parts", "lookup", *args)
    assert res.exit_code == code, res.output
    assert "PSU-750W" in res.stdout and "电源" in res.stdout and "lead time 5 days" in res.stdout
    cells = [line.replace("│", " ").replace("┃", " ").split() for line in res.stdout.splitlines()]
    rows = [c[0] for c in cells if c and c[0] in ("SH", "BJ", "GZ")]
    assert rows[0] == first and sorted(rows) == ["BJ", "GZ", "SH"]
    data = json.loads(run(cfg, "parts", "lookup", *args, "--json").stdout)
    assert data[0]["part"] == "PSU-750W" and {d["depot"] for d in data[0]["depots"]} == {"SH", "BJ", "GZ"}


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["NOPE-1"], 1, "not known"),
        (["--model", "Unknown 9000"], 1, "no psu part fits"),
        ([], 2, "give a PART or --model"),
        (["PSU-750W", "--erp", "sap"], 2, "no ERP named 'sap'"),
    ],
)
def test_lookup_errors(tmp_path, monkeypatch, args, code, text) -> None:
    res = run(config(tmp_path, monkeypatch), "parts", "lookup", *args)
    assert res.exit_code == code and text in res.output


def test_reserve_and_release_a_ticket_s_part(tmp_path, monkeypatch) -> None:
    cfg = config(tmp_path, monkeypatch)
    ref = run(cfg, "ingest", "-", input=eml(subject="Printer jams")).stdout.strip()
    res = run(cfg, "parts", "reserve", ref, "PSU-750W", "--qty", "2", "--depot", "bj")
    assert res.exit_code == 0, res.output
    assert f"{ref} PSU-750W: 2 at BJ (reserved)" in res.stdout
    again = run(cfg, "parts", "reserve", ref, "PSU-750W", "--qty", "2", "--depot", "bj")
    assert again.exit_code == 0 and f"{ref} PSU-750W: 2 at BJ (reserved)" in again.stdout
    with sqlite3.connect(tmp_path / "stock.csv.reservations.sqlite") as db:
        assert db.execute("select key, depot, qty, state from parts_reservations").fetchall() == [
            (f"svcbridge:{ref}:PSU-750W", "BJ", 2.0, "reserved")
        ]
    shown = json.loads(run(cfg, "parts", "lookup", "PSU-750W", "--json").stdout)[0]
    assert {d["depot"]: d["reserved"] for d in shown["depots"]}["BJ"] == 2
    rel = run(cfg, "parts", "release", ref)
    assert rel.exit_code == 0 and f"{ref} PSU-750W: 2 at BJ (released)" in rel.stdout
    assert run(cfg, "parts", "release", "SB-999999").exit_code == 1


def test_reserve_against_the_real_tryton(tmp_path, monkeypatch, tryton: TrytonServer) -> None:
    tryton.reset()
    cfg = config(tmp_path, monkeypatch, erp="tryton", tryton=tryton)
    ref = run(cfg, "ingest", "-", input=eml(subject="电源故障")).stdout.strip()
    res = run(cfg, "parts", "reserve", ref, "FAN-R740")
    assert res.exit_code == 0, res.output
    assert f"{ref} FAN-R740: 1 at SH (reserved)" in res.stdout
    assert [(r["reference"], r["state"]) for r in tryton.reservations()] == [
        (f"svcbridge:{ref}:FAN-R740", "assigned")
    ]
    assert run(cfg, "parts", "release", ref, "FAN-R740").exit_code == 0
    assert [r["state"] for r in tryton.reservations()] == ["cancelled"]
    tryton.reset()


def test_reserve_while_the_erp_is_down_stays_queued(tmp_path, monkeypatch, tryton: TrytonServer) -> None:
    cfg = config(tmp_path, monkeypatch, erp="tryton", tryton=tryton)
    ref = run(cfg, "ingest", "-", input=eml(subject="hello")).stdout.strip()
    tryton.stop()
    try:
        res = run(cfg, "parts", "reserve", ref, "FAN-R740")
    finally:
        tryton.start()
    assert res.exit_code == 1 and "queued for the daemon" in res.output
    jobs = json.loads(run(cfg, "jobs", "list", "--json").stdout)
    assert [(j["kind"], j["status"]) for j in jobs if j["kind"] == "parts.lookup"] == [
        ("parts.lookup", "pending")
    ]


@pytest.mark.parametrize("qty", ["nan", "inf", "-inf", "0", "-1", "1e9", "1e308"])
def test_reserve_refuses_a_quantity_no_depot_can_mean(tmp_path, monkeypatch, qty: str) -> None:
    """'nan' and 'inf' passed click's FloatRange(min=0, min_open=True) (nan <= 0 is False): a NaN
    reached the job's JSON and the ERP (SQLite stores NaN as NULL: the ledger's insert failed)."""
    cfg = config(tmp_path, monkeypatch)
    ref = run(cfg, "ingest", "-", input=eml(subject="Printer jams")).stdout.strip()
    res = run(cfg, "parts", "reserve", ref, "PSU-750W", "--qty", qty)
    assert res.exit_code == 2 and "--qty" in res.output, res.output
    assert not (tmp_path / "stock.csv.reservations.sqlite").exists()  # nothing reached the ERP


@pytest.mark.parametrize("qty", [float("nan"), float("inf"), 0, 1001])
def test_the_configured_quantity_is_a_quantity(qty: float) -> None:
    from pydantic import ValidationError

    from svcbridge_parts import PartsSettings

    with pytest.raises(ValidationError):
        PartsSettings(quantity=qty)
    assert PartsSettings(quantity=2).quantity == 2
