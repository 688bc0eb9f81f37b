"""Intake throughput: a Dovecot mailbox filled with the seeded hard-case corpus, `svcbridge run --once`
(a real process: start, migrations, IMAP fetch, journal, pipeline, outbox to the local sink and spooled
acknowledgements) until all tickets are committed, against the floor: a bare stdlib loop that UID FETCHes
every message (imaplib, batched) and parses it with ``email.message_from_bytes(policy=default)`` walking
every part. Target: ratio >= 0.8 of the floor. Floor and svcbridge alternate RUNS times; the figures
are medians (the machines are shared and noisy), every run's seconds are in the JSON.

Two end points are reported: process exit (``ratio``: everything done, outbox included) and the last
journal entry committed as processed (``ratio_committed``: the issue's "all tickets committed", read
from the store's ``processed_at``; the acknowledgements may still be going out).

``--imap-host --imap-port --user --password`` run it against an existing server instead of a private
Dovecot; nothing is flagged, moved or deleted there (after = "none").
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import os
import resource
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import Timer, ratio, report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
RUNS = 3


def fill_maildir(dv: Any, user: str, mails: list[bytes]) -> None:
    """Write the corpus straight into the user's Maildir (Dovecot indexes it on SELECT)."""
    box = dv.root / "mail" / user / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(mails):
        (box / "new" / f"{1700000000 + i}.M{i}P1.bench").write_bytes(raw)
    for p in [dv.root / "mail" / user, *(dv.root / "mail" / user).rglob("*")]:
        shutil.chown(p, "nobody", "nogroup")


def bare_floor(host: str, port: int, user: str, password: str, cafile: str | None) -> tuple[float, int]:
    ctx = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with Timer() as t:
        c = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
        c.login(user, password)
        c.select("INBOX", readonly=True)
        uids = c.uid("SEARCH", "ALL")[1][0].split()
        n = 0
        for i in range(0, len(uids), 100):
            _typ, data = c.uid("FETCH", b",".join(uids[i : i + 100]).decode(), "(BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    msg = email.message_from_bytes(item[1], policy=email.policy.default)
                    for part in msg.walk():
                        if not part.is_multipart():
                            part.get_payload(decode=True)
                    n += 1
        c.logout()
    return t.seconds, n


def svcbridge_once(
    tmp: Path, host: str, port: int, user: str, password: str, cafile: str | None
) -> dict[str, Any]:
    cfg = tmp / "svcbridge.toml"
    ca = f'ca_file = "{cafile}"' if cafile else "verify = false"
    cfg.write_text(f"""data_dir = "{tmp}/var"
[http]
enabled = false
[log]
level = "error"
[plugins.email]
from_address = "support@bench.test"
[[plugins.email.imap]]
name = "imap:bench"
host = "{host}"
port = {port}
tls = "implicit"
{ca}
username = "{user}"
password_file = "{tmp}/imap.secret"
after = "none"
batch = 200
[plugins.email.outbound]
spool_dir = "{tmp}/outgoing"
""")
    (tmp / "imap.secret").write_text(password)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.time()
    with Timer() as t:
        subprocess.run(
            [str(Path(sys.executable).parent / "svcbridge"), "--config", str(cfg), "run", "--once"],
            env=env,
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    db = sqlite3.connect(tmp / "var" / "svcbridge.db")
    counts = dict(db.execute("SELECT status, count(*) FROM journal GROUP BY status").fetchall())
    tickets = db.execute("SELECT count(*) FROM tickets").fetchone()[0]
    # the end point: the last journal entry committed as processed (naive UTC in the store)
    first, last = db.execute("SELECT min(processed_at), max(processed_at) FROM journal").fetchone()
    return {
        "seconds_committed": _at(last) - started,
        "seconds_first": _at(first) - started,
        "seconds": t.seconds,
        "journal": counts,
        "tickets": tickets,
        "peak_rss_mb": max(rss, before) / 1024,
    }


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


def run(args: Any) -> dict[str, Any]:
    from corpus import generate

    n = args.n or 5000
    dv = None
    if args.imap_host:
        host, port, user, password, cafile = args.imap_host, args.imap_port, args.user, args.password, None
    else:
        from dovecot import start_dovecot

        dv = start_dovecot()
        host, port, user, cafile = "127.0.0.1", dv.imaps_port, "user1", str(dv.cafile)
        password = dv.users[user]
        fill_maildir(dv, user, [c.raw for c in generate(n, seed=11)])
    bare_s: list[float] = []
    runs: list[dict[str, Any]] = []
    fetched = 0
    try:
        bare_floor(host, port, user, password, cafile)  # warm Dovecot's index and the page cache
        for _ in range(RUNS):  # alternate floor and svcbridge; medians, because the box is shared
            secs, fetched = bare_floor(host, port, user, password, cafile)
            bare_s.append(secs)
            with tempfile.TemporaryDirectory() as d:
                runs.append(svcbridge_once(Path(d), host, port, user, password, cafile))
    finally:
        if dv:
            dv.stop()
            shutil.rmtree(dv.root, ignore_errors=True)
    ours_s = [r["seconds"] for r in runs]
    committed_s = [r["seconds_committed"] for r in runs]
    b, o = fetched / statistics.median(bare_s), fetched / statistics.median(ours_s)
    oc = fetched / statistics.median(committed_s)
    last = runs[-1]
    rss = max(r["peak_rss_mb"] for r in runs)
    rows = [
        ("mails", fetched),
        ("runs (alternating)", RUNS),
        ("bare imaplib fetch+parse /s (median)", b),
        ("svcbridge run --once /s, start to exit (median)", o),
        ("ratio, start to exit (target >= 0.8)", ratio(o, b)),
        ("svcbridge /s, start to last ticket committed (median)", oc),
        ("ratio, start to last ticket committed", ratio(oc, b)),
        ("first ticket committed after s (median)", statistics.median(r["seconds_first"] for r in runs)),
        ("tickets", last["tickets"]),
        ("journal", json.dumps(last["journal"])),
        ("peak RSS MB (largest svcbridge process)", rss),
    ]
    return report(
        "intake",
        rows,
        {
            "n": fetched,
            "runs": RUNS,
            "bare_per_s": b,
            "svcbridge_per_s": o,
            "ratio": ratio(o, b),
            "target": 0.8,
            "bare_s": bare_s,
            "svcbridge_s": ours_s,
            "svcbridge_committed_s": committed_s,
            "svcbridge_committed_per_s": oc,
            "ratio_committed": ratio(oc, b),
            "first_ticket_s": [r["seconds_first"] for r in runs],
            "seconds": statistics.median(ours_s),
            "journal": last["journal"],
            "tickets": last["tickets"],
            "peak_rss_mb": rss,
        },
    )
