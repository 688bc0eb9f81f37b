"""svcbridge: every customer message becomes one ticket in the helpdesk you already run.

This module is the public API. Plugins import only names listed in ``__all__`` (a test enforces it);
everything else is internal and may change.
"""

from .connector import (
    HelpdeskSettings,
    HelpdeskSink,
    LoopClient,
    StateMap,
    basic_auth,
    check_priorities,
    hmac_matches,
    html_to_text,
    read_body,
    signed_webhook,
)
from .contracts import (
    Host,
    InlineSink,
    IntakeContext,
    Notifier,
    Sink,
    Source,
    SubmitResult,
    TicketLookup,
    WebhookRoute,
)
from .errors import (
    AuthFailed,
    ConfigError,
    NotReady,
    ParseError,
    PermanentError,
    StoreUnavailable,
    SvcbridgeError,
)
from .hookspecs import hookimpl
from .http import OutboundGuard, make_client
from .http import classify as classify_response
from .http import request as http_request
from .models import (
    Asset,
    Attachment,
    Contact,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    FaultLevel,
    Notification,
    Priority,
    RawMessage,
    StatusUpdate,
    ThreadMatch,
    Ticket,
    TicketDraft,
    TicketEvent,
    TicketState,
    can_transition,
    safe_filename,
    utcnow,
)
from .settings import PluginSettings, Settings

__version__ = "0.1.0"

__all__ = [
    "Asset",
    "Attachment",
    "AuthFailed",
    "ConfigError",
    "Contact",
    "DeliveryItem",
    "DeliveryResult",
    "ExternalLink",
    "FaultLevel",
    "HelpdeskSettings",
    "HelpdeskSink",
    "Host",
    "InlineSink",
    "IntakeContext",
    "LoopClient",
    "NotReady",
    "Notification",
    "Notifier",
    "OutboundGuard",
    "ParseError",
    "PermanentError",
    "PluginSettings",
    "Priority",
    "RawMessage",
    "Settings",
    "Sink",
    "Source",
    "StateMap",
    "StatusUpdate",
    "StoreUnavailable",
    "SubmitResult",
    "SvcbridgeError",
    "ThreadMatch",
    "Ticket",
    "TicketDraft",
    "TicketEvent",
    "TicketLookup",
    "TicketState",
    "WebhookRoute",
    "__version__",
    "basic_auth",
    "can_transition",
    "check_priorities",
    "classify_response",
    "hmac_matches",
    "hookimpl",
    "html_to_text",
    "http_request",
    "make_client",
    "read_body",
    "safe_filename",
    "signed_webhook",
    "utcnow",
]
