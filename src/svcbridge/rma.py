"""RMAs: a faulty part on its way back to the maker, and the replacement on its way to us.

An RMA belongs to a ticket, names the vendor, the unit (``asset``) and one or more parts, and moves
along one state machine (api-contracts 3.5, svcbridge's own; vendors' words are mapped onto it)::

    requested -> approved -> shipped_to_vendor -> received_by_vendor -> replacement_shipped
              -> replacement_received -> closed            (and rejected / cancelled on the way)

``approved`` usually brings the vendor's RMA number, ``shipped_to_vendor`` a carrier and tracking
number. Every transition is a ``rma`` ticket event with its time and its source (``cli``,
``helpdesk:rt``, ``vendor:cisco``, ``mail``) and reaches the ticket's helpdesks as a note once
(``store/rmas.py``). A vendor that has not moved an RMA for N days raises a reminder (the ``rma.reminder``
timer of the ``svcbridge_rma`` plugin).

Plugins reach RMAs through ``Host.rmas`` (an ``RmaBook``); everything here is plain data.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from .models import Notification, Ticket

__all__ = ["Rma", "RmaBook", "RmaPart", "RmaState", "rma_can_move"]


class RmaState(enum.StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    SHIPPED_TO_VENDOR = "shipped_to_vendor"
    RECEIVED_BY_VENDOR = "received_by_vendor"
    REPLACEMENT_SHIPPED = "replacement_shipped"
    REPLACEMENT_RECEIVED = "replacement_received"
    CLOSED = "closed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RmaState.CLOSED, RmaState.REJECTED, RmaState.CANCELLED)


_R = RmaState
_ORDER = [
    _R.REQUESTED,
    _R.APPROVED,
    _R.SHIPPED_TO_VENDOR,
    _R.RECEIVED_BY_VENDOR,
    _R.REPLACEMENT_SHIPPED,
    _R.REPLACEMENT_RECEIVED,
    _R.CLOSED,
]


def rma_can_move(old: RmaState, new: RmaState) -> bool:
    """Forward along the lifecycle (a step may be skipped: vendors report late or not at all, and an
    advance replacement ships before the faulty part is back), never back; rejected while the vendor
    decides (up to received), cancelled from any open state; nothing leaves a final state."""
    if old.is_final or old == new:
        return False
    if new == _R.CANCELLED:
        return True
    if new == _R.REJECTED:
        return old in (_R.REQUESTED, _R.APPROVED, _R.SHIPPED_TO_VENDOR, _R.RECEIVED_BY_VENDOR)
    return _ORDER.index(new) > _ORDER.index(old)


class RmaPart(BaseModel):
    """One part sent back: its part number or category (``PSU``), its serial, how many."""

    model_config = ConfigDict(extra="forbid")
    part: str = Field(min_length=1, max_length=100)
    serial: str | None = Field(default=None, max_length=100)
    qty: int = Field(default=1, ge=1, le=1000)


class Rma(BaseModel):
    """One RMA as stored."""

    model_config = ConfigDict(extra="forbid")
    id: int
    ticket_ref: str
    vendor: str
    number: str | None = None
    state: RmaState = RmaState.REQUESTED
    parts: list[RmaPart] = Field(default_factory=list)
    asset: dict[str, Any] = Field(default_factory=dict)
    fault: str | None = None
    carrier: str | None = None
    tracking: str | None = None
    source: str = "cli"
    data: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime

    def summary(self) -> str:
        """One line for notes and lists (plain text)."""
        parts = ", ".join(
            f"{p.part}{' ' + p.serial if p.serial else ''}{' x' + str(p.qty) if p.qty > 1 else ''}"
            for p in self.parts
        )
        number = f" {self.number}" if self.number else ""
        ship = f", {self.carrier} {self.tracking}" if self.tracking else ""
        return f"RMA {self.id} ({self.vendor}{number}): {self.state.value}{ship} - {parts}"


@runtime_checkable
class RmaBook(Protocol):
    """The RMAs of the store as plugins see them (``Host.rmas``); each call is one transaction.

    ``open`` is idempotent on ``source_key`` (an agent's command read twice opens one RMA). ``move``
    applies one transition: the row, a ``rma`` ticket event (time, source, from, to, number, carrier,
    tracking) and a note to the ticket's helpdesks, together; ``key`` (a vendor's event id, a mail's
    Message-ID) makes a repeated report a no-op; an impossible move raises ``ValueError``.
    ``remind_after`` (re)sets the ticket's ``rma.reminder`` timer; a final state cancels it.
    ``customer_notices(rma, old_state, ticket)``, when a plugin sets it, says what the customer is told
    of a transition (notifications written with it, sent once through the outbox).
    """

    customer_notices: Callable[[Rma, RmaState | None, Ticket], builtins.list[Notification]] | None

    def open(
        self,
        ticket_ref: str,
        vendor: str,
        parts: builtins.list[RmaPart],
        *,
        fault: str | None = None,
        number: str | None = None,
        source: str = "cli",
        source_key: str | None = None,
        remind_after: timedelta | None = None,
    ) -> Rma: ...

    def get(self, rma_id: int) -> Rma | None: ...

    def send(self, rma_id: int, notes: builtins.list[Notification], purpose: str) -> bool:
        """Queue mails for the RMA through the outbox, once per purpose and address."""
        ...

    def find(self, vendor: str, number: str) -> Rma | None: ...

    def by_ticket(self, ticket_ref: str) -> builtins.list[Rma]: ...

    def list(
        self, state: RmaState | None = None, vendor: str | None = None, limit: int = 200
    ) -> builtins.list[Rma]: ...

    def stale(self, before: datetime) -> builtins.list[Rma]: ...

    def move(
        self,
        rma_id: int,
        state: RmaState,
        *,
        source: str,
        number: str | None = None,
        carrier: str | None = None,
        tracking: str | None = None,
        note: str | None = None,
        key: str | None = None,
        at: datetime | None = None,
        remind_after: timedelta | None = None,
    ) -> Rma | None: ...
