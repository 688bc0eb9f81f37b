"""A fake Jira Service Management Cloud (``/rest/servicedeskapi``) following api-contracts.md §1.4.

Served: ``POST /request`` (``{serviceDeskId, requestTypeId, requestFieldValues}`` -> ``{issueId, issueKey,
currentStatus:{status, statusDate}, ...}``), ``GET /request/{key}``, ``GET|POST /request/{key}/comment``
(``{body, public}``), ``GET|POST /request/{key}/transition`` (``{values:[{id, name}]}`` / ``{id,
additionalComment}``) and ``GET /request`` (``searchTerm``, ``serviceDeskId``, ``requestOwnership``,
``requestStatus``); on the platform API ``PUT /rest/api/3/issue/{key}`` ``{fields: {priority: {name}}}``
(204, and a ``jira:issue_updated`` with the priority in its changelog). Request type "10" has only summary
and description (a create sending ``priority`` is 400: JSM refuses fields the form lacks), "11" also has
priority. Every GET listing is paged the contract's way: ``start``, ``limit`` (capped at ``max_limit``),
``isLastPage``, ``_links.next``. Auth is ``Basic base64(email:api_token)`` or ``Bearer
<oauth token>``; anything else is 401.

Acting as the agent: ``agent_comment`` (public or internal) and ``agent_status`` change the request and
fire the admin webhook. Like Jira, comments and transitions made through the API fire it too, and a
comment fires two deliveries (``jira:issue_updated`` "issue_commented" and ``comment_created``), so tests
can prove nothing is echoed or told twice. Hooks are signed as Jira signs admin webhooks that have a
secret: ``X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``, with a unique
``X-Atlassian-Webhook-Identifier``.

Not in the contract, chosen here after Atlassian's public API and marked so: the error body
(``{"errorMessage", "i18nErrorMessage"}``), 400 for invalid input, 201 on create and comment and 204 on a
transition, the request search and comment listing endpoints with their defaults (``OWNED_REQUESTS``,
``OPEN_REQUESTS``: a resolved request is found only with ``requestStatus=ALL_REQUESTS``), a GET request's
``requestFieldValues`` as a list of ``{fieldId, label, value}``, the workflow (status and transition
names of JSM's default IT service desk), Jira's default priority names (Medium when none is given), the
issue edit and its error body (``{"errorMessages", "errors"}``) and the webhook's payload fields (``issue``,
``changelog``, ``comment.jsdPublic``).
"""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from .base import FakeService, Hook, RemoteMessage, RemoteTicket, hmac_hex, read_json

BASE = "/rest/servicedeskapi/"
# status -> {transition name: (id, target status)}, JSM's default IT service-desk workflow
WORKFLOW: dict[str, dict[str, tuple[str, str]]] = {
    "Waiting for support": {"Start progress": ("11", "In progress"),
                            "Respond to customer": ("21", "Waiting for customer"),
                            "Resolve this issue": ("31", "Resolved")},
    "In progress": {"Respond to customer": ("21", "Waiting for customer"), "Pending": ("51", "Pending"),
                    "Resolve this issue": ("31", "Resolved")},
    "Waiting for customer": {"Respond to support": ("61", "Waiting for support"),
                             "Resolve this issue": ("31", "Resolved")},
    "Pending": {"Back to in progress": ("71", "In progress"), "Resolve this issue": ("31", "Resolved")},
    "Resolved": {"Reopen": ("81", "Waiting for support"), "Close": ("91", "Closed")},
    "Closed": {},
}
DONE = {"Resolved", "Closed"}
ISSUE_API = "/rest/api/3/issue/"  # the platform API (contract: base only), here for the priority edit
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")  # Jira's default priority scheme
DEFAULT_PRIORITY = "Medium"


class FakeJsm(FakeService):
    host = "jsm.test"
    REJECT_STATUS = 400

    def __init__(
        self,
        email: str = "svcbridge@acme.example",
        api_token: str = "jsm-api-token",
        oauth_token: str = "jsm-oauth-token",
        hook_secret: str = "jsm-hook-secret",
    ) -> None:
        super().__init__()
        self.email, self.api_token, self.oauth_token, self.hook_secret = email, api_token, oauth_token, hook_secret
        self.account = "5b10ac8d82e05b22cc7d4ef5"  # svcbridge's accountId
        self.service_desk_id, self.project = "1", "SUP"
        # the fields each request type's form has: "10" without priority (a create sending it is
        # refused), "11" with it
        self.request_types = {"10": {"summary", "description"}, "11": {"summary", "description", "priority"}}
        self.max_limit = 50  # server-side cap of limit
        self.requests_by_key: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._comment_ids = itertools.count(10001)

    # ------------------------------------------------------------------ contract plumbing
    def error_body(self, status: int, detail: str) -> Any:
        return {"errorMessage": detail, "i18nErrorMessage": {"i18nKey": f"sd.error.{status}", "parameters": []}}

    def _caller(self, request: httpx.Request) -> str | None:
        given = request.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        return self.account if given in (basic, f"Bearer {self.oauth_token}") else None

    def route(self, request: httpx.Request) -> httpx.Response:
        if self._caller(request) is None:
            return self.error(401, "Client must be authenticated to access this resource.")
        path, m = request.url.path, request.method
        if path.startswith(ISSUE_API):
            return self._issue(path[len(ISSUE_API):], m, request)
        if not path.startswith(BASE):
            return self.error(404, f"null for uri: {path}")
        parts, params = path[len(BASE):].strip("/").split("/"), request.url.params
        if m == "POST" and not request.headers.get("Content-Type", "").startswith("application/json"):
            return self.error(415, "Unsupported Media Type")
        if parts == ["request"]:
            if m == "POST":
                return self._create(read_json(request) or {})
            return self._page([self._json(r) for r in self._search(params)], params)
        if parts[0] != "request" or len(parts) > 3:
            return self.error(404, f"null for uri: {path}")
        req = self.requests_by_key.get(parts[1])
        if req is None:
            return self.error(404, f"The request {parts[1]!r} does not exist or you do not have access to it.")
        key = req["issueKey"]
        if len(parts) == 2 and m == "GET":
            return httpx.Response(200, json=self._json(req))
        if parts[2:] == ["comment"]:
            if m == "POST":
                return self._post_comment(key, read_json(request) or {})
            shown = [c for c in self.comments[key]
                     if (c["public"] and params.get("public", "true") == "true")
                     or (not c["public"] and params.get("internal", "true") == "true")]
            return self._page(shown, params)
        if parts[2:] == ["transition"]:
            offered = WORKFLOW[req["status"]]
            if m == "POST":
                return self._transition(key, read_json(request) or {})
            return self._page([{"id": tid, "name": name} for name, (tid, _) in offered.items()], params)
        return self.error(404, f"null for uri: {path}")

    def _page(self, values: list[Any], params: httpx.QueryParams) -> httpx.Response:
        try:
            start = int(params.get("start", "0"))
            limit = min(int(params.get("limit", str(self.max_limit))), self.max_limit)
        except ValueError:
            return self.error(400, "start and limit must be numbers")
        chunk = values[start:start + limit]
        last = start + len(chunk) >= len(values)
        links: dict[str, str] = {"base": f"https://{self.host}", "context": ""}
        if not last:
            links["next"] = f"https://{self.host}{BASE}?start={start + limit}&limit={limit}"
        return httpx.Response(200, json={"size": len(chunk), "start": start, "limit": limit,
                                         "isLastPage": last, "values": chunk, "_links": links})

    # ------------------------------------------------------------------ requests
    def _create(self, body: dict[str, Any]) -> httpx.Response:
        if str(body.get("serviceDeskId")) != self.service_desk_id:
            return self.error(400, f"The service desk {body.get('serviceDeskId')!r} does not exist.")
        form = self.request_types.get(str(body.get("requestTypeId")))
        if form is None:
            return self.error(400, f"The request type {body.get('requestTypeId')!r} does not exist.")
        fields = body.get("requestFieldValues")
        if not isinstance(fields, dict) or not str(fields.get("summary") or "").strip():
            return self.error(400, "Summary is required.")
        unknown = sorted(set(fields) - form)
        if unknown:  # the request type has only these fields: JSM refuses the whole create
            return self.error(400, f"Fields {unknown} are not on the request type.")
        priority = _priority(fields.get("priority", {"name": DEFAULT_PRIORITY}))
        if priority is None:
            return self.error(400, f"Priority {fields.get('priority')!r} does not exist.")
        if "raiseOnBehalfOf" in body and "@" in str(body["raiseOnBehalfOf"]):
            return self.error(400, "raiseOnBehalfOf takes an accountId, not an e-mail address.")
        n = next(self._ids)
        req = {"issueId": str(10000 + n), "issueKey": f"{self.project}-{n}", "serviceDeskId": self.service_desk_id,
               "requestTypeId": str(body["requestTypeId"]), "summary": str(fields["summary"]),
               "description": str(fields.get("description") or ""), "status": "Waiting for support",
               "statusDate": _now(), "createdDate": _now(), "reporter": self.account, "priority": priority}
        self.requests_by_key[req["issueKey"]] = req
        self.requests_by_key[req["issueId"]] = req  # issueIdOrKey
        self.comments[req["issueKey"]] = []
        return httpx.Response(201, json=self._json(req, created=True))

    def _json(self, req: dict[str, Any], created: bool = False) -> dict[str, Any]:
        fields: Any = [{"fieldId": "summary", "label": "Summary", "value": req["summary"]},
                       {"fieldId": "description", "label": "Description", "value": req["description"]}]
        return {"issueId": req["issueId"], "issueKey": req["issueKey"], "requestTypeId": req["requestTypeId"],
                "serviceDeskId": req["serviceDeskId"], "createdDate": {"iso8601": req["createdDate"]},
                "reporter": {"accountId": req["reporter"]},
                "currentStatus": {"status": req["status"], "statusDate": {"iso8601": req["statusDate"]}},
                "requestFieldValues": fields,
                "_links": {"web": f"https://{self.host}/servicedesk/customer/portal/1/{req['issueKey']}"}}

    def _search(self, params: httpx.QueryParams) -> list[dict[str, Any]]:
        term = params.get("searchTerm", "").lower()
        ownership = params.get("requestOwnership", "OWNED_REQUESTS")
        status = params.get("requestStatus", "OPEN_REQUESTS")
        desk = params.get("serviceDeskId")
        out = []
        for req in {r["issueId"]: r for r in self.requests_by_key.values()}.values():
            if term and term not in f"{req['summary']} {req['description']}".lower():
                continue
            if desk and desk != req["serviceDeskId"]:
                continue
            if ownership == "OWNED_REQUESTS" and req["reporter"] != self.account:
                continue
            if (status == "OPEN_REQUESTS") == (req["status"] in DONE) and status != "ALL_REQUESTS":
                continue
            out.append(req)
        return sorted(out, key=lambda r: int(r["issueId"]), reverse=True)  # newest first, like JSM

    def _issue(self, key: str, method: str, request: httpx.Request) -> httpx.Response:
        """``PUT /rest/api/3/issue/{key}`` ``{fields: {priority: {name}}}``: Jira's issue edit, 204."""
        req = self.requests_by_key.get(key)
        if req is None or "/" in key:
            return _jira_error(404, "Issue does not exist or you do not have permission to see it.")
        if method != "PUT":
            return _jira_error(405, f"Method {method} is not served by the fake")
        body = read_json(request)
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict) or {f for f in fields if not f.startswith("customfield_")} - {
            "priority", "duedate"
        }:
            return _jira_error(400, "The fake edits the priority, duedate and custom fields only.", field="fields")
        for name in fields:  # duedate / a custom field: kept as given (the SLA engine's due date)
            if name != "priority":
                req.setdefault("fields", {})[name] = fields[name]
        priority = _priority(fields["priority"]) if "priority" in fields else req["priority"]
        if priority is None:
            return _jira_error(400, "Specify a valid priority name.", field="priority")
        if priority != req["priority"]:
            old, req["priority"] = req["priority"], priority
            item = {"field": "priority", "fieldtype": "jira", "fromString": old, "toString": priority}
            self._fire(req["issueKey"], "jira:issue_updated", event_type="issue_updated",
                       changelog={"id": str(uuid.uuid4().int % 10**6), "items": [item]})
        return httpx.Response(204)

    # ------------------------------------------------------------------ comments and transitions
    def _add_comment(self, key: str, body: str, public: bool, author: str, name: str) -> dict[str, Any]:
        c = {"id": str(next(self._comment_ids)), "body": body, "public": public,
             "author": {"accountId": author, "displayName": name}, "created": {"iso8601": _now()}}
        self.comments[key].append(c)
        self._fire(key, "jira:issue_updated", comment=c, event_type="issue_commented")
        self._fire(key, "comment_created", comment=c)
        return c

    def _post_comment(self, key: str, body: dict[str, Any]) -> httpx.Response:
        if not str(body.get("body") or "").strip():
            return self.error(400, "Comment body is required.")
        if not isinstance(body.get("public", True), bool):
            return self.error(400, "public must be true or false.")
        c = self._add_comment(key, str(body["body"]), bool(body.get("public", True)), self.account, "svcbridge")
        return httpx.Response(201, json=c)

    def _transition(self, key: str, body: dict[str, Any]) -> httpx.Response:
        req = self.requests_by_key[key]
        target = [to for tid, to in WORKFLOW[req["status"]].values() if tid == str(body.get("id"))]
        if not target:
            return self.error(400, f"Transition {body.get('id')!r} is not valid for {req['status']!r}.")
        self._move(key, target[0])
        extra = body.get("additionalComment")
        if isinstance(extra, dict) and extra.get("body"):
            self._add_comment(key, str(extra["body"]), True, self.account, "svcbridge")
        return httpx.Response(204)

    def _move(self, key: str, status: str) -> None:
        req = self.requests_by_key[key]
        old, req["status"], req["statusDate"] = req["status"], status, _now()
        item = {"field": "status", "fieldtype": "jira", "fromString": old, "toString": status}
        self._fire(key, "jira:issue_updated", changelog={"id": str(uuid.uuid4().int % 10**6), "items": [item]},
                   event_type="issue_generic")

    # ------------------------------------------------------------------ acting as the agent
    def agent_comment(self, key: str, body: str, *, public: bool = True) -> str:
        return str(self._add_comment(key, body, public, "agent-0001", "Agent Smith")["id"])

    def agent_status(self, key: str, status: str) -> None:
        assert status in WORKFLOW, status  # an agent in Jira may move a request to any status
        self._move(key, status)

    def _fire(self, key: str, event: str, *, comment: dict[str, Any] | None = None,
              changelog: dict[str, Any] | None = None, event_type: str = "") -> None:
        req = self.requests_by_key[key]
        payload: dict[str, Any] = {
            "timestamp": int(datetime.now(UTC).timestamp() * 1000),
            "webhookEvent": event,
            "issue": {"id": req["issueId"], "key": key,
                      "fields": {"summary": req["summary"], "status": {"name": req["status"]}}},
        }
        if event_type:
            payload["issue_event_type_name"] = event_type
        if comment is not None:
            payload["comment"] = {"id": comment["id"], "body": comment["body"], "author": comment["author"],
                                  "jsdPublic": comment["public"], "created": comment["created"]["iso8601"]}
        if changelog is not None:
            payload["changelog"] = changelog
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Atlassian Webhook HTTP Client",
            "X-Atlassian-Webhook-Identifier": str(uuid.uuid4()),
            "X-Hub-Signature": "sha256=" + hmac_hex(self.hook_secret, body, "sha256"),
        }
        self.hooks.append(Hook(headers, body))

    # ------------------------------------------------------------------ the harness's view
    def view(self) -> list[RemoteTicket]:
        out = []
        for req in sorted({r["issueId"]: r for r in self.requests_by_key.values()}.values(),
                          key=lambda r: int(r["issueId"])):
            key = req["issueKey"]
            msgs = [RemoteMessage(id=f"{key}:description", text=req["description"])]
            msgs += [RemoteMessage(id=c["id"], text=c["body"], internal=not c["public"],
                                   by_agent=c["author"]["accountId"] != self.account) for c in self.comments[key]]
            out.append(RemoteTicket(id=key, title=req["summary"], state=req["status"], messages=msgs,
                                    priority=req.get("priority")))
        return out


def _priority(value: Any) -> str | None:
    """The priority name of a ``{name}`` (Jira's default scheme), None when there is no such priority."""
    name = value.get("name") if isinstance(value, dict) else None
    return name if name in PRIORITIES else None


def _jira_error(status: int, message: str, field: str | None = None) -> httpx.Response:
    """The platform API's error body (``/rest/api/3``), not the service desk's."""
    errors = {field: message} if field else {}
    return httpx.Response(status, json={"errorMessages": [] if field else [message], "errors": errors})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
