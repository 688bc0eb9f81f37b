"""Request Tracker 5 as a svcbridge helpdesk: tickets in, agent replies and status changes back out.

Enabled by a ``[plugins.rt]`` table (see ``settings.py`` and ``config/svcbridge.toml``); it registers one
sink, named ``rt`` unless ``name`` says otherwise, for ``[routing]`` to send tickets to. It is a
``HelpdeskSink`` like the other connectors (``sink.py`` says what each step is in RT). RT 5 has no
webhooks, so the sink also offers ``poll_changes``: the daemon polls RT's transactions every
``poll_interval`` seconds and the customer hears about replies and status changes on their own channel.

Give svcbridge its own RT user with a REST2 auth token and these rights on the queue: SeeQueue, ShowTicket,
CreateTicket, ModifyTicket, ReplyToTicket, CommentOnTicket, ShowTicketComments (and SeeCustomField,
ModifyCustomField with ``ref_custom_field``). Turn off RT's own mail to requestors on that queue (the
"On Create Autoreply To Requestors" and "On Correspond Notify Requestors and Ccs" scrips): svcbridge tells
the customer itself, on the channel they used.
"""

from __future__ import annotations

from typing import Any

from svcbridge import hookimpl

from .client import RtClient
from .settings import RtSettings, RtStateMap
from .sink import RtSink

__version__ = "0.1.0"
__all__ = ["RtClient", "RtSettings", "RtSink", "RtStateMap"]


@hookimpl
def register_settings(register: Any) -> None:
    register("rt", RtSettings)


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    cfg = settings.plugin_config("rt")
    if cfg is None:
        return
    register(RtSink(cfg, ticket_prefix=settings.ticket_prefix, allow=list(settings.outbound_allow)))
