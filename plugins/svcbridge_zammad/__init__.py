"""Zammad as a svcbridge helpdesk: tickets and follow-ups in, state changes and agent replies back.

Enabled by a ``[plugins.zammad]`` table (``settings.py``, ``config/svcbridge.toml``); registers one sink,
named ``zammad`` unless ``name`` says otherwise, and, with a ``webhook_secret``, the route
``POST /hooks/<webhook_path>`` for a Zammad trigger ("Webhook" action with that HMAC SHA1 Signature Token,
fired on ticket updates and new articles). Give svcbridge its own Zammad user with an API token allowed
``ticket.agent`` on the group. How each call maps onto Zammad's API is told in ``client.py``.
"""

from __future__ import annotations

from typing import Any

from svcbridge import hookimpl

from .client import ZammadSink, to_update, webhook_route
from .settings import ZammadSettings, ZammadStateMap

__version__ = "0.1.0"
__all__ = ["ZammadSettings", "ZammadSink", "ZammadStateMap", "to_update", "webhook_route"]


@hookimpl
def register_settings(register: Any) -> None:
    register("zammad", ZammadSettings)


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("zammad")
    if cfg is not None:
        register(ZammadSink(cfg, allow=list(settings.outbound_allow)))


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("zammad")
    if cfg is not None and cfg.webhook_secret is not None:
        register(webhook_route(cfg))
