"""The threading stage's view of the store during a batch: ``TicketLookup`` over the store plus the
batch's tickets, links and content hashes that are not committed yet.

A reply or a redelivery in the same batch as its original must thread or dedupe onto it although the
original's ticket is only written at the batch's commit (pipeline.py). Links the batch's drafts refer to
are prefetched in one query (``prefetch``): a value asked about and not found there is not stored.
"""

from __future__ import annotations

from datetime import datetime

from .models import Ticket
from .plans import Plan, PlanStatus
from .store.repo import Store


class Overlay:
    """``TicketLookup`` over the store plus the batch's not yet committed tickets, links and hashes."""

    def __init__(self, store: Store, seen: dict[str, int] | None = None) -> None:
        self.store = store
        self.tickets: dict[str, Ticket] = {}
        self.links: dict[tuple[str, str, str], str] = {}
        self.hashes: dict[str, str] = {}
        self.seen = seen  # content hash -> ticket id, prefetched for the whole batch
        self.asked: set[str] = set()
        self.known: dict[tuple[str, str, str], int] = {}

    def by_ref(self, ref: str) -> Ticket | None:
        return self.tickets.get(ref) or self.store.by_ref(ref)

    def prefetch(self, values: set[str], known: dict[tuple[str, str, str], int]) -> None:
        """Links already stored whose value is in ``values`` (all of them: a miss there is final)."""
        self.asked, self.known = values, known

    def by_link(self, system: str, kind: str, value: str) -> Ticket | None:
        ref = self.links.get((system, kind, value))
        if ref:
            return self.tickets[ref]
        if value in self.asked:
            tid = self.known.get((system, kind, value))
            return self.store.get_ticket(tid, full=False) if tid is not None else None
        return self.store.by_link(system, kind, value)

    def open_by_contact(
        self, *, email: str | None = None, phone: str | None = None, channel: str | None = None
    ) -> Ticket | None:
        for tk in reversed(self.tickets.values()):  # this batch's newest first
            if tk.state.is_closed or (channel and tk.channel != channel):
                continue
            if (email and tk.contact.email == email) or (phone and tk.contact.phone == phone):
                return tk
        return self.store.open_by_contact(email=email, phone=phone, channel=channel)

    def awaiting_survey(
        self, *, email: str | None = None, phone: str | None = None, since: datetime
    ) -> Ticket | None:
        # the survey's ``notified`` event is written by the outbox, never by a batch: the store knows
        found = self.store.awaiting_survey(email=email, phone=phone, since=since)
        if found is None:
            return None
        tk = self.tickets.get(found.ref, found)
        return tk if tk.state.is_closed else None  # reopened by a message earlier in this batch

    def journal_seen(self, content_hash: str, exclude_journal_id: int | None = None) -> int | None:
        ref = self.hashes.get(content_hash)
        if ref:
            return self.tickets[ref].id
        if self.seen is not None:
            return self.seen.get(content_hash)
        return self.store.journal_seen(content_hash, exclude_journal_id)

    def ticket(self, ref: str) -> Ticket | None:
        """The full ticket, as modified by this batch if it was."""
        if ref not in self.tickets:
            found = self.store.get_ticket(ref)
            if found is None:
                return None
            self.tickets[ref] = found
        return self.tickets[ref]

    def record(self, plan: Plan) -> None:
        if plan.ticket is None or plan.status == PlanStatus.QUARANTINED:
            return
        ref = plan.ticket.ref
        self.tickets[ref] = plan.ticket
        self.hashes.setdefault(plan.raw.content_hash, ref)
        for ln in plan.draft.links if plan.draft else []:
            self.links.setdefault((ln.system, ln.kind, ln.value), ref)
