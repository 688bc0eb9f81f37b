"""svcbridge: every customer message becomes one ticket in the helpdesk you already run.

This module is the public API. Plugins import only names listed in ``__all__`` (a test enforces it);
everything else is internal and may change.
"""

from .assets import EXCLUSION_REASONS, AssetLookup, AssetPart, AssetRecord, AssetRegister
from .channels import ChannelDirectory
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
from .media import MediaError, fetch_media
from .models import (
    Asset,
    Attachment,
    Contact,
    DeliveryItem,
    DeliveryResult,
    EventType,
    ExternalLink,
    FaultLevel,
    Notification,
    OutboxKind,
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
from .parts import DepotStock, PartsErp, PartStock, Reservation, order_depots, reservation_key
from .rma import Rma, RmaBook, RmaPart, RmaState, rma_can_move
from .settings import PluginSettings, Settings
from .store.optouts import OptOutRegister
from .textcodec import UndecodableText, decode_legacy
from .work import Job, JobKind, TicketChange, Timer, TimerKind, WorkQueue

__version__ = "0.1.0"

__all__ = [
    "EXCLUSION_REASONS",
    "Asset",
    "AssetLookup",
    "AssetPart",
    "AssetRecord",
    "AssetRegister",
    "Attachment",
    "AuthFailed",
    "ChannelDirectory",
    "ConfigError",
    "Contact",
    "DeliveryItem",
    "DeliveryResult",
    "DepotStock",
    "EventType",
    "ExternalLink",
    "FaultLevel",
    "HelpdeskSettings",
    "HelpdeskSink",
    "Host",
    "InlineSink",
    "IntakeContext",
    "Job",
    "JobKind",
    "LoopClient",
    "MediaError",
    "NotReady",
    "Notification",
    "Notifier",
    "OptOutRegister",
    "OutboundGuard",
    "OutboxKind",
    "ParseError",
    "PartStock",
    "PartsErp",
    "PermanentError",
    "PluginSettings",
    "Priority",
    "RawMessage",
    "Reservation",
    "Rma",
    "RmaBook",
    "RmaPart",
    "RmaState",
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
    "TicketChange",
    "TicketDraft",
    "TicketEvent",
    "TicketLookup",
    "TicketState",
    "Timer",
    "TimerKind",
    "UndecodableText",
    "WebhookRoute",
    "WorkQueue",
    "__version__",
    "basic_auth",
    "can_transition",
    "check_priorities",
    "classify_response",
    "decode_legacy",
    "fetch_media",
    "hmac_matches",
    "hookimpl",
    "html_to_text",
    "http_request",
    "make_client",
    "order_depots",
    "read_body",
    "reservation_key",
    "rma_can_move",
    "safe_filename",
    "signed_webhook",
    "utcnow",
]
