"""``DjHelpdeskSink``: the DRF calls (``<url>/api/``), the follow-up poll and the follow-up webhook.

Calls used, all through ``svcbridge.http_request`` (429/5xx/timeouts -> NotReady with Retry-After, 401/403
-> AuthFailed, other 4xx -> PermanentError, a redirect to another host is never followed with the token):

- find:      ``GET /tickets/?page_size=N&page=P`` over all pages (the API has no search and no ordering
  parameter; it is ordered by id). A ticket counts when its title carries ``[SB-000001]`` and its
  description carries svcbridge's marker for that create (so a ticket a customer or agent typed with the
  same tag is never taken for ours); the oldest wins. The server's list is O(all tickets) per request
  (``get_queryset`` loads custom fields of every ticket), hence the large pages.
- create:    ``POST /tickets/`` JSON ``{queue, title, description, priority}`` (``priority`` is required, a
  missing ``description`` is a server 500). ``submitter_email`` only with ``submitter_email = true``: with it
  django-helpdesk mails the customer itself. The files follow in ``complete`` as one follow-up.
- follow-up: ``POST /followups/`` ``{ticket, comment: "[svcbridge <key>] ...", public}``, multipart with one
  ``attachments`` part per file when there are files, after ``GET /tickets/{id}/`` (its ``followup_set``)
  showed no follow-up with that marker. Never a ``title``: django-helpdesk renames the ticket to it.
- note:      a ticket change for the agents (``add_note``): ``POST /followups/`` ``{ticket, comment:
  "[svcbridge <key>] ...", public: false}`` whatever ``public_followups`` says (a private follow-up is
  shown to staff only and mailed to nobody outside), after the same lookup.
- priority:  ``PATCH /tickets/{id}/`` ``{priority}`` with the ``priorities`` map the create uses. A patch
  leaves no follow-up (nothing to poll back); the note next to it tells the agents.
- reopen:    ``GET /tickets/{id}/`` (``status``), then a follow-up with ``new_status`` (not ``PATCH``: a
  patched status leaves no follow-up, so neither the poll nor the webhook would ever see it).

Attachments: the follow-up serializer takes ``attachments`` (a list of files, multipart), stored
byte-exact with the upload's content type. The server refuses extensions outside its
``HELPDESK_VALID_EXTENSIONS`` only after it saved the follow-up (a 500 leaving half of it behind), so such
files, and empty ones (silently dropped by the server), are kept in svcbridge and named in the text.

Status back: every status change, agent reply and internal note in django-helpdesk is a follow-up
(``new_status``, ``comment``, ``public``). ``poll_changes`` reads ``GET /followups/`` (ordered by date;
no filter exists) from a cursor ``<last id>:<page>:<page size>``; the follow-up webhook
(``HELPDESK_FOLLOWUP_WEBHOOK_URLS``, body ``{ticket, queue_slug, followup_id}``) gives the same updates
with the same event id (the follow-up id), so both may run and the host drops the second copy. Follow-ups
carrying svcbridge's marker (its own create, messages, reopen) are never reported.
Only follow-ups on tickets whose title carries svcbridge's tag count; which tickets those are is learnt
once (one ticket list scan for a page of unknown tickets, single reads for a few) and kept, because every
ticket read costs the server a pass over all tickets (measured at 500 tickets: a single read about 120 ms,
so reading each follow-up's ticket made 10 pages of polling take 122 s; with the scan and the cache 1.2 s).

Quirks: a status set with ``PATCH /tickets/{id}/`` (not through a follow-up) is seen by neither path.
The webhook is sent synchronously and only a timeout is caught: with the URL set and svcbridge down, every
follow-up in django-helpdesk (UI too) answers 500 after it was saved; keep polling on and use the webhook
only for speed. Comments are rendered as Django templates (``{{ ticket.title }}`` in a customer's text would
be expanded); ``template_safe`` keeps ``{{`` and ``{#`` literal.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from datetime import datetime
from typing import Any, ClassVar

from svcbridge import (
    Attachment,
    AuthFailed,
    DeliveryItem,
    HelpdeskSink,
    NotReady,
    PermanentError,
    Priority,
    StatusUpdate,
    StoreUnavailable,
    Ticket,
    TicketState,
    WebhookRoute,
    read_body,
    utcnow,
)

from .settings import DjHelpdeskSettings

REOPEN_MARK = "[svcbridge reopen]"


def template_safe(text: str) -> str:
    """`text` so that django-helpdesk's template rendering of comments gives it back unchanged.

    ``update_ticket`` neutralises ``{%`` itself but renders ``{{ var }}`` and drops ``{# ... #}``; a variable
    tag whose value is the literal ``{{`` (``{{ "{{" }}``) renders as exactly those two characters.
    """
    return re.sub(r"\{([{#])", lambda m: '{{ "{' + m.group(1) + '" }}', text)


class DjHelpdeskSink(HelpdeskSink):
    """A django-helpdesk instance as a svcbridge sink, with ``poll_changes`` over its follow-ups."""

    label = "django-helpdesk"
    fields: ClassVar[frozenset[str]] = HelpdeskSink.fields | {"priority"}

    def __init__(
        self, cfg: DjHelpdeskSettings, *, ticket_prefix: str = "SB", allow: list[str] | tuple[str, ...] = ()
    ) -> None:
        super().__init__(cfg.name, cfg.state_map)
        self.cfg = cfg
        self.poll_interval = cfg.poll_interval
        self.tag_re = re.compile(rf"\[{re.escape(ticket_prefix)}-\d+\]")
        self._ours: dict[str, bool] = {}  # ticket id -> svcbridge's (its title carries the tag)
        self.open_http(cfg, f"Token {cfg.token.get_secret_value()}", allow)

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        tag, mark = f"[{ticket.ref}]", self.create_marker(ticket)
        found: list[int] = []
        page = 1
        while True:
            params = {"page_size": self.cfg.find_page_size, "page": page}
            data = await self.call("GET", "tickets/", "ticket list", params=params)
            for t in _results(data):
                if tag in str(t.get("title", "")) and mark in str(t.get("description", "")):
                    found.append(int(t["id"]))
            if not isinstance(data, dict) or not data.get("next"):
                break
            page += 1
        return str(min(found)) if found else None

    def create_marker(self, ticket: Ticket) -> str:
        """What the description of the ticket svcbridge made for `ticket` in this sink carries."""
        return self.marker(f"{ticket.ref}:create:{self.name}")

    async def create(self, item: DeliveryItem) -> str:
        t = item.ticket
        _, kept = self.split_files(item.attachments)
        # the create's marker goes into the description: `find` knows svcbridge's own ticket by it, and the
        # poll never reports the "Ticket Opened" follow-up django-helpdesk makes from the description
        text = self.describe(t, t.description, kept) + "\n" + self.create_marker(t)
        body: dict[str, Any] = {
            "queue": self.cfg.queue,
            "title": self.title(t),
            "description": template_safe(text),
            "priority": self.cfg.priorities[t.priority.name],
        }
        if self.cfg.submitter_email and t.contact.email:
            body["submitter_email"] = t.contact.email
        data = await self.call("POST", "tickets/", "create ticket", json=body)
        tid = str(data.get("id", "")) if isinstance(data, dict) else ""
        if not tid.isdigit():
            raise PermanentError(f"django-helpdesk create ticket: no id in the answer: {str(data)[:200]}")
        return tid

    async def complete(self, remote_id: str, item: DeliveryItem, fresh: bool) -> None:
        """The create's files as one private follow-up (the ticket serializer takes a single file only)."""
        files, _ = self.split_files(item.attachments)
        if not files:
            return
        mark = self.marker(f"{item.ticket.ref}:create:{self.name}:files")
        if not fresh and await self.find_message(remote_id, mark):
            return
        names = ", ".join(_filename(a) for a in files)
        await self._followup(remote_id, f"{mark} Attachments: {names}", files, public=False)

    def split_files(self, atts: list[Attachment]) -> tuple[list[Attachment], list[Attachment]]:
        """(files django-helpdesk will take, files kept in svcbridge): empty ones and refused extensions."""
        ok: list[Attachment] = []
        kept: list[Attachment] = []
        allowed = self.cfg.valid_extensions
        for a in atts:
            ext = os.path.splitext(_filename(a))[1].lower()
            if not a.data or (allowed is not None and ext not in ("", ".") and ext not in allowed):
                kept.append(a)
            else:
                ok.append(a)
        return ok, kept

    # ------------------------------------------------------------------ follow-ups and state
    async def _ticket(self, remote_id: str) -> dict[str, Any]:
        data = await self.call("GET", f"tickets/{int(remote_id)}/", f"get ticket {remote_id}")
        if not isinstance(data, dict):
            raise NotReady(f"django-helpdesk get ticket {remote_id}: unexpected answer")
        return data

    async def find_message(self, remote_id: str, marker: str) -> str | None:
        for f in (await self._ticket(remote_id)).get("followup_set") or []:
            if isinstance(f, dict) and marker in str(f.get("comment") or ""):
                return str(f.get("id"))
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        p = item.payload
        files, kept = self.split_files(item.attachments)
        text = self.describe(item.ticket, str(p.get("body") or ""), kept, by=str(p.get("author") or ""))
        return await self._followup(remote_id, f"{marker} {text}", files, public=self.cfg.public_followups)

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """A private follow-up (``public: false``): staff see it, the submitter is never mailed it."""
        return await self._followup(remote_id, f"{marker} {text}", [], public=False)

    async def _followup(
        self,
        remote_id: str,
        comment: str,
        files: list[Attachment],
        *,
        public: bool,
        status: int | None = None,
    ) -> str | None:
        what = f"follow-up on ticket {remote_id}"
        fields: dict[str, Any] = {
            "ticket": int(remote_id),
            "comment": template_safe(comment),
            "public": public,
        }
        if status is not None:
            fields["new_status"] = status
        if files:
            # multipart: DRF's ListField of FileFields reads every "attachments" part
            form = {
                k: ("true" if v is True else "false" if v is False else str(v)) for k, v in fields.items()
            }
            parts = [
                ("attachments", (_filename(a), a.data or b"", a.content_type or "application/octet-stream"))
                for a in files
            ]
            data = await self.call("POST", "followups/", what, data=form, files=parts)
        else:
            data = await self.call("POST", "followups/", what, json=fields)
        return str(data["id"]) if isinstance(data, dict) and data.get("id") is not None else None

    async def remote_state(self, remote_id: str) -> TicketState | None:
        return self.state_map.state((await self._ticket(remote_id)).get("status", ""))

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        # a follow-up, not PATCH: it is recorded, and it carries a marker so it is never reported back
        code = int(self.state_map.remote(state))
        await self._followup(remote_id, f"{REOPEN_MARK} set by svcbridge", [], public=False, status=code)

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        body = {"priority": self.cfg.priorities[priority.name]}
        await self.call("PATCH", f"tickets/{int(remote_id)}/", f"priority of ticket {remote_id}", json=body)

    # ------------------------------------------------------------------ status back: polling
    async def poll_changes(self, cursor: str | None) -> tuple[list[StatusUpdate], str | None]:
        """Updates from follow-ups after `cursor` (``<last id>:<page>:<page size>``) and the next cursor."""
        size = self.cfg.poll_page_size
        last, page, was = _parse_cursor(cursor)
        if last is None:
            # first run: start after the newest follow-up instead of replaying all of history
            head = await self.call("GET", "followups/", "follow-ups", params={"page_size": size})
            pages = max(1, -(-int(head.get("count") or 0) // size)) if isinstance(head, dict) else 1
            tail = await self.call(
                "GET", "followups/", "follow-ups", params={"page_size": size, "page": pages}
            )
            ids = [int(f["id"]) for f in _results(tail)]
            return [], f"{max(ids, default=0)}:{pages}:{size}"
        if was != size:
            page = 1  # the page size changed: page numbers mean something else now
        updates: list[StatusUpdate] = []
        # the cursor names the page holding `last`; moving on page by page from there misses nothing, but
        # deletions since may have shifted `last` (and what follows it) onto an earlier page: step back
        # until the resumed page starts at or before `last`
        resumed, at = False, page
        for _ in range(self.cfg.poll_max_pages):
            try:
                data = await self.call(
                    "GET", "followups/", "follow-ups", params={"page_size": size, "page": page}
                )
            except PermanentError:
                if page == 1 or resumed:
                    raise
                page -= 1  # 404 "Invalid page": the list got shorter
                continue
            items = sorted(_results(data), key=lambda f: int(f["id"]))
            if not resumed and page > 1 and items and int(items[0]["id"]) > last:
                page -= 1
                continue
            resumed = True
            await self._learn({str(f.get("ticket", "")) for f in items if int(f["id"]) > last})
            for f in items:
                if int(f["id"]) <= last:
                    continue
                upd = to_update(self.cfg, f) if self._ours.get(str(f.get("ticket", ""))) else None
                last, at = int(f["id"]), page
                if upd is not None:
                    updates.append(upd)
            if not isinstance(data, dict) or not data.get("next"):
                break
            page += 1
        return updates, f"{last}:{max(at, 1) if resumed else page}:{size}"

    async def _learn(self, tids: set[str]) -> None:
        """Fill ``_ours`` (ticket id -> carries svcbridge's tag) for `tids`, cheaply.

        Every ticket read (list or single) costs the server a pass over all tickets, so a page of
        follow-ups on many unknown tickets is answered by one list scan, a few by single reads. The answer
        is kept across polls: a title is set when the ticket is made and svcbridge's tag is not typed later.
        """
        unknown = {t for t in tids if t not in self._ours}
        if not unknown:
            return
        if len(self._ours) > 200_000:
            self._ours.clear()
        if len(unknown) > 3:
            page = 1
            while True:
                params = {"page_size": self.cfg.find_page_size, "page": page}
                data = await self.call("GET", "tickets/", "ticket list", params=params)
                for t in _results(data):
                    self._ours[str(t["id"])] = bool(self.tag_re.search(str(t.get("title", ""))))
                if not isinstance(data, dict) or not data.get("next"):
                    break
                page += 1
        for tid in unknown - set(self._ours):
            try:
                self._ours[tid] = bool(self.tag_re.search(str((await self._ticket(tid)).get("title", ""))))
            except (PermanentError, AuthFailed):  # deleted, or in a queue we may not see: not reported
                self._ours[tid] = False


# ---------------------------------------------------------------------- follow-up -> StatusUpdate
def to_update(cfg: DjHelpdeskSettings, f: dict[str, Any]) -> StatusUpdate | None:
    """One follow-up as a StatusUpdate (event id = follow-up id), or None when it says nothing new."""
    comment = str(f.get("comment") or "").strip()
    if HelpdeskSink.relayed(comment):
        return None  # svcbridge's own: the create, a customer's message, a reopen
    new_status = f.get("new_status")
    state = cfg.state_map.state(new_status) if new_status is not None else None
    files = [str(a.get("filename")) for a in f.get("followupattachment_set") or [] if isinstance(a, dict)]
    if files:
        note = f"({len(files)} attachment(s) in the helpdesk: {', '.join(files)})"
        comment = f"{comment}\n\n{note}" if comment else note
    reply = note_ = None
    if comment:
        reply, note_ = (comment, None) if f.get("public") else (None, comment)
    if state is None and reply is None and note_ is None:
        return None
    user = f.get("user")
    return StatusUpdate(
        system=cfg.name,
        external_ticket_id=str(f["ticket"]),
        external_event_id=str(f["id"]),
        state=state,
        public_reply=reply,
        internal_note=note_,
        actor=f"{cfg.name}:user{user}" if user else cfg.name,
        at=_when(f.get("date")),
    )


# ---------------------------------------------------------------------- the follow-up webhook
def webhook_route(cfg: DjHelpdeskSettings, ticket_prefix: str = "SB") -> WebhookRoute:
    """``POST /hooks/<webhook_path>/{token}``: the follow-up webhook, authenticated by the token.

    django-helpdesk signs nothing and sends no headers of its own, so the secret is in the URL it is
    given (``HELPDESK_FOLLOWUP_WEBHOOK_URLS=https://bridge.example.com/hooks/djhelpdesk/<token>``),
    compared in constant time. The body's ``ticket.followup_set`` holds the follow-up ``followup_id`` names.
    """
    secret = cfg.webhook_token.get_secret_value().encode() if cfg.webhook_token else b""
    tag_re = re.compile(rf"\[{re.escape(ticket_prefix)}-\d+\]")

    async def endpoint(request: Any, ctx: Any) -> Any:
        from starlette.responses import JSONResponse

        offered = str(request.path_params.get("token", "")).encode()
        if not secret or not hmac.compare_digest(offered, secret):
            return JSONResponse({"error": "unknown hook"}, status_code=404)
        body = await read_body(request)
        if not isinstance(body, bytes):
            return body
        try:
            data = json.loads(body)
            ticket, fid = data["ticket"], int(data["followup_id"])
            f = next(x for x in ticket.get("followup_set") or [] if int(x.get("id", -1)) == fid)
        except (ValueError, TypeError, KeyError, AttributeError, StopIteration) as exc:
            return JSONResponse({"error": f"unreadable payload: {type(exc).__name__}"}, status_code=400)
        if not tag_re.search(str(ticket.get("title", ""))):
            return JSONResponse({"applied": False, "ignored": True})
        update = to_update(cfg, f)
        if update is None:
            return JSONResponse({"applied": False, "ignored": True})
        try:
            applied = await ctx.apply_status_update(update)
        except StoreUnavailable:
            return JSONResponse({"error": "store unavailable, retry"}, status_code=503)
        return JSONResponse({"applied": applied})

    path = cfg.webhook_path.strip("/") + "/{token}"
    return WebhookRoute(path=path, endpoint=endpoint, methods=("POST",), name=f"djhelpdesk:{cfg.name}")


# ---------------------------------------------------------------------- helpers
def _results(data: Any) -> list[dict[str, Any]]:
    items = data.get("results") if isinstance(data, dict) else data
    return [x for x in items or [] if isinstance(x, dict) and str(x.get("id", "")).isdigit()]


def _filename(a: Attachment) -> str:
    return a.original_name or a.safe_name


def _parse_cursor(cursor: str | None) -> tuple[int | None, int, int]:
    parts = (cursor or "").split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None, 1, 0
    return int(parts[0]), max(1, int(parts[1])), int(parts[2])


def _when(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return utcnow()
