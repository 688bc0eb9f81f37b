"""``svcbridge parts lookup|reserve|release``: spare parts from the ERP, by hand.

``lookup`` asks an ERP connector (``register_erps``, ``App.erps``) directly and prints stock per depot,
the customer's region's depots first. ``reserve`` and ``release`` act on a ticket: they ask for the
same durable jobs the daemon runs (``parts.lookup`` with the part, ``parts.settle`` with
``release``), run them at once, and the answer lands on the ticket (label ``parts``, a
``ticket_updated`` event, a note to its helpdesks) exactly as from the enrichment; the reservation's
key (``svcbridge:<ref>:<part>``) makes a repeated command harmless. When the jobs cannot run now (the
ERP is down) they stay queued for the daemon, and the command says so.

Attached to the main group by ``cli.py``; the App comes from ``ctx.obj["app"]`` (no import of ``cli``).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from typing import Any

import click
from rich.table import Table

from .cli_work import SafeConsole
from .models import utcnow
from .parts import PartsErp, PartStock, order_depots
from .store.jobs import write_work
from .work import WorkQueue

out = SafeConsole()
err = SafeConsole(stderr=True)


def _app(ctx: click.Context) -> Any:
    root = ctx.find_root()
    return root.obj["app"](root)


def _erp(app: Any, name: str | None) -> PartsErp:
    erps: dict[str, PartsErp] = app.erps
    if not erps:
        err.print("no ERP is configured ([[plugins.parts.erps]])")
        sys.exit(2)
    if name is None:
        cfg = app.plugin_config("parts")
        name = getattr(cfg, "default_erp", "") or next(iter(erps))
    if name not in erps:
        err.print(f"no ERP named {name!r} (have: {', '.join(sorted(erps))})")
        sys.exit(2)
    return erps[name]


def _regions(app: Any) -> dict[str, list[str]]:
    return dict(getattr(app.plugin_config("parts"), "regions", None) or {})


@click.group()
def parts() -> None:
    """Spare parts from the ERP: stock per depot, reservations for tickets."""


@parts.command("lookup")
@click.argument("part", required=False)
@click.option("--model", help="the unit's model, with --category: the parts that fit it")
@click.option("--category", default="psu", show_default=True, help="part category (psu, fan, disk...)")
@click.option("--region", help="the customer's region: its depots first")
@click.option("--erp", "erp_name", help="which ERP (default: [plugins.parts] erp)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def lookup(
    ctx: click.Context,
    part: str | None,
    model: str | None,
    category: str,
    region: str | None,
    erp_name: str | None,
    as_json: bool,
) -> None:
    """Stock per depot of PART, or of the parts of a category that fit --model."""
    if not part and not model:
        raise click.UsageError("give a PART or --model")
    app = _app(ctx)
    erp = _erp(app, erp_name)
    regions = _regions(app)

    async def run() -> list[tuple[str, PartStock | None]]:
        try:
            names = [part] if part else await erp.find_parts(model or "", category.lower())
            found = [(n, await erp.lookup(n)) for n in names]
        finally:
            close = getattr(erp, "close", None)
            if close is not None:
                await close()
        return found

    try:
        found = asyncio.run(run())
    except Exception as exc:  # an ERP that is down or refuses: say so, exit 1
        err.print(f"ERP {erp.name}: {type(exc).__name__}: {exc}")
        sys.exit(1)
    if as_json:
        data = [s.model_dump() if s else {"part": n, "known": False} for n, s in found]
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    if not found:
        err.print(f"no {category} part fits {model}")
        sys.exit(1)
    for name, stock in found:
        if stock is None:
            out.print(f"{name}: not known to ERP {erp.name}")
            continue
        lead = f", lead time {stock.lead_time_days:g} days" if stock.lead_time_days is not None else ""
        out.print(f"{stock.part}  {stock.name}  [{stock.category or '-'}]{lead}")
        table = Table("depot", "name", "available", "on hand", "reserved")
        for d in order_depots(stock.depots, region, regions):
            table.add_row(d.depot, d.name, f"{d.available:g}", f"{d.on_hand:g}", f"{d.reserved:g}")
        out.print(table)
    if any(s is None for _, s in found):
        sys.exit(1)


def _run_jobs(app: Any, ref: str, kind: str, data: dict[str, Any], key: str) -> None:
    """Queue one job for the ticket, run what is due now, and report how the ticket's parts stand."""
    ticket = app.store.get_ticket(ref)
    if ticket is None:
        err.print(f"no ticket {ref}")
        sys.exit(1)
    work = WorkQueue(ticket.ref, ticket.id)
    work.enqueue(kind, data, key=key)
    with app.store.tx() as conn:
        write_work(conn, app.store, work)

    async def run() -> list[Any]:
        await app.pm.lifecycle("startup", app=app)  # the job handlers keep the host (the ERPs) from here
        try:
            return list(await app.work.drain(max_rounds=3))
        finally:
            await app.pm.lifecycle("shutdown", app=app)

    outcomes = [o for o in asyncio.run(run()) if o.name == kind]
    ticket = app.store.get_ticket(ref)
    items = (ticket.labels.get("parts") or {}).get("items") or []
    for item in items:
        res = item.get("reservation") or {}
        where = (
            f"{res.get('qty', 0):g} at {res.get('depot')} ({res.get('state')})" if res else "no reservation"
        )
        out.print(f"{ticket.ref} {item.get('part')}: {where}")
    if not outcomes or outcomes[-1].status != "done":
        why = outcomes[-1].error if outcomes else "not run"
        err.print(f"queued for the daemon ({why}); see 'svcbridge jobs list'")
        sys.exit(1)


MAX_QTY = 1000  # as an RMA's part: more is a purchase order, not a ticket's spare


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # FloatRange lets nan through (every comparison with it is False); it would reach the job's
    # JSON and the ERP (SQLite keeps NaN as NULL)
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a quantity", ctx=ctx, param=param)
    return value


@parts.command("reserve")
@click.argument("ref")
@click.argument("part")
@click.option(
    "--qty",
    type=click.FloatRange(min=0, min_open=True, max=MAX_QTY),
    callback=_finite,
    default=1,
    show_default=True,
)
@click.option("--depot", help="this depot (default: the nearest that has it)")
@click.option("--erp", "erp_name", help="which ERP (default: [plugins.parts] erp)")
@click.pass_context
def reserve(
    ctx: click.Context, ref: str, part: str, qty: float, depot: str | None, erp_name: str | None
) -> None:
    """Reserve PART for ticket REF (once: a repeated command finds the same reservation)."""
    app = _app(ctx)
    _erp(app, erp_name)
    data = {"parts": [part], "qty": qty, "depot": depot, "erp": erp_name, "reserve": True}
    _run_jobs(app, ref, "parts.lookup", data, key=f"cli:{ref}:{part}:{utcnow().isoformat()}")


@parts.command("release")
@click.argument("ref")
@click.argument("part", required=False)
@click.option("--reason", default="released by hand", show_default=True)
@click.pass_context
def release(ctx: click.Context, ref: str, part: str | None, reason: str) -> None:
    """Release ticket REF's open reservations (or only PART's): the part was not used."""
    app = _app(ctx)
    data = {"action": "release", "part": part, "reason": reason}
    _run_jobs(app, ref, "parts.settle", data, key=f"cli-release:{ref}:{part or '*'}:{utcnow().isoformat()}")
