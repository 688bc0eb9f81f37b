"""``JsmSink``: Jira Service Management requests (``/rest/servicedeskapi``, contract §1.4) and the signed
admin webhook that reports back.

Calls, all through ``svcbridge.http_request`` (429/5xx/timeouts -> NotReady honouring Retry-After,
401/403 -> AuthFailed, which parks the target, other 4xx -> PermanentError, which dead-letters the item;
a redirect to another host is never followed with our credentials):

- find:      ``GET /request?searchTerm=SB-000001&serviceDeskId=..&requestOwnership=ALL_REQUESTS
  &requestStatus=ALL_REQUESTS&start=&limit=``, paged until ``isLastPage``; only a request whose summary
  carries ``[SB-000001]`` counts, the lowest ``issueId`` wins.
- create:    ``POST /request`` ``{serviceDeskId, requestTypeId, requestFieldValues:{summary,
  description}}`` -> ``{issueId, issueKey, ...}``; the issue key is the link (the contract addresses
  requests as ``/request/{key}``).
- follow-up: ``POST /request/{key}/comment`` ``{body: "[svcbridge <key>] ...", public}``, after the paged
  ``GET /request/{key}/comment`` found no comment starting with that marker.
- note:      a ticket change for the agents (``add_note``): ``POST /request/{key}/comment`` ``{body:
  "[svcbridge <key>] ...", public: false}`` (an internal comment, never on the portal), after the same
  lookup.
- priority:  with ``send_priority`` only (the same switch the create obeys): ``PUT /rest/api/3/issue/{key}``
  ``{fields: {priority: {name}}}`` on the same site, names from ``priorities``; without it the change
  reaches the agents in the note only.
- reopen:    ``GET /request/{key}`` (``currentStatus.status``); ``GET /request/{key}/transition`` and
  ``POST /request/{key}/transition`` ``{id}`` with the first transition named in ``state_map``.

Webhook (a Jira admin webhook with a secret): ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, raw
body)>``, deduplicated on ``X-Atlassian-Webhook-Identifier``. ``jira:issue_updated`` with a status change
in its changelog reports the new status; ``comment_created`` (only that event: a comment also fires an
issue update) reports the comment as a public reply when ``jsdPublic`` is true and as an internal note
otherwise. Comments svcbridge posted (marker) are skipped.

Contract gaps (§1.4 does not say, so these follow Atlassian's public API and are kept in one place):
the request search (``GET /request`` with ``searchTerm``, ``requestOwnership``) and the comment listing
(``GET /request/{key}/comment``) are not named; a GET request returns ``requestFieldValues`` as a list of
``{fieldId, value}`` (both that and the create's dict are read); the webhook's ``issue``/``comment``/
``changelog`` fields and ``jsdPublic`` are Jira's payload, not spelled out; no error-body format is
given. Changing a request's priority: the contract names the platform base (``/rest/api/3/``, issues) but
no call on it; ``PUT /issue/{key}`` (204) is Jira's "edit issue". Attachments need ``attachTemporaryFile``,
which the contract does not list: files stay in svcbridge and are named in the request's footer.
Connect/OAuth webhooks signed with a JWT are not served.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

from svcbridge import (
    DeliveryItem,
    HelpdeskSink,
    NotReady,
    PermanentError,
    Priority,
    StatusUpdate,
    Ticket,
    TicketState,
    WebhookRoute,
    basic_auth,
    hmac_matches,
    signed_webhook,
)

from .settings import JsmSettings


def auth_header(cfg: JsmSettings) -> str:
    if cfg.oauth_token is not None:
        return f"Bearer {cfg.oauth_token.get_secret_value()}"
    return basic_auth(cfg.email, cfg.api_token.get_secret_value() if cfg.api_token else "")


class JsmSink(HelpdeskSink):
    """One JSM service desk as a svcbridge sink (status comes back through the signed webhook)."""
    ticket_page = "browse/{id}"  # the issue key's page, linked from the operator console

    label = "JSM"
    empty_answer = True  # a transition, a comment or an issue edit may answer 204
    # "priority" is carried when ``send_priority`` is on; without it ``set_priority`` does nothing and
    # the change is in the note
    fields: ClassVar[frozenset[str]] = HelpdeskSink.fields | {"priority", "due"}

    def __init__(self, cfg: JsmSettings, *, allow: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(cfg.name, cfg.state_map)
        self.cfg = cfg
        self.open_http(cfg, auth_header(cfg), allow)

    async def pages(self, path: str, what: str, params: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Every ``values`` entry of a paged GET: ``start``/``limit`` until ``isLastPage``."""
        start = 0
        for _ in range(self.cfg.max_pages):
            query = {**(params or {}), "start": start, "limit": self.cfg.page_size}
            data = await self.call("GET", path, what, params=query)
            if not isinstance(data, dict):
                raise NotReady(f"JSM {what}: not a page: {str(data)[:200]}")
            values = data.get("values") or []
            for value in values:
                yield value
            # isLastPage absent means an unpaged answer (the contract shows {values} for transitions)
            if data.get("isLastPage", True) or not values:
                return
            # the next start is computed, _links.next is never requested: it names a host, and our
            # credentials go only to the configured one
            start = int(data.get("start", start)) + len(values)
        raise NotReady(f"JSM {what}: more than {self.cfg.max_pages} pages, not read to the end")

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        tag = f"[{ticket.ref}]"
        params = {
            "searchTerm": ticket.ref,
            "serviceDeskId": self.cfg.service_desk_id,
            "requestOwnership": "ALL_REQUESTS",
            "requestStatus": "ALL_REQUESTS",
        }
        found: list[tuple[int, str]] = []
        async for req in self.pages("request", f"search {ticket.ref}", params):
            if isinstance(req, dict) and tag in summary_of(req) and str(req.get("issueId", "")).isdigit():
                found.append((int(req["issueId"]), str(req.get("issueKey"))))
        return min(found)[1] if found else None

    async def create(self, item: DeliveryItem) -> str:
        t = item.ticket
        fields: dict[str, Any] = {
            "summary": self.title(t, 255),
            # no attachment call in the contract: every file is named in the footer, kept in svcbridge
            "description": self.describe(t, t.description, list(item.attachments)),
        }
        if self.cfg.send_priority:
            fields["priority"] = {"name": self.cfg.priorities[t.priority.name]}
        body = {
            "serviceDeskId": self.cfg.service_desk_id,
            "requestTypeId": self.cfg.request_type_id,
            "requestFieldValues": fields,
        }
        data = await self.call("POST", "request", "create request", json=body)
        key = str(data.get("issueKey") or "") if isinstance(data, dict) else ""
        if not key:
            raise PermanentError(f"JSM create request: no issueKey in the answer: {str(data)[:200]}")
        return key

    # ------------------------------------------------------------------ follow-ups and state
    async def find_message(self, remote_id: str, marker: str) -> str | None:
        async for c in self.pages(f"request/{remote_id}/comment", f"comments of {remote_id}"):
            if isinstance(c, dict) and text_of(c.get("body")).lstrip().startswith(marker):
                return str(c.get("id"))
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        p = item.payload
        text = self.describe(
            item.ticket, str(p.get("body") or ""), list(item.attachments), by=str(p.get("author") or "")
        )
        return await self._comment(remote_id, f"{marker}\n\n{text}", public=self.cfg.comment_public)

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """An internal comment (``public: false``): agents see it, the customer's portal does not."""
        return await self._comment(remote_id, f"{marker}\n\n{text}", public=False)

    async def _comment(self, remote_id: str, text: str, *, public: bool) -> str | None:
        body = {"body": text, "public": public}
        data = await self.call("POST", f"request/{remote_id}/comment", f"comment on {remote_id}", json=body)
        return str(data["id"]) if isinstance(data, dict) and data.get("id") is not None else None

    async def set_due(self, remote_id: str, due: datetime | None) -> None:
        """The SLA engine's earliest open deadline into ``due_field`` (unset: not sent, as priority)."""
        name = self.cfg.due_field
        if not name:
            return
        value = None
        if due is not None:
            at = due.astimezone(UTC)
            value = at.date().isoformat() if name == "duedate" else at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        url = f"{self.cfg.site}/rest/api/3/issue/{remote_id}"
        await self.call("PUT", url, f"due date of {remote_id}", json={"fields": {name: value}})

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        if not self.cfg.send_priority:
            return  # the request type may not have the field: the note tells the agents
        url = f"{self.cfg.site}/rest/api/3/issue/{remote_id}"  # same host: the guard and auth apply
        body = {"fields": {"priority": {"name": self.cfg.priorities[priority.name]}}}
        await self.call("PUT", url, f"priority of {remote_id}", json=body)

    async def status_name(self, remote_id: str) -> str:
        data = await self.call("GET", f"request/{remote_id}", f"get request {remote_id}")
        status = data.get("currentStatus") if isinstance(data, dict) else None
        return str(status.get("status") or "") if isinstance(status, dict) else ""

    async def remote_state(self, remote_id: str) -> TicketState | None:
        return self.state_map.state(await self.status_name(remote_id))

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        wanted = [n.strip().lower() for n in self.state_map.remote(state).split("|") if n.strip()]
        offered: dict[str, str] = {}
        async for tr in self.pages(f"request/{remote_id}/transition", f"transitions of {remote_id}"):
            if isinstance(tr, dict) and tr.get("id") is not None:
                offered.setdefault(str(tr.get("name", "")).strip().lower(), str(tr["id"]))
        for name in wanted:
            if name in offered:
                await self.call(
                    "POST",
                    f"request/{remote_id}/transition",
                    f"transition {remote_id}",
                    json={"id": offered[name]},
                )
                return
        if self.state_map.state(await self.status_name(remote_id)) == state:
            return  # already there (an agent was quicker): nothing to do, nothing to fail
        raise PermanentError(
            f"JSM request {remote_id}: none of the transitions {wanted} for {state.value} is offered "
            f"(offered: {sorted(offered)}); set [plugins.{self.cfg.name}.state_map.to_helpdesk]"
        )


# ---------------------------------------------------------------------- payload helpers
def text_of(body: Any) -> str:
    """A comment body as text: a string (wiki/plain) or an Atlassian Document Format tree."""
    if isinstance(body, str):
        return body
    if isinstance(body, dict):
        if body.get("type") == "text":
            return str(body.get("text") or "")
        parts = [text_of(child) for child in body.get("content") or []]
        block = body.get("type") in ("paragraph", "heading", "listItem", "codeBlock", "blockquote")
        return "".join(parts) + ("\n" if block else "")
    return ""


def summary_of(req: dict[str, Any]) -> str:
    """The summary of a request as GET (list of {fieldId, value}) or POST (dict) shapes it."""
    fields = req.get("requestFieldValues")
    if isinstance(fields, dict):
        return str(fields.get("summary") or "")
    for f in fields if isinstance(fields, list) else []:
        if isinstance(f, dict) and f.get("fieldId") == "summary":
            return str(f.get("value") or "")
    return ""


def to_update(cfg: JsmSettings, data: Any) -> StatusUpdate | None:
    """One webhook payload as a StatusUpdate, or None when it says nothing to the customer."""
    issue = data.get("issue") or {}
    key = str(issue.get("key") or "").strip() if isinstance(issue, dict) else ""
    if not key:
        raise ValueError("no issue key")
    state = None
    for change in (data.get("changelog") or {}).get("items") or []:
        if isinstance(change, dict) and str(change.get("field", "")).lower() == "status":
            state = cfg.state_map.state(change.get("toString") or "")
    reply = note = None
    # Adding a comment fires both jira:issue_updated and comment_created, with different webhook ids:
    # the comment is taken from comment_created only, so the customer never hears an agent reply twice
    comment = data.get("comment") if data.get("webhookEvent") == "comment_created" else None
    who = ""
    if isinstance(comment, dict):
        text = text_of(comment.get("body")).strip()
        author = comment.get("author")
        if isinstance(author, dict):
            who = str(author.get("displayName") or author.get("accountId") or "")
        if text and not HelpdeskSink.relayed(text):
            # a comment without jsdPublic is not known to be customer-facing: keep it internal
            reply, note = (text, None) if comment.get("jsdPublic") is True else (None, text)
    if state is None and not reply and not note:
        return None
    return StatusUpdate(
        system=cfg.name,
        external_ticket_id=key,
        state=state,
        public_reply=reply,
        internal_note=note,
        actor=f"{cfg.name}:{who}" if who else cfg.name,
    )


def webhook_route(cfg: JsmSettings) -> WebhookRoute:
    secret = cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else ""

    def verify(headers: Any, body: bytes) -> bool:
        return hmac_matches(secret, body, headers.get("x-hub-signature", ""), "sha256", prefix="sha256=")

    def event_id(headers: Any, body: bytes) -> str | None:
        return headers.get("x-atlassian-webhook-identifier", "").strip() or None

    return signed_webhook(
        cfg.webhook_path,
        f"jsm:{cfg.name}",
        verify=verify,
        event_id=event_id,
        parse=lambda data: to_update(cfg, data),
    )
