"""Jira Service Management as a svcbridge helpdesk: requests and follow-ups in, status and comments back.

Enabled by a ``[plugins.jsm]`` table (``settings.py``, ``config/svcbridge.toml``); registers one sink,
named ``jsm`` unless ``name`` says otherwise, and, with a ``webhook_secret``, the route
``POST /hooks/<webhook_path>`` for a Jira admin webhook (System -> WebHooks, with that secret; events
"issue updated" and "comment created", JQL limited to the service desk's project). Without a secret the
route is not served: an unsigned status webhook would let anyone close a customer's ticket. Give
svcbridge its own Atlassian account with agent access to the service desk. How each call maps onto the
API is told in ``client.py``.
"""

from __future__ import annotations

from typing import Any

from svcbridge import hookimpl

from .client import JsmSink, to_update, webhook_route
from .settings import JsmSettings, JsmStateMap

__version__ = "0.1.0"
__all__ = ["JsmSettings", "JsmSink", "JsmStateMap", "to_update", "webhook_route"]


@hookimpl
def register_settings(register: Any) -> None:
    register("jsm", JsmSettings)


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("jsm")
    if cfg is not None:
        register(JsmSink(cfg, allow=list(settings.outbound_allow)))


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("jsm")
    if cfg is not None and cfg.webhook_secret is not None:
        register(webhook_route(cfg))
