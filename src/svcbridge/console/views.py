"""The console's pages (GET): overview and its live fragment, tickets, a ticket, quarantine, outbox,
plugins and configuration, the audit trail, and the places kept for SLA, assets, RMA and reports.

Every page needs a logged-in operator (or the admin token); what a customer wrote is autoescaped text,
and a mail's HTML is shown only nh3-cleaned inside an iframe with an empty ``sandbox`` (no script, no
same origin, no forms) under a CSP without inline script.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from typing import Any
from urllib.parse import quote

import nh3
from pydantic import BaseModel, SecretStr
from starlette.requests import Request
from starlette.responses import Response

from .. import log as logmod
from ..models import TRANSITIONS, TicketState
from . import facts, queries
from .guarded import Console, page
from .render import render, secure

_SAFE_INLINE = re.compile(r"[^A-Za-z0-9._-]")
_NOT_IN_NAME = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"/\\|?*\u2028\u2029\u202a-\u202e\u2066-\u2069]')
# downloads keep their type only when a browser cannot run it; anything else is a plain byte stream
_KEEP_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "text/plain", "text/csv"}
# a password in a URL's userinfo, a token in its query: secrets in a field named "url" or "base_url"
_URL_USERINFO = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]*@")
_URL_SECRET_QUERY = re.compile(
    r"([?&](?:[a-z_]*(?:token|key|secret|sig|signature|password|pass|auth))=)[^&#\s]*", re.I
)


def _hide_in_url(text: str) -> str:
    if "://" not in text:
        return text
    return _URL_SECRET_QUERY.sub(r"\1***", _URL_USERINFO.sub(r"\1:***@", text))


OVERVIEW_TTL = 1.0  # seconds several open tabs share one computation of the overview


async def _overview(con: Console) -> dict[str, Any]:
    now = time.monotonic()
    cached = con.overview_cache
    ttl = min(OVERVIEW_TTL, con.settings.console.refresh_seconds / 2)
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    data = await asyncio.to_thread(facts.overview, con.app)
    con.overview_cache = (now, data)
    return data


@page()
async def overview(request: Request, con: Console, who: Any) -> Response:
    data = await _overview(con)
    return render(request, "overview.html", who=who, active="overview", o=data)


@page()
async def overview_live(request: Request, con: Console, who: Any) -> Response:
    """The overview's facts as a fragment; 304 when nothing changed since the page's last ask."""
    data = await _overview(con)
    resp = render(request, "overview_live.html", who=who, o=data)
    body = bytes(resp.body)
    tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if request.headers.get("if-none-match") == tag:
        return secure(Response(status_code=304, headers={"ETag": tag}))
    resp.headers["ETag"] = tag
    return resp


@page()
async def overview_json(request: Request, con: Console, who: Any) -> Response:
    data = await _overview(con)
    text = logmod.redact(json.dumps(data, default=str, ensure_ascii=False))  # secrets in error texts
    return secure(Response(text, media_type="application/json"))


@page()
async def tickets(request: Request, con: Console, who: Any) -> Response:
    q = queries.TicketQuery.from_params(request.query_params)
    res = await asyncio.to_thread(queries.search_tickets, con.app.store, q)
    return render(
        request,
        "tickets.html",
        who=who,
        active="tickets",
        q=q,
        res=res,
        states=[s.value for s in TicketState],
    )


@page()
async def ticket(request: Request, con: Console, who: Any) -> Response:
    ref = request.path_params["ref"]
    t = await asyncio.to_thread(con.app.store.get_ticket, ref)
    if t is None:
        return render(request, "error.html", status=404, who=who, message=f"no ticket {ref}")
    atts = await asyncio.to_thread(queries.attachments, con.app.store, t.id)
    messages = []
    for ev in t.events:
        if ev.type in queries.MESSAGE_EVENTS and ("body" in ev.data or "subject" in ev.data):
            html = ev.data.get("body_html")
            # cleaned again here: what the store holds is trusted no more than what the parser saw
            clean = nh3.clean(html, link_rel="noopener noreferrer nofollow") if html else None
            messages.append({"ev": ev, "html": clean})
    allowed = sorted(s.value for s in TRANSITIONS[t.state])
    asset = {k: v for k, v in t.asset.model_dump(mode="json").items() if v not in (None, "", [], {})}
    urls = {}  # the helpdesk's own page of each linked ticket, when its sink knows one
    for ln in t.links:
        to_url = getattr(con.app.delivery.sinks.get(ln.system), "ticket_url", None)
        url = to_url(ln.value) if ln.kind == "ticket" and callable(to_url) else None
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            urls[(ln.system, ln.value)] = url
    return render(
        request,
        "ticket.html",
        who=who,
        active="tickets",
        t=t,
        atts=atts,
        messages=messages,
        allowed=allowed,
        asset=asset,
        urls=urls,
        msg=request.query_params.get("msg"),
    )


@page()
async def attachment(request: Request, con: Console, who: Any) -> Response:
    ref = request.path_params["ref"]
    tid, aid = con.app.store.id_for_ref(ref), int(request.path_params["aid"])
    in_range = tid is not None and 0 < tid < 2**63 and 0 < aid < 2**63  # past BIGINT: the driver raises
    row = await asyncio.to_thread(queries.attachment, con.app.store, tid or -1, aid) if in_range else None
    if tid is None or row is None or row["data"] is None:
        return secure(Response("not found", status_code=404, media_type="text/plain"))
    await asyncio.to_thread(con.accounts.audit, who.name, "attachment_downloaded", ref, name=row["safe_name"])
    return download(bytes(row["data"]), row["safe_name"], row["content_type"], row["original_name"])


def download(data: bytes, name: str, content_type: str, original: str | None = None) -> Response:
    """Always an attachment, never rendered inline; a type a browser could run becomes a byte stream.

    ``filename`` is the ASCII safe name; ``filename*`` (RFC 6266) offers the customer's own name
    with every path, control and shell-special character removed, percent-encoded: a browser can
    neither place it outside its download folder nor read markup in it.
    """
    ctype = content_type.split(";")[0].strip().lower()
    safe = _SAFE_INLINE.sub("_", name)[:100].lstrip(".") or "download.bin"
    disposition = f'attachment; filename="{safe}"'
    nice = _NOT_IN_NAME.sub("", (original or "").replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")[:150]
    if nice and nice != safe:
        disposition += f"; filename*=UTF-8''{quote(nice, safe='')}"
    headers = {
        "Content-Disposition": disposition,
        "Content-Security-Policy": "sandbox; default-src 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    media = ctype if ctype in _KEEP_TYPES else "application/octet-stream"
    return secure(Response(data, media_type=media, headers=headers))  # + no framing, no referrer


@page()
async def quarantine(request: Request, con: Console, who: Any) -> Response:
    rows = await asyncio.to_thread(queries.quarantine_page, con.app.store)
    return render(
        request,
        "quarantine.html",
        who=who,
        active="quarantine",
        rows=rows,
        msg=request.query_params.get("msg"),
    )


@page()
async def quarantine_raw(request: Request, con: Console, who: Any) -> Response:
    row = await asyncio.to_thread(con.app.store.quarantine_get, int(request.path_params["qid"]))
    raw = await asyncio.to_thread(queries.raw_message, con.app.store, row["journal_id"]) if row else None
    if raw is None:
        return secure(Response("not found", status_code=404, media_type="text/plain"))
    await asyncio.to_thread(
        con.accounts.audit, who.name, "quarantine_raw_downloaded", str(row["id"]) if row else ""
    )
    ext = "eml" if row and row["channel"] == "email" else "bin"
    return download(raw, f"quarantine-{request.path_params['qid']}.{ext}", "application/octet-stream")


@page()
async def outbox(request: Request, con: Console, who: Any) -> Response:
    target = request.query_params.get("target", "")[:200]
    status = request.query_params.get("status", "")
    status = status if status in ("pending", "parked", "dead", "done") else ""
    by_target = await asyncio.to_thread(facts.outbox_by_target, con.app)
    items = await asyncio.to_thread(queries.outbox_items, con.app.store, target, status)
    refs = {i["ticket_id"]: con.app.store.ref_for(i["ticket_id"]) for i in items}
    return render(
        request,
        "outbox.html",
        who=who,
        active="outbox",
        by_target=by_target,
        items=items,
        refs=refs,
        target=target,
        state_filter=status,
        msg=request.query_params.get("msg"),
    )


def _settings_view(model: Any) -> list[tuple[str, str]]:
    """(name, shown value); secrets as set / unset only, never their value."""
    if model is None:
        return []
    out = []
    for name in type(model).model_fields:
        if name == "transport":
            continue
        value = getattr(model, name)
        if isinstance(value, SecretStr) or any(w in name for w in ("password", "secret", "token", "key")):
            out.append((name, "set" if value else "unset"))
        elif isinstance(value, BaseModel):
            out += [(f"{name}.{k}", v) for k, v in _settings_view(value)]
        elif isinstance(value, list | tuple) and any(isinstance(v, BaseModel) for v in value):
            # several mailboxes, helpdesks, rules: each its own rows (a list's str() would show them raw)
            for i, item in enumerate(value):
                rows = (
                    _settings_view(item)
                    if isinstance(item, BaseModel)
                    else [("", _hide_in_url(str(item))[:200])]
                )
                out += [(f"{name}.{i}.{k}".rstrip("."), v) for k, v in rows]
        elif isinstance(value, dict) and any(isinstance(v, BaseModel) for v in value.values()):
            for key, item in value.items():
                rows = _settings_view(item) if isinstance(item, BaseModel) else [("", str(item)[:200])]
                out += [(f"{name}.{key}.{k}".rstrip("."), v) for k, v in rows]
        else:
            out.append((name, _hide_in_url(str(value))[:200]))
    return out


@page()
async def plugins(request: Request, con: Console, who: Any) -> Response:
    infos = list(con.app.pm.infos.values())
    sections = {
        s: _settings_view(con.app.settings.plugin_config(s)) for s in sorted(con.app.settings.plugins)
    }
    core = _settings_view(con.app.settings.console) + [
        ("http." + k, v) for k, v in _settings_view(con.app.settings.http)
    ]
    return render(
        request,
        "plugins.html",
        who=who,
        active="plugins",
        infos=infos,
        sections=sections,
        core=core,
        sinks=sorted(con.app.delivery.sinks),
        notifiers=sorted(con.app.delivery.notifiers),
        sources=sorted(con.app.sources),
    )


@page()
async def audit(request: Request, con: Console, who: Any) -> Response:
    rows = await asyncio.to_thread(con.accounts.audit_list, 200)
    return render(request, "audit.html", who=who, active="audit", rows=rows)


PLACEHOLDERS = {  # the SLA board and the asset register have pages of their own (features.py)
    "rma": "Return merchandise authorisations and their shipments will be listed here once RMA lands.",
    "reports": "Reports (volumes, response times, SLA compliance) will be made here once reporting lands.",
}


@page()
async def placeholder(request: Request, con: Console, who: Any) -> Response:
    key = request.url.path.strip("/")
    return render(request, "placeholder.html", who=who, active=key, text=PLACEHOLDERS[key])
