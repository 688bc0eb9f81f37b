"""Store growth (issue 19 item 1): how much the store (database + blobs) grows per byte of mail.

The heavy corpus (``heavy.py``) goes into a Maildir and ``svcbridge run --once`` (a real process)
stores it; then the same corpus is sent again (the same bytes under new file names: an MTA or a
customer sending everything twice) and stored again. Reported: the store's size after each round
against the mail volume; targets <= 1.1x after the first round and <= 0.1x more after the second.
Sizes are the database file after a WAL checkpoint plus the blobs' bytes (apparent size) and their
disk usage (blocks; what ``du`` says). ``SVCBRIDGE_BENCH_BASE=<git rev>`` measures that revision too,
on the same corpus in the same run (a git worktree on PYTHONPATH), for a before/after.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import daemon_env, maildir_config, report
from .heavy import corpus

ROOT = Path(__file__).resolve().parent.parent


def _size(var: Path) -> dict[str, int]:
    db = var / "svcbridge.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    blobs = [p for p in (var / "blobs").rglob("*") if p.is_file()] if (var / "blobs").is_dir() else []
    return {
        "db": db.stat().st_size,
        "blobs": sum(p.stat().st_size for p in blobs),
        "blobs_disk": sum(p.stat().st_blocks * 512 for p in blobs),
        "blob_files": len(blobs),
    }


def _round(tmp: Path, mails: list[bytes], tag: str, pythonpath: str | None) -> float:
    new = tmp / "maildir" / "new"
    for sub in ("new", "cur", "tmp"):
        (tmp / "maildir" / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(mails):
        (new / f"{tag}-{i}.bench").write_bytes(raw)
    env = daemon_env()
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "svcbridge", "--config", str(tmp / "svcbridge.toml"), "run", "--once"],
        env=env,
        cwd=tmp,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def measure(mails: list[bytes], pythonpath: str | None = None) -> dict[str, Any]:
    volume = sum(map(len, mails))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        maildir_config(tmp / "svcbridge.toml", tmp)
        first_s = _round(tmp, mails, "a", pythonpath)
        first = _size(tmp / "var")
        second_s = _round(tmp, mails, "b", pythonpath)
        second = _size(tmp / "var")
        con = sqlite3.connect(tmp / "var" / "svcbridge.db")
        journal = dict(con.execute("SELECT status, count(*) FROM journal GROUP BY status").fetchall())
        con.close()
    grow1 = first["db"] + first["blobs"]
    grow2 = second["db"] + second["blobs"]
    return {
        "mails": len(mails),
        "mail_mb": round(volume / 1e6, 1),
        "first": first,
        "second": second,
        "growth": round(grow1 / volume, 3),
        "growth_disk": round((first["db"] + first["blobs_disk"]) / volume, 3),
        "growth_sent_twice": round((grow2 - grow1) / volume, 3),
        "seconds": [round(first_s, 1), round(second_s, 1)],
        "journal": journal,
    }


def run(args: Any) -> dict[str, Any]:
    n = args.n or 2000
    mails = corpus(n)
    results = {"current": measure(mails)}
    base = os.environ.get("SVCBRIDGE_BENCH_BASE")
    if base:
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(
                ["git", "worktree", "add", "--detach", d, base], cwd=ROOT, check=True, capture_output=True
            )
            try:
                results["base"] = measure(mails, pythonpath=f"{d}/src:{d}/plugins")
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", d], cwd=ROOT, capture_output=True)
    rows: list[tuple[str, Any]] = []
    for name, r in results.items():
        rows += [
            (f"{name}: mails / MB", f"{r['mails']} / {r['mail_mb']}"),
            (f"{name}: store / mail volume (target <= 1.1)", r["growth"]),
            (f"{name}: same, blobs by disk blocks", r["growth_disk"]),
            (f"{name}: growth when the corpus is sent again (target <= 0.1)", r["growth_sent_twice"]),
            (
                f"{name}: database MB / blobs MB / blob files",
                f"{r['first']['db'] / 1e6:.1f} / "
                f"{r['first']['blobs'] / 1e6:.1f} / {r['first']['blob_files']}",
            ),
            (f"{name}: run --once seconds (first, again)", r["seconds"]),
        ]
    return report("store", rows, results)
