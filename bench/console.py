"""The console's live overview (issue 18 item 3): what one refresh costs on a store with history.

A store with N tickets (created over 30 days, 1/30 of them in the last 24 hours), 5 outbox rows per ticket
(almost all done; some pending, parked and dead), a processed journal row per ticket and a few open
quarantine entries is filled directly with bulk inserts (the pipeline would take hours for a million
rows). Measured, median of 30: ``facts.overview`` (the queries), the fragment over HTTP (queries, template,
ETag), the 304 answer an unchanged overview gets, and ``/readyz``. Baseline: the old page at ``/``
(the last 200 tickets, ``Store.list_tickets``), which a monitor also polled.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from .common import build_app, report


def _fill(app: Any, n: int) -> None:
    from sqlalchemy import insert

    from svcbridge.models import utcnow
    from svcbridge.store import schema as t

    now = utcnow()
    batch = 20_000
    for start in range(0, n, batch):
        ids = range(start + 1, min(n, start + batch) + 1)
        tickets, journal, outbox = [], [], []
        for i in ids:
            created = now - timedelta(seconds=(n - i) * 30 * 86400 / n)
            tickets.append({
                "id": i, "ref": f"SB-{i:06d}", "state": "closed" if i % 3 else "new", "channel": "email",
                "source": "imap:support", "subject": f"fault {i}", "description": "text " * 40,
                "contact": {"email": f"c{i % 5000}@example.com"}, "contact_email": f"c{i % 5000}@example.com",
                "asset": {"serial": f"SN-{i}"}, "priority": 3, "deadlines": {}, "labels": {},
                "created_at": created, "updated_at": created,
            })
            journal.append({
                "id": i, "source": "imap:support", "channel": "email", "external_id": f"x{i}",
                "content_hash": f"{i:064x}", "received_at": created, "raw": None, "meta": {},
                "status": "processed", "ticket_id": i, "attempts": 1, "processed_at": created,
            })
            for k in range(5):
                status = "done"
                if i % 1000 == 0:
                    status = ("pending", "parked", "dead", "done", "done")[k]
                outbox.append({
                    "ticket_id": i, "kind": "notify" if k else "create",
                    "target": "notify:email" if k else "zammad", "idempotency_key": f"{i}:{k}",
                    "payload": {}, "status": status, "attempts": 1, "next_attempt_at": created,
                    "last_error": "HTTP 502" if status != "done" else None, "created_at": created,
                    "done_at": created if status == "done" else None,
                })
        with app.store.engine.begin() as conn:
            conn.execute(insert(t.tickets), tickets)
            conn.execute(insert(t.journal), journal)
            conn.execute(insert(t.outbox), outbox)
    for i in range(1, 6):
        with app.store.engine.begin() as conn:
            conn.execute(insert(t.quarantine).values(journal_id=i, stage="parse", plugin="email",
                                                     error="ParseError: bad", at=now, resolved=False))


def _median_ms(fn: Any, rounds: int = 30) -> float:
    fn()  # warm
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(args: Any) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from svcbridge.console import facts
    from svcbridge.console.accounts import Accounts
    from svcbridge.web import build_web

    n = args.n or 200_000
    with tempfile.TemporaryDirectory() as tmp:
        app = build_app(Path(tmp), routing={"default": ["local"]})
        t0 = time.perf_counter()
        _fill(app, n)
        fill_s = time.perf_counter() - t0
        Accounts(app.store.engine).add("bench", "bench password 1")
        client = TestClient(build_web(app), base_url="http://localhost")  # an allowed Host (frontdoor.py)
        token = client.get("/login").text.split('name="login_token" value="')[1].split('"')[0]
        login = {"username": "bench", "password": "bench password 1", "login_token": token}
        client.post("/login", data=login)
        first = client.get("/overview/live")
        overview_ms = _median_ms(lambda: facts.overview(app))
        web = client.app.state.console  # the shared one-second cache off: every request computes

        def fragment(headers: dict[str, str] | None = None) -> Any:
            web.overview_cache = None
            return client.get("/overview/live", headers=headers or {})

        fragment_ms = _median_ms(fragment)
        etag = fragment().headers["etag"]  # fresh: hour buckets move as the clock runs
        unchanged_ms = _median_ms(lambda: fragment({"If-None-Match": etag}))
        not_modified = fragment({"If-None-Match": etag})
        cached_ms = _median_ms(lambda: client.get("/overview/live", headers={"If-None-Match": etag}))
        readyz_ms = _median_ms(lambda: client.get("/readyz"))
        old_page_ms = _median_ms(lambda: app.store.list_tickets(None, 200))
    rows = [
        ("tickets / outbox rows", f"{n} / {5 * n}"),
        ("fill (s)", fill_s),
        ("facts.overview (ms)", overview_ms),
        ("fragment over HTTP (ms)", fragment_ms),
        ("fragment bytes", len(first.content)),
        ("unchanged: 304 (ms)", unchanged_ms),
        ("304 body bytes", len(not_modified.content)),
        ("another tab within 1 s: cached (ms)", cached_ms),
        ("/readyz (ms)", readyz_ms),
        ("baseline: old / page query (ms)", old_page_ms),
    ]
    return report("console", rows, {
        "tickets": n, "overview_ms": overview_ms, "fragment_ms": fragment_ms,
        "fragment_bytes": len(first.content),
        "not_modified_ms": unchanged_ms, "not_modified_status": not_modified.status_code,
        "cached_ms": cached_ms, "readyz_ms": readyz_ms,
        "baseline_old_page_ms": old_page_ms,
    })
