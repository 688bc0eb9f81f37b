"""Delivery: N outbox items to a local HTTP helpdesk, against a bare httpx.AsyncClient loop posting the
same payloads to the same app. Target: ratio >= 0.7."""

from __future__ import annotations

import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from svcbridge import DeliveryResult, ExternalLink, hookimpl, http_request, make_client

from .common import Timer, build_app, ratio, report


class HttpSink:
    name = "bench-desk"

    def __init__(self, base: str) -> None:
        self.client = make_client(base, allow=["127.0.0.1/32"])

    async def deliver(self, item: Any) -> DeliveryResult:
        if item.kind == "create":
            r = await http_request(
                self.client,
                "POST",
                "/tickets",
                json={"ref": item.ticket.ref, "idempotency_key": item.idempotency_key},
            )
            return DeliveryResult(
                links=[ExternalLink(system=self.name, kind="ticket", value=str(r.json()["id"]))]
            )
        await http_request(self.client, "POST", f"/tickets/{item.ticket.ref}/notes", json=item.payload)
        return DeliveryResult()

    async def reconcile(self, item: Any) -> None:
        return None


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_app() -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.helpdesk_app", str(port)], cwd=Path(__file__).resolve().parent.parent
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.post(base + "/tickets", json={}, timeout=0.5)
            return proc, base
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("helpdesk app did not start")


def payloads(n: int) -> list[dict[str, Any]]:
    return [{"type": "status", "state": "in_progress", "body": f"update {i}", "seq": i} for i in range(n)]


async def bare(base: str, n: int, tickets: int) -> float:
    async with httpx.AsyncClient(base_url=base) as client:
        with Timer() as t:
            for i, p in enumerate(payloads(n)):
                r = await client.post(f"/tickets/SB-{i % tickets:06d}/notes", json=p)
                r.raise_for_status()
    return t.seconds


async def ours(base: str, n: int, tickets: int, tmp: Path) -> tuple[float, dict[str, int]]:
    from svcbridge.plugins import make_plugin_manager
    from svcbridge.store import outbox as ob

    sink = HttpSink(base)

    class Plugin:
        __name__ = "benchdesk"

        @hookimpl
        def register_sinks(self, register: Any) -> None:
            register(sink)

    app = build_app(
        tmp,
        pm=make_plugin_manager(extra=(Plugin(),)),
        routing={"default": ["bench-desk"]},
        outbox={"batch": 200},
    )
    # setup (not timed): tickets that already exist remotely, then N status updates queued
    from svcbridge import TicketDraft

    ids = [app.store.allocate_ticket_id() for _ in range(tickets)]
    with app.store.tx() as conn:
        for i, tid in enumerate(ids):
            tk = app.pipeline._new_ticket(tid, TicketDraft(channel="email", subject=f"t{i}"))
            app.store.insert_ticket(conn, tk, "bench")
        for i, p in enumerate(payloads(n)):
            ob.enqueue(conn, (i % tickets) + 1, "update", "bench-desk", f"u{i}", p)
    with Timer() as t:
        await app.delivery.drain()
    return t.seconds, app.delivery.outbox.counts()


def run(args: Any) -> dict[str, Any]:
    """Alternate baseline and svcbridge runs (3 each) and compare medians: the machine is noisy."""
    n, tickets, reps = args.n or 2000, 100, 3
    proc, base = _start_app()
    bare_s: list[float] = []
    ours_s: list[float] = []
    try:
        asyncio.run(bare(base, 200, tickets))  # warm the server
        for _ in range(reps):
            bare_s.append(asyncio.run(bare(base, n, tickets)))
            with tempfile.TemporaryDirectory() as d:
                secs, counts = asyncio.run(ours(base, n, tickets, Path(d)))
            ours_s.append(secs)
    finally:
        proc.terminate()
        proc.wait()
    b, o = n / statistics.median(bare_s), n / statistics.median(ours_s)
    r = ratio(o, b)
    rows = [
        ("items per run", n),
        ("runs (alternating)", reps),
        ("bare httpx loop /s (median)", b),
        ("svcbridge outbox /s (median)", o),
        ("ratio (target >= 0.7)", r),
        ("done", counts.get("done", 0)),
    ]
    return report(
        "delivery",
        rows,
        {
            "n": n,
            "runs": reps,
            "bare_per_s": b,
            "svcbridge_per_s": o,
            "ratio": r,
            "target": 0.7,
            "bare_s": bare_s,
            "svcbridge_s": ours_s,
            "concurrency": 4,
            "outbox": counts,
        },
    )
