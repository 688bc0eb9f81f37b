"""Intake throughput: a Dovecot mailbox filled with a corpus, `svcbridge run --once`
(a real process: start, migrations, IMAP fetch, journal, pipeline, outbox to the local sink and spooled
acknowledgements) until all tickets are committed, against the floor: a bare stdlib loop that UID FETCHes
every message (imaplib, batched) and parses it with ``email.message_from_bytes(policy=default)`` walking
every part. Target: ratio >= 0.8 of the floor. Floor and svcbridge alternate RUNS times; the figures
are medians (the machines are shared and noisy), every run's seconds are in the JSON.

Three corpora, each in its own mailbox (the third, ``heavy``, is ``heavy.py``'s attachment-heavy
after-sales mail, 2,000 mails of about 65 KB). Two from the same seed: ``seeded`` (tests/corpus.py: the e-mail
tests' hard cases and redeliveries among short generated mails, 0.7 KB on average: per-ticket costs
dominate) and, when ``../shared/corpora`` is beside the project, ``real``: the same hard cases and
redeliveries at the same places, with real mails from the public raw-mail sets in place of the short
generated ones (10 KB on average: bounces, HTML, nested MIME, attachments up to 3 MB; parsing
dominates). The floor on ``real`` is what issue 5 quotes for this machine class (450-490 mails/s); on
``seeded`` it is several times higher.

Two end points are reported: process exit (``ratio``: everything done, outbox included) and the last
journal entry committed as processed (``ratio_committed``: the issue's "all tickets committed", read
from the store's ``processed_at``; the acknowledgements may still be going out).

``--imap-host --imap-port --user --password`` run it against an existing server instead of a private
Dovecot; nothing is flagged, moved or deleted there (after = "none").
"""

from __future__ import annotations

import base64
import email
import email.policy
import imaplib
import json
import os
import random
import re
import shutil
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import Timer, daemon_env, ratio, report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
RUNS = 3
# public raw-mail sets beside the project (../shared/corpora, see its README); not in the repository
CORPORA = Path(os.environ.get("SVCBRIDGE_BENCH_CORPORA", ROOT.parent / "shared" / "corpora"))
LAUNCHER = """
import json, resource, subprocess, sys, time
started, t0 = time.time(), time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"started": started, "seconds": time.perf_counter() - t0, "maxrss_kb": rss}))
"""
RECEIVED = b"Received: from relay.example.com by mx; Mon, 2 Nov 2026 10:00:00 +0800\r\n"  # corpus.generate's
MSGID = re.compile(rb"(?im)^message-id:[^\n]*\n(?:[ \t][^\n]*\n)*")


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
    env = daemon_env()
    # through a launcher of its own: RUSAGE_CHILDREN of this process would report the largest child of
    # every bench run so far, the launcher's covers this run's process tree alone (parse workers too)
    cmd = [str(Path(sys.executable).parent / "svcbridge"), "--config", str(cfg), "run", "--once"]
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *cmd],
        env=env,
        cwd=tmp,
        check=True,
        capture_output=True,
    )
    timed = json.loads(out.stdout.decode().strip().splitlines()[-1])
    started = timed["started"]
    db = sqlite3.connect(tmp / "var" / "svcbridge.db")
    counts = dict(db.execute("SELECT status, count(*) FROM journal GROUP BY status").fetchall())
    tickets = db.execute("SELECT count(*) FROM tickets").fetchone()[0]
    # the end point: the last journal entry committed as processed (naive UTC in the store)
    first, last = db.execute("SELECT min(processed_at), max(processed_at) FROM journal").fetchone()
    return {
        "seconds_committed": _at(last) - started,
        "seconds_first": _at(first) - started,
        "seconds": timed["seconds"],
        "journal": counts,
        "tickets": tickets,
        "peak_rss_mb": timed["maxrss_kb"] / 1024,
    }


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


def public_corpus(n: int, root: Path = CORPORA) -> list[bytes]:
    """N mails cycled from the public raw-mail sets in ``../shared/corpora`` (real sizes: bounces,
    HTML, attachments up to 3 MB; 842 distinct files, about 14 KB on average). Each copy gets its own
    Message-ID and a copy header, so no two are the same message or the same bytes."""
    skip = {"SOURCE.md", "README.md", ".gitattributes"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip)
    base = [p.read_bytes() for p in files]
    out = []
    for i in range(n):
        raw = MSGID.sub(b"", base[i % len(base)], count=1)
        out.append(f"Message-ID: <bench-{i}@corpora.test>\r\nX-Bench-Copy: {i}\r\n".encode() + raw)
    return out


def seeded_real(n: int, seed: int = 11) -> list[bytes]:
    """The seeded corpus with real mail in its plain slots: the same seed, so the same hard cases and
    redeliveries at the same places, but each short generated mail replaced by the next public one
    (``public_corpus``); a redelivery of a replaced mail carries the replacement."""
    from corpus import generate

    public = iter(public_corpus(n))
    swap: dict[bytes, bytes] = {}  # generated bytes -> what the mailbox gets instead
    out = []
    for case in generate(n, seed=seed):
        raw = case.raw
        if case.kind == "plain":
            raw = next(public)
        elif case.kind == "redelivery" and raw.startswith(RECEIVED) and raw[len(RECEIVED) :] in swap:
            raw = RECEIVED + swap[raw[len(RECEIVED) :]]
        swap[case.raw] = raw
        out.append(raw)
    return out


def scans(n: int, seed: int = 5) -> list[bytes]:
    """N mails each carrying a 3 MB "scan" (random bytes, base64): what a backlog of faxes or photos of
    broken machines looks like. Peak RSS must not grow with N (issue 5): batches are bounded by bytes."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        payload = base64.encodebytes(rng.randbytes(3 * 1024 * 1024))
        head = (
            f"From: site{i % 40}@customer.test\r\nTo: support@bench.test\r\nSubject: scan {i}\r\n"
            f"Message-ID: <scan-{i}@bench.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            f"Scan of the fault report, unit SN{i:06d}.\r\n--b\r\nContent-Type: application/pdf; "
            "name=scan.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        out.append(head.encode() + payload + b"\r\n--b--\r\n")
    return out


def memory_vs_n(dv: Any, cafile: str) -> dict[str, Any]:
    """One svcbridge run on 50 scans and one on 200 (user5, user6): peak RSS of each."""
    out: dict[str, Any] = {}
    for user, n in (("user5", 50), ("user6", 200)):
        mails = scans(n)
        fill_maildir(dv, user, mails)
        with tempfile.TemporaryDirectory() as d:
            r = svcbridge_once(Path(d), "127.0.0.1", dv.imaps_port, user, dv.users[user], cafile)
        out[str(n)] = {
            "mails": n,
            "mb": round(sum(map(len, mails)) / 1e6, 1),
            "seconds": r["seconds"],
            "tickets": r["tickets"],
            "peak_rss_mb": r["peak_rss_mb"],
        }
    return out


def measure(host: str, port: int, user: str, password: str, cafile: str | None) -> dict[str, Any]:
    """Floor and svcbridge alternating RUNS times on one mailbox; medians."""
    bare_s: list[float] = []
    runs: list[dict[str, Any]] = []
    fetched = 0
    bare_floor(host, port, user, password, cafile)  # warm Dovecot's index and the page cache
    for _ in range(RUNS):  # alternate floor and svcbridge; medians, because the box is shared
        secs, fetched = bare_floor(host, port, user, password, cafile)
        bare_s.append(secs)
        with tempfile.TemporaryDirectory() as d:
            runs.append(svcbridge_once(Path(d), host, port, user, password, cafile))
    ours_s = [r["seconds"] for r in runs]
    committed_s = [r["seconds_committed"] for r in runs]
    b, o = fetched / statistics.median(bare_s), fetched / statistics.median(ours_s)
    oc = fetched / statistics.median(committed_s)
    last = runs[-1]
    return {
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
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }


def rows_for(label: str, r: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        (f"{label}: mails", r["n"]),
        (f"{label}: bare imaplib fetch+parse /s (median)", r["bare_per_s"]),
        (f"{label}: svcbridge run --once /s, start to exit (median)", r["svcbridge_per_s"]),
        (f"{label}: ratio, start to exit (target >= 0.8)", r["ratio"]),
        (f"{label}: svcbridge /s, start to last ticket committed (median)", r["svcbridge_committed_per_s"]),
        (f"{label}: ratio, start to last ticket committed", r["ratio_committed"]),
        (f"{label}: first ticket committed after s (median)", statistics.median(r["first_ticket_s"])),
        (f"{label}: tickets", r["tickets"]),
        (f"{label}: journal", json.dumps(r["journal"])),
        (f"{label}: peak RSS MB (largest svcbridge process)", r["peak_rss_mb"]),
    ]


def run(args: Any) -> dict[str, Any]:
    """The seeded corpus and, when ``../shared/corpora`` is there, the same with real mail (see the
    module's docstring), each in its own mailbox of one Dovecot; then the scans' peak RSS.
    ``--imap-host``: the given mailbox only."""
    from corpus import generate

    n = args.n or 5000
    if args.imap_host:
        one = measure(args.imap_host, args.imap_port, args.user, args.password, None)
        return report("intake", [("runs (alternating)", RUNS), *rows_for("mailbox", one)], one)
    from dovecot import start_dovecot

    dv = start_dovecot()
    cafile = str(dv.cafile)
    boxes = {"seeded": ("user1", [c.raw for c in generate(n, seed=11)])}
    if CORPORA.is_dir():
        boxes["real"] = ("user3", seeded_real(n))
    else:
        print(f"bench intake: {CORPORA} not found, the real-mail corpus is left out", file=sys.stderr)
    # attachment-heavy after-sales mail (issue 19): faxes, photos, PDFs, zips; about 65 KB a mail
    from .heavy import corpus as heavy_corpus

    boxes["heavy"] = ("user4", heavy_corpus(min(n, 2000)))
    only = [b for b in os.environ.get("SVCBRIDGE_BENCH_ONLY", "").split(",") if b]  # e.g. heavy
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, (user, mails) in boxes.items():
            if only and name not in only:
                continue
            fill_maildir(dv, user, mails)
            results[name] = measure("127.0.0.1", dv.imaps_port, user, dv.users[user], cafile)
        memory = {} if only else memory_vs_n(dv, cafile)
    finally:
        dv.stop()
        shutil.rmtree(dv.root, ignore_errors=True)
    rows: list[tuple[str, Any]] = [("runs (alternating)", RUNS)]
    for name, r in results.items():
        rows += rows_for(name, r)
    for n, m in memory.items():
        label = f"scans of 3 MB: {n} mails ({m['mb']} MB), seconds / peak RSS MB"
        rows.append((label, f"{m['seconds']:.1f} / {m['peak_rss_mb']:.0f}"))
    # the seeded corpus's figures stay at the top level (earlier results read them there)
    top = results.get("seeded", next(iter(results.values())))
    return report("intake", rows, {**top, "corpora": results, "memory_vs_n": memory})
