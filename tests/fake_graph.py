"""A fake Microsoft Graph mailbox for httpx.MockTransport, built from the documented contract
(learn.microsoft.com/graph/delta-query-messages, message-delta, message-move, throttling):

- ``GET /v1.0/users/{user}/mailFolders/{folder}/messages/delta``: the first request enumerates the folder,
  later rounds return only changes since the round's ``$deltatoken``. Pages hold ``odata.maxpagesize``
  rows from the ``Prefer`` header (10 without it) and link on with ``@odata.nextLink`` (``$skiptoken``);
  the last page of a round carries ``@odata.deltaLink``. Query options of the first request
  (``changeType``, ``$select``) are encoded into the tokens, as Graph does. Deleted or moved-away items
  appear as ``{"id", "@removed": {"reason": ...}}``. An unknown or expired token answers 410 Gone.
- ``GET .../messages/{id}/$value`` returns the MIME bytes; ``PATCH`` (isRead), ``POST .../move``
  (destinationId) and ``DELETE`` act on the mailbox.
- ``throttle`` queues 429 answers with Retry-After; ``revoked`` makes every token invalid (401);
  a bearer token is required on every request.
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import httpx

BASE = "https://graph.example.com/v1.0"


@dataclass
class Item:
    id: str
    folder: str
    mime: bytes
    is_read: bool = False


@dataclass
class FakeGraph:
    user: str = "support@contoso.example"
    tokens: set[str] = field(default_factory=set)  # accepted bearer tokens; empty = any non-empty one
    items: dict[str, Item] = field(default_factory=dict)
    # change log: (sequence, item id, folder, "created" | "updated" | "deleted")
    log: list[tuple[int, str, str, str]] = field(default_factory=list)
    throttle: list[str] = field(default_factory=list)  # Retry-After values of queued 429 answers
    revoked: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)  # token -> round state
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------------ the mailbox
    def deliver(self, mime: bytes, folder: str = "inbox") -> str:
        mid = f"AAMkImm{next(self._ids):04d}="  # immutable ids look like base64
        self.items[mid] = Item(mid, folder, mime)
        self.log.append((next(self.seq), mid, folder, "created"))
        return mid

    def in_folder(self, folder: str) -> list[Item]:
        return [i for i in self.items.values() if i.folder == folder]

    def expire_tokens(self) -> None:
        self.states.clear()

    # ------------------------------------------------------------------ HTTP
    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = urllib.parse.unquote(request.url.path)
        self.requests.append((request.method, path))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if self.revoked or not auth.startswith("Bearer ") or (self.tokens and token not in self.tokens):
            return _error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        if self.throttle:
            return _error(429, "ApplicationThrottled", "Too many requests", {"Retry-After": self.throttle.pop(0)})
        prefix = f"/v1.0/users/{self.user}"
        if not path.startswith(prefix):
            return _error(404, "ErrorInvalidUser", "The requested user is invalid.")
        rest = path[len(prefix):]
        if m := re.fullmatch(r"/mailFolders/([^/]+)/messages/delta", rest):
            assert request.method == "GET"
            return self._delta(request, m.group(1))
        if m := re.fullmatch(r"/messages/([^/]+)(/\$value|/move)?", rest):
            item = self.items.get(m.group(1))
            if item is None:
                return _error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            return self._message(request, item, m.group(2))
        return _error(400, "BadRequest", f"unsupported {request.method} {path}")

    def _message(self, request: httpx.Request, item: Item, sub: str | None) -> httpx.Response:
        if sub == "/$value" and request.method == "GET":
            return httpx.Response(200, content=item.mime, headers={"Content-Type": "text/plain"})
        if sub == "/move" and request.method == "POST":
            dest = json.loads(request.content)["destinationId"]
            self.log.append((next(self.seq), item.id, item.folder, "deleted"))
            item.folder = dest
            self.log.append((next(self.seq), item.id, dest, "created"))
            return httpx.Response(201, json={"id": item.id, "parentFolderId": dest})
        if sub is None and request.method == "PATCH":
            item.is_read = bool(json.loads(request.content).get("isRead", item.is_read))
            self.log.append((next(self.seq), item.id, item.folder, "updated"))
            return httpx.Response(200, json={"id": item.id, "isRead": item.is_read})
        if sub is None and request.method == "DELETE":
            self.log.append((next(self.seq), item.id, item.folder, "deleted"))
            del self.items[item.id]
            return httpx.Response(204)
        return _error(405, "ErrorInvalidRequest", "method not allowed")

    def _delta(self, request: httpx.Request, folder: str) -> httpx.Response:
        q = dict(request.url.params)
        prefer = request.headers.get("Prefer", "")
        size = int(m.group(1)) if (m := re.search(r"odata\.maxpagesize=(\d+)", prefer)) else 10
        if "$skiptoken" in q or "$deltatoken" in q:
            state = self.states.pop(q.get("$skiptoken") or q["$deltatoken"], None)
            if state is None:
                return _error(410, "SyncStateNotFound", "The sync state was not found or has expired.")
            if "$deltatoken" in q:  # a new round: the changes since the last one
                state = {**state, "rows": self._changes(folder, state["since"], state["change_type"])}
        else:  # the first round: everything in the folder, as created
            change_type = q.get("changeType")
            rows = [{"id": i.id} for i in self.in_folder(folder)]
            state = {"rows": rows, "since": 0, "change_type": change_type}
        state["since"] = max([s for s, *_ in self.log], default=0) if "$skiptoken" not in q else state["since"]
        page, remaining = state["rows"][:size], state["rows"][size:]
        body: dict[str, Any] = {"@odata.context": f"{BASE}/$metadata#Collection(message)", "value": page}
        token = f"tok{next(self.seq)}"
        base = f"{BASE}/users/{self.user}/mailFolders/{folder}/messages/delta"
        if remaining:
            self.states[token] = {**state, "rows": remaining}
            body["@odata.nextLink"] = f"{base}?$skiptoken={token}"
        else:
            self.states[token] = {"since": state["since"], "change_type": state["change_type"], "rows": []}
            body["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
        return httpx.Response(200, json=body)

    def _changes(self, folder: str, since: int, change_type: str | None) -> list[dict[str, Any]]:
        last: dict[str, str] = {}
        for seq, mid, f, kind in self.log:
            if seq > since and f == folder:
                # created then updated is still created for the client; anything then deleted is removed
                prev = last.get(mid)
                last[mid] = "created" if prev == "created" and kind == "updated" else kind
        rows: list[dict[str, Any]] = []
        for mid, kind in last.items():
            if change_type and kind != change_type:
                continue
            rows.append({"id": mid, "@removed": {"reason": "deleted"}} if kind == "deleted" else {"id": mid})
        return rows


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}}, headers=headers)
