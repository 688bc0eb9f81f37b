"""The ticket model: the pydantic types that cross hook boundaries.

Everything a plugin receives or returns is one of these classes, so they are part of the public API
(`svcbridge.__all__`). They are plain data: persistence lives in `svcbridge.store`, behaviour in the
pipeline. Times are timezone-aware UTC.

    RawMessage ──parse──▶ TicketDraft ──store──▶ Ticket (+ TicketEvent trail, ExternalLink, Attachment)
                                                   │
                          StatusUpdate ◀──sinks────┘──▶ Notification (outbox) ──▶ customer
"""

from __future__ import annotations

import enum
import hashlib
import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Asset",
    "Attachment",
    "Contact",
    "DeliveryItem",
    "DeliveryResult",
    "EventType",
    "ExternalLink",
    "FaultLevel",
    "Notification",
    "OutboxKind",
    "Priority",
    "RawMessage",
    "StatusUpdate",
    "ThreadMatch",
    "Ticket",
    "TicketDraft",
    "TicketEvent",
    "TicketState",
    "can_transition",
    "safe_filename",
    "utcnow",
]


def utcnow() -> datetime:
    """Timezone-aware now in UTC (one place so tests can reason about it)."""
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- intake


class RawMessage(_Model):
    """One message exactly as a source received it, before any parsing.

    `external_id` is the source's own stable id (Maildir unique name, IMAP UIDVALIDITY/UID, a
    gateway's MessageSid, a webhook id); the journal is unique on (source, external_id), which is what
    makes redelivery harmless.
    """

    channel: str = Field(description="email, sms, fax, webhook, ...")
    source: str = Field(description="configured source name, e.g. 'maildir' or 'imap:support'")
    external_id: str
    received_at: datetime = Field(default_factory=utcnow)
    raw: bytes | None = None
    blob_ref: str | None = Field(default=None, description="path of a spooled body too big to keep inline")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of the raw bytes; computed once (the journal, the batch's duplicate check and the
        threading stage each ask: three hashes of a 4 MB scan were a second per hundred such mails),
        again after ``raw`` is assigned or replaced in a ``model_copy``."""
        return hashlib.sha256(self.raw or b"").hexdigest()

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "raw":
            self.__dict__.pop("content_hash", None)
        super().__setattr__(name, value)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> RawMessage:
        copy = super().model_copy(update=update, deep=deep)
        if update and "raw" in update:
            copy.__dict__.pop("content_hash", None)
        return copy


# --------------------------------------------------------------------------- people and things


class Contact(_Model):
    name: str | None = None
    company: str | None = None
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164, e.g. +8613800138000")
    language: str | None = Field(default=None, description="BCP 47 tag such as zh-CN, zh-TW, en")

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if not re.fullmatch(r"[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+", v):
            raise ValueError(f"not a plain e-mail address: {v!r}")
        local, _, domain = v.rpartition("@")
        return f"{local}@{domain.lower()}"

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            num = phonenumbers.parse(v, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"phone must be international (E.164): {exc}") from exc
        if not phonenumbers.is_possible_number(num):
            raise ValueError(f"not a possible phone number: {v!r}")
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


class Asset(_Model):
    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    purchase_date: datetime | None = None
    production_date: datetime | None = None
    warranty_until: datetime | None = None
    # from the asset register (svcbridge.assets): what warranty rules and routing need on the ticket
    product_line: str | None = None
    site: str | None = None
    contract: str | None = None


class Priority(enum.IntEnum):
    """Contract priority: P1 is the most urgent (e.g. respond in 10 min, on site in 1 h)."""

    P1 = 1
    P2 = 2
    P3 = 3
    P4 = 4


class FaultLevel(enum.StrEnum):
    CRITICAL = "critical"  # service down
    MAJOR = "major"  # degraded
    MINOR = "minor"
    QUESTION = "question"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(original: str | None, sha256: str, content_type: str = "") -> str:
    """A generated storage name; the customer's file name is never used as a path.

    The extension is kept only when it is short and alphanumeric, so `../../etc/passwd` or
    `a.exe\x00.pdf` cannot steer where or how anything is written.
    """
    ext = ""
    if original:
        base = original.replace("\\", "/").rsplit("/", 1)[-1]
        if "." in base:
            cand = base.rsplit(".", 1)[1].lower()
            if re.fullmatch(r"[a-z0-9]{1,8}", cand):
                ext = "." + cand
    return f"att-{sha256[:16]}{ext}"


class Attachment(_Model):
    sha256: str
    size: int
    content_type: str = "application/octet-stream"
    safe_name: str
    original_name: str | None = None
    content_id: str | None = None
    data: bytes | None = Field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, *, original_name: str | None, content_type: str) -> Attachment:
        digest = hashlib.sha256(data).hexdigest()
        return cls(
            sha256=digest,
            size=len(data),
            content_type=content_type or "application/octet-stream",
            safe_name=safe_filename(original_name, digest),
            original_name=original_name,
            data=data,
        )


# --------------------------------------------------------------------------- the ticket


class TicketState(enum.StrEnum):
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    WAITING_CUSTOMER = "waiting_customer"
    WAITING_PARTS = "waiting_parts"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    CLOSED = "closed"

    @property
    def is_closed(self) -> bool:
        """Resolved or closed: no work is going on (a customer's reply reopens it, or makes a new one)."""
        return self in _CLOSED_STATES


_CLOSED_STATES = frozenset({TicketState.RESOLVED, TicketState.CLOSED})
_S = TicketState
_ACTIVE = {_S.ACKNOWLEDGED, _S.IN_PROGRESS, _S.WAITING_CUSTOMER, _S.WAITING_PARTS, _S.ON_SITE}
TRANSITIONS: dict[TicketState, set[TicketState]] = {
    _S.NEW: _ACTIVE | {_S.RESOLVED, _S.CLOSED},
    _S.ACKNOWLEDGED: (_ACTIVE - {_S.ACKNOWLEDGED}) | {_S.RESOLVED, _S.CLOSED},
    _S.IN_PROGRESS: (_ACTIVE - {_S.ACKNOWLEDGED, _S.IN_PROGRESS}) | {_S.RESOLVED, _S.CLOSED},
    _S.WAITING_CUSTOMER: {_S.IN_PROGRESS, _S.WAITING_PARTS, _S.ON_SITE, _S.RESOLVED, _S.CLOSED},
    _S.WAITING_PARTS: {_S.IN_PROGRESS, _S.WAITING_CUSTOMER, _S.ON_SITE, _S.RESOLVED, _S.CLOSED},
    _S.ON_SITE: {_S.IN_PROGRESS, _S.WAITING_CUSTOMER, _S.WAITING_PARTS, _S.RESOLVED, _S.CLOSED},
    _S.RESOLVED: {_S.CLOSED, _S.IN_PROGRESS},  # reopen goes back to work
    _S.CLOSED: {_S.IN_PROGRESS},  # reopen
}


def can_transition(old: TicketState, new: TicketState) -> bool:
    """True when the state machine allows old -> new (same state is a no-op, always allowed)."""
    return old == new or new in TRANSITIONS[old]


class EventType(enum.StrEnum):
    """The trail entries the core writes (``TicketEvent.type``); plugins may add types of their own.

    A ``StrEnum``: stored as the plain string and equal to it (``EventType.RECEIVED == "received"``).
    """

    RECEIVED = "received"  # a new ticket from a customer's message
    MESSAGE_RECEIVED = "message_received"  # a follow-up message on a ticket
    RECEIVED_AGAIN = "received_again"  # the same message once more (another mailbox, a redelivery)
    REOPENED = "reopened"  # a customer's message on a resolved or closed ticket
    STATUS_CHANGED = "status_changed"  # a helpdesk or vendor moved the state
    AGENT_REPLY = "agent_reply"  # a public reply from the helpdesk, for the customer
    INTERNAL_NOTE = "internal_note"  # a note from the helpdesk, not for the customer
    DELIVERED = "delivered"  # a sink took the ticket or an update (outbox)
    NOTIFIED = "notified"  # a notifier sent a notification (outbox)


class TicketEvent(_Model):
    """One step of the trail (``EventType``: received, message_received, status_changed, ...)."""

    type: str
    at: datetime = Field(default_factory=utcnow)
    actor: str = "svcbridge"
    data: dict[str, Any] = Field(default_factory=dict)


class ExternalLink(_Model):
    """An id of this ticket in another system: helpdesk ticket id, RMA number, Message-ID, SMS thread."""

    system: str
    kind: str
    value: str


class TicketDraft(_Model):
    """What parsing makes of one RawMessage; later stages fill in and adjust it in place."""

    channel: str
    subject: str = ""
    body_text: str = ""
    body_html: str | None = None
    contact: Contact = Field(default_factory=Contact)
    customer: str | None = None
    asset: Asset = Field(default_factory=Asset)
    priority: Priority = Priority.P3
    fault_level: FaultLevel | None = None
    sla_policy: str | None = None
    language: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    links: list[ExternalLink] = Field(default_factory=list, description="message ids and the like")
    thread_refs: list[ExternalLink] = Field(
        default_factory=list, description="ids this message refers to (In-Reply-To, References)"
    )
    automated: bool = Field(default=False, description="auto-reply, bounce, list mail: never answer it")
    received_at: datetime | None = Field(
        default=None, description="when the source received it (set by the host): SLA clocks start here"
    )
    suppress_autoreply: bool = False
    category: str | None = Field(
        default=None, max_length=100, description="fault category, e.g. power, printer, network"
    )
    labels: dict[str, Any] = Field(
        default_factory=dict,
        description="what classification and enrichment found; stored on the ticket, but names starting "
        "with '_' (this message's own scratch data)",
    )
    deadlines: dict[str, datetime] = Field(default_factory=dict, description="respond_by, onsite_by, ...")


class Ticket(_Model):
    id: int
    ref: str = Field(description="public reference such as SB-000123")
    state: TicketState = TicketState.NEW
    channel: str
    subject: str = ""
    description: str = ""
    contact: Contact = Field(default_factory=Contact)
    customer: str | None = None
    asset: Asset = Field(default_factory=Asset)
    priority: Priority = Priority.P3
    fault_level: FaultLevel | None = None
    sla_policy: str | None = None
    language: str | None = None
    deadlines: dict[str, datetime] = Field(default_factory=dict)
    category: str | None = Field(default=None, max_length=100)
    labels: dict[str, Any] = Field(default_factory=dict, description="set by classification / enrichment")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    events: list[TicketEvent] = Field(default_factory=list)
    links: list[ExternalLink] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)

    def link(self, system: str, kind: str) -> str | None:
        """The first linked id of that system and kind, if any."""
        for ln in self.links:
            if ln.system == system and ln.kind == kind:
                return ln.value
        return None


class ThreadMatch(_Model):
    """Answer of the `thread_message` hook: this draft belongs to an existing ticket."""

    ticket_ref: str
    duplicate: bool = Field(default=False, description="the very same message was already stored")
    reason: str = ""


# --------------------------------------------------------------------------- outbound


class OutboxKind(enum.StrEnum):
    """What an outbox row asks of its target (``DeliveryItem.kind``); stored as the plain string."""

    CREATE = "create"  # a new ticket for a sink
    UPDATE = "update"  # a change of a ticket a sink holds (a customer's follow-up, ...)
    NOTIFY = "notify"  # a notification for a customer, through a channel's notifier


class Target(str):
    """An outbox row's target: a sink's name, or ``notify:<channel>`` for that channel's notifier.

    A ``str`` (stored and compared as the plain string): ``Target.notify("email") == "notify:email"``.
    """

    __slots__ = ()
    NOTIFY_PREFIX = "notify:"

    @classmethod
    def notify(cls, channel: str) -> Target:
        return cls(cls.NOTIFY_PREFIX + channel)

    @property
    def is_notify(self) -> bool:
        return self.startswith(self.NOTIFY_PREFIX)

    @property
    def channel(self) -> str | None:
        """The channel of a notifier's target; None for a sink."""
        return self[len(self.NOTIFY_PREFIX) :] if self.is_notify else None


class DeliveryItem(_Model):
    """One outbox row as a sink or notifier sees it (``ticket`` comes without its event trail)."""

    id: int
    kind: str = Field(description="create | update | notify (OutboxKind)")
    target: str
    idempotency_key: str
    ticket: Ticket
    payload: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    attachments: list[Attachment] = Field(
        default_factory=list, description="with bytes: the ticket's for create, the message's for update"
    )


class DeliveryResult(_Model):
    """What a sink or notifier did; `links` are recorded on the ticket (helpdesk id, SMS sid...)."""

    links: list[ExternalLink] = Field(default_factory=list)
    detail: str = ""


class StatusUpdate(_Model):
    """A change reported by a helpdesk or vendor: new state, a public reply, or both.

    Give either svcbridge's ``ticket_ref`` or the helpdesk's own ``external_ticket_id``: the host then
    finds the ticket by the link ``(system, "ticket", external_ticket_id)`` the sink recorded on create.
    """

    ticket_ref: str = ""
    external_ticket_id: str | None = None
    system: str
    state: TicketState | None = None
    public_reply: str | None = None
    internal_note: str | None = None
    actor: str = "agent"
    external_event_id: str | None = Field(default=None, description="dedup key for redelivered webhooks")
    at: datetime = Field(default_factory=utcnow)


class Notification(_Model):
    """A message for the customer, sent through the notifier of `channel` via the outbox."""

    channel: str
    template: str = Field(description="acknowledgement, status_changed, reply, resolved, survey, ...")
    to: str | None = None
    subject: str = ""
    body: str = ""
    body_html: str | None = Field(default=None, description="the same text as HTML (mail), autoescaped")
    data: dict[str, Any] = Field(default_factory=dict)
    automatic: bool = Field(
        default=True, description="sent without a person (ack, status notice): rate-limited per recipient"
    )
    # unique, not secret: os.urandom (uuid4) releases the GIL and, with the store's threads busy, took
    # milliseconds to get it back for every notification (the module's generator reseeds after fork)
    key: str = Field(default_factory=lambda: f"{random.getrandbits(128):032x}", description="idempotency key")
