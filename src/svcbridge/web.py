"""The daemon's HTTP side (Starlette): plugin webhooks under /hooks/, health, metrics, the operator console.

Loopback by default. ``/healthz`` says the process is alive; ``/readyz`` says whether the daemon can do
its work: 503 when the store does not answer, or with the list of problems (a routed sink not configured,
notices without a notifier, a parked target, a source failing past its threshold, a plugin that failed
to load; console/facts.py). Anonymous callers get the failing components by name and an error class;
the error texts (which may quote customer data) need an operator session or the admin token.
Every request passes frontdoor.py first: Host allow-list, client address from trusted proxies.
``/metrics`` is Prometheus. Everything else is the console (console/routes.py), behind a login.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import log as logmod
from . import metrics
from .console import facts
from .console.auth import COOKIE
from .console.routes import console_routes, make_console
from .frontdoor import FrontDoor, default_hosts

if TYPE_CHECKING:
    from .app import App

log = structlog.get_logger("svcbridge.web")


def build_web(app: App) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.to_thread(_ping, app)
        except Exception as exc:
            return JSONResponse({"status": "store unavailable", "error": type(exc).__name__}, status_code=503)
        failing = {n: h.detail for n, h in app.health.items() if not h.ok}
        alerts = {**app.delivery.alerts, **app.work.alerts}
        # the console's overview shows the same list, with what to do about each (console/facts.py)
        found = await asyncio.to_thread(facts.problems, app)
        status = 503 if found else 200
        head = {"status": "not ready" if found else "ok"}
        who = None
        if app.settings.console.enabled and (
            request.headers.get("authorization") or request.cookies.get(COOKIE)
        ):
            who = await asyncio.to_thread(web.state.console.guard.principal, request)
        if who is None:
            # open to anyone who reaches the webhooks: names and error classes only. Error texts quote
            # what a server answered (a mailbox address, a phone number, a customer's subject line)
            public = {
                **head,
                "failing_sources": {n: facts.error_class(d) for n, d in failing.items()},
                "alerts": {k: facts.error_class(v) for k, v in alerts.items()},
                "problems": [facts.public(p) for p in found],
            }
            return JSONResponse(public, status_code=status)
        body = {
            **head,
            "failing_sources": failing,
            "alerts": alerts,
            "problems": [p.as_dict() for p in found],
        }
        # exception texts may carry a configured secret a library put into its message
        text = logmod.redact(json.dumps(body, default=str, ensure_ascii=False))
        return Response(text, status_code=status, media_type="application/json")

    async def metrics_view(_: Request) -> Response:
        await asyncio.to_thread(_refresh_gauges, app)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_view),
    ]
    for r in app.routes:
        routes.append(_hook_route(app, r))
    if app.settings.console.enabled:  # the operator console (console/, docs/console.md)
        routes += console_routes()
    http = app.settings.http
    hosts = (
        http.allowed_hosts if http.allowed_hosts is not None else default_hosts(http.host, http.public_url)
    )
    # before any routing: a foreign Host is a 400, the client address is the trusted proxies' (frontdoor.py)
    door = Middleware(FrontDoor, allowed_hosts=hosts, trusted_proxies=http.trusted_proxies)
    web = Starlette(routes=routes, middleware=[door])
    web.state.console = make_console(app)
    return web


def _hook_route(app: App, r: Any) -> Route:
    ctx = app.context(r.name or r.path)

    async def endpoint(request: Request) -> Response:
        try:
            return await r.endpoint(request, ctx)
        except Exception as exc:  # a route bug must not look like success to the sender
            log.error("webhook_failed", path=r.path, error=f"{type(exc).__name__}: {exc}")
            return PlainTextResponse("internal error", status_code=500)

    path = getattr(r, "mount", "/hooks/") + r.path.lstrip("/")  # "/" for pages such as /form/<name>
    return Route(path, endpoint, methods=list(r.methods))


def _ping(app: App) -> None:
    with app.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _refresh_gauges(app: App) -> None:
    for status, n in app.store.journal_counts().items():
        metrics.QUEUE.labels(queue="journal", status=status).set(n)
    for status, n in app.delivery.outbox.counts().items():
        metrics.QUEUE.labels(queue="outbox", status=status).set(n)
