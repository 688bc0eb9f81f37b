"""The SLA commands as an operator runs them: tickets show, sla milestone, followups, report.

The config is the commented example of config/svcbridge.toml, uncommented (what an operator starts
from); messages come in through ``svcbridge ingest`` and work runs with ``svcbridge run --once``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import eml
from svcbridge.cli import main

ROOT = Path(__file__).resolve().parent.parent


def sla_block() -> str:
    text = (ROOT / "config" / "svcbridge.toml").read_text(encoding="utf-8")
    start = text.index("# [plugins.sla]")
    block = text[start : text.find("\n\n", start)]  # the SLA block ends at the next blank line
    return "\n".join(ln[2:].split("  #")[0] if ln.startswith("# ") else "" for ln in block.splitlines())


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for k in [k for k in __import__("os").environ if k.startswith("SVCBRIDGE_")]:
        monkeypatch.delenv(k)
    p = tmp_path / "svcbridge.toml"
    p.write_text(
        f'data_dir = "{tmp_path}/var"\n[http]\nenabled = false\n[plugins.email]\nfrom_address = "s@bridge.test"\n'
        f'[plugins.email.outbound]\ntransport = "spool"\nspool_dir = "{tmp_path}/outgoing"\n' + sla_block()
    )
    return p


def run(cfg: Path, *args: str, input: bytes | None = None):
    return CliRunner().invoke(main, ["--config", str(cfg), *args], input=input)


def test_sla_commands(cfg: Path, tmp_path: Path) -> None:
    assert run(cfg, "check-config").exit_code == 0
    res = run(cfg, "ingest", "-", input=eml(subject="核心交换机 down", body="全部中断"))
    assert res.exit_code == 0, res.output
    ref = res.stdout.strip().splitlines()[-1]
    show = run(cfg, "tickets", "show", ref)
    assert "P1" in show.stdout and "sla: p1-province  fault: critical  due: acknowledge_by" in show.stdout

    # on site ten minutes ago, reported now
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
    res = run(cfg, "sla", "milestone", ref, "onsite", "--at", at, "--by", "Wang")
    assert res.exit_code == 0 and "onsite at" in res.stdout
    assert run(cfg, "sla", "milestone", "SB-999999", "onsite").exit_code == 1
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert run(cfg, "sla", "milestone", ref, "onsite", "--at", future).exit_code == 2
    res = run(cfg, "sla", "milestone", ref, "onsite", "--at", "yesterday")
    assert res.exit_code == 2 and "not an ISO time" in res.output
    jobs = json.loads(run(cfg, "jobs", "list", "--json").stdout)
    assert [(j["kind"], j["status"]) for j in jobs] == [("sla.recompute", "pending")]
    assert run(cfg, "run", "--once").exit_code == 0
    t = json.loads(run(cfg, "tickets", "show", ref, "--json").stdout)
    assert "onsite_by" not in t["deadlines"] and "acknowledge_by" not in t["deadlines"]
    met = {e["data"]["target"]: e["data"] for e in t["events"] if e["type"] == "sla_met"}
    assert met["onsite"]["on_time"] is True and met["acknowledge"]["on_time"] is True
    (ms,) = [e for e in t["events"] if e["type"] == "sla_milestone"]
    assert ms["actor"] == "cli:Wang" and ms["data"]["at"] == at

    month = datetime.now(UTC).strftime("%Y-%m")
    res = run(cfg, "report", "sla", "--month", month, "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = {(r[0], r[1], r[2]): r[3] for r in csv.reader(io.StringIO(res.stdout))}
    assert rows[("by_target", "onsite", "met")] == "1" and rows[("timeliness", "tickets_counted", "")] == "1"
    res = run(cfg, "report", "sla", "--month", month)
    assert res.exit_code == 0 and "timeliness" in res.stdout

    res = run(cfg, "followups", "--record", ref, "satisfied", "--note", "客户满意")
    assert res.exit_code == 0 and "call satisfied" in res.stdout
    assert run(cfg, "followups", "--record", ref, "maybe").exit_code == 2
    assert run(cfg, "followups", "--due").exit_code == 0
    t = json.loads(run(cfg, "tickets", "show", ref, "--json").stdout)
    (call,) = [e for e in t["events"] if e["type"] == "followup_call"]
    assert call["data"] == {"outcome": "satisfied", "note": "客户满意"}


def test_naive_times_and_report_months_are_the_deployment_s_time_zone(cfg: Path) -> None:
    """A Shanghai shop typing '--at 2026-03-09T11:30' meant 11:30 in Shanghai, not UTC (8 hours later:
    'in the future', or a milestone 8 hours off); its monthly report cut months at UTC midnight
    unless every run said --tz. The top-level 'timezone' setting is the default for both."""
    from zoneinfo import ZoneInfo

    cfg.write_text('timezone = "Asia/Shanghai"\n' + cfg.read_text(encoding="utf-8"), encoding="utf-8")
    assert run(cfg, "check-config").exit_code == 0
    res = run(cfg, "ingest", "-", input=eml(subject="核心交换机 down", body="全部中断"))
    ref = res.stdout.strip().splitlines()[-1]
    local = datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(minutes=5)
    typed = local.replace(tzinfo=None).isoformat(timespec="seconds")  # what the engineer types
    res = run(cfg, "sla", "milestone", ref, "onsite", "--at", typed)
    assert res.exit_code == 0, res.output
    assert "+08:00" in res.stdout
    t = json.loads(run(cfg, "tickets", "show", ref, "--json").stdout)
    (ms,) = [e for e in t["events"] if e["type"] == "sla_milestone"]
    assert datetime.fromisoformat(ms["data"]["at"]) == local.replace(microsecond=0)
    explicit = (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")
    assert run(cfg, "sla", "milestone", ref, "restored", "--at", explicit).exit_code == 0  # offset wins

    month = local.strftime("%Y-%m")
    res = run(cfg, "report", "sla", "--month", month, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["tz"] == "Asia/Shanghai"
    res = run(cfg, "report", "sla", "--month", month, "--format", "json", "--tz", "UTC")
    assert json.loads(res.stdout)["tz"] == "UTC"


def test_an_unknown_time_zone_is_a_configuration_error(cfg: Path) -> None:
    cfg.write_text('timezone = "Mars/Olympus"\n' + cfg.read_text(encoding="utf-8"), encoding="utf-8")
    res = run(cfg, "check-config")
    assert res.exit_code == 2 and "Mars/Olympus" in res.output


def test_followups_show_times_in_the_deployment_s_time_zone(cfg: Path, monkeypatch) -> None:
    """The list cut the UTC ISO times to minutes, offset and all: a call due at 11:30 in Shanghai read
    '03:30' with nothing saying it was UTC."""
    from svcbridge.cli_sla import record_event
    from svcbridge.models import TicketEvent
    from svcbridge.settings import load_settings
    from svcbridge.store import db
    from svcbridge.store.repo import Store

    cfg.write_text('timezone = "Asia/Shanghai"\n' + cfg.read_text(encoding="utf-8"), encoding="utf-8")
    res = run(cfg, "ingest", "-", input=eml(subject="打印机卡纸", body="卡纸"))
    ref = res.stdout.strip().splitlines()[-1]
    resolved = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    data = {"resolved_at": resolved.isoformat(), "due_at": (resolved + timedelta(hours=1)).isoformat()}
    store = Store(db.make_engine(load_settings(cfg).db_url))
    assert record_event(store, ref, TicketEvent(type="followup_due", actor="sla", data=data), "t")
    monkeypatch.setenv("COLUMNS", "200")  # the whole table, not cells cut to fit 80 columns
    res = run(cfg, "followups")
    assert res.exit_code == 0, res.output
    local = (resolved + timedelta(hours=1)).astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
    assert local.strftime("%Y-%m-%d %H:%M") in res.stdout and "Asia/Shanghai" in res.stdout
