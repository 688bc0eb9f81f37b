"""Console pages of features that landed beside the console: the SLA board and the asset register.

Both only read: the SLA board lists open tickets that carry an SLA policy (the SLA engine sets it and
fills ``ticket.deadlines``) by their next deadline, with the breaches it recorded (``sla_breached``
events); the asset register page lists units of ``store/assets.py`` (``svcbridge assets import``) and
one unit with its parts. RMA and reports are still placeholders (views.PLACEHOLDERS).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from ..models import utcnow
from ..store import schema as t
from ..store.assets import AssetStore
from ..store.rows import ticket_from_row
from .guarded import Console, page
from .render import render

BOARD = 300  # open SLA tickets on the board at most


def sla_board(con: Console) -> dict[str, Any]:
    q = (
        select(t.tickets)
        .where(t.tickets.c.sla_policy.is_not(None), t.tickets.c.state.not_in(("resolved", "closed")))
        .order_by(t.tickets.c.id.desc())
        .limit(BOARD)
    )
    with con.app.store.engine.connect() as conn:
        tickets = [ticket_from_row(r) for r in conn.execute(q).mappings()]
        ids = [tk.id for tk in tickets]
        breached = {
            int(r[0])
            for r in conn.execute(
                select(t.events.c.ticket_id).where(
                    t.events.c.ticket_id.in_(ids), t.events.c.type == "sla_breached"
                )
            )
        }
    far = datetime.max.replace(tzinfo=utcnow().tzinfo)
    rows: list[dict[str, Any]] = []
    for tk in tickets:
        nxt = min(tk.deadlines.values()) if tk.deadlines else None
        rows.append({"t": tk, "next": nxt, "breached": tk.id in breached, "key": nxt or far})
    rows.sort(key=lambda r: r["key"])
    return {"rows": rows, "breached": sum(r["breached"] for r in rows), "now": utcnow()}


@page()
async def sla(request: Request, con: Console, who: Any) -> Response:
    board = await asyncio.to_thread(sla_board, con)
    return render(request, "sla.html", who=who, active="sla", board=board)


@page()
async def assets(request: Request, con: Console, who: Any) -> Response:
    reg = AssetStore(con.app.store)
    serial = (request.query_params.get("serial") or "").strip()[:100]
    customer = (request.query_params.get("customer") or "").strip()[:300]
    unit = await asyncio.to_thread(reg.get, serial) if serial else None
    units = [] if serial else await asyncio.to_thread(lambda: reg.listing(200, customer or None))
    total = await asyncio.to_thread(reg.count)
    facts = {}
    if unit is not None:
        for k, v in unit.model_dump(mode="json", exclude={"parts", "extra"}).items():
            if v not in (None, "", []):
                facts[k] = ", ".join(map(str, v)) if isinstance(v, list) else v
    return render(
        request,
        "assets.html",
        who=who,
        active="assets",
        unit=unit,
        units=units,
        total=total,
        serial=serial,
        unit_facts=facts,
        customer=customer,
    )
