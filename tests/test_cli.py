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


# ------------------------------------------------------------------ customer text on the terminal (issue 12 item 8)
HOSTILE = [
    "[/x] printer",
    "[link=https://evil.example]click[/link]",
    "\x1b]8;;https://evil\x07x\x1b]8;;\x07",
    "\x1b[2J wiped",
]


def _visible(text: str) -> str:
    """What a reader sees of ``text``: control pictures for the control characters it had."""
    from svcbridge.cli_work import clean

    return clean(text)


def _no_raw_controls(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\x9b" not in output


def test_customer_text_is_never_markup_and_never_reaches_the_terminal_raw(cfg: Path) -> None:
    for i, subject in enumerate(HOSTILE):
        body = json.dumps({"id": f"w{i}", "subject": subject, "contact": {"email": "bob@example.com"}})
        assert run(cfg, "ingest", "--channel", "webhook", "-", input=body.encode()).exit_code == 0
    # a customer's address that the parser refuses: the quarantine's error quotes it
    bad = json.dumps({"id": "q", "subject": "s", "contact": {"email": "[/x] printer\x1b[2J[link=https://evil.example]"}})
    run(cfg, "ingest", "--channel", "webhook", "--source", "[/x] hook\x1b[2J", "-", input=bad.encode())
    wide = {"COLUMNS": "250"}
    listing = CliRunner().invoke(main, ["--config", str(cfg), "tickets", "list"], env=wide)
    assert listing.exit_code == 0, listing.output  # MarkupError on "[/x]" before
    _no_raw_controls(listing.stdout)
    for i, subject in enumerate(HOSTILE, 1):
        assert _visible(subject) in listing.stdout
        shown = run(cfg, "tickets", "show", f"SB-{i:06d}")
        assert shown.exit_code == 0, shown.output
        _no_raw_controls(shown.stdout)
        assert f"subject: {_visible(subject)}" in shown.stdout
    assert "\u241b]8;;https://evil\u2407x\u241b]8;;\u2407" in listing.stdout  # the payload is shown, inert
    q = CliRunner().invoke(main, ["--config", str(cfg), "quarantine", "list"], env={"COLUMNS": "400"})
    assert q.exit_code == 0, q.output
    _no_raw_controls(q.stdout)
    assert "[/x] hook\u241b[2J" in q.stdout
    rows = json.loads(run(cfg, "quarantine", "list", "--json").stdout)
    shown = CliRunner().invoke(main, ["--config", str(cfg), "quarantine", "show", str(rows[0]["id"])], env=wide)
    assert shown.exit_code == 0 and "[/x] hook\u241b[2J" in shown.stdout
    assert "[/x] printer\\x1b[2J[link=https://evil.example]" in shown.stdout  # as pydantic quoted it
    _no_raw_controls(shown.stdout)


def test_every_table_cell_and_printed_string_is_safe() -> None:
    """jobs / timers / outbox / plugins tables print through the same console: no markup, no emoji
    codes, control characters as symbols."""
    import io

    from rich.table import Table

    from svcbridge.cli_work import SafeConsole

    buf = io.StringIO()
    con = SafeConsole(file=buf, width=300, force_terminal=True)
    table = Table("last error")
    for s in [*HOSTILE, ":thumbs_up: \x9b31m red", "tab\there\r\nnext"]:
        table.add_row(s)
    con.print(table)
    con.print("[bold]not bold[/bold] \x1b[31m")
    out = buf.getvalue()
    body = "".join(ch for ch in out if ch != "\x1b")  # the console's own styling may use ESC
    assert out.count("\x1b") == len(__import__("re").findall(r"\x1b\[[0-9;]*m", out))  # only SGR of rich
    for s in ["[/x] printer", "[link=https://evil.example]click[/link]", ":thumbs_up:", "\ufffd31m red",
              "[bold]not bold[/bold] \u241b[31m", "\u241b[2J wiped"]:
        assert s in body
    assert "\u241d" not in out and "\u240d" not in out  # CRLF is a line break, not a symbol


# ------------------------------------------------------------------ plain failures (issue 12 item 9)
def test_set_state_refuses_a_transition_the_state_machine_forbids(cfg: Path, tmp_path: Path) -> None:
    run(cfg, "ingest", "-", input=eml())
    assert run(cfg, "tickets", "set-state", "SB-000001", "closed").exit_code == 0
    sent = len(list((tmp_path / "outgoing").glob("*.eml")))
    res = run(cfg, "tickets", "set-state", "SB-000001", "waiting_customer", "--reply", "Any news?")
    assert res.exit_code == 1
    assert "cannot go from closed to waiting_customer" in res.stderr and "in_progress" in res.stderr
    assert "->" not in res.stdout
    assert len(list((tmp_path / "outgoing").glob("*.eml"))) == sent  # the reply was not sent either
    shown = json.loads(run(cfg, "tickets", "show", "SB-000001", "--json").stdout)
    assert shown["state"] == "closed"
    assert [e["type"] for e in shown["events"]].count("agent_reply") == 0
    assert run(cfg, "tickets", "set-state", "SB-000404", "closed").exit_code == 1
    assert run(cfg, "tickets", "set-state", "SB-000001", "in_progress").exit_code == 0  # a reopen is allowed


def test_check_config_refuses_routing_to_a_sink_that_is_not_configured(cfg: Path, tmp_path: Path) -> None:
    bad = tmp_path / "routing.toml"
    bad.write_text(CONFIG.format(d=tmp_path) + '[routing]\ndefault = ["rt"]\n'
                   '[[routing.rules]]\nchannel = "sms"\nsinks = ["local", "zammad"]\n')
    res = CliRunner().invoke(main, ["--config", str(bad), "check-config"], env={"COLUMNS": "250"})
    assert res.exit_code == 2
    assert "routing.default.0: 'rt': no sink of this name is configured" in res.stderr
    assert "routing.rules.0.sinks.1: 'zammad'" in res.stderr
    assert "routing.rules.0.sinks.0" not in res.stderr  # local is there
    good = tmp_path / "good.toml"
    good.write_text(CONFIG.format(d=tmp_path) + '[routing]\ndefault = ["local"]\n')
    assert run(good, "check-config").exit_code == 0


def test_a_postgresql_url_without_the_driver_is_a_configuration_error(
    cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as without the postgres extra: import fails
    env = {"SVCBRIDGE_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none", "COLUMNS": "250"}
    res = CliRunner().invoke(main, ["--config", str(cfg), "ingest", "-"], input=eml(), env=env)
    assert res.exit_code == 2, res.output  # not EX_TEMPFAIL: an MTA would retry for ever
    assert "database_url" in res.stderr and "pip install 'svcbridge[postgres]'" in res.stderr
    res = CliRunner().invoke(main, ["--config", str(cfg), "check-config"], env=env)
    assert res.exit_code == 2 and "svcbridge[postgres]" in res.stderr
    res = CliRunner().invoke(main, ["--config", str(cfg), "db", "upgrade"], env=env)
    assert res.exit_code == 2 and "svcbridge[postgres]" in res.stderr


def test_commands_log_warnings_only_unless_verbose(cfg: Path) -> None:
    res = run(cfg, "ingest", "-", input=eml())
    assert res.exit_code == 0
    assert '"level": "info"' not in res.stderr and res.stderr.strip() == ""
    res = run(cfg, "tickets", "set-state", "SB-000001", "resolved")
    assert res.exit_code == 0 and res.stderr.strip() == ""
    res = CliRunner().invoke(main, ["--config", str(cfg), "-v", "ingest", "-"], input=eml(msgid="<m2@x>"))
    assert res.exit_code == 0 and '"level": "info"' in res.stderr
    # warnings still show without -v
    res = run(cfg, "ingest", "--channel", "webhook", "-", input=b"{broken")
    assert '"level": "warning"' in res.stderr and "quarantined" in res.stderr


def test_jobs_and_timers_commands(cfg: Path) -> None:
    """list / show / retry of the durable work rows (cli_work.py), on a store with one of each."""
    from datetime import UTC, datetime

    from svcbridge.app import App
    from svcbridge.settings import load_settings
    from svcbridge.store import schema
    from svcbridge.store.jobs import enqueue_job, schedule_timer

    app = App.build(load_settings(str(cfg)))
    with app.store.tx() as conn:
        enqueue_job(conn, "w.lookup", "k1", None, {"serial": "SN1"})
        schedule_timer(conn, "", "sla.warn", None, datetime(2030, 1, 1, tzinfo=UTC), {})
        conn.execute(schema.jobs.update().values(status="dead", last_error="permanent: gone"))
    listed = run(cfg, "jobs", "list")
    assert listed.exit_code == 0 and "w.lookup" in listed.output and "dead" in listed.output
    shown = json.loads(run(cfg, "jobs", "show", "1").output)
    assert (shown["kind"], shown["data"], shown["ticket"]) == ("w.lookup", {"serial": "SN1"}, "-")
    assert run(cfg, "jobs", "retry", "1").exit_code == 0
    assert json.loads(run(cfg, "jobs", "show", "1").output)["status"] == "pending"
    assert run(cfg, "jobs", "retry", "1").exit_code == 1  # pending already: nothing to retry
    assert run(cfg, "jobs", "show", "99").exit_code == 1
    assert "sla.warn" in run(cfg, "timers", "list").output
    assert json.loads(run(cfg, "timers", "show", "1").output)["name"] == "sla.warn"
    assert run(cfg, "timers", "retry", "1").exit_code == 1  # still pending
