"""django-helpdesk as a svcbridge helpdesk: tickets and follow-ups in, replies and status changes back.

Enabled by a ``[plugins.djhelpdesk]`` table (``settings.py``, ``config/svcbridge.toml``); registers one sink,
named ``djhelpdesk`` unless ``name`` says otherwise, which also polls django-helpdesk's follow-ups
(``poll_changes``) for agent replies, internal notes and status changes. With a ``webhook_token`` it also
serves ``POST /hooks/<webhook_path>/<token>`` for django-helpdesk's ``HELPDESK_FOLLOWUP_WEBHOOK_URLS``
(unsigned by django-helpdesk, so the random token in the URL authenticates it; compared in constant time).

Give svcbridge its own django-helpdesk user with ``is_staff`` (every API view requires it) and a DRF token
(``manage.py drf_create_token <user>``). Tested against django-helpdesk 2.6.1 with Django 5.2 and DRF 3.18
(``tests/test_djhelpdesk.py``); how each call maps onto the API, and the server's quirks, are in
``client.py``.
"""

from __future__ import annotations

from typing import Any

from svcbridge import hookimpl

from .client import DjHelpdeskSink, template_safe, to_update, webhook_route
from .settings import DjHelpdeskSettings, DjHelpdeskStateMap

__version__ = "0.1.0"
__all__ = [
    "DjHelpdeskSettings",
    "DjHelpdeskSink",
    "DjHelpdeskStateMap",
    "template_safe",
    "to_update",
    "webhook_route",
]


@hookimpl
def register_settings(register: Any) -> None:
    register("djhelpdesk", DjHelpdeskSettings)


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("djhelpdesk")
    if cfg is not None:
        register(
            DjHelpdeskSink(cfg, ticket_prefix=settings.ticket_prefix, allow=list(settings.outbound_allow))
        )


@hookimpl
def register_routes(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("djhelpdesk")
    if cfg is not None and cfg.webhook_token is not None:
        register(webhook_route(cfg, ticket_prefix=settings.ticket_prefix))
