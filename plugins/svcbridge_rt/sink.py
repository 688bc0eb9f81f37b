"""``RtSink``: svcbridge tickets into Request Tracker 5 on the shared ``HelpdeskSink`` flow, and RT's
replies and status changes back by polling its transactions.

The flow (look up before create, marked follow-ups looked up before they are posted, reopen an inactive
ticket on a customer's reply) is ``HelpdeskSink``'s; this module says what each step is in RT:

- find: by svcbridge's reference, in the custom field when one is configured, else the ``[SB-000123]``
  subject tag on a ticket created by svcbridge's own RT user; the oldest match wins.
- create: one ``POST /ticket`` with requestor, priority, custom field and the files (RT takes them inline,
  so ``complete`` has nothing left to do).
- follow-up: correspondence (or a comment) whose Subject starts with ``[svcbridge <idempotency key>]``,
  after a TransactionSQL search found no transaction with that Subject. The marker also lets
  ``poll_changes`` recognise svcbridge's own messages, whichever RT account posted them, so a customer is
  never sent their own message back as an "agent reply".
- state: the ticket's ``Status``, through ``state_map``.

RT 5 has no webhooks: ``poll_changes`` reads Status, Correspond and Comment transactions with an id above
the cursor (the last transaction id seen; ``None`` starts at RT's newest transaction) and turns them into
``StatusUpdate``s with ``external_event_id`` = the transaction id, which the host deduplicates:

- Status -> ``state`` through ``state_map.from_helpdesk`` (statuses mapped to "" are not reported). RT's
  own new -> open right after a customer's message (RT_System, "open on correspond") is not reported: the
  customer's own message did not change anything for them.
- Correspond -> ``public_reply``, Comment -> ``internal_note``; skipped when svcbridge posted it (marker)
  or a requestor wrote it (the customer mailing RT directly).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import httpx

from svcbridge import (
    AuthFailed,
    DeliveryItem,
    HelpdeskSink,
    PermanentError,
    Priority,
    StatusUpdate,
    Ticket,
    TicketState,
    html_to_text,
    utcnow,
)

from .client import RtClient, rt_attachments
from .settings import RtSettings

# anchored, unlike HelpdeskSink.relayed: an agent answering a relayed message by mail writes a Subject
# "Re: [svcbridge ...]", and that reply must still reach the customer
MARK_RE = re.compile(r"^\[svcbridge ([^\]\s]+)\]")
RT_SYSTEM = "RT_System"


class RtSink(HelpdeskSink):
    """A Request Tracker 5 instance as a svcbridge sink with transaction polling."""
    ticket_page = "Ticket/Display.html?id={id}"  # the agents' page, linked from the operator console

    label = "RT"
    # besides the note: the SLA engine's earliest open deadline is RT's Due, and an escalation (or a
    # classification change) moves RT's Priority
    fields = frozenset({"note", "due", "priority"})

    def __init__(
        self,
        cfg: RtSettings,
        *,
        ticket_prefix: str = "SB",
        allow: list[str] | tuple[str, ...] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(cfg.name, cfg.state_map)
        self.cfg = cfg
        self.poll_interval = cfg.poll_interval
        http_cfg = cfg.model_copy(update={"transport": transport}) if transport is not None else cfg
        self.open_http(http_cfg, f"token {cfg.token.get_secret_value()}", allow)
        self.client = RtClient(self)
        self.tag_re = re.compile(rf"\[{re.escape(ticket_prefix)}-\d+\]")
        # ticket id -> the last message on it came from the customer (relayed by us, or mailed to RT)
        self._customer_last: dict[str, bool] = {}

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        ref = self.checked(ticket).ref  # checked here too: it goes into a TicketSQL string literal
        cf = self.cfg.ref_custom_field
        # by subject only tickets our own RT user created: a customer mailing RT "[SB-000123]" is no match
        query = f"CF.{{{cf}}} = '{ref}'" if cf else f"Subject LIKE '[{ref}]' AND Creator = '__CurrentUser__'"
        items = await self.client.search_tickets(query)
        ids = [
            int(i["id"])
            for i in items
            if str(i.get("id", "")).isdigit() and (cf or f"[{ref}]" in str(i.get("Subject", "")))
        ]
        return str(min(ids)) if ids else None

    async def create(self, item: DeliveryItem) -> str:
        t = item.ticket
        files, empty = rt_attachments(item.attachments)
        body: dict[str, Any] = {
            "Queue": self.cfg.queue,
            "Subject": self.title(t),  # 200: RT's Tickets.Subject column
            "Content": self.describe(t, t.description, empty),
            "ContentType": "text/plain",
        }
        if t.contact.email:
            body["Requestor"] = t.contact.email
        priority = self.cfg.priorities.get(t.priority.name)
        if priority is not None:
            body["Priority"] = priority
        if t.deadlines:  # the earliest SLA deadline: RT sorts and escalates on Due
            body["Due"] = _rt_date(min(t.deadlines.values()))
        if self.cfg.ref_custom_field:
            body["CustomFields"] = {self.cfg.ref_custom_field: t.ref}
        if files:
            body["Attachments"] = files
        return await self.client.create_ticket(body)

    # ------------------------------------------------------------------ follow-ups and state
    async def find_message(self, remote_id: str, marker: str) -> str | None:
        key = marker[len("[svcbridge ") : -1]  # the marker's key is already reduced to [A-Za-z0-9:._@-]
        # no "[" in the query: RT 5.0.3 takes any query containing one for a JSON search (and fails)
        query = f"ObjectType = 'RT::Ticket' AND ObjectId = {int(remote_id)} AND Data LIKE 'svcbridge {key}]'"
        for txn in await self.client.transactions(query):
            m = MARK_RE.match(str(txn.get("Data") or ""))
            if m and m.group(1) == key:
                self._customer_last[remote_id] = True
                return str(txn["id"])
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        p = item.payload
        files, empty = rt_attachments(item.attachments)
        body: dict[str, Any] = {
            "Subject": " ".join(f"{marker} {p.get('subject') or item.ticket.subject}".split())[:250],
            "Content": self.describe(
                item.ticket, str(p.get("body") or ""), empty, by=str(p.get("author") or "")
            ),
            "ContentType": "text/plain",
        }
        if files:
            body["Attachments"] = files
        txn = await self.client.add_message(remote_id, self.cfg.customer_messages, body)
        self._customer_last[remote_id] = True
        return txn

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """A note for the agents (a ticket change) as an RT comment: never correspondence, which RT
        shows and may mail to the requestor. Its marker keeps ``poll_changes`` from reporting it."""
        subject = f"{marker} svcbridge: ticket updated"
        body = {"Subject": subject, "Content": text, "ContentType": "text/plain"}
        return await self.client.add_message(remote_id, "comment", body)

    async def set_due(self, remote_id: str, due: datetime | None) -> None:
        # RT keeps "not set" as its epoch date; REST2 takes that text to clear Due
        await self.client.update_ticket(remote_id, {"Due": _rt_date(due) if due else "1970-01-01 00:00:00"})

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        # RT's Priority is a number (a queue may show names for its ranges): the [plugins.rt]
        # priorities table, as at creation; a level left out of the table is not sent (the note says it)
        value = self.cfg.priorities.get(priority.name)
        if value is not None:
            await self.client.update_ticket(remote_id, {"Priority": value})

    async def remote_state(self, remote_id: str) -> TicketState | None:
        return self.state_map.state(str((await self.client.get_ticket(remote_id)).get("Status", "")))

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        # correspondence alone reopens an RT ticket, a comment does not: the flow sets it explicitly
        await self.client.update_ticket(remote_id, {"Status": self.state_map.remote(state)})

    # ------------------------------------------------------------------ polling
    async def poll_changes(self, cursor: str | None) -> tuple[list[StatusUpdate], str | None]:
        """Status updates from RT transactions after `cursor`, and the new cursor (last id seen)."""
        if cursor is None or not cursor.strip().isdigit():
            # first run: start at RT's newest transaction instead of replaying all of RT's history
            return [], str(await self.client.last_transaction_id())
        pos = int(cursor)
        updates: list[StatusUpdate] = []
        tickets: dict[str, dict[str, Any] | None] = {}
        page = self.cfg.poll_page_size
        for _ in range(self.cfg.poll_max_pages):
            items = await self.client.transactions(
                f"ObjectType = 'RT::Ticket' AND id > {pos} AND (Type = 'Status' OR Type = 'Correspond'"
                " OR Type = 'Comment')",
                per_page=page,
            )
            for txn in sorted(items, key=lambda x: int(x["id"])):
                upd = await self._to_update(txn, tickets)
                pos = max(pos, int(txn["id"]))
                if upd is not None:
                    updates.append(upd)
            if len(items) < page:
                break
        if len(self._customer_last) > 50_000:
            self._customer_last.clear()
        return updates, str(pos)

    async def _ticket(self, tid: str, cache: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
        if tid not in cache:
            try:
                cache[tid] = await self.client.get_ticket(tid)
            except (PermanentError, AuthFailed):  # deleted for good, or moved where we may not look
                cache[tid] = None
        return cache[tid]

    def _ours(self, info: dict[str, Any]) -> bool:
        if self.tag_re.search(str(info.get("Subject", ""))):
            return True
        cf = self.cfg.ref_custom_field
        fields = [c for c in info.get("CustomFields") or [] if isinstance(c, dict)]
        return bool(cf) and any(c.get("name") == cf and c.get("values") for c in fields)

    async def _to_update(
        self, txn: dict[str, Any], cache: dict[str, dict[str, Any] | None]
    ) -> StatusUpdate | None:
        tid = str(txn.get("ObjectId", ""))
        info = await self._ticket(tid, cache) if tid.isdigit() else None
        if info is None or not self._ours(info):
            return None
        typ = str(txn.get("Type", ""))
        creator = RtClient.creator(txn)
        base: dict[str, Any] = {
            "system": self.name,
            "external_ticket_id": tid,
            "external_event_id": str(txn["id"]),
            "actor": f"{self.name}:{creator}" if creator else self.name,
            "at": _when(txn.get("Created")),
        }
        if typ == "Status":
            old, new = str(txn.get("OldValue") or ""), str(txn.get("NewValue") or "")
            if creator == RT_SYSTEM and old == "new" and self._customer_last.get(tid):
                return None  # RT opened it because of the customer's own message
            state = self.state_map.state(new)
            return StatusUpdate(state=state, **base) if state else None
        requestors = {u.lower() for u in RtClient.users(info.get("Requestor"))}
        if MARK_RE.match(str(txn.get("Data") or "")) or creator.lower() in requestors:
            self._customer_last[tid] = True  # svcbridge relayed it, or the customer mailed RT
            return None
        self._customer_last[tid] = False
        text = await self._message_text(str(txn["id"]))
        if typ == "Correspond":
            return StatusUpdate(public_reply=text, **base)
        return StatusUpdate(internal_note=text, **base)

    async def _message_text(self, txn_id: str) -> str:
        """The text of a correspondence or comment: its text/plain part, else its HTML as text."""
        items = await self.client.message_parts(txn_id)
        files = [str(p["Filename"]) for p in items if p.get("Filename")]
        body = [p for p in items if not p.get("Filename") and str(p.get("ContentLength", "0")) != "0"]
        kinds = {str(p.get("ContentType", "")).split(";")[0].strip().lower(): p for p in reversed(body)}
        chosen = kinds.get("text/plain") or kinds.get("text/html")
        text = ""
        if chosen is not None:
            text = (await self.client.attachment_bytes(str(chosen["id"]))).decode("utf-8", errors="replace")
            if chosen is not kinds.get("text/plain"):
                text = html_to_text(text)
        text = text.strip()
        if files:
            note = f"({len(files)} attachment(s) in the helpdesk: {', '.join(files)})"
            text = f"{text}\n\n{note}" if text else note
        return text or "(no text)"


def _when(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return utcnow()


def _rt_date(at: datetime) -> str:
    """A time as RT stores it: ``YYYY-MM-DD HH:MM:SS`` in UTC. RT 5.0.3 reports an update to an ISO
    ``...T...Z`` value as made, then reads it back as 1970 (found against the real RT in tests)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
