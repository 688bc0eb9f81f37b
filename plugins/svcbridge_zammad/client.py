"""``ZammadSink``: the REST calls (``/api/v1``, contract §1.1) and the trigger webhook that reports back.

Calls used, all through ``svcbridge.http_request`` (429/5xx/timeouts -> NotReady with Retry-After, 401/403
-> AuthFailed, other 4xx -> PermanentError, redirects to another host never followed with the token):

- find:      ``GET /tickets/search?query=title:"SB-000001"&limit=50&expand=true``; only a ticket whose title
  carries ``[SB-000001]`` counts, the oldest wins.
- create:    ``POST /tickets`` ``{title, group, customer, priority, <fields>, article:{subject (marker),
  body, type, internal, content_type, sender: "Customer"}}`` -> 201 ``{id, ...}``; then, when there are
  files, ``POST /ticket_articles`` with ``attachments:[{filename, data (base64), "mime-type"}]`` and the
  create's marker plus ``:files`` in its subject.
  That second call is also made when a retry finds the ticket without it (a create cut short).
- follow-up: ``POST /ticket_articles`` ``{ticket_id, subject: "[svcbridge <key>] ...", body, sender:
  "Customer", internal: false, attachments}``, after ``GET /ticket_articles/by_ticket/{id}`` found no
  article with that marker.
- note:      a ticket change for the agents (``add_note``): ``POST /ticket_articles`` ``{ticket_id, subject:
  "[svcbridge <key>] svcbridge: ticket updated", body, type: "note", internal: true, sender: "Agent"}``, after
  the same lookup by marker; internal, so the customer never sees it.
- priority:  ``PUT /tickets/{id}`` ``{priority: "<name>"}`` with the ``priorities`` map the create uses.
- reopen:    ``GET /tickets/{id}?expand=true`` (state name), ``PUT /tickets/{id}`` ``{state}``.

Webhook (a Zammad trigger): ``X-Hub-Signature: sha1=<hex HMAC-SHA1(token, raw body)>``, deduplicated on
``X-Zammad-Delivery``. The body ``{ticket, article}`` becomes one StatusUpdate: the ticket's ``state``
name through the state map, the article as a public reply or, when ``internal``, an internal note.
Articles svcbridge posted (marker) or the customer wrote (``sender`` Customer) are not reported.

Contract gaps: the search reply shape and query syntax are not in the contract (a list of tickets with
``expand=true`` is assumed; ``{"tickets": [ids]}`` is also read); the field names inside the webhook's
``ticket``/``article`` (``id``, ``state``, ``body``, ``content_type``, ``internal``, ``sender``) are
Zammad's ticket/article attributes, not spelled out by the payload page. With Elasticsearch, search sees
a new ticket only after indexing: a retry sooner than that could not find it (the host's first retry
waits ``outbox.backoff_initial``, 2 s by default).
"""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from svcbridge import (
    Attachment,
    DeliveryItem,
    HelpdeskSink,
    PermanentError,
    Priority,
    StatusUpdate,
    Ticket,
    TicketState,
    WebhookRoute,
    hmac_matches,
    html_to_text,
    signed_webhook,
)

from .settings import ZammadSettings


class ZammadSink(HelpdeskSink):
    """A Zammad instance as a svcbridge sink (status comes back through the signed trigger webhook)."""
    ticket_page = "#ticket/zoom/{id}"  # the agents' page, linked from the operator console

    label = "Zammad"
    fields: ClassVar[frozenset[str]] = HelpdeskSink.fields | {"priority"}

    def __init__(self, cfg: ZammadSettings, *, allow: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(cfg.name, cfg.state_map)
        self.cfg = cfg
        self.open_http(cfg, f"Token token={cfg.token.get_secret_value()}", allow)

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        tag = f"[{ticket.ref}]"
        params = {"query": f'title:"{ticket.ref}"', "limit": 50, "expand": "true"}
        data = await self.call("GET", "tickets/search", "ticket search", params=params)
        if isinstance(data, dict):  # without expand Zammad answers ids plus an assets table
            ids = [i for i in data.get("tickets") or [] if str(i).isdigit()]
            data = [await self.call("GET", f"tickets/{int(i)}", f"get ticket {i}") for i in ids]
        found = [int(t["id"]) for t in data if isinstance(t, dict) and tag in str(t.get("title", ""))]
        return str(min(found)) if found else None

    async def create(self, item: DeliveryItem) -> str:
        t = item.ticket
        if t.contact.email:
            customer = f"guess:{t.contact.email}"
        elif self.cfg.customer:
            customer = self.cfg.customer
        else:
            raise PermanentError(f"{t.ref} has no e-mail address and [plugins.zammad] customer is not set")
        body = {
            "title": self.title(t),
            "group": self.cfg.group,
            "customer": customer,
            "priority": self.cfg.priorities[t.priority.name],
            # the customer's words, marked: a trigger reporting this article must not echo it back as
            # an agent reply (without ``sender`` Zammad records the token's user, an agent)
            "article": {
                "subject": f"{self.marker(item.idempotency_key)} {self.title(t)}",
                "body": self.describe(t, t.description, [a for a in item.attachments if not a.data]),
                "type": self.cfg.article_type,
                "internal": False,
                "content_type": "text/plain",
                "sender": "Customer",
            },
            **self.cfg.fields,
        }
        data = await self.call("POST", "tickets", "create ticket", json=body)
        tid = str(data.get("id", "")) if isinstance(data, dict) else ""
        if not tid.isdigit():
            raise PermanentError(f"Zammad create ticket: no id in the answer: {str(data)[:200]}")
        return tid

    async def complete(self, remote_id: str, item: DeliveryItem, fresh: bool) -> None:
        """The create's files, as one article (the contract takes attachments on ``/ticket_articles``)."""
        files = [a for a in item.attachments if a.data]
        if not files:
            return
        mark = self.marker(item.idempotency_key + ":files")  # the ticket's first article has the plain one
        if not fresh and await self.find_message(remote_id, mark):
            return
        names = ", ".join(a.original_name or a.safe_name for a in files)
        await self._article(remote_id, f"{mark} {self.title(item.ticket)}", f"Attachments: {names}", files)

    # ------------------------------------------------------------------ follow-ups and state
    async def find_message(self, remote_id: str, marker: str) -> str | None:
        data = await self.call(
            "GET", f"ticket_articles/by_ticket/{int(remote_id)}", f"articles of {remote_id}"
        )
        for art in data if isinstance(data, list) else []:
            if isinstance(art, dict) and str(art.get("subject") or "").startswith(marker):
                return str(art.get("id"))
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        p = item.payload
        subject = " ".join(f"{marker} {p.get('subject') or item.ticket.subject}".split())[:250]
        text = self.describe(
            item.ticket,
            str(p.get("body") or ""),
            [a for a in item.attachments if not a.data],
            by=str(p.get("author") or ""),
        )
        return await self._article(remote_id, subject, text, [a for a in item.attachments if a.data])

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """An internal note (type ``note``, ``internal: true``) written by svcbridge's agent user."""
        subject = f"{marker} svcbridge: ticket updated"
        return await self._article(remote_id, subject, text, [], internal=True)

    async def _article(
        self, remote_id: str, subject: str, body: str, files: list[Attachment], *, internal: bool = False
    ) -> str | None:
        article: dict[str, Any] = {
            "ticket_id": int(remote_id),
            "subject": subject,
            "body": body,
            "content_type": "text/plain",
            # the customer's words as the customer's article; a note for the agents from svcbridge's
            # own (agent) user, never shown to the customer
            "type": "note" if internal else self.cfg.article_type,
            "internal": internal,
            "sender": "Agent" if internal else "Customer",
        }
        if files:
            article["attachments"] = [_zammad_file(a) for a in files]
        data = await self.call("POST", "ticket_articles", f"article on ticket {remote_id}", json=article)
        return str(data.get("id")) if isinstance(data, dict) and data.get("id") is not None else None

    async def remote_state(self, remote_id: str) -> TicketState | None:
        data = await self.call(
            "GET", f"tickets/{int(remote_id)}", f"get ticket {remote_id}", params={"expand": "true"}
        )
        return self.state_map.state(data.get("state", "")) if isinstance(data, dict) else None

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        body = {"state": self.state_map.remote(state)}
        await self.call("PUT", f"tickets/{int(remote_id)}", f"update ticket {remote_id}", json=body)

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        body = {"priority": self.cfg.priorities[priority.name]}
        await self.call("PUT", f"tickets/{int(remote_id)}", f"priority of ticket {remote_id}", json=body)


def _zammad_file(att: Attachment) -> dict[str, str]:
    return {
        "filename": att.original_name or att.safe_name,
        "data": base64.b64encode(att.data or b"").decode("ascii"),
        "mime-type": att.content_type or "application/octet-stream",
    }


# ---------------------------------------------------------------------- the trigger webhook
def to_update(cfg: ZammadSettings, data: Any) -> StatusUpdate | None:
    """One trigger payload ``{ticket, article}`` as a StatusUpdate, or None when it says nothing new."""
    ticket, article = data.get("ticket") or {}, data.get("article") or {}
    if not isinstance(ticket, dict) or str(ticket.get("id", "")).strip() == "":
        raise ValueError("no ticket id")
    state_name = ticket.get("state")
    if isinstance(state_name, dict):
        state_name = state_name.get("name")
    state = cfg.state_map.state(state_name) if state_name else None
    reply = note = None
    if isinstance(article, dict) and article.get("body"):
        sender = article.get("sender")
        sender = sender.get("name") if isinstance(sender, dict) else sender
        ours = HelpdeskSink.relayed(article.get("subject")) or HelpdeskSink.relayed(article.get("body"))
        if not ours and str(sender or "").lower() != "customer":
            text = str(article["body"])
            if "html" in str(article.get("content_type", "")).lower():
                text = html_to_text(text)
            reply, note = (None, text) if article.get("internal") else (text, None)
    if state is None and not reply and not note:
        return None
    who = article.get("from") or article.get("created_by") if isinstance(article, dict) else None
    return StatusUpdate(
        system=cfg.name,
        external_ticket_id=str(ticket["id"]),
        state=state,
        public_reply=reply,
        internal_note=note,
        actor=f"{cfg.name}:{who}" if isinstance(who, str) and who else cfg.name,
    )


def webhook_route(cfg: ZammadSettings) -> WebhookRoute:
    secret = cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else ""

    def verify(headers: Any, body: bytes) -> bool:
        return hmac_matches(secret, body, headers.get("x-hub-signature", ""), "sha1", prefix="sha1=")

    def event_id(headers: Any, body: bytes) -> str | None:
        return headers.get("x-zammad-delivery", "").strip() or None

    return signed_webhook(
        cfg.webhook_path,
        f"zammad:{cfg.name}",
        verify=verify,
        event_id=event_id,
        parse=lambda data: to_update(cfg, data),
    )
