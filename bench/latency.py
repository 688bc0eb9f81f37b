"""Latency with IDLE: APPEND 200 mails one by one at random intervals to a mailbox a running daemon holds
in IDLE; latency = from the APPEND returning to the journal entry committed as processed (the ticket
stored). Reports p50 / p95 / p99. Target: p95 <= 1 s."""

from __future__ import annotations

import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import daemon_env, report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def run(args: Any) -> dict[str, Any]:
    from dovecot import start_dovecot

    n = args.n or 200
    rng = random.Random(5)
    dv = start_dovecot()
    user = "user2"
    tmp = Path(tempfile.mkdtemp(prefix="svcb-latency-"))
    (tmp / "imap.secret").write_text(dv.users[user])
    cfg = tmp / "svcbridge.toml"
    cfg.write_text(f"""data_dir = "{tmp}/var"
[http]
enabled = false
[log]
level = "error"
[plugins.email]
from_address = "support@bench.test"
[[plugins.email.imap]]
name = "imap:latency"
host = "127.0.0.1"
port = {dv.imaps_port}
ca_file = "{dv.cafile}"
username = "{user}"
password_file = "{tmp}/imap.secret"
[plugins.email.outbound]
spool_dir = "{tmp}/outgoing"
""")
    env = daemon_env()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "svcbridge"), "--config", str(cfg), "run"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sent: dict[str, float] = {}
    try:
        db_path = tmp / "var" / "svcbridge.db"
        while not db_path.exists():
            time.sleep(0.1)
        time.sleep(2.0)  # connected and idling
        client = dv.client(user)
        for i in range(n):
            subject = f"latency probe {i}"
            raw = (
                f"From: c{i}@example.com\r\nSubject: {subject}\r\nMessage-ID: <lat{i}@x>\r\n\r\nping\r\n"
            ).encode()
            client.append("INBOX", None, None, raw)
            sent[subject] = time.time()
            time.sleep(rng.uniform(0.0, 0.2))
        client.logout()
        db = sqlite3.connect(db_path, timeout=30)
        deadline = time.monotonic() + 60
        rows: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            rows = db.execute(
                "SELECT t.subject, j.processed_at FROM tickets t JOIN journal j ON j.ticket_id = t.id "
                "WHERE j.status = 'processed'"
            ).fetchall()
            if len(rows) >= n:
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        dv.stop()
        shutil.rmtree(dv.root, ignore_errors=True)
    lat = []
    for subject, processed in rows:
        at = datetime.fromisoformat(processed)
        at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
        lat.append(at.timestamp() - sent[subject])
    shutil.rmtree(tmp, ignore_errors=True)
    p50, p95, p99 = (_pct(lat, p) for p in (50, 95, 99))
    rows_out = [
        ("mails appended", n),
        ("tickets committed", len(lat)),
        ("p50 s", p50),
        ("p95 s (target <= 1)", p95),
        ("p99 s", p99),
        ("mean s", statistics.fmean(lat) if lat else float("nan")),
    ]
    return report(
        "latency",
        rows_out,
        {"n": n, "committed": len(lat), "p50": p50, "p95": p95, "p99": p99, "target_p95": 1.0},
    )
