"""The objects plugins register at start-up: sources, webhook routes, sinks and notifiers.

Hooks in `hookspecs.py` hand the host these objects through a `register` callback (llm's style), so the
host owns naming, conflicts and lifecycle. They are Protocols: any object with the attributes works,
no base class is needed. The host side (`IntakeContext`, `TicketLookup`, `Host`) is what a plugin may call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from .assets import AssetLookup
from .models import DeliveryItem, DeliveryResult, RawMessage, StatusUpdate, Ticket
from .settings import Settings

__all__ = [
    "Host",
    "InlineSink",
    "IntakeContext",
    "Notifier",
    "Sink",
    "Source",
    "SubmitResult",
    "TicketLookup",
    "WebhookRoute",
]


@dataclass(frozen=True)
class SubmitResult:
    """Answer of `IntakeContext.submit`: the raw message is durably journaled.

    `new` is False when (source, external_id) was already in the journal: acknowledge it again
    upstream, nothing else happens (redelivery is harmless).
    """

    journal_id: int
    new: bool


class IntakeContext(Protocol):
    """What the host gives a source or webhook route."""

    name: str
    stopping: asyncio.Event

    async def submit(self, raw: RawMessage) -> SubmitResult:
        """Journal `raw` (committed, fsynced) and wake the pipeline.

        Acknowledge upstream only after this returns. Raises `StoreUnavailable` when the journal
        cannot be written: then do not acknowledge (leave the mail unflagged, answer a webhook 503).
        """
        ...

    async def submit_many(self, raws: list[RawMessage]) -> list[SubmitResult]:
        """Journal several messages in one transaction (a fetched IMAP batch, a Maildir scan).

        Same guarantees as ``submit``, one fsync for the lot; acknowledge them after it returns.
        """
        ...

    def expect(self, count: int, size: int = 0) -> None:
        """Say how many messages a pass is about to fetch (after an IMAP SEARCH, a Maildir listing)
        and, when known, how many bytes they are.

        Optional and only a hint: the host gets ready for a large backlog (it starts the parse workers
        while the source fetches, so the first batches need not be parsed in the daemon's process).
        Returns at once; never raises.
        """
        ...

    async def confirm_lease(self) -> None:
        """Call right before an action upstream that must happen once (an IMAP move, delete or flag; a
        Graph move): returns at once while this process holds the source's lease, and raises
        ``LeaseLost`` (a ``StoreUnavailable``) when it does not any more (paused or cut off past the
        lease, another replica may run the source now): then do not act, let it propagate. Contexts
        of webhook routes, and of sources run outside the daemon and ``run --once``, always return."""
        ...

    async def get_checkpoint(self, key: str) -> str | None:
        """A value this source stored earlier (IMAP UIDVALIDITY/UID, a delta link, a cursor)."""
        ...

    async def set_checkpoint(self, key: str, value: str) -> None:
        """Store a checkpoint atomically."""
        ...

    async def apply_status_update(self, update: StatusUpdate) -> bool:
        """Record a helpdesk/vendor status change (from a webhook route); False if already seen."""
        ...

    def report(self, ok: bool, detail: str = "") -> None:
        """Health of this source for /readyz and metrics (last success, last error)."""
        ...


@runtime_checkable
class Host(Protocol):
    """The running svcbridge instance as the ``startup`` / ``shutdown`` hooks see it.

    Minimal on purpose: members are added here as plugins need them, never removed.
    """

    settings: Settings
    # the asset register for jobs and timers (``asset_lookup`` asked with inline=False): keep it
    # from ``startup`` (svcbridge.assets)
    assets: AssetLookup

    # the ERP connectors of ``register_erps`` by name (svcbridge.PartsErp), for jobs and timers
    erps: dict[str, Any]
    # the RMAs of the store (svcbridge.RmaBook): open, move, read, for jobs and timers
    rmas: Any

    def plugin_config(self, section: str) -> Any:
        """The validated model of ``[plugins.<section>]``, or ``None`` when the section is absent."""
        ...

    def attachment_data(self, ticket_id: int, safe_name: str) -> bytes | None:
        """The stored bytes of one of a ticket's attachments (``Attachment.safe_name``), or ``None``.

        Blocking (a store read): call it from a job's thread or ``asyncio.to_thread``. For jobs that
        read what a customer sent (OCR of a fax's pages, a virus scan).
        """
        ...

    def lookup(self) -> TicketLookup:
        """Read-only ticket queries (by reference, by link, a contact's open ticket), as the
        ``thread_message`` hook gets them. Blocking: from a thread or ``asyncio.to_thread`` (a phone
        route asks whether an answered caller has an open ticket before it journals the call)."""
        ...


class TicketLookup(Protocol):
    """Read-only queries the `thread_message` hook may use."""

    def by_ref(self, ref: str) -> Ticket | None: ...

    def by_link(self, system: str, kind: str, value: str) -> Ticket | None: ...

    def open_by_contact(
        self, *, email: str | None = None, phone: str | None = None, channel: str | None = None
    ) -> Ticket | None:
        """The contact's most recent ticket that is not resolved or closed (SMS, fax, phone threading)."""
        ...

    def awaiting_survey(
        self, *, email: str | None = None, phone: str | None = None, since: datetime
    ) -> Ticket | None:
        """The contact's most recent resolved or closed ticket whose latest satisfaction survey (a
        ``notified`` event of template ``survey``) went out at or after ``since`` and has no
        ``survey_reply`` after it, with its trail; ``None`` when there is none. A bare SMS "5" answers it."""
        ...

    def journal_seen(self, content_hash: str, exclude_journal_id: int | None = None) -> int | None:
        """Ticket id of an already processed journal entry with the same content hash."""
        ...


@runtime_checkable
class Source(Protocol):
    """Pulls messages from somewhere and submits each to the journal.

    `poll` does one pass and returns how many messages it submitted; the host calls it every
    `interval` seconds, or calls `run` instead when the source has one (IMAP IDLE, long polling).
    Optional `health_facts() -> dict` adds facts of its own to the console's overview (the e-mail
    sources: ``oauth_token_expires_in``, seconds).
    """

    name: str
    channel: str
    interval: float

    async def poll(self, ctx: IntakeContext) -> int: ...


@dataclass(frozen=True)
class WebhookRoute:
    """An HTTP endpoint under /hooks/; `endpoint(request, ctx)` returns a Starlette Response.

    ``mount`` is the prefix it is served under: ``/hooks/`` for machine webhooks, ``/`` for a page
    people open (a web form at ``/form/<name>``).
    """

    path: str
    endpoint: Callable[[Any, IntakeContext], Awaitable[Any]]
    methods: tuple[str, ...] = ("POST",)
    name: str = ""
    mount: str = "/hooks/"


@runtime_checkable
class Sink(Protocol):
    """A helpdesk that receives tickets (kind `create`) and changes (kind `update`).

    `deliver` must be idempotent on `item.idempotency_key`; raise NotReady / AuthFailed /
    PermanentError from `svcbridge.errors` to say what a failure means. `reconcile` is called before
    a retry: return the result if the ticket already exists remotely (found by external reference),
    so a crash after the remote commit never makes a second ticket.
    """

    name: str

    async def deliver(self, item: DeliveryItem) -> DeliveryResult: ...

    async def reconcile(self, item: DeliveryItem) -> DeliveryResult | None: ...


class InlineSink(Protocol):
    """Optional sink capability for a helpdesk that IS svcbridge's own store (the ``local`` sink).

    ``store_inline(kind, ticket, payload)`` is called synchronously by the store stage, inside the
    transaction that writes the ticket, for the rows the pipeline would queue for this sink (``create``,
    ``update``). Its result is recorded right there as a finished delivery: the outbox row is written
    ``done``, the links it returns and a ``delivered`` trail entry go in the same commit. No I/O and
    nothing that can wait: an exception fails the batch's commit like any store error (the batch is
    retried row by row and only that message is quarantined). Status changes, notifications and
    ``outbox replay`` still go through the outbox and ``deliver``.
    """

    def store_inline(self, kind: str, ticket: Ticket, payload: dict[str, Any]) -> DeliveryResult: ...


@runtime_checkable
class Notifier(Protocol):
    """Sends a `Notification` (in `item.payload['notification']`) to the customer on one channel.

    Registering a notifier registers its channel (``channels.py``). Optional attributes:
    ``address(contact) -> str | None``, the contact's address on this channel (default: e-mail
    address, else phone number), ``html: bool``, whether a notice may carry an HTML part, and
    ``idempotent: bool`` (default False): True when sending the same item again (same ``item.id``) has
    no visible effect, e.g. a spool that keeps a receipt per item. An idempotent notifier's notices are
    delivered like a sink's items (several at a time, outcomes grouped; ``concurrency: int`` says how
    many at once, default ``outbox.concurrency``); the others go one at a time, each marked in flight
    first, so a crash can repeat at most the one send that was under way.
    """

    name: str
    channel: str

    async def send(self, item: DeliveryItem) -> DeliveryResult: ...


class StatusPoller(Protocol):
    """Optional sink capability: `poll_changes(cursor)` returns updates and the next cursor."""

    async def poll_changes(self, cursor: str | None) -> tuple[list[StatusUpdate], str | None]: ...
