"""What the pipeline decides for one journal entry (``Plan``) and what became of it (``Outcome``).

Below the pipeline, the batch's view (``overlay.py``) and the plan writer (``store/planwriter.py``),
which all three use: it imports nothing of theirs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .models import Notification, RawMessage, Ticket, TicketDraft, TicketEvent
from .work import WorkQueue


class PlanStatus(enum.StrEnum):
    """What a journal entry became; a ``StrEnum``, equal to the plain string ``Outcome.status`` holds."""

    CREATED = "created"  # a new ticket
    FOLLOWUP = "followup"  # a message on an existing ticket
    DUPLICATE = "duplicate"  # the same message again: the journal status and one received_again event
    QUARANTINED = "quarantined"  # a stage failed: kept with the plugin, stage and error


class StageFailed(Exception):
    """A stage's failure, naming the plugin when one raised: the message is quarantined."""

    def __init__(self, stage: str, plugin: str | None, exc: BaseException) -> None:
        super().__init__(f"{stage}: {exc}")
        self.stage, self.plugin, self.exc = stage, plugin, exc


@dataclass(frozen=True)
class Outcome:
    journal_id: int
    status: str  # a PlanStatus; a journal status for an entry processed earlier (Pipeline.process)
    ticket_ref: str | None = None
    reason: str = ""


@dataclass
class Plan:
    """What the store stage writes for one journal entry."""

    journal_id: int
    raw: RawMessage
    status: PlanStatus
    ticket: Ticket | None = None
    draft: TicketDraft | None = None
    event: TicketEvent | None = None
    notes: list[Notification] = field(default_factory=list)
    reopen: bool = False
    reason: str = ""
    failure: StageFailed | None = None
    # what classify / enrich hooks asked for (jobs, timers) and, on a follow-up, what each plugin
    # changed on the ticket: (plugin, diff) as changes.apply reports it
    work: WorkQueue | None = None
    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.journal_id, self.status, self.ticket.ref if self.ticket else None, self.reason)

    def quarantine(self, failure: StageFailed) -> None:
        """The store stage could not write this plan: it is quarantined instead."""
        self.status, self.reason, self.failure = PlanStatus.QUARANTINED, str(failure), failure


def actor(draft: TicketDraft) -> str:
    """Who wrote a customer's message, as the trail and the helpdesk name them."""
    return draft.contact.email or draft.contact.phone or draft.contact.name or "customer"
