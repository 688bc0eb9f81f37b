"""Work that happens after a ticket is stored: ticket changes, durable jobs and durable timers.

These are the public types of the after-sales layer's building blocks (all in ``svcbridge.__all__``):

- ``TicketChange``: what a plugin found out about a ticket (labels, asset, customer, category,
  priority, fault level, SLA policy and deadlines, a note for the agents). The host stores it on the
  ticket, writes a ``ticket_updated`` event naming the plugin, and sends it to every helpdesk the
  ticket lives in through the outbox (``changes.py``); its ``events`` (trail entries of the
  plugin's own types) and ``notifications`` (notices through the outbox, e.g. to a supervisor) are
  written in the same transaction.
- ``JobKind`` / ``Job``: a kind of slow or remote work (a warranty lookup, OCR of a fax, a part
  reservation) registered by a plugin; a ``Job`` is one durable row of it, run after the ticket is
  committed, retried with backoff, run once per key (``jobs.py``).
- ``TimerKind`` / ``Timer``: a named moment for a ticket (SLA warning, escalation, survey, callback
  due); a ``Timer`` row fires once, even with several replicas, and says how late it fired.
- ``WorkQueue``: what a hook, a job or a timer handler uses to ask for jobs and timers. What it
  collects is written in the same transaction as the work that asked for it, so nothing is asked
  for twice or lost across a crash.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .models import Asset, FaultLevel, Notification, Priority, Ticket, TicketEvent

__all__ = ["Job", "JobKind", "TicketChange", "Timer", "TimerKind", "WorkQueue"]

NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,99}$")


class TicketChange(BaseModel):
    """Fields a plugin sets on a stored ticket; ``None`` leaves a field as it is.

    ``labels`` are merged into the ticket's (a label set to ``None`` is removed); ``asset`` is merged
    field by field (only the fields given). ``note`` is text for the agents only: it reaches the
    helpdesk as an internal note, never the customer.
    """

    model_config = ConfigDict(extra="forbid")
    labels: dict[str, Any] = Field(default_factory=dict)
    asset: Asset | None = None
    customer: str | None = None
    category: str | None = Field(default=None, max_length=100)
    priority: Priority | None = None
    fault_level: FaultLevel | None = None
    # the SLA clock (svcbridge_sla): the policy's name and ALL deadlines (replaces the ticket's set;
    # ``{}`` clears them, ``None`` leaves them)
    sla_policy: str | None = Field(default=None, max_length=100)
    deadlines: dict[str, datetime] | None = None
    note: str | None = None
    # trail entries of the plugin's own types (sla_breached, survey_reply, ...), stored with the change
    events: list[TicketEvent] = Field(default_factory=list)
    # notices through the outbox (an escalation to a supervisor, a survey): sent once per origin
    notifications: list[Notification] = Field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.model_dump(exclude_none=True, exclude_defaults=True)


class Job(BaseModel):
    """One durable job as its handler sees it (``ticket`` loaded when the job belongs to one)."""

    model_config = ConfigDict(extra="forbid")
    id: int
    kind: str
    key: str
    data: dict[str, Any] = Field(default_factory=dict)
    attempts: int = Field(default=0, description="earlier attempts that failed (0 on the first run)")
    ticket: Ticket | None = None


class Timer(BaseModel):
    """One durable timer as its handler sees it when it fires."""

    model_config = ConfigDict(extra="forbid")
    id: int
    name: str
    due_at: datetime
    fired_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)
    ticket: Ticket | None = None

    @property
    def late(self) -> timedelta:
        """How long after ``due_at`` it fired (downtime, a busy daemon): an SLA timer may say so."""
        return max(timedelta(0), self.fired_at - self.due_at)


@dataclass(frozen=True)
class JobKind:
    """A kind of job a plugin runs: ``run(job, work)`` returns a ``TicketChange`` or ``None``.

    ``run`` may be sync or async; a sync one runs in a thread, so it may block. It must be safe to
    run again after a crash (as a sink's ``deliver``): the host retries what it did not record.
    Raise ``NotReady`` (or anything) to retry with backoff, ``AuthFailed`` to park every job of
    this kind until the next start (an alert is raised), ``PermanentError`` to give up on this one.
    """

    name: str
    run: Callable[..., Any]
    timeout: float = 60.0
    max_attempts: int = 10
    backoff_initial: float = 5.0
    backoff_max: float = 3600.0

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"job kind name {self.name!r}: lowercase letters, digits, '_.:-'")


@dataclass(frozen=True)
class TimerKind:
    """What happens when a timer of this name fires: ``fire(timer, work)`` -> ``TicketChange`` | None.

    Sync or async like ``JobKind.run``. A failure is retried (``retry_in`` s, at most
    ``max_attempts`` times); the timer fires once: its effects are recorded with its ``fired`` mark.
    """

    name: str
    fire: Callable[..., Any]
    timeout: float = 60.0
    max_attempts: int = 5
    retry_in: float = 30.0

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"timer name {self.name!r}: lowercase letters, digits, '_.:-'")


@dataclass
class JobRequest:
    kind: str
    key: str
    data: dict[str, Any]
    ticket_ref: str | None


@dataclass
class TimerRequest:
    name: str
    at: datetime | None  # None: cancel
    data: dict[str, Any]
    ticket_ref: str | None


@dataclass
class WorkQueue:
    """Collects the jobs and timers a hook or handler asks for; the host writes them with its commit.

    ``ticket_ref`` is the ticket the work belongs to (the one being stored, the job's or the timer's);
    ``None`` for work that belongs to no ticket.
    """

    ticket_ref: str | None = None
    ticket_id: int | None = None  # the store's id of that ticket, when the host knows it
    jobs: list[JobRequest] = field(default_factory=list)
    timers: list[TimerRequest] = field(default_factory=list)

    def enqueue(self, kind: str, data: dict[str, Any] | None = None, key: str | None = None) -> None:
        """Ask for a job of ``kind``. ``key`` makes it run once (default: the ticket's reference, so
        one job of a kind per ticket); a job whose kind and key exist already is not added again."""
        check_name(kind)
        key = key or self.ticket_ref or ""
        if not key:
            raise ValueError("a job that belongs to no ticket needs a key")
        self.jobs.append(JobRequest(kind, key[:300], dict(data or {}), self.ticket_ref))

    def schedule(self, name: str, at: datetime, data: dict[str, Any] | None = None) -> None:
        """Fire timer ``name`` of this ticket at ``at`` (timezone-aware); one already scheduled under
        that name is moved (and fires again if it had fired)."""
        check_name(name)
        if at.tzinfo is None:
            raise ValueError("timer times must be timezone-aware")
        self.timers.append(TimerRequest(name, at, dict(data or {}), self.ticket_ref))

    def cancel(self, name: str) -> None:
        """Cancel timer ``name`` of this ticket if it has not fired (a no-op otherwise)."""
        check_name(name)
        self.timers.append(TimerRequest(name, None, {}, self.ticket_ref))

    def __bool__(self) -> bool:
        return bool(self.jobs or self.timers)


def check_name(kind: str) -> str:
    """A job kind or timer name given as a string (CLI, hooks), validated."""
    if not NAME.match(kind):
        raise ValueError(f"bad name {kind!r}: lowercase letters, digits, '_.:-'")
    return kind
