"""A fake Zammad (``/api/v1``) following api-contracts.md §1.1, in memory, with a trigger webhook.

Served: ``POST /tickets`` (201 ``{id, number, state_id, article_ids}``), ``GET|PUT /tickets/{id}``
(``?expand=true`` adds the names beside the ids; a PUT takes ``state``, ``priority`` (a name of
``PRIORITY_IDS``, else 422), ``group``, ``title``, and an ``article`` in it adds one),
``GET /tickets/search`` (``query``, ``limit``, ``expand``), ``POST /ticket_articles`` (201; base64 ``attachments`` decoded and
kept byte for byte), ``GET /ticket_articles/by_ticket/{id}``. Auth is ``Authorization: Token
token=<token>``; anything else is 401.

Acting as the agent: ``agent_article`` and ``agent_state`` change the ticket and fire the trigger webhook.
Like a trigger on "ticket created or updated", tickets, articles and ticket updates made through the
API (svcbridge's own posts, a reopen, a priority change) fire it too, so tests can prove they are not
echoed. Hooks are signed as Zammad signs them: ``X-Hub-Signature: sha1=<hex HMAC-SHA1(token, body)>``,
with ``X-Zammad-Delivery`` (a unique id) and ``X-Zammad-Trigger``.

Not in the contract, chosen here and marked so: the error body (``{"error", "error_human"}``, Zammad's
usual shape), 422 for invalid input, state ids and the priority names besides "3 high" (Zammad's seed
data), the search query syntax (only ``title:"..."`` phrases and bare words are understood) and its reply
shape (a list with ``expand=true``, else ``{"tickets": [ids], "tickets_count", "assets"}``).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import uuid
from typing import Any

import httpx

from .base import FakeService, Hook, RemoteMessage, RemoteTicket, hmac_hex, read_json

STATE_IDS = {"new": 1, "open": 2, "pending reminder": 3, "closed": 4, "merged": 5, "pending close": 7}
PRIORITY_IDS = {"1 low": 1, "2 normal": 2, "3 high": 3}
SEARCH_MAX = 100  # server-side maximum of limit / per_page


class FakeZammad(FakeService):
    host = "zammad.test"
    REJECT_STATUS = 422

    def __init__(self, token: str = "zm-secret-token", hook_secret: str = "zm-hook-secret") -> None:
        super().__init__()
        self.token, self.hook_secret = token, hook_secret
        self.groups = {"Users", "Support"}
        self.customers: dict[str, int] = {"fallback@example.com": 1}
        self.tickets: dict[int, dict[str, Any]] = {}
        self.articles: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._article_ids = itertools.count(1)
        self.fire_on_api_articles = True

    # ------------------------------------------------------------------ contract plumbing
    def error_body(self, status: int, detail: str) -> Any:
        return {"error": detail, "error_human": detail}

    def route(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Token token={self.token}":
            return self.error(401, "authentication failed")
        path = request.url.path
        if not path.startswith("/api/v1/"):
            return self.error(404, f"No route matches [{request.method}] {path}")
        rest, m = path[len("/api/v1/") :], request.method
        if m in ("POST", "PUT") and not request.headers.get("Content-Type", "").startswith("application/json"):
            return self.error(415, "Content-Type must be application/json")
        if rest == "tickets" and m == "POST":
            return self._create(read_json(request) or {})
        if rest == "tickets/search" and m == "GET":
            return self._search(request.url.params)
        if rest == "ticket_articles" and m == "POST":
            return self._post_article(read_json(request) or {})
        if match := re.fullmatch(r"ticket_articles/by_ticket/(\d+)", rest):
            tid = int(match.group(1))
            if tid not in self.tickets:
                return self.error(404, "Couldn't find Ticket")
            return httpx.Response(200, json=[self._article_json(a) for a in self._articles_of(tid)])
        if match := re.fullmatch(r"tickets/(\d+)", rest):
            tid = int(match.group(1))
            if tid not in self.tickets:
                return self.error(404, "Couldn't find Ticket")
            if m == "PUT":
                return self._update(tid, read_json(request) or {})
            return httpx.Response(200, json=self._ticket_json(tid, request.url.params.get("expand") == "true"))
        return self.error(404, f"No route matches [{m}] {path}")

    # ------------------------------------------------------------------ tickets
    def _customer(self, value: Any) -> int | None:
        value = str(value or "")
        if value.startswith("guess:") and "@" in value:
            return self.customers.setdefault(value[6:].lower(), len(self.customers) + 1)
        if value.isdigit() and int(value) in self.customers.values():
            return int(value)
        return self.customers.get(value.lower())

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        missing = [k for k in ("title", "group", "customer", "article") if not body.get(k)]
        if missing:
            return self.error(422, f"Missing required attributes: {', '.join(missing)}")
        if body["group"] not in self.groups:
            return self.error(422, f"No lookup value found for 'group': {body['group']!r}")
        customer = self._customer(body["customer"])
        if customer is None:
            return self.error(422, f"No lookup value found for 'customer': {body['customer']!r}")
        priority = body.get("priority", "2 normal")
        if priority not in PRIORITY_IDS:
            return self.error(422, f"No lookup value found for 'priority': {priority!r}")
        tid = next(self._ids)
        extra = {k: v for k, v in body.items() if k not in ("title", "group", "customer", "article", "priority")}
        self.tickets[tid] = {
            "id": tid,
            "number": str(31000 + tid),
            "title": body["title"],
            "group": body["group"],
            "customer_id": customer,
            "priority": priority,
            "state": body.get("state", "new"),
            **extra,
        }
        art = self._add_article(tid, {**body["article"], "ticket_id": tid}, sender_default="Agent")
        if isinstance(art, httpx.Response):
            del self.tickets[tid]
            return art
        if self.fire_on_api_articles:
            self._fire(tid, art)  # a trigger on "ticket created" sees the first article too
        out = self._ticket_json(tid, False) | {"article_ids": [art["id"]]}
        return httpx.Response(201, json=out)

    def _update(self, tid: int, body: dict[str, Any]) -> httpx.Response:
        t = self.tickets[tid]
        if "state" in body and body["state"] not in STATE_IDS:
            return self.error(422, f"No lookup value found for 'state': {body['state']!r}")
        if "priority" in body and body["priority"] not in PRIORITY_IDS:
            return self.error(422, f"No lookup value found for 'priority': {body['priority']!r}")
        for key in ("state", "priority", "group", "title"):
            if key in body:
                t[key] = body[key]
        art: dict[str, Any] | httpx.Response | None = None
        if isinstance(body.get("article"), dict):
            art = self._add_article(tid, {**body["article"], "ticket_id": tid}, sender_default="Agent")
            if isinstance(art, httpx.Response):
                return art
        if self.fire_on_api_articles:
            self._fire(tid, art)  # a trigger on "ticket updated" fires for svcbridge's own changes too
        return httpx.Response(200, json=self._ticket_json(tid, False))

    def _ticket_json(self, tid: int, expand: bool) -> dict[str, Any]:
        t = dict(self.tickets[tid])
        t["state_id"] = STATE_IDS[t["state"]]
        t["priority_id"] = PRIORITY_IDS[t["priority"]]
        if not expand:  # without expand Zammad gives ids only
            for key in ("state", "priority", "group"):
                t.pop(key, None)
        return t

    def _search(self, params: httpx.QueryParams) -> httpx.Response:
        query = params.get("query", "")
        try:
            limit = min(int(params.get("limit", "10")), SEARCH_MAX)
        except ValueError:
            return self.error(422, "limit must be a number")
        phrases = re.findall(r'title:"([^"]*)"', query)
        words = re.sub(r'title:"[^"]*"', " ", query).split()

        def hit(t: dict[str, Any]) -> bool:
            title = t["title"].lower()
            return all(p.lower() in title for p in phrases) and all(w.lower() in title for w in words)

        ids = sorted(tid for tid, t in self.tickets.items() if hit(t))[:limit]
        if params.get("expand") == "true":
            return httpx.Response(200, json=[self._ticket_json(i, True) for i in ids])
        return httpx.Response(200, json={"tickets": ids, "tickets_count": len(ids), "assets": {}})

    # ------------------------------------------------------------------ articles
    def _articles_of(self, tid: int) -> list[dict[str, Any]]:
        return [a for a in self.articles.values() if a["ticket_id"] == tid]

    def _add_article(self, tid: int, body: dict[str, Any], sender_default: str) -> dict[str, Any] | httpx.Response:
        if not str(body.get("body") or "").strip():
            return self.error(422, "Missing required attribute: body")
        files = []
        for f in body.get("attachments") or []:
            try:
                data = base64.b64decode(f["data"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                return self.error(422, "attachment data is not base64")
            files.append({"filename": f.get("filename"), "data": data, "mime-type": f.get("mime-type")})
        aid = next(self._article_ids)
        art = {
            "id": aid,
            "ticket_id": tid,
            "subject": body.get("subject") or "",
            "body": body["body"],
            "content_type": body.get("content_type", "text/plain"),
            "type": body.get("type", "note"),
            "internal": bool(body.get("internal", False)),
            "sender": body.get("sender") or sender_default,
            "from": body.get("from") or "svcbridge",
            "created_by": "svcbridge",
            "attachments": files,
        }
        self.articles[aid] = art
        return art

    def _post_article(self, body: dict[str, Any]) -> httpx.Response:
        try:
            tid = int(body.get("ticket_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return self.error(422, "Missing required attribute: ticket_id")
        if tid not in self.tickets:
            return self.error(422, "Couldn't find Ticket")
        art = self._add_article(tid, body, sender_default="Agent")
        if isinstance(art, httpx.Response):
            return art
        if self.fire_on_api_articles:
            self._fire(tid, art)
        return httpx.Response(201, json=self._article_json(art))

    def _article_json(self, art: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in art.items() if k != "attachments"}
        out["attachments"] = [
            {
                "id": i + 1,
                "filename": f["filename"],
                "size": str(len(f["data"])),
                "preferences": {"Mime-Type": f["mime-type"]},
            }
            for i, f in enumerate(art["attachments"])
        ]
        return out

    # ------------------------------------------------------------------ acting as the agent
    def agent_article(self, tid: int, body: str, *, internal: bool = False, html: bool = True) -> int:
        art = self._add_article(
            tid,
            {
                "body": body,
                "internal": internal,
                "content_type": "text/html" if html else "text/plain",
                "type": "note" if internal else "email",
                "sender": "Agent",
                "from": "Agent Smith <agent@zammad.test>",
            },
            sender_default="Agent",
        )
        assert isinstance(art, dict)
        art["created_by"] = "agent.smith"
        if self.tickets[tid]["state"] == "new":
            self.tickets[tid]["state"] = "open"  # an agent's answer opens a new ticket
        self._fire(tid, art)
        return int(art["id"])

    def agent_state(self, tid: int, state: str) -> None:
        assert state in STATE_IDS, state
        self.tickets[tid]["state"] = state
        self._fire(tid, None)

    def _fire(self, tid: int, article: dict[str, Any] | None) -> None:
        payload: dict[str, Any] = {"ticket": self._ticket_json(tid, True)}
        if article is not None:
            art = self._article_json(article)
            for i, a in enumerate(art["attachments"]):  # authenticated URLs, not inline
                a["url"] = f"https://{self.host}/api/v1/ticket_attachment/{tid}/{article['id']}/{i + 1}"
            payload["article"] = art
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Zammad User Agent",
            "X-Zammad-Trigger": "svcbridge",
            "X-Zammad-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature": "sha1=" + hmac_hex(self.hook_secret, body, "sha1"),
        }
        self.hooks.append(Hook(headers, body))

    # ------------------------------------------------------------------ the harness's view
    def view(self) -> list[RemoteTicket]:
        out = []
        for tid, t in sorted(self.tickets.items()):
            msgs = [
                RemoteMessage(
                    id=str(a["id"]),
                    text=f"{a['subject']}\n{a['body']}",
                    internal=a["internal"],
                    by_agent=a["created_by"] != "svcbridge",
                    files={f["filename"]: f["data"] for f in a["attachments"]},
                )
                for a in self._articles_of(tid)
            ]
            out.append(
                RemoteTicket(
                    id=str(tid), title=t["title"], state=t["state"], messages=msgs, priority=t["priority"]
                )
            )
        return out
