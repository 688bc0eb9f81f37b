"""``RtSink``: svcbridge tickets into Request Tracker 5, and RT's replies and status changes back.

Create is idempotent: before creating, the ticket is looked up by svcbridge's reference (the custom field
when one is configured, else the ``[SB-000123]`` subject tag on a ticket created by svcbridge's own RT
user), so a crash after RT committed never makes a second ticket; ``reconcile`` does the same lookup.

A customer follow-up is added as correspondence (or a comment) whose Subject starts with
``[svcbridge <idempotency key>]``. That marker makes the update idempotent too (a retry first looks for a
transaction carrying its key) and lets ``poll_changes`` recognise svcbridge's own messages, whichever RT
account posted them, so a customer is never sent their own message back as an "agent reply".

RT 5 has no webhooks: ``poll_changes`` reads Status, Correspond and Comment transactions with an id above
the cursor (the last transaction id seen; ``None`` starts at RT's newest transaction) and turns them into
``StatusUpdate``s with ``external_event_id`` = the transaction id, which the host deduplicates:

- Status -> ``state`` through ``state_map.from_rt`` (statuses mapped to "" are not reported). RT's own
  new -> open right after a customer's message (RT_System, "open on correspond") is not reported: the
  customer's own message did not change anything for them.
- Correspond -> ``public_reply``, Comment -> ``internal_note``; skipped when svcbridge posted it (marker)
  or a requestor wrote it (the customer mailing RT directly).
"""

from __future__ import annotations

import re
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import httpx

from svcbridge import (
    AuthFailed,
    DeliveryItem,
    DeliveryResult,
    ExternalLink,
    PermanentError,
    StatusUpdate,
    Ticket,
    TicketState,
    utcnow,
)

from .client import RtClient, rt_attachments
from .settings import RtSettings

MARK_RE = re.compile(r"^\[svcbridge ([^\]\s]+)\]")
REF_RE = re.compile(r"^[A-Z][A-Z0-9]{0,7}-\d+$")
SUBJECT_MAX = 200  # RT's Tickets.Subject column
RT_SYSTEM = "RT_System"
_CLOSED = (TicketState.RESOLVED, TicketState.CLOSED)


class RtSink:
    """A Request Tracker 5 instance as a svcbridge sink with transaction polling."""

    def __init__(
        self,
        cfg: RtSettings,
        *,
        ticket_prefix: str = "SB",
        allow: list[str] | tuple[str, ...] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.poll_interval = cfg.poll_interval
        self.client = RtClient(
            cfg.api_base, cfg.token.get_secret_value(), timeout=cfg.timeout, allow=allow, transport=transport
        )
        self.tag_re = re.compile(rf"\[{re.escape(ticket_prefix)}-\d+\]")
        # ticket id -> the last message on it came from the customer (relayed by us, or mailed to RT)
        self._customer_last: dict[str, bool] = {}

    # ------------------------------------------------------------------ the Sink protocol
    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        if item.kind == "create":
            return await self._create(item)
        if item.kind == "update":
            return await self._update(item)
        raise PermanentError(f"RT sink cannot handle items of kind {item.kind!r}")

    async def reconcile(self, item: DeliveryItem) -> DeliveryResult | None:
        if item.kind == "create":
            found = await self.find(item.ticket)
            return self._linked(found, f"found existing RT ticket {found}") if found else None
        if item.kind == "update" and item.payload.get("type") == "customer_message":
            tid = item.ticket.link(self.name, "ticket") or await self.find(item.ticket)
            txn = await self._find_message(tid, item.idempotency_key) if tid else None
            if txn:
                return DeliveryResult(detail=f"already on RT ticket {tid} as transaction {txn}")
        return None

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        """The RT ticket svcbridge made for `ticket`, by reference; the oldest if there are several."""
        ref = ticket.ref
        if not REF_RE.match(ref):
            raise PermanentError(f"unexpected ticket reference {ref!r}")
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

    async def _create(self, item: DeliveryItem) -> DeliveryResult:
        t = item.ticket
        found = await self.find(t)
        if found:
            return self._linked(found, f"found existing RT ticket {found}")
        files, skipped = rt_attachments(item.attachments)
        subject = _one_line(f"[{t.ref}] {t.subject or '(no subject)'}")[:SUBJECT_MAX]
        body: dict[str, Any] = {
            "Queue": self.cfg.queue,
            "Subject": subject,
            "Content": _with_footer(t.description or "(no text)", _contact_line(t), skipped),
            "ContentType": "text/plain",
        }
        if t.contact.email:
            body["Requestor"] = t.contact.email
        priority = self.cfg.priorities.get(t.priority.name)
        if priority is not None:
            body["Priority"] = priority
        if self.cfg.ref_custom_field:
            body["CustomFields"] = {self.cfg.ref_custom_field: t.ref}
        if files:
            body["Attachments"] = files
        tid = await self.client.create_ticket(body)
        return self._linked(tid, f"created RT ticket {tid}")

    def _linked(self, tid: str, detail: str) -> DeliveryResult:
        return DeliveryResult(links=[ExternalLink(system=self.name, kind="ticket", value=tid)], detail=detail)

    # ------------------------------------------------------------------ update
    async def _update(self, item: DeliveryItem) -> DeliveryResult:
        payload = item.payload
        kind = payload.get("type")
        if kind != "customer_message":
            return DeliveryResult(detail=f"RT sink ignores updates of type {kind!r}")
        tid = item.ticket.link(self.name, "ticket") or await self.find(item.ticket)
        if not tid:
            raise PermanentError(f"no RT ticket for {item.ticket.ref}: its creation never succeeded")
        key = _key(item.idempotency_key)
        done = await self._find_message(tid, key)
        if done is None:
            files, skipped = rt_attachments(item.attachments)
            subject = _one_line(f"[svcbridge {key}] {payload.get('subject') or item.ticket.subject}")
            author = str(payload.get("author") or "the customer")
            body: dict[str, Any] = {
                "Subject": subject[:250],
                "Content": _with_footer(str(payload.get("body") or "(no text)"), f"From {author}", skipped),
                "ContentType": "text/plain",
            }
            if files:
                body["Attachments"] = files
            txn = await self.client.add_message(tid, self.cfg.customer_messages, body)
            detail = f"{self.cfg.customer_messages} on RT ticket {tid} (transaction {txn or '?'})"
        else:
            detail = f"already on RT ticket {tid} as transaction {done}"
        self._customer_last[tid] = True
        if payload.get("reopen"):
            await self._reopen(tid)
        return DeliveryResult(detail=detail)

    async def _reopen(self, tid: str) -> None:
        """Set an inactive RT ticket back to work (correspondence alone reopens it, a comment does not)."""
        current = str((await self.client.get_ticket(tid)).get("Status", ""))
        if self.cfg.state_map.state(current) in _CLOSED:
            status = self.cfg.state_map.to_rt[TicketState.IN_PROGRESS]
            await self.client.update_ticket(tid, {"Status": status})

    async def _find_message(self, tid: str, key: str) -> str | None:
        """Id of the transaction on `tid` whose subject carries svcbridge's marker for `key`."""
        key = _key(key)
        # no "[" in the query: RT 5.0.3 takes any query containing one for a JSON search (and fails)
        query = f"ObjectType = 'RT::Ticket' AND ObjectId = {int(tid)} AND Data LIKE 'svcbridge {key}]'"
        items = await self.client.transactions(query)
        for txn in items:
            m = MARK_RE.match(str(txn.get("Data") or ""))
            if m and m.group(1) == key:
                return str(txn["id"])
        return None

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
            state = self.cfg.state_map.state(new)
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


# ---------------------------------------------------------------------- helpers
def _key(key: str) -> str:
    """The idempotency key as it goes into a subject and a TransactionSQL string literal."""
    return re.sub(r"[^A-Za-z0-9:._@-]+", "_", key)[:120]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _contact_line(t: Ticket) -> str:
    c = t.contact
    who = ", ".join(x for x in (c.name, c.company, c.email, c.phone) if x)
    return f"svcbridge {t.ref} via {t.channel}" + (f"; contact: {who}" if who else "")


def _with_footer(text: str, line: str, skipped: list[str]) -> str:
    out = text.rstrip() + "\n\n-- \n" + line
    if skipped:
        out += "\nEmpty attachments not transferred: " + ", ".join(skipped)
    return out


def _when(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return utcnow()


class _Text(HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    p = _Text()
    p.feed(html)
    p.close()
    lines = [" ".join(line.split()) for line in "".join(p.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
