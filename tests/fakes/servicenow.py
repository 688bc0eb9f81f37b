"""A fake ServiceNow Table API (``/api/now/table`` and ``/api/now/v2/table``) following api-contracts.md §1.5.

Served: ``POST /incident`` (201 ``{"result": {sys_id, number, state, ...}}``), ``GET|PATCH
/incident/{sys_id}`` (``comments`` adds a customer-visible journal entry, ``work_notes`` an internal one)
and ``GET /{table}`` for ``incident`` and ``sys_journal_field`` with ``sysparm_query``,
``sysparm_fields``, ``sysparm_limit``, ``sysparm_offset``: the reply carries ``X-Total-Count`` and a
``Link`` header (first / prev / next / last); a v2 listing with no rows is 200, a v1 one is 404. Auth is
HTTP Basic or ``Bearer <token>``; anything else is 401. Every error has the contract's body
``{"error": {"message", "detail"}, "status": "failure"}`` (429: "Rate limit exceeded", with Retry-After).

Time: ``sys_created_on`` / ``sys_updated_on`` come from ``clock`` (UTC, ``YYYY-MM-DD HH:MM:SS``), which
moves one second per write unless ``frozen``: a frozen clock puts several changes in one second, the case
a ``sys_updated_on`` cursor must not lose.

Acting as the agent: ``agent_comment`` (comments or work_notes) and ``agent_state`` write as the user
``agent.smith``. ``acl_hidden`` holds sys_ids a query finds but the caller may not read: like ServiceNow,
they are removed after the page is cut, so pages come back short while ``Link`` still points on.

Not in the contract, chosen here after ServiceNow's Table API and marked so: the query operators besides
``=`` and ``ORDERBY`` (``!=``, ``>``, ``>=``, ``<``, ``<=``, ``LIKE``, ``STARTSWITH``, ``ORDERBYDESC``;
terms naming an unknown field are ignored, as ServiceNow does by default), the ``correlation_id`` field,
the ``sys_journal_field`` table and its fields, ``{"result": []}`` as the empty v2 listing, the 401/404
messages, 400 for invalid input, and unknown fields in a write being ignored.
"""

from __future__ import annotations

import base64
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from .base import FakeService, RemoteMessage, RemoteTicket, read_json

STATES = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"}
INCIDENT_FIELDS = {
    "short_description", "description", "caller_id", "urgency", "impact", "contact_type", "state",
    "close_code", "close_notes", "correlation_id", "assignment_group", "category",
    "due_date",  # Task.due_date: the SLA engine's earliest open deadline
}
JOURNAL = "sys_journal_field"
OPS = ("!=", ">=", "<=", ">", "<", "=", "STARTSWITH", "LIKE")


class FakeServiceNow(FakeService):
    host = "servicenow.test"
    REJECT_STATUS = 400

    def __init__(self, username: str = "svcbridge.integration", password: str = "sn-password",
                 token: str = "sn-oauth-token") -> None:
        super().__init__()
        self.username, self.password, self.token = username, password, token
        self.incidents: dict[str, dict[str, Any]] = {}
        self.journal: list[dict[str, Any]] = []
        self.clock = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
        self.frozen = False
        self.acl_hidden: set[str] = set()
        self._numbers = itertools.count(10001)

    # ------------------------------------------------------------------ contract plumbing
    def error_body(self, status: int, detail: str) -> Any:
        message = {429: "Rate limit exceeded", 401: "User Not Authenticated", 403: "Operation Failed"}
        return {"error": {"message": message.get(status, detail), "detail": detail}, "status": "failure"}

    def _user(self, request: httpx.Request) -> str | None:
        given = request.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return self.username if given in (basic, f"Bearer {self.token}") else None

    def route(self, request: httpx.Request) -> httpx.Response:
        user = self._user(request)
        if user is None:
            return self.error(401, "Required to provide Auth information")
        m = re.fullmatch(r"/api/now/(v2/)?table/(\w+)(?:/(\w+))?", request.url.path)
        if not m:
            return self.error(400, "Requested URI does not represent any resource")
        v2, table, sys_id = bool(m.group(1)), m.group(2), m.group(3)
        params, method = request.url.params, request.method
        if table not in ("incident", JOURNAL):
            return self.error(400, f"Invalid table {table}")
        if method == "GET" and sys_id is None:
            return self._list(request, table, v2)
        if table == JOURNAL:
            return self.error(403, "ACL Exception Insert Failed due to security constraints")
        if method == "POST" and sys_id is None:
            body = read_json(request)
            if not isinstance(body, dict):
                return self.error(400, "Exception while reading request")
            return httpx.Response(201, json={"result": self._fields(self._insert(body, user), params)})
        row = self.incidents.get(sys_id or "")
        if row is None or sys_id in self.acl_hidden:
            return self.error(404, "Record doesn't exist or ACL restricts the record retrieval")
        if method == "GET":
            return httpx.Response(200, json={"result": self._fields(row, params)})
        if method in ("PATCH", "PUT"):
            body = read_json(request)
            if not isinstance(body, dict):
                return self.error(400, "Exception while reading request")
            return httpx.Response(200, json={"result": self._fields(self._update(row, body, user), params)})
        return self.error(405, f"Method {method} not allowed")

    def _fields(self, row: dict[str, Any], params: httpx.QueryParams) -> dict[str, Any]:
        wanted = [f for f in params.get("sysparm_fields", "").split(",") if f]
        return {k: v for k, v in row.items() if not wanted or k in wanted}

    def _list(self, request: httpx.Request, table: str, v2: bool) -> httpx.Response:
        params = request.url.params
        try:
            limit = int(params.get("sysparm_limit", "10000"))
            offset = int(params.get("sysparm_offset", "0"))
        except ValueError:
            return self.error(400, "sysparm_limit and sysparm_offset must be numbers")
        rows = self._query(self.journal if table == JOURNAL else list(self.incidents.values()),
                           params.get("sysparm_query", ""))
        page = [r for r in rows[offset:offset + limit] if r["sys_id"] not in self.acl_hidden]
        if not rows and not v2:
            return self.error(404, "No Record found")
        url = request.url.copy_remove_param("sysparm_offset")

        def link(at: int, rel: str) -> str:
            return f'<{url.copy_add_param("sysparm_offset", str(at))}>;rel="{rel}"'

        links = [link(0, "first")]
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        if offset + limit < len(rows):
            links.append(link(offset + limit, "next"))
        links.append(link(max(0, (len(rows) - 1) // limit * limit) if rows else 0, "last"))
        headers = {"X-Total-Count": str(len(rows)), "Link": ",".join(links)}
        return httpx.Response(200, json={"result": [self._fields(r, params) for r in page]}, headers=headers)

    def _query(self, rows: list[dict[str, Any]], query: str) -> list[dict[str, Any]]:
        order: list[tuple[str, bool]] = []
        for term in filter(None, query.split("^")):
            if term.startswith("ORDERBYDESC"):
                order.append((term[11:], True))
                continue
            if term.startswith("ORDERBY"):
                order.append((term[7:], False))
                continue
            # the leftmost operator (the longest where two start at the same place) ends the field name
            hits = sorted((i, -len(op), op) for op in OPS if (i := term.find(op)) > 0)
            cond = (term[: hits[0][0]], hits[0][2], term[hits[0][0] + len(hits[0][2]) :]) if hits else None
            if cond is None or (rows and cond[0] not in rows[0]):
                continue  # an invalid term is ignored, not an error (ServiceNow's default)
            rows = [r for r in rows if _match(str(r.get(cond[0], "")), cond[1], cond[2])]
        for field, desc in reversed(order):
            rows = sorted(rows, key=lambda r, f=field: str(r.get(f, "")), reverse=desc)  # type: ignore[misc]
        return rows

    # ------------------------------------------------------------------ writes
    def _tick(self) -> str:
        if not self.frozen:
            self.clock += timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%d %H:%M:%S")

    def _insert(self, body: dict[str, Any], user: str) -> dict[str, Any]:
        now = self._tick()
        row = {f: "" for f in INCIDENT_FIELDS} | {"state": "1", "urgency": "3", "impact": "3"}
        row |= {k: str(v) for k, v in body.items() if k in INCIDENT_FIELDS}
        row |= {"sys_id": uuid.uuid4().hex, "number": f"INC{next(self._numbers):07d}", "active": "true",
                "sys_created_on": now, "sys_created_by": user, "sys_updated_on": now, "sys_updated_by": user,
                "sys_mod_count": "0"}
        self.incidents[row["sys_id"]] = row
        self._journal(row, body, user, now)
        return row

    def _update(self, row: dict[str, Any], body: dict[str, Any], user: str) -> dict[str, Any]:
        now = self._tick()
        row |= {k: str(v) for k, v in body.items() if k in INCIDENT_FIELDS}
        row["active"] = "false" if row["state"] in ("7", "8") else "true"
        row |= {"sys_updated_on": now, "sys_updated_by": user, "sys_mod_count": str(int(row["sys_mod_count"]) + 1)}
        self._journal(row, body, user, now)
        return row

    def _journal(self, row: dict[str, Any], body: dict[str, Any], user: str, now: str) -> None:
        for element in ("comments", "work_notes"):
            if str(body.get(element) or "").strip():
                self.journal.append({"sys_id": uuid.uuid4().hex, "element_id": row["sys_id"], "element": element,
                                     "name": "incident", "value": str(body[element]), "sys_created_on": now,
                                     "sys_created_by": user})

    # ------------------------------------------------------------------ acting as the agent
    def agent_comment(self, sys_id: str, text: str, *, work_note: bool = False) -> None:
        self._update(self.incidents[sys_id], {"work_notes" if work_note else "comments": text}, "agent.smith")

    def agent_state(self, sys_id: str, state: str) -> None:
        assert state in STATES, state
        self._update(self.incidents[sys_id], {"state": state}, "agent.smith")

    # ------------------------------------------------------------------ the harness's view
    def view(self) -> list[RemoteTicket]:
        out = []
        for row in sorted(self.incidents.values(), key=lambda r: r["number"]):
            msgs = [RemoteMessage(id=f"{row['sys_id']}:description", text=row["description"])]
            msgs += [RemoteMessage(id=j["sys_id"], text=j["value"], internal=j["element"] == "work_notes",
                                   by_agent=j["sys_created_by"] != self.username)
                     for j in self.journal if j["element_id"] == row["sys_id"]]
            out.append(RemoteTicket(id=row["sys_id"], title=row["short_description"], state=row["state"],
                                    messages=msgs,
                                    priority=f"urgency {row.get('urgency')}, impact {row.get('impact')}"))
        return out


def _match(value: str, op: str, wanted: str) -> bool:
    if op == "=":
        return value == wanted
    if op == "!=":
        return value != wanted
    if op == "LIKE":
        return wanted.lower() in value.lower()
    if op == "STARTSWITH":
        return value.lower().startswith(wanted.lower())
    return {">": value > wanted, ">=": value >= wanted, "<": value < wanted, "<=": value <= wanted}[op]
