"""The daemon's HTTP side (Starlette): plugin webhooks under /hooks/, health, metrics, a read-only page.

Loopback by default. ``/healthz`` says the process is alive; ``/readyz`` says the store answers and lists
failing sources and parked targets (503 when the store does not answer); ``/metrics`` is Prometheus.
"""

from __future__ import annotations

import asyncio
from html import escape
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import metrics

if TYPE_CHECKING:
    from .app import App

log = structlog.get_logger("svcbridge.web")


def build_web(app: App) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        try:
            await asyncio.to_thread(_ping, app)
        except Exception as exc:
            return JSONResponse({"status": "store unavailable", "error": type(exc).__name__}, status_code=503)
        failing = {n: h.detail for n, h in app.health.items() if not h.ok}
        alerts = {**app.delivery.alerts, **app.work.alerts}
        body = {"status": "ok", "failing_sources": failing, "alerts": alerts}
        return JSONResponse(body)

    async def metrics_view(_: Request) -> Response:
        await asyncio.to_thread(_refresh_gauges, app)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def index(_: Request) -> Response:
        tickets = await asyncio.to_thread(app.store.list_tickets, None, 200)
        rows = []
        for t in tickets:
            nxt = min(t.deadlines.values()).isoformat(timespec="minutes") if t.deadlines else "-"
            rows.append(
                f"<tr><td>{escape(t.ref)}</td><td>{escape(t.state.value)}</td><td>P{int(t.priority)}</td>"
                f"<td>{escape(nxt)}</td><td>{escape(t.channel)}</td><td>{escape(t.subject)}</td>"
                f"<td>{escape(t.contact.email or t.contact.phone or '')}</td></tr>"
            )
        html = _PAGE.format(rows="\n".join(rows) or '<tr><td colspan="7">no tickets yet</td></tr>')
        return HTMLResponse(html)

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_view),
    ]
    for r in app.routes:
        routes.append(_hook_route(app, r))
    return Starlette(routes=routes)


def _hook_route(app: App, r: Any) -> Route:
    ctx = app.context(r.name or r.path)

    async def endpoint(request: Request) -> Response:
        try:
            return await r.endpoint(request, ctx)
        except Exception as exc:  # a route bug must not look like success to the sender
            log.error("webhook_failed", path=r.path, error=f"{type(exc).__name__}: {exc}")
            return PlainTextResponse("internal error", status_code=500)

    path = "/hooks/" + r.path.lstrip("/")
    return Route(path, endpoint, methods=list(r.methods))


def _ping(app: App) -> None:
    with app.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _refresh_gauges(app: App) -> None:
    for status, n in app.store.journal_counts().items():
        metrics.QUEUE.labels(queue="journal", status=status).set(n)
    for status, n in app.delivery.outbox.counts().items():
        metrics.QUEUE.labels(queue="outbox", status=status).set(n)


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>svcbridge tickets</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}</style></head>
<body><h1>svcbridge tickets</h1><table><thead><tr><th>Ref</th><th>State</th><th>Priority</th>
<th>Next deadline</th><th>Channel</th><th>Subject</th><th>Contact</th></tr></thead><tbody>
{rows}
</tbody></table></body></html>"""
