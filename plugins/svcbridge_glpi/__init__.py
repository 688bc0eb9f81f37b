"""GLPI as a svcbridge helpdesk: tickets and follow-ups in, status changes and agent follow-ups back.

Enabled by a ``[plugins.glpi]`` table (``settings.py``, ``config/svcbridge.toml``); registers one sink,
named ``glpi`` unless ``name`` says otherwise, and, with a ``webhook_secret``, the route
``POST /hooks/<webhook_path>`` for GLPI 11 webhooks (one on Ticket updates, one on new ITILFollowup,
both with that secret). Give svcbridge its own GLPI user with an API user token and an API client (App-Token)
allowed from svcbridge's address; the profile needs to create and update tickets and add follow-ups in
``entities_id``. How each call maps onto GLPI's API is told in ``client.py``.
"""

from __future__ import annotations

from typing import Any

from svcbridge import hookimpl

from .client import GlpiSink, to_update, webhook_route
from .settings import GlpiSettings, GlpiStateMap

__version__ = "0.1.0"
__all__ = ["GlpiSettings", "GlpiSink", "GlpiStateMap", "to_update", "webhook_route"]


@hookimpl
def register_settings(register: Any) -> None:
    register("glpi", GlpiSettings)


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("glpi")
    if cfg is not None:
        register(GlpiSink(cfg, allow=list(settings.outbound_allow)))


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("glpi")
    if cfg is not None and cfg.webhook_secret is not None:
        register(webhook_route(cfg))
