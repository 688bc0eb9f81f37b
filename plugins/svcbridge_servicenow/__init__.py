"""ServiceNow as a svcbridge helpdesk: incidents and follow-ups in, state changes and comments back.

Enabled by a ``[plugins.servicenow]`` table (``settings.py``, ``config/svcbridge.toml``); registers one
sink, named ``servicenow`` unless ``name`` says otherwise. ServiceNow has no signed outbound webhook of
its own (contract §1.5), so the sink offers ``poll_changes``: the daemon reads incidents changed since the
last ``sys_updated_on`` every ``poll_interval`` seconds and the customer hears about replies and state
changes on their own channel. Give svcbridge its own integration user (roles ``itil`` and read access to
``sys_journal_field``, time zone UTC). How each call maps onto the Table API is told in ``client.py``.
"""

from __future__ import annotations

from typing import Any

from svcbridge import hookimpl

from .client import ServiceNowSink
from .settings import ServiceNowSettings, ServiceNowStateMap

__version__ = "0.1.0"
__all__ = ["ServiceNowSettings", "ServiceNowSink", "ServiceNowStateMap"]


@hookimpl
def register_settings(register: Any) -> None:
    register("servicenow", ServiceNowSettings)


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("servicenow")
    if cfg is not None:
        register(ServiceNowSink(cfg, allow=list(settings.outbound_allow)))
