"""The console's request guard: ``@page()`` for reading, ``@action()`` for changing things.

A page without an operator redirects to the login (an API path answers 401); an action additionally needs
the admin role, a same-origin request and the session's CSRF token, or it answers 403 and changes nothing.
Forms are read here, bounded (64 KB), as ``application/x-www-form-urlencoded`` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from .accounts import Accounts
from .auth import Guard, Principal
from .render import render, secure

if TYPE_CHECKING:
    from ..app import App

MAX_FORM = 64 * 1024


@dataclass
class Console:
    app: App
    accounts: Accounts
    guard: Guard
    # (monotonic time, facts.overview()): every open tab polls; within OVERVIEW_TTL they share one answer
    overview_cache: tuple[float, dict[str, Any]] | None = None

    @property
    def settings(self) -> Any:
        return self.app.settings


def _console(request: Request) -> Console:
    con: Console = request.app.state.console
    return con


async def read_form(request: Request) -> dict[str, str] | None:
    """The urlencoded form, or None when it is too large or of another type."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=50))
    except (UnicodeDecodeError, ValueError):
        return None


# fetched by console.js, never opened by a person: a 401 makes the script reload the page into the login
# (fetch() follows a redirect: the login form landed inside the overview's live section instead)
_FETCHED = ("/api/", "/overview/live")


def _unauthenticated(request: Request) -> Response:
    if request.method == "GET" and not request.url.path.startswith(_FETCHED):
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return secure(RedirectResponse(f"/login?next={quote(nxt, safe='')}", status_code=303))
    return secure(PlainTextResponse("authentication required", status_code=401))


Page = Callable[[Request, Console, Principal], Awaitable[Response]]
Action = Callable[[Request, Console, Principal, dict[str, str]], Awaitable[Response]]


def page() -> Callable[[Page], Callable[[Request], Awaitable[Response]]]:
    def deco(fn: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            con = _console(request)
            who = await asyncio.to_thread(con.guard.principal, request)
            if who is None:
                return _unauthenticated(request)
            return await fn(request, con, who)

        endpoint.__name__ = fn.__name__
        return endpoint

    return deco


def action(readonly_ok: bool = False) -> Callable[[Action], Callable[[Request], Awaitable[Response]]]:
    """``readonly_ok``: a read-only operator may do this too (log out: it changes only their own session)."""

    def deco(fn: Action) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            con = _console(request)
            who = await asyncio.to_thread(con.guard.principal, request)
            if who is None:
                return _unauthenticated(request)
            form = await read_form(request)
            if form is None or not con.guard.csrf_ok(request, who, form):
                await asyncio.to_thread(
                    con.accounts.audit,
                    who.name,
                    "refused_csrf",
                    request.url.path,
                    origin=request.headers.get("origin") or "",
                )
                return render(
                    request,
                    "error.html",
                    status=403,
                    who=who,
                    message="The form expired; reload the page and try again.",
                )
            if not who.can_act and not readonly_ok:
                await asyncio.to_thread(con.accounts.audit, who.name, "refused_readonly", request.url.path)
                return render(request, "error.html", status=403, who=who, message="Not allowed.")
            if any(isinstance(v, int) and not 0 < v < 2**63 for v in request.path_params.values()):
                # no such row, and past BIGINT the database driver raises (a 500): refused, noted
                await asyncio.to_thread(con.accounts.audit, who.name, "refused_id", request.url.path)
                return back("/" + request.url.path.split("/")[1], "refused")
            try:
                return await fn(request, con, who, form)
            finally:
                con.overview_cache = None  # the next overview shows what the action changed

        endpoint.__name__ = fn.__name__
        return endpoint

    return deco


def back(path: str, msg: str = "done") -> Response:
    sep = "&" if "?" in path else "?"
    return secure(RedirectResponse(f"{path}{sep}msg={quote(msg)}", status_code=303))
