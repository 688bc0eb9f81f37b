"""``ServiceNowSink``: incidents through the Table API (``/api/now/v2/table``, contract §1.5), and changes
back by polling ``sys_updated_on`` (ServiceNow sends no signed webhook of its own).

Calls, all through ``svcbridge.http_request`` (429/5xx/timeouts -> NotReady honouring Retry-After,
401/403 -> AuthFailed, which parks the target, other 4xx -> PermanentError, which dead-letters the item;
a redirect to another host is never followed with our credentials):

- find:      ``GET /incident?sysparm_query=correlation_id=SB-000001^ORDERBYsys_created_on`` (the field is
  ``reference_field``); the oldest incident carrying exactly that reference wins.
- create:    ``POST /incident`` ``{short_description: "[SB-000001] subject", description, correlation_id,
  urgency, impact, contact_type, caller_id}`` -> 201 ``{"result": {sys_id, number, state}}``; the sys_id
  is the link (numbers can be renumbered, sys_ids cannot).
- follow-up: ``PATCH /incident/{sys_id}`` ``{comments: "[svcbridge <key>] ..."}`` (``followup_field``),
  after the journal (``GET /sys_journal_field?sysparm_query=element_id={sys_id}``: comments and work
  notes alike, a marker is found wherever it was posted) held no entry starting with that marker.
- note:      a ticket change for the agents (``add_note``): ``PATCH /incident/{sys_id}`` ``{work_notes:
  "[svcbridge <key>] ..."}``, internal whatever ``followup_field`` says, after the same lookup.
- priority:  ``PATCH /incident/{sys_id}`` ``{urgency, impact}`` from the maps the create uses; ServiceNow
  derives the incident's priority from the pair.
- due:       ``due_date`` (the Task field, glide_date_time ``YYYY-MM-DD HH:MM:SS`` read in the integration
  user's time zone, UTC as the settings ask) = the SLA engine's earliest open deadline, at create and
  by ``PATCH /incident/{sys_id}`` when the deadlines move (``""`` clears it).
- reopen:    ``GET /incident/{sys_id}?sysparm_fields=state``, ``PATCH /incident/{sys_id}`` ``{state}``.
- poll:      ``GET /incident?sysparm_query=sys_updated_on>={cursor}^ORDERBYsys_updated_on``; for each
  incident svcbridge made, its state (event id ``sys_id@sys_mod_count``) and its journal entries since the
  cursor: ``comments`` -> public reply, ``work_notes`` -> internal note (event id: the entry's sys_id),
  svcbridge's own entries (marker) skipped. The cursor is the newest ``sys_updated_on`` read; ``>=``
  re-reads the last second, which the host's per-event dedup absorbs, so an update committed in the
  same second as the previous poll is never lost.

Paging: ``sysparm_limit`` / ``sysparm_offset``; more pages exist while the reply's ``Link`` header has
``rel="next"``. The next offset is taken from that link, but the link itself is never requested: it
names a host, and our Basic credentials go only to the configured one.

Contract gaps (§1.5 does not say): the query operators ``>=`` and ``ORDERBYDESC`` (only ``=`` and
``ORDERBY`` are shown), the ``correlation_id`` field, the journal table ``sys_journal_field`` and its
fields (``element_id``, ``element``, ``value``, ``sys_created_on``, ``sys_created_by``), the shape of an
empty v2 listing (``{"result": []}`` and a bare ``[]`` are both read), and error bodies other than the
429's. Attachments need the Attachment API, which the contract does not list: files stay in svcbridge
and are named in the incident's footer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from svcbridge import (
    DeliveryItem,
    HelpdeskSink,
    NotReady,
    PermanentError,
    Priority,
    StatusUpdate,
    Ticket,
    TicketState,
    basic_auth,
)

from .settings import ServiceNowSettings

EPOCH = "1970-01-01 00:00:00"
# svcbridge's ticket references (the core's pattern): only incidents svcbridge made are reported
REF = re.compile(r"[A-Z][A-Z0-9]{0,7}-\d+")
JOURNAL = "sys_journal_field"


def auth_header(cfg: ServiceNowSettings) -> str:
    if cfg.token is not None:
        return f"Bearer {cfg.token.get_secret_value()}"
    return basic_auth(cfg.username, cfg.password.get_secret_value() if cfg.password else "")


class ServiceNowSink(HelpdeskSink):
    """A ServiceNow instance's incident table as a svcbridge sink with change polling."""

    label = "ServiceNow"
    empty_answer = True
    fields: ClassVar[frozenset[str]] = HelpdeskSink.fields | {"priority", "due"}

    def __init__(self, cfg: ServiceNowSettings, *, allow: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(cfg.name, cfg.state_map)
        self.cfg = cfg
        self.poll_interval = cfg.poll_interval
        self.open_http(cfg, auth_header(cfg), allow)

    async def send(self, method: str, path: str, what: str, **kw: Any) -> tuple[Any, httpx.Response]:
        """The answer (its ``result`` when wrapped in one) and the response (its ``Link`` pages)."""
        resp = await self.request(method, path, what, **kw)
        data = self.answer(resp, what)
        return (data.get("result") if isinstance(data, dict) and "result" in data else data), resp

    async def call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        return (await self.send(method, path, what, **kw))[0]

    async def rows(
        self, table: str, query: str, fields: list[str], what: str, *, partial: bool = False, limit: int = 0
    ) -> AsyncIterator[dict[str, Any]]:
        """Rows of a paged Table API GET. At ``max_pages`` stop (``partial``) or raise NotReady."""
        size = limit or self.cfg.page_size
        offset = 0
        for _ in range(self.cfg.max_pages):
            params = {
                "sysparm_query": query,
                "sysparm_fields": ",".join(fields),
                "sysparm_limit": size,
                "sysparm_offset": offset,
            }
            data, resp = await self.send("GET", table, what, params=params)
            if not isinstance(data, list):
                raise NotReady(f"ServiceNow {what}: not a list of rows: {str(data)[:200]}")
            for row in data:
                if isinstance(row, dict):
                    yield row
            nxt = resp.links.get("next", {}).get("url")
            if limit or not data or not nxt:
                return
            offset = _offset(nxt, offset + size)
        if not partial:
            raise NotReady(f"ServiceNow {what}: more than {self.cfg.max_pages} pages, not read to the end")

    # ------------------------------------------------------------------ create
    async def find(self, ticket: Ticket) -> str | None:
        field = self.cfg.reference_field
        query = f"{field}={ticket.ref}^ORDERBYsys_created_on"
        async for row in self.rows("incident", query, ["sys_id", "number", field], f"find {ticket.ref}"):
            # an instance ignores an unknown field in sysparm_query, so check what came back
            if str(row.get(field, "")) == ticket.ref and row.get("sys_id"):
                return str(row["sys_id"])
        return None

    async def create(self, item: DeliveryItem) -> str:
        t = item.ticket
        body: dict[str, Any] = {
            "short_description": self.title(t, 160),
            # no attachment call in the contract: every file is named in the footer, kept in svcbridge
            "description": self.describe(t, t.description, list(item.attachments)),
            self.cfg.reference_field: t.ref,
            "urgency": str(self.cfg.urgency[t.priority.name]),
            "impact": str(self.cfg.impact[t.priority.name]),
        }
        if t.channel in self.cfg.contact_types:
            body["contact_type"] = self.cfg.contact_types[t.channel]
        if self.cfg.caller_id:
            body["caller_id"] = self.cfg.caller_id
        if t.deadlines:
            body["due_date"] = _glide(min(t.deadlines.values()))
        data = await self.call("POST", "incident", "create incident", json=body)
        sys_id = str(data.get("sys_id") or "") if isinstance(data, dict) else ""
        if not sys_id:
            raise PermanentError(f"ServiceNow create incident: no sys_id in the answer: {str(data)[:200]}")
        return sys_id

    # ------------------------------------------------------------------ follow-ups and state
    async def find_message(self, remote_id: str, marker: str) -> str | None:
        # every journal field: follow-ups go to ``followup_field``, notes to work_notes
        query = f"element_id={remote_id}^ORDERBYsys_created_on"
        async for row in self.rows(JOURNAL, query, ["sys_id", "value"], f"journal of {remote_id}"):
            if str(row.get("value") or "").lstrip().startswith(marker):
                return str(row.get("sys_id"))
        return None

    async def add_message(self, remote_id: str, item: DeliveryItem, marker: str) -> str | None:
        p = item.payload
        text = self.describe(
            item.ticket, str(p.get("body") or ""), list(item.attachments), by=str(p.get("author") or "")
        )
        body = {self.cfg.followup_field: f"{marker}\n\n{text}"}
        await self.call("PATCH", f"incident/{remote_id}", f"comment on {remote_id}", json=body)
        return None  # the PATCH answers the incident, not the journal entry it made

    async def add_note(self, remote_id: str, item: DeliveryItem, marker: str, text: str) -> str | None:
        """A work note: internal to the fulfillers, never in the caller's view or mails."""
        body = {"work_notes": f"{marker}\n\n{text}"}
        await self.call("PATCH", f"incident/{remote_id}", f"work note on {remote_id}", json=body)
        return None

    async def set_due(self, remote_id: str, due: datetime | None) -> None:
        body = {"due_date": _glide(due) if due else ""}
        await self.call("PATCH", f"incident/{remote_id}", f"due date of {remote_id}", json=body)

    async def set_priority(self, remote_id: str, priority: Priority) -> None:
        body = {
            "urgency": str(self.cfg.urgency[priority.name]),
            "impact": str(self.cfg.impact[priority.name]),
        }
        await self.call("PATCH", f"incident/{remote_id}", f"priority of {remote_id}", json=body)

    async def remote_state(self, remote_id: str) -> TicketState | None:
        data = await self.call(
            "GET", f"incident/{remote_id}", f"get incident {remote_id}", params={"sysparm_fields": "state"}
        )
        return self.state_map.state(data.get("state", "")) if isinstance(data, dict) else None

    async def set_state(self, remote_id: str, state: TicketState) -> None:
        body: dict[str, Any] = {"state": self.state_map.remote(state)}
        if state.is_closed and self.cfg.close_code:
            body |= {"close_code": self.cfg.close_code, "close_notes": "Resolved through svcbridge"}
        await self.call("PATCH", f"incident/{remote_id}", f"update incident {remote_id}", json=body)

    # ------------------------------------------------------------------ polling
    async def poll_changes(self, cursor: str | None) -> tuple[list[StatusUpdate], str | None]:
        """Updates on svcbridge's incidents changed at or after `cursor`, and the new cursor."""
        if not cursor:
            # first run: start at the newest change instead of replaying the instance's history
            newest = [
                r
                async for r in self.rows(
                    "incident", "ORDERBYDESCsys_updated_on", ["sys_updated_on"], "newest change", limit=1
                )
            ]
            return [], str(newest[0].get("sys_updated_on") or EPOCH) if newest else EPOCH
        field = self.cfg.reference_field
        fields = ["sys_id", "number", "state", "sys_updated_on", "sys_mod_count", "sys_updated_by", field]
        updates: list[StatusUpdate] = []
        pos = cursor
        query = f"sys_updated_on>={cursor}^ORDERBYsys_updated_on"
        async for row in self.rows("incident", query, fields, "changed incidents", partial=True):
            pos = max(pos, str(row.get("sys_updated_on") or pos))
            if REF.fullmatch(str(row.get(field) or "")) and row.get("sys_id"):
                updates += await self._changes(row, cursor)
        return updates, pos

    async def _changes(self, row: dict[str, Any], since: str) -> list[StatusUpdate]:
        sid = str(row["sys_id"])
        base: dict[str, Any] = {"system": self.name, "external_ticket_id": sid}
        out: list[StatusUpdate] = []
        query = f"element_id={sid}^sys_created_on>={since}^ORDERBYsys_created_on"
        fields = ["sys_id", "element", "value", "sys_created_on", "sys_created_by"]
        async for entry in self.rows(JOURNAL, query, fields, f"journal of {sid}", partial=True):
            text, kind = str(entry.get("value") or "").strip(), entry.get("element")
            if not text or kind not in ("comments", "work_notes") or self.relayed(text):
                continue
            who = str(entry.get("sys_created_by") or "")
            out.append(
                StatusUpdate(
                    **base,
                    public_reply=text if kind == "comments" else None,
                    internal_note=text if kind == "work_notes" else None,
                    external_event_id=f"journal:{entry.get('sys_id')}",
                    actor=f"{self.name}:{who}" if who else self.name,
                    at=_when(entry.get("sys_created_on")),
                )
            )
        state = self.state_map.state(row.get("state", ""))
        if state is not None:
            who = str(row.get("sys_updated_by") or "")
            out.append(
                StatusUpdate(
                    **base,
                    state=state,
                    external_event_id=f"{sid}@{row.get('sys_mod_count', row.get('sys_updated_on'))}",
                    actor=f"{self.name}:{who}" if who else self.name,
                    at=_when(row.get("sys_updated_on")),
                )
            )
        return out


def _offset(link: str, fallback: int) -> int:
    """``sysparm_offset`` of the ``rel="next"`` link (ACL-hidden rows make pages short), else `fallback`."""
    try:
        value = httpx.URL(link).params.get("sysparm_offset", "")
    except (httpx.InvalidURL, ValueError):
        return fallback
    return int(value) if value.isdigit() else fallback


def _when(value: Any) -> datetime:
    """A Table API date-time (``YYYY-MM-DD HH:MM:SS``, UTC without display values) as an aware datetime."""
    try:
        return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime.now(UTC)


def _glide(at: datetime) -> str:
    """A time as a glide_date_time in UTC (the integration user's time zone)."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
