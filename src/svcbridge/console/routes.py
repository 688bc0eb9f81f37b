"""The console's URL map, mounted by ``web.build_web`` on the daemon's HTTP listener.

Static files (one stylesheet, one small script) come from this package: no CDN, nothing external, so
the CSP can say ``'self'`` and a machine without internet access shows the same page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import log as logmod
from . import actions, features, views
from .accounts import Accounts
from .auth import MIN_TOKEN, Guard
from .guarded import Console
from .render import HERE

if TYPE_CHECKING:
    from ..app import App

log = structlog.get_logger("svcbridge.console")


def make_console(app: App) -> Console:
    cfg = app.settings.console
    token = cfg.token()
    if token:
        logmod.add_secrets([token])  # never in a log line, whatever prints it
        if len(token) < MIN_TOKEN:
            log.error("console_admin_token_refused", reason=f"shorter than {MIN_TOKEN} characters")
    accounts = Accounts(app.store.engine)
    return Console(app, accounts, Guard(accounts, cfg, app.settings.http.public_url))


def console_routes() -> list[Any]:
    get, post = ["GET"], ["POST"]
    return [
        Route("/", views.overview, methods=get),
        Route("/login", actions.login_page, methods=get),
        Route("/login", actions.login, methods=post),
        Route("/logout", actions.logout, methods=post),
        Route("/overview/live", views.overview_live, methods=get),
        Route("/api/overview", views.overview_json, methods=get),
        Route("/tickets", views.tickets, methods=get),
        Route("/tickets/{ref}", views.ticket, methods=get),
        Route("/tickets/{ref}/attachments/{aid:int}", views.attachment, methods=get),
        Route("/tickets/{ref}/state", actions.ticket_state, methods=post),
        Route("/tickets/{ref}/reply", actions.ticket_reply, methods=post),
        Route("/tickets/{ref}/note", actions.ticket_note, methods=post),
        Route("/quarantine", views.quarantine, methods=get),
        Route("/quarantine/{qid:int}/raw", views.quarantine_raw, methods=get),
        Route("/quarantine/{qid:int}/retry", actions.quarantine_retry, methods=post),
        Route("/quarantine/{qid:int}/drop", actions.quarantine_drop, methods=post),
        Route("/outbox", views.outbox, methods=get),
        Route("/outbox/{item:int}/replay", actions.outbox_replay, methods=post),
        Route("/outbox/target/{what}", actions.outbox_target, methods=post),
        Route("/plugins", views.plugins, methods=get),
        Route("/audit", views.audit, methods=get),
        Route("/sla", features.sla, methods=get),
        Route("/assets", features.assets, methods=get),
        *[Route(f"/{k}", views.placeholder, methods=get) for k in views.PLACEHOLDERS],
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
