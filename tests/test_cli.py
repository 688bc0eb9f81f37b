"""The command line: check-config, ingest (MTA pipe, EX_TEMPFAIL), tickets, quarantine, outbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import eml
from svcbridge.cli import EX_TEMPFAIL, main

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


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for k in [k for k in __import__("os").environ if k.startswith("SVCBRIDGE_")]:
        monkeypatch.delenv(k)
    p = tmp_path / "svcbridge.toml"
    p.write_text(CONFIG.format(d=tmp_path))
    return p


def run(cfg: Path, *args: str, input: bytes | None = None):
    return CliRunner().invoke(main, ["--config", str(cfg), *args], input=input)


def test_check_config_ok_and_errors_with_toml_paths(cfg: Path, tmp_path: Path) -> None:
    assert run(cfg, "check-config").exit_code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = "eighty"\n[outbox]\nmax_attempts = 0\n[plugins.webhook]\ntolerance = -1\nbogus = 1\n')
    res = run(bad, "check-config")
    assert res.exit_code == 2
    for path in ("http.port", "outbox.max_attempts"):
        assert path in res.stderr
    res = CliRunner().invoke(main, ["--config", str(tmp_path / "missing.toml"), "check-config"])
    assert res.exit_code == 2 and "config file not found" in res.stderr
    bad.write_text('[plugins.webhook]\ntolerance = -1\nbogus = 1\n')
    res = run(bad, "check-config")
    assert res.exit_code == 2
    assert "plugins.webhook.tolerance" in res.stderr and "plugins.webhook.bogus" in res.stderr


def test_ingest_prints_ref_and_is_idempotent(cfg: Path) -> None:
    res = run(cfg, "ingest", "-", input=eml())
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == "SB-000001"
    again = run(cfg, "ingest", "-", input=eml())
    assert again.exit_code == 0 and again.stdout.strip().splitlines()[-1] == "SB-000001"
    listing = json.loads(run(cfg, "tickets", "list", "--json").stdout)
    assert [t["ref"] for t in listing] == ["SB-000001"]
    shown = json.loads(run(cfg, "tickets", "show", "SB-000001", "--json").stdout)
    assert shown["subject"] == "Printer jams"
    assert [e["type"] for e in shown["events"]][:1] == ["received"]


def test_ingest_exits_tempfail_when_the_store_is_unavailable(cfg: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the data directory should be")
    res = CliRunner().invoke(
        main, ["--config", str(cfg), "ingest", "-"], input=eml(), env={"SVCBRIDGE_DATA_DIR": str(blocker / "var")}
    )
    assert res.exit_code == EX_TEMPFAIL
    res = CliRunner().invoke(
        main, ["--config", str(cfg), "ingest", "-"], input=eml(),
        env={"SVCBRIDGE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
    )
    assert res.exit_code == EX_TEMPFAIL


def test_quarantine_commands(cfg: Path) -> None:
    # a webhook-channel message with broken JSON cannot be parsed: it is kept with the reason
    res = run(cfg, "ingest", "--channel", "webhook", "-", input=b"{broken")
    assert res.exit_code == 0 and "quarantined" in res.stderr
    rows = json.loads(run(cfg, "quarantine", "list", "--json").stdout)
    assert len(rows) == 1 and rows[0]["stage"] == "parse" and rows[0]["plugin"] == "webhook"
    shown = run(cfg, "quarantine", "show", str(rows[0]["id"]))
    assert "JSONDecodeError" in shown.stdout
    retry = run(cfg, "quarantine", "retry", str(rows[0]["id"]))
    assert retry.exit_code == 0 and "quarantined" in retry.stdout  # still broken: back in quarantine
    rows = json.loads(run(cfg, "quarantine", "list", "--json").stdout)
    assert run(cfg, "quarantine", "drop", str(rows[0]["id"])).exit_code == 0
    assert json.loads(run(cfg, "quarantine", "list", "--json").stdout) == []
    assert run(cfg, "quarantine", "drop", "999").exit_code == 1


def test_set_state_notifies_and_outbox_listing(cfg: Path, tmp_path: Path) -> None:
    run(cfg, "ingest", "-", input=eml())
    res = run(cfg, "tickets", "set-state", "SB-000001", "resolved", "--reply", "Replaced the fuser.")
    assert res.exit_code == 0, res.output
    mails = sorted((tmp_path / "outgoing").glob("*.eml"))
    assert len(mails) == 3
    assert b"Replaced the fuser." in mails[-1].read_bytes()
    rows = json.loads(run(cfg, "outbox", "list", "--json").stdout)
    assert {r["status"] for r in rows} == {"done"}
    assert run(cfg, "outbox", "replay", str(rows[0]["id"])).exit_code == 0
    assert run(cfg, "outbox", "replay", "999").exit_code == 1
    assert run(cfg, "tickets", "show", "SB-999999").exit_code == 1


def db_head() -> str:
    from svcbridge.store.db import head_revision

    return head_revision()


def test_db_upgrade(cfg: Path) -> None:
    res = run(cfg, "db", "upgrade")
    assert res.exit_code == 0 and db_head() in res.stdout


def test_head_revision_is_alembics_head_and_a_current_store_skips_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    from alembic.script import ScriptDirectory

    from svcbridge.store import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert ScriptDirectory.from_config(db.alembic_config(engine)).get_heads() == [db.head_revision()]
    db.upgrade(engine)
    assert db.current_revision(engine) == db.head_revision()
    # a second start on a current store does not import Alembic at all
    code = (
        "import sys; from svcbridge.store import db; "
        f"db.upgrade(db.make_engine('sqlite:///{tmp_path / 'x.db'}')); "
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
