"""Source leases between real processes (issue 19 item 4) on PostgreSQL and Dovecot (``after = "move"``,
Dovecot's mail_log reporting each expunge a move makes):

- a cron ``svcbridge run --once`` beside a running daemon leaves the mailbox the daemon holds to it
  (no login of its own there: Dovecot's log counts them) and polls the free one;
- a replica SIGSTOPped past the TTL with a fetched batch in hand (or with an after-action about to
  run), then resumed after another replica took the mailbox over and ingested it, journals nothing
  and moves nothing (its own log of journal writes and after-actions; each mail moved once by
  Dovecot's count; the journal's rows by source); the time until the other replica took over is
  printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import ProgrammingError

from conftest import eml
from test_replica_sources import _dovecot_with_mail_log, holders, imap_boxes

TTL = float(os.environ.get("FENCE_LEASE_TTL", 4))  # [store] source_lease_ttl of the paused-replica test


def config(tmp: Path, dv: Any, url: str, users: list[str], name: str, ttl: float = 4.0) -> Path:
    boxes = imap_boxes(dv, users)
    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        f"""data_dir = "{tmp}/var-{name}"
database_url = "{url}"
shutdown_grace = 3
[http]
enabled = false
[log]
format = "json"
level = "debug"
[pipeline]
lease_ttl = 10
[store]
source_lease_ttl = {ttl}
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
spool_dir = "{tmp}/outgoing"
{boxes}"""
    )
    return cfg


def start(cfg: Path, log: Path, *args: str, faults: str = "") -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
    if faults:
        env["SVCBRIDGE_FAULTS"] = faults
    return subprocess.Popen([sys.executable, "-m", "svcbridge", "--config", str(cfg), *args],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=cfg.parent)


def heartbeats(engine: Any) -> list[str]:
    with engine.connect() as conn:
        q = "SELECT holder FROM leases WHERE name LIKE 'replica:%' AND expires_at > now()"
        return [r[0] for r in conn.execute(text(q))]


def wait_for(what: str, check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, what
        time.sleep(0.1)
    return time.monotonic() - t0


def journal(engine: Any) -> list[tuple[str, str, str]]:
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT source, external_id, status FROM journal"))]
    except ProgrammingError:
        return []


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def moves(dv: Any) -> dict[str, int]:
    """Message-ID -> how many times Dovecot expunged it from INBOX (a MOVE expunges the source)."""
    out: dict[str, int] = {}
    for ln in dv.log().splitlines():
        if "expunge" in ln and "msgid=" in ln and "box=INBOX" in ln:
            mid = ln.split("msgid=", 1)[1].strip().strip(",")
            out[mid] = out.get(mid, 0) + 1
    return out


def logins(dv: Any, user: str) -> int:
    return sum(1 for ln in dv.log().splitlines() if "Login: user=<" + user + ">" in ln)


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def mail(user: str, tag: str, i: int) -> tuple[str, bytes]:
    mid = f"<{tag}{i}@customer.example>"
    return mid, eml(subject=f"Printer fault {tag}{i}", msgid=mid, sender=f"C{i} <c{i}@customer.example>")


@pytest.mark.slow
def test_run_once_beside_a_daemon_leaves_it_the_mailbox_it_holds(tmp_path: Path, pg_url: str) -> None:
    dv = _dovecot_with_mail_log()
    engine = create_engine(pg_url)
    daemon_cfg = config(tmp_path, dv, pg_url, ["user1"], "daemon")
    cron_cfg = config(tmp_path, dv, pg_url, ["user1", "user2"], "cron")  # same store, one more mailbox
    daemon = start(daemon_cfg, tmp_path / "daemon.log", "run")
    sent = []
    try:
        wait_for("the daemon never took its mailbox", lambda: "imap:user1" in holders(engine), 90)
        held_by = holders(engine)["imap:user1"]
        assert f":{daemon.pid}:" in held_by
        wait_for("the daemon never idled", lambda: dv.idling("user1"), 30)
        for user, tag in (("user1", "a"), ("user2", "b")):
            for i in range(3):
                mid, raw = mail(user, tag, i)
                dv.append(user, raw)
                sent.append(mid)
        before, before2 = logins(dv, "user1"), logins(dv, "user2")
        cron = subprocess.run(
            [sys.executable, "-m", "svcbridge", "--config", str(cron_cfg), "run", "--once"],
            capture_output=True, text=True, timeout=180, cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")},
        )
        assert cron.returncode == 0, cron.stdout + cron.stderr
        assert f"left imap:user1 to {held_by}" in cron.stdout, cron.stdout
        assert logins(dv, "user1") == before, "run --once logged in to the mailbox the daemon holds"
        assert "imap:user2" not in holders(engine)  # the cron's lease went back with its pass
        assert logins(dv, "user2") == before2 + 1  # the free mailbox was polled, by the cron
        wait_for("not every mail was journaled",
                 lambda: len(journal(engine)) == 6 and not dv.uids("user1") and not dv.uids("user2"), 60)
    finally:
        stop(daemon)
    rows = journal(engine)
    engine.dispose()
    moved = moves(dv)
    dv.stop()
    by_source: dict[str, int] = {}
    for source, _ext, _status in rows:
        by_source[source] = by_source.get(source, 0) + 1
    assert by_source == {"imap:user1": 3, "imap:user2": 3}
    assert moved == dict.fromkeys(sent, 1), moved  # each mail moved once
    daemon_journaled = [e for e in events(tmp_path / "daemon.log") if e.get("event") == "journaled"]
    assert {e["source"] for e in daemon_journaled} == {"imap:user1"}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_journal", "before_upstream_action"])
def test_a_replica_paused_past_its_lease_acts_no_more_when_it_resumes(
    tmp_path: Path, pg_url: str, point: str
) -> None:
    """SIGSTOP (the process stops itself at ``point`` so the pause falls there exactly), another replica
    takes over and ingests everything, SIGCONT: the paused one neither journals nor moves."""
    dv = _dovecot_with_mail_log()
    engine = create_engine(pg_url)
    cfg = config(tmp_path, dv, pg_url, ["user1"], "replica", ttl=TTL)
    sent = []
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start(cfg, log_a, "run", faults=f"pause:{point}")
    b = None
    report: dict[str, Any] = {"point": point}
    try:
        wait_for("a never took the mailbox", lambda: f":{a.pid}:" in holders(engine).get("imap:user1", ""), 90)
        wait_for("a never idled", lambda: dv.idling("user1"), 30)
        b = start(cfg, log_b, "run")  # a replica beside it, with nothing to do: a holds the one mailbox
        wait_for("b never beat", lambda: any(f":{b.pid}:" in h for h in heartbeats(engine)), 90)
        for i in range(5):  # a fetches them and stops itself at the point
            mid, raw = mail("user1", "p", i)
            dv.append("user1", raw)
            sent.append(mid)

        def stopped() -> bool:
            return Path(f"/proc/{a.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"

        wait_for("the replica never reached the pause point", stopped, 60)
        paused_at = time.monotonic()
        assert f":{a.pid}:" in holders(engine).get("imap:user1", "")
        assert len(dv.uids("user1")) == 5  # nothing moved yet
        journaled_before = len(journal(engine))
        assert journaled_before == (0 if point == "before_journal" else 5)
        wait_for("the other replica never took the mailbox over",
                 lambda: f":{b.pid}:" in holders(engine).get("imap:user1", ""), 60)
        report["takeover_s"] = round(time.monotonic() - paused_at, 2)  # a hung, not dead, holder: the TTL
        wait_for("the other replica did not ingest and move the mail",
                 lambda: not dv.uids("user1") and len(journal(engine)) == 5
                 and all(r[2] != "pending" for r in journal(engine)), 60)
        a.send_signal(signal.SIGCONT)
        # the resumed replica's next heartbeat sees the mailbox held by b: its loop is stopped
        wait_for("the resumed replica never noticed", lambda: any(
            e.get("event") in ("source_lease_lapsed_not_acting", "source_stopped") for e in events(log_a)), 30)
        time.sleep(3.0)  # a few of its heartbeats: it must not take the mailbox back or act meanwhile
        assert f":{b.pid}:" in holders(engine).get("imap:user1", "")
    finally:
        stop(*(p for p in (a, b) if p is not None))
    rows = journal(engine)
    engine.dispose()
    moved = moves(dv)
    processed = dv.uids("user1", "Processed")
    dv.stop()
    ev_a, ev_b = events(log_a), events(log_b)
    a_journaled = [e for e in ev_a if e.get("event") == "journaled"]
    a_moves = [e for e in ev_a if e.get("event") == "imap_after_action"]
    report.update(a_journal_writes=len(a_journaled), a_after_actions=len(a_moves),
                  b_after_actions=sum(e.get("event") == "imap_after_action" for e in ev_b),
                  journal=len(rows), moved_once=sum(v == 1 for v in moved.values()))
    print(json.dumps(report))
    # before the pause: a journaled its batch only at before_upstream_action; after it: nothing at all
    assert len(a_journaled) == (0 if point == "before_journal" else 1), report
    assert a_moves == [], report  # a never moved anything: every move was b's
    # it noticed by its fence, or its heartbeat cancelled the loop first while the fence asked the store
    report["a_noticed"] = sorted({str(e.get("event")) for e in ev_a} & {"source_lease_lapsed_not_acting", "source_stopped"})
    assert report["a_noticed"], report
    assert sorted(r[0] for r in rows) == ["imap:user1"] * 5 and len({r[1] for r in rows}) == 5, report
    assert moved == dict.fromkeys(sent, 1), moved  # each mail moved once (Dovecot's count)
    assert len(processed) == 5
    assert report["takeover_s"] < TTL + TTL / 3 + 1.0, report  # the TTL, one heartbeat of b, slack
