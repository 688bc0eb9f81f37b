"""What every fake helpdesk shares: an httpx transport, a request log, fault injection, signed hooks.

A fake is a plain object whose ``transport`` (an ``httpx.MockTransport``) is handed to the connector's
settings (``transport = fake.transport``), so the connector's real client code, the SSRF guard and the
redirect rule all run; only the socket is skipped. Subclasses implement ``route(request)`` following
``../shared/reference/api-contracts.md`` and keep their tickets in memory.

Faults: ``fake.fail_next(kind, n=1, method=None, commit=False)`` makes the next `n` matching requests
fail instead of being served:

- ``"429"`` (with ``Retry-After: <retry_after>``), ``"503"``, ``"401"``, ``"403"``, ``"422"``: that status
  with the service's own error body (``error_body(status, detail)``);
- ``"reject"``: the status the service uses for invalid input (``REJECT_STATUS``: Zammad 422, GLPI 400);
- ``"timeout"``: ``httpx.ReadTimeout``;
- ``"redirect"``: ``307`` to the same path on ``http://elsewhere.test`` (the fake records every request,
  whatever its host, so a test can prove nothing was sent there).

With ``commit=True`` the request is served first and the fault replaces the answer: the remote side has
it, the caller never heard (the crash-after-remote-commit case reconcile exists for).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

ELSEWHERE = "elsewhere.test"


@dataclass
class Fault:
    kind: str
    left: int
    method: str | None = None
    commit: bool = False
    retry_after: int = 30


@dataclass
class Hook:
    """A webhook the fake service would POST: headers and the exact bytes it signed."""

    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RemoteMessage:
    """An article / follow-up as the harness compares them across services."""

    id: str
    text: str
    internal: bool = False
    by_agent: bool = False
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class RemoteTicket:
    """A ticket as the harness compares them; ``priority`` is the service's own value, as text
    (Zammad's name, GLPI's urgency, ServiceNow's urgency and impact...), None where there is none."""

    id: str
    title: str
    state: str
    messages: list[RemoteMessage] = field(default_factory=list)
    priority: str | None = None


class FakeService:
    """Base of the fakes: dispatch, request log, fault queue, pending webhooks."""

    host = "fake.test"
    REJECT_STATUS = 422

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.faults: list[Fault] = []
        self.hooks: list[Hook] = []  # fired webhooks not yet taken by the test (see take_hooks)
        self.transport = httpx.MockTransport(self._handle)

    # -- for tests
    def fail_next(
        self, kind: str, n: int = 1, *, method: str | None = None, commit: bool = False, retry_after: int = 30
    ) -> None:
        self.faults.append(Fault(kind, n, method.upper() if method else None, commit, retry_after))

    def take_hooks(self) -> list[Hook]:
        out, self.hooks = self.hooks, []
        return out

    def seen(self, host: str | None = None) -> list[httpx.Request]:
        return [r for r in self.requests if host is None or r.url.host == host]

    # -- to implement
    def route(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def error_body(self, status: int, detail: str) -> Any:
        """The service's error body for `status` (JSON-serialisable)."""
        raise NotImplementedError

    # -- plumbing
    def error(self, status: int, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.Response(status, json=self.error_body(status, detail), headers=headers)

    def _fault(self, request: httpx.Request) -> Fault | None:
        for f in self.faults:
            if f.left > 0 and (f.method is None or f.method == request.method):
                f.left -= 1
                return f
        return None

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host != self.host:
            # a request that followed a redirect elsewhere: record it (tests assert there are none)
            return httpx.Response(200, json={"stolen": True})
        fault = self._fault(request)
        if fault is not None and fault.commit:
            self.route(request)  # the service did the work; the answer is lost
        if fault is None:
            return self.route(request)
        kind = fault.kind
        if kind == "timeout":
            raise httpx.ReadTimeout("injected timeout", request=request)
        if kind == "redirect":
            target = request.url.copy_with(host=ELSEWHERE)
            return httpx.Response(307, headers={"Location": str(target)})
        status = self.REJECT_STATUS if kind == "reject" else int(kind)
        headers = {"Retry-After": str(fault.retry_after)} if status == 429 else None
        return self.error(status, f"injected {kind}", headers)


def hmac_hex(secret: str, data: bytes, algorithm: str) -> str:
    return hmac.new(secret.encode(), data, getattr(hashlib, algorithm)).hexdigest()


def read_json(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content or b"null")
    except ValueError:
        return None
