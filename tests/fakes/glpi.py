"""A fake GLPI legacy REST API (``/apirest.php``) following api-contracts.md §1.2, with GLPI 11 webhooks.

Auth: ``GET initSession`` with ``Authorization: user_token <t>`` or ``Basic base64(login:pw)`` plus
``App-Token`` -> ``{"session_token"}``; every other call needs ``Session-Token`` (and ``App-Token``);
``killSession`` ends it; ``expire_sessions()`` lets a test expire them. Errors are GLPI's
``["ERROR_NAME", "message"]`` arrays: ``ERROR_SESSION_TOKEN_INVALID`` (401), ``ERROR_APP_TOKEN_PARAMETERS_
MISSING`` (400), ``ERROR_RANGE_EXCEED_TOTAL`` (400), ``ERROR_ITEM_NOT_FOUND`` (404); a GET with a body is
refused with 400.

Served: ``POST /Ticket`` (201 ``{"id"}`` + ``Location``; an array ``input`` is a bulk add, 207 on partial
failure), ``PUT /Ticket/{id}`` (200 ``[{"<id>": true, "message": ""}]``; a ``status`` outside 1..6 or an
``urgency`` outside 1..5 is 400 ``ERROR_GLPI_UPDATE``), ``GET /Ticket/{id}``,
``POST /ITILFollowup`` and ``POST /Ticket/{id}/ITILFollowup``, ``GET /Ticket/{id}/ITILFollowup`` and
``GET /search/Ticket`` paged by ``range=a-b`` (default 0-50; 206 with ``Content-Range: a-b/total`` and
``Accept-Range: 990`` when the page is not everything).

Acting as an agent: ``agent_followup`` and ``agent_status`` change the ticket and fire the webhook; tickets
and follow-ups added through the API fire it too (a webhook on "new" events sees svcbridge's own posts).
Signed as GLPI 11 signs: ``X-GLPI-signature = hex(HMAC-SHA256(secret, body + timestamp))`` with
``X-GLPI-timestamp``; body ``{event, item}``.

Not in the contract, chosen here and marked so: the names of errors the contract does not list
(``ERROR_GLPI_ADD``, ``ERROR_GLPI_LOGIN_USER_TOKEN``...), the ``/search`` reply (``{totalcount, count,
data:[{"1": name, "2": id, "12": status}]}``, GLPI's search option ids) and the webhook's ``item`` fields
(the item's own columns: a follow-up has ``itemtype``/``items_id``/``content``/``is_private``).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import time
from typing import Any

import httpx

from .base import FakeService, Hook, RemoteMessage, RemoteTicket, hmac_hex, read_json

ACCEPT_RANGE = 990
BASE = "/apirest.php/"


class FakeGlpi(FakeService):
    host = "glpi.test"
    REJECT_STATUS = 400  # GLPI answers invalid input with 400 ERROR_GLPI_ADD / _UPDATE

    def __init__(
        self,
        user_token: str = "glpi-user-token",
        app_token: str | None = "glpi-app-token",
        login: tuple[str, str] = ("svcbridge", "pw-glpi"),
        hook_secret: str = "glpi-hook-secret",
    ) -> None:
        super().__init__()
        self.user_token, self.app_token, self.login, self.hook_secret = (
            user_token,
            app_token,
            login,
            hook_secret,
        )
        self.sessions: set[str] = set()
        self.killed: list[str] = []
        self.tickets: dict[int, dict[str, Any]] = {}
        self.followups: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._fids = itertools.count(1)

    def expire_sessions(self) -> None:
        self.sessions.clear()

    # ------------------------------------------------------------------ contract plumbing
    def error_body(self, status: int, detail: str) -> Any:
        name = {401: "ERROR_SESSION_TOKEN_INVALID", 403: "ERROR_RIGHT_MISSING", 404: "ERROR_ITEM_NOT_FOUND"}
        # an injected 401 must not look like an expired session (that one is re-initialised, see tests)
        code = "ERROR_GLPI_LOGIN_USER_TOKEN" if detail.startswith("injected") and status == 401 else None
        return [code or name.get(status, "ERROR_GLPI_ADD" if status in (400, 422) else "ERROR"), detail]

    def fail(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.Response(status, json=[code, message], headers=headers)

    def route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not path.startswith(BASE):
            return self.fail(400, "ERROR_BAD_ARRAY", "wrong API path")
        rest, m = path[len(BASE) :], request.method
        if m == "GET" and request.content:
            return self.fail(400, "ERROR_JSON_PAYLOAD_FORBIDDEN", "GET requests must not have a body")
        if self.app_token is not None:
            offered = request.headers.get("App-Token") or request.url.params.get("app_token")
            if not offered:
                return self.fail(400, "ERROR_APP_TOKEN_PARAMETERS_MISSING", "missing parameter app_token")
            if offered != self.app_token:
                return self.fail(400, "ERROR_WRONG_APP_TOKEN_PARAMETER", "parameter app_token seems wrong")
        if rest == "initSession" and m == "GET":
            return self._init(request)
        token = request.headers.get("Session-Token") or request.url.params.get("session_token")
        if not token:
            return self.fail(
                400, "ERROR_SESSION_TOKEN_MISSING", "parameter session_token is missing or empty"
            )
        if token not in self.sessions:
            return self.fail(401, "ERROR_SESSION_TOKEN_INVALID", "session_token seems invalid")
        if rest == "killSession" and m == "GET":
            self.sessions.discard(token)
            self.killed.append(token)
            return httpx.Response(200, json=True)
        body = read_json(request) if m in ("POST", "PUT") else None
        if m in ("POST", "PUT") and not isinstance(body, dict):
            return self.fail(400, "ERROR_JSON_PAYLOAD_INVALID", "JSON payload seems not valid")
        if rest == "Ticket" and m == "POST":
            return self._add_tickets(body["input"] if isinstance(body, dict) else None)
        if rest == "search/Ticket" and m == "GET":
            return self._search(request)
        if rest == "ITILFollowup" and m == "POST":
            return self._add_followup(body.get("input") if isinstance(body, dict) else None)
        match = re.fullmatch(r"Ticket/(\d+)(/ITILFollowup)?", rest)
        if match:
            tid = int(match.group(1))
            if tid not in self.tickets:
                return self.fail(404, "ERROR_ITEM_NOT_FOUND", "Item not found")
            if match.group(2) and m == "POST":
                given = body.get("input") if isinstance(body, dict) else None
                return self._add_followup({"itemtype": "Ticket", "items_id": tid, **(given or {})})
            if match.group(2):
                rows = [f for f in self.followups.values() if f["items_id"] == tid]
                return self._page(request, rows)
            if m == "PUT":
                return self._update(tid, body.get("input") if isinstance(body, dict) else None)
            return httpx.Response(200, json=self.tickets[tid])
        return self.fail(400, "ERROR_RESOURCE_NOT_FOUND_NOR_COMMONDBTM", "resource not found")

    def _init(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("user_token "):
            if auth[len("user_token ") :] != self.user_token:
                return self.fail(401, "ERROR_GLPI_LOGIN_USER_TOKEN", "parameter user_token seems invalid")
        elif auth.startswith("Basic "):
            try:
                login, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                login = pw = ""
            if (login, pw) != self.login:
                return self.fail(401, "ERROR_GLPI_LOGIN", "Incorrect username or password")
        else:
            return self.fail(400, "ERROR_LOGIN_PARAMETERS_MISSING", "missing parameters login / user_token")
        token = secrets.token_hex(12)
        self.sessions.add(token)
        return httpx.Response(200, json={"session_token": token})

    def _page(self, request: httpx.Request, rows: list[Any], wrap: Any = None) -> httpx.Response:
        """``range=a-b`` paging: 200 when the page is everything, else 206 with Content-Range."""
        spec = request.url.params.get("range", "0-50")
        try:
            start, end = (int(x) for x in spec.split("-", 1))
        except ValueError:
            return self.fail(400, "ERROR_RANGE_BAD", "range is not a-b")
        total = len(rows)
        if total and start >= total:
            return self.fail(400, "ERROR_RANGE_EXCEED_TOTAL", "Provided range exceed total count of data")
        end = min(end, start + ACCEPT_RANGE - 1, max(total - 1, 0))
        page = rows[start : end + 1]
        status = 200 if len(page) == total else 206
        headers = {"Content-Range": f"{start}-{end}/{total}", "Accept-Range": str(ACCEPT_RANGE)}
        data = wrap(page, total, f"{start}-{end}/{total}") if wrap else page
        return httpx.Response(status, json=data, headers=headers)

    # ------------------------------------------------------------------ tickets
    def _new_ticket(self, given: Any) -> dict[str, Any] | str:
        if not isinstance(given, dict) or not str(given.get("name") or "").strip():
            return "name is mandatory"
        if not str(given.get("content") or "").strip():
            return "content is mandatory"
        if int(given.get("status", 1)) not in range(1, 7):
            return "status is not valid"
        tid = next(self._ids)
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        self.tickets[tid] = {
            "status": 1,
            "urgency": 3,
            "type": 1,
            "entities_id": 0,
            **given,
            "id": tid,
            "date": now,
            "date_mod": now,
            "users_id_recipient": 7,
        }
        self._fire("new", self.tickets[tid])
        return self.tickets[tid]

    def _add_tickets(self, given: Any) -> httpx.Response:
        if isinstance(given, list):  # bulk add: one answer per input, 207 when some failed
            out = [self._new_ticket(g) for g in given]
            answers = [
                {"id": t["id"], "message": ""} if isinstance(t, dict) else {"id": False, "message": t}
                for t in out
            ]
            return httpx.Response(201 if all(isinstance(t, dict) for t in out) else 207, json=answers)
        t = self._new_ticket(given)
        if isinstance(t, str):
            return self.fail(400, "ERROR_GLPI_ADD", t)
        location = f"http://{self.host}{BASE}Ticket/{t['id']}"
        return httpx.Response(201, json={"id": t["id"], "message": ""}, headers={"Location": location})

    def _update(self, tid: int, given: Any) -> httpx.Response:
        if not isinstance(given, dict):
            return self.fail(400, "ERROR_BAD_ARRAY", "input is missing")
        if "status" in given and int(given["status"]) not in range(1, 7):
            return self.fail(400, "ERROR_GLPI_UPDATE", "status is not valid")
        if "urgency" in given and int(given["urgency"]) not in range(1, 6):
            return self.fail(400, "ERROR_GLPI_UPDATE", "urgency is not valid")
        self.tickets[tid].update(given, date_mod=time.strftime("%Y-%m-%d %H:%M:%S"))
        self._fire("update", self.tickets[tid])
        return httpx.Response(200, json=[{str(tid): True, "message": ""}])

    def _search(self, request: httpx.Request) -> httpx.Response:
        p = request.url.params
        crit = {k: v for k, v in p.multi_items() if k.startswith("criteria[")}
        rows = list(self.tickets.values())
        for i in itertools.count():
            if f"criteria[{i}][field]" not in crit:
                break
            field, stype = crit[f"criteria[{i}][field]"], crit.get(f"criteria[{i}][searchtype]", "contains")
            value = crit.get(f"criteria[{i}][value]", "")
            if field != "1" or stype != "contains":
                return self.fail(400, "ERROR_BAD_ARRAY", "the fake knows criteria on field 1 (name) only")
            rows = [t for t in rows if value.lower() in str(t["name"]).lower()]
        found = [
            {"1": t["name"], "2": t["id"], "12": t["status"]} for t in sorted(rows, key=lambda t: t["id"])
        ]
        if not found:
            return httpx.Response(200, json={"totalcount": 0, "count": 0, "data": []})
        return self._page(
            request,
            found,
            wrap=lambda page, total, cr: {
                "totalcount": total,
                "count": len(page),
                "content-range": cr,
                "data": page,
            },
        )

    # ------------------------------------------------------------------ follow-ups
    def _add_followup(self, given: Any, users_id: int = 7) -> httpx.Response:
        if not isinstance(given, dict) or given.get("itemtype") != "Ticket":
            return self.fail(400, "ERROR_GLPI_ADD", "itemtype must be Ticket")
        try:
            tid = int(given.get("items_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return self.fail(400, "ERROR_GLPI_ADD", "items_id is mandatory")
        if tid not in self.tickets:
            return self.fail(400, "ERROR_GLPI_ADD", "Ticket not found")
        if not str(given.get("content") or "").strip():
            return self.fail(400, "ERROR_GLPI_ADD", "content is mandatory")
        fid = next(self._fids)
        self.followups[fid] = {
            "is_private": 0,
            **given,
            "id": fid,
            "items_id": tid,
            "users_id": users_id,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self._fire("new", self.followups[fid])
        return httpx.Response(
            201,
            json={"id": fid, "message": ""},
            headers={"Location": f"http://{self.host}{BASE}ITILFollowup/{fid}"},
        )

    # ------------------------------------------------------------------ acting as the agent
    def agent_followup(self, tid: int, content: str, *, private: bool = False) -> int:
        resp = self._add_followup(
            {"itemtype": "Ticket", "items_id": tid, "content": content, "is_private": int(private)},
            users_id=2,
        )
        assert resp.status_code == 201, resp.text
        return int(resp.json()["id"])

    def agent_status(self, tid: int, status: int) -> None:
        assert status in range(1, 7)
        self.tickets[tid].update(status=status, date_mod=time.strftime("%Y-%m-%d %H:%M:%S"))
        self._fire("update", self.tickets[tid])

    def _fire(self, event: str, item: dict[str, Any]) -> None:
        body = json.dumps({"event": event, "item": item}, separators=(",", ":")).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-GLPI-timestamp": ts,
            "X-GLPI-signature": hmac_hex(self.hook_secret, body + ts.encode(), "sha256"),
        }
        self.hooks.append(Hook(headers, body))

    # ------------------------------------------------------------------ the harness's view
    def view(self) -> list[RemoteTicket]:
        out = []
        for tid, t in sorted(self.tickets.items()):
            msgs = [RemoteMessage(id=f"t{tid}", text=f"{t['name']}\n{t['content']}")]
            msgs += [
                RemoteMessage(
                    id=str(f["id"]),
                    text=str(f["content"]),
                    internal=bool(f["is_private"]),
                    by_agent=f["users_id"] != 7,
                )
                for f in self.followups.values()
                if f["items_id"] == tid
            ]
            out.append(RemoteTicket(id=str(tid), title=str(t["name"]), state=str(t["status"]), messages=msgs,
                                    priority=str(t["urgency"]) if "urgency" in t else None))
        return out
