"""What an operator can change (POST only): log in and out, a ticket's state, a reply to the customer,
an internal note, retrying or dropping a quarantined message, replaying and unparking outbox items.

Each one is an audit row (who, what, on what, when). Ticket changes go through the same path as a
helpdesk's status update (``Pipeline.apply_status_update``, actor ``console:<user>``): the state machine
decides, the customer is notified through the outbox, the helpdesks get the change like any other.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import re
import uuid
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ..errors import StoreUnavailable
from ..models import StatusUpdate, TicketState, can_transition
from . import queries
from .auth import COOKIE, LOGIN_COOKIE, cookie, new_login_token
from .guarded import Console, action, back, read_form
from .render import render, secure


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _addr_key(host: str) -> str:
    """What the login limit counts: an IPv4 address, or an IPv6 client's /64 (one subscriber holds
    2^64 addresses; counted one by one it was never limited)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"addr:{host}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"addr:{ip.ipv4_mapped}"
    if isinstance(ip, ipaddress.IPv6Address):
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%?=&+-]*")


def _next(value: str | None) -> str:
    """Where to go after the login: only a path of this console. "//evil.example", "/\\evil.example",
    "https://..." and "/<tab>/evil.example" (browsers drop tabs and newlines from URLs) go to "/"."""
    if value and len(value) <= 2000 and _LOCAL_PATH.fullmatch(value):
        return value
    return "/"


async def login_page(request: Request) -> Response:
    token = new_login_token()
    resp = render(
        request, "login.html", token=token, next=_next(request.query_params.get("next")), error=None
    )
    cookie(resp, request, LOGIN_COOKIE, token, 600)
    return resp


async def login(request: Request) -> Response:
    con: Console = request.app.state.console
    form = await read_form(request) or {}
    user, password = form.get("username", "")[:100], form.get("password", "")[:1000]
    nxt = _next(form.get("next"))
    given, expected = form.get("login_token", ""), request.cookies.get(LOGIN_COOKIE, "")

    def again(error: str, status: int) -> Response:
        token = new_login_token()
        resp = render(request, "login.html", status=status, token=token, next=nxt, error=error)
        cookie(resp, request, LOGIN_COOKIE, token, 600)
        return resp

    # login CSRF: the form must come from our own login page (double-submit cookie, same origin)
    if (
        not expected
        or not hmac.compare_digest(given.encode(), expected.encode())
        or not con.guard.same_origin(request)
    ):
        return again("The form expired; reload the page and try again.", 403)
    keys = (f"user:{user.lower()}", _addr_key(_client(request)))
    limiter = con.guard.limiter
    verdict = await asyncio.to_thread(limiter.attempt, *keys)
    if not verdict.admitted:
        if verdict.note:  # once per window and key: anyone can fetch a login form
            await asyncio.to_thread(
                con.accounts.audit, user or "?", "login_throttled", None, addr=_client(request)
            )
        return again("Too many failed logins; try again later.", 429)
    op = await asyncio.to_thread(con.accounts.verify, user, password)
    if op is None:  # the attempt was counted before the check
        await asyncio.to_thread(limiter.failed, *keys)
        await asyncio.to_thread(con.accounts.audit, user or "?", "login_failed", None, addr=_client(request))
        return again("Wrong user name or password.", 401)
    await asyncio.to_thread(limiter.succeeded, *keys)
    ttl = con.settings.console.session_hours * 3600
    idle = con.settings.console.idle_minutes * 60
    # the session this browser had (another operator's, or a planted cookie) ends: one live session
    await asyncio.to_thread(con.accounts.close_session, request.cookies.get(COOKIE))
    token, _session = await asyncio.to_thread(con.accounts.open_session, op, ttl, idle)
    await asyncio.to_thread(con.accounts.audit, op.username, "login", None, addr=_client(request))
    resp = secure(RedirectResponse(nxt, status_code=303))
    cookie(resp, request, COOKIE, token, int(ttl))
    resp.delete_cookie(LOGIN_COOKIE, path="/")
    return resp


@action(readonly_ok=True)
async def logout(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    await asyncio.to_thread(con.accounts.close_session, request.cookies.get(COOKIE))
    await asyncio.to_thread(con.accounts.audit, who.name, "logout")
    resp = secure(RedirectResponse("/login", status_code=303))
    resp.delete_cookie(COOKIE, path="/")
    return resp


# ---------------------------------------------------------------------------------------------- tickets
async def _update(con: Console, who: Any, ref: str, **change: Any) -> bool:
    upd = StatusUpdate(
        ticket_ref=ref,
        system="console",
        actor=f"console:{who.name}",
        external_event_id=f"console:{uuid.uuid4()}",
        **change,
    )
    ok = await con.app.pipeline.apply_status_update(upd)
    if ok:
        con.app.delivery_wake.set()  # the notice and the helpdesk update go out now, not at the next poll
    return ok


@action()
async def ticket_state(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    ref = request.path_params["ref"]
    t = await asyncio.to_thread(con.app.store.get_ticket, ref, full=False)
    try:
        target = TicketState(form.get("state", ""))
    except ValueError:
        target = None
    if t is None or target is None or not can_transition(t.state, target):
        await asyncio.to_thread(
            con.accounts.audit, who.name, "ticket_state", ref, to=form.get("state", "")[:30], applied=False
        )
        return back(f"/tickets/{quote(ref)}", "refused")
    ok = await _update(con, who, ref, state=target)
    await asyncio.to_thread(con.accounts.audit, who.name, "ticket_state", ref, to=target.value, applied=ok)
    return back(f"/tickets/{quote(ref)}", "done" if ok else "refused")


@action()
async def ticket_reply(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    return await _text(request, con, who, form, "public_reply", "ticket_reply")


@action()
async def ticket_note(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    return await _text(request, con, who, form, "internal_note", "ticket_note")


async def _text(
    request: Request, con: Console, who: Any, form: dict[str, str], field: str, what: str
) -> Response:
    ref = request.path_params["ref"]
    text = form.get("text", "").strip()[:20000]
    if not text:
        await asyncio.to_thread(con.accounts.audit, who.name, what, ref, chars=0, applied=False)
        return back(f"/tickets/{quote(ref)}", "refused")
    ok = await _update(con, who, ref, **{field: text})
    await asyncio.to_thread(con.accounts.audit, who.name, what, ref, chars=len(text), applied=ok)
    return back(f"/tickets/{quote(ref)}", "done" if ok else "refused")


# ---------------------------------------------------------------------------------------------- quarantine
@action()
async def quarantine_retry(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    qid = int(request.path_params["qid"])
    try:
        jid = await asyncio.to_thread(con.app.store.quarantine_release, qid, "retry")
    except (KeyError, StoreUnavailable) as exc:
        await asyncio.to_thread(
            con.accounts.audit,
            who.name,
            "quarantine_retry",
            str(qid),
            applied=False,
            error=type(exc).__name__,
        )
        return back("/quarantine", "refused")
    con.app.wake.set()  # the pipeline takes the message again now
    await asyncio.to_thread(con.accounts.audit, who.name, "quarantine_retry", str(qid), journal_id=jid)
    return back("/quarantine")


@action()
async def quarantine_drop(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    qid = int(request.path_params["qid"])
    if form.get("confirm") != "yes":  # the first press asks; nothing is dropped yet
        row = await asyncio.to_thread(con.app.store.quarantine_get, qid)
        return render(request, "confirm_drop.html", who=who, active="quarantine", row=row)
    try:
        await asyncio.to_thread(con.app.store.quarantine_release, qid, "drop")
    except (KeyError, StoreUnavailable) as exc:
        await asyncio.to_thread(
            con.accounts.audit, who.name, "quarantine_drop", str(qid), applied=False, error=type(exc).__name__
        )
        return back("/quarantine", "refused")
    await asyncio.to_thread(con.accounts.audit, who.name, "quarantine_drop", str(qid))
    return back("/quarantine")


# ---------------------------------------------------------------------------------------------- outbox
@action()
async def outbox_replay(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    item = int(request.path_params["item"])
    if form.get("confirm") != "yes":  # a delivered item goes out again (the customer gets it twice): ask
        row = await asyncio.to_thread(queries.outbox_item, con.app.store, item)
        if row is not None and row["status"] == "done":
            return render(request, "confirm_replay.html", who=who, active="outbox", row=row)
    ok = await asyncio.to_thread(con.app.delivery.outbox.replay, item)
    if ok:
        con.app.delivery_wake.set()
    await asyncio.to_thread(con.accounts.audit, who.name, "outbox_replay", str(item), applied=ok)
    return back("/outbox", "done" if ok else "refused")


@action()
async def outbox_target(request: Request, con: Console, who: Any, form: dict[str, str]) -> Response:
    target, what = form.get("target", "")[:200], request.path_params["what"]
    if not target or what not in ("replay", "unpark"):
        action = f"outbox_{what if what in ('replay', 'unpark') else 'bogus'}_target"
        await asyncio.to_thread(con.accounts.audit, who.name, action, target or None, applied=False)
        return back("/outbox", "refused")
    if what == "replay":
        n = await asyncio.to_thread(queries.replay_dead, con.app.store, target)
    else:
        n = await asyncio.to_thread(con.app.delivery.outbox.unpark, target)
        con.app.delivery.alerts.pop(target, None)  # comes back with the next failure if not fixed
        con.app.delivery.breakers.pop(target, None)
    con.app.delivery_wake.set()
    await asyncio.to_thread(con.accounts.audit, who.name, f"outbox_{what}_target", target, items=n)
    return back(f"/outbox?target={quote(target)}")
