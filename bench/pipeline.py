"""Pipeline: N mails from a Maildir through `run --once` (journal, parse, store, outbox delivery to the
local sink and spooled acknowledgements), against a bare stdlib loop that reads and parses the same
files with ``email.message_from_bytes(policy=default)`` walking every part."""

from __future__ import annotations

import asyncio
import email
import email.policy
import statistics
import tempfile
from pathlib import Path
from typing import Any

from .common import Timer, build_app, peak_rss_mb, ratio, report


def make_mails(n: int) -> list[bytes]:
    try:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from corpus import generate  # the seeded hard-case corpus of the e-mail tests

        return [c.raw for c in generate(n, seed=7)]
    except ImportError:
        return [
            (
                f"From: Customer {i} <c{i}@example.com>\r\nTo: support@bench.test\r\nSubject: case {i}\r\n"
                f"Message-ID: <bench{i}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                f"Printer {i} jams on page {i % 7}.\r\n"
            ).encode()
            for i in range(n)
        ]


def bare(mails: list[bytes], d: Path) -> float:
    for i, m in enumerate(mails):
        (d / f"{i}.eml").write_bytes(m)
    with Timer() as t:
        for p in sorted(d.iterdir()):
            msg = email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for part in msg.walk():
                if not part.is_multipart():
                    part.get_payload(decode=True)
    return t.seconds


def ours(mails: list[bytes], d: Path) -> tuple[float, dict[str, Any]]:
    app = build_app(d, plugins={"email": {"maildir": {"path": str(d / "maildir")}}})
    new = d / "maildir" / "new"
    for i, m in enumerate(mails):
        (new / f"{i}.eml").write_bytes(m)
    with Timer() as t:
        res = asyncio.run(app.run_once())
    statuses = [o.status for o in res["outcomes"]]
    return t.seconds, {s: statuses.count(s) for s in set(statuses)} | {"tickets": app.store.count_tickets()}


def run(args: Any) -> dict[str, Any]:
    n = args.n or 1000
    mails = make_mails(n)
    bare_s, ours_s, counts = [], [], {}
    for _ in range(2):
        with tempfile.TemporaryDirectory() as d:
            bare_s.append(bare(mails, Path(d)))
        with tempfile.TemporaryDirectory() as d:
            secs, counts = ours(mails, Path(d))
            ours_s.append(secs)
    b, o = n / statistics.median(bare_s), n / statistics.median(ours_s)
    rows = [
        ("mails", n),
        ("bare read+parse /s", b),
        ("svcbridge run --once /s", o),
        ("ratio", ratio(o, b)),
        ("outcomes", counts),
        ("peak RSS MB", peak_rss_mb()),
    ]
    return report(
        "pipeline",
        rows,
        {
            "n": n,
            "bare_per_s": b,
            "svcbridge_per_s": o,
            "ratio": ratio(o, b),
            "outcomes": counts,
            "peak_rss_mb": peak_rss_mb(),
        },
    )
