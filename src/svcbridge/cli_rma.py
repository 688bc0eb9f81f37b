"""``svcbridge rma open|list|show|set``: RMAs of tickets from the command line.

- ``open REF --vendor V --part P [--part P:SERIAL] [--fault TEXT] [--number N]``: a new RMA in
  ``requested`` (or ``approved`` with ``--number``), a ``rma`` event and a note to the ticket's helpdesks;
- ``list [--state S] [--vendor V] [--ticket REF] [--json]``;
- ``show ID`` as JSON;
- ``set ID STATE [--number N] [--carrier C --tracking T] [--note TEXT]``: one transition; a move the
  lifecycle forbids (back from ``closed``, ``shipped_to_vendor`` before ``requested``...) exits 1.

The reminder when a vendor has not moved an RMA is ``[plugins.rma] reminder_days`` (the ``svcbridge_rma``
plugin fires it); the commands (re)set it like the plugin does. Attached to the main group by ``cli.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from typing import Any

import click
from rich.table import Table

from .cli_work import SafeConsole
from .rma import RmaPart, RmaState
from .store.jobs import write_work
from .work import WorkQueue

out = SafeConsole()
err = SafeConsole(stderr=True)
STATES = [s.value for s in RmaState]


def _app(ctx: click.Context) -> Any:
    root = ctx.find_root()
    return root.obj["app"](root)


def _remind(app: Any) -> timedelta | None:
    days = getattr(app.plugin_config("rma"), "reminder_days", None)
    return timedelta(days=days) if days else None


def _part(text: str) -> RmaPart:
    part, _, serial = text.partition(":")
    return RmaPart(part=part.strip(), serial=serial.strip() or None)


@click.group()
def rma() -> None:
    """RMAs: faulty parts back to the vendor, replacements back to us."""


@rma.command("open")
@click.argument("ref")
@click.option("--vendor", required=True, help="the maker (DELL, CISCO, HUAWEI...)")
@click.option("--part", "parts", multiple=True, required=True, help="PART or PART:SERIAL, repeatable")
@click.option("--fault", help="what is wrong with it")
@click.option("--number", help="the vendor's RMA number when it is already known")
@click.pass_context
def rma_open(
    ctx: click.Context, ref: str, vendor: str, parts: tuple[str, ...], fault: str | None, number: str | None
) -> None:
    """Open an RMA for ticket REF."""
    app = _app(ctx)
    try:
        got = app.rmas.open(
            ref, vendor, [_part(p) for p in parts], fault=fault, source="cli", remind_after=_remind(app)
        )
        if number:
            got = (
                app.rmas.move(
                    got.id, RmaState.APPROVED, source="cli", number=number, remind_after=_remind(app)
                )
                or got
            )
    except (LookupError, ValueError) as exc:
        err.print(str(exc))
        sys.exit(1)
    out.print(got.summary())
    mail = getattr(app.plugin_config("rma"), "mail", None)
    if got.vendor in (getattr(mail, "vendors", None) or {}):
        _request(app, got.ticket_ref, got.id)


def _request(app: Any, ref: str, rma_id: int) -> None:
    """Ask the rma plugin's job to mail the request to the vendor's mailbox (outbox: once), now."""
    work = WorkQueue(ref, app.store.id_for_ref(ref))
    work.enqueue("rma.request", {"rma": rma_id}, key=f"rma-request:{rma_id}")
    with app.store.tx() as conn:
        write_work(conn, app.store, work)

    async def run() -> list[Any]:
        await app.pm.lifecycle("startup", app=app)
        try:
            found = list(await app.work.drain(max_rounds=3))
            await app.delivery.drain()  # the mail itself, through the outbox
            return found
        finally:
            await app.pm.lifecycle("shutdown", app=app)

    done = [o for o in asyncio.run(run()) if o.name == "rma.request"]
    if done and done[-1].status == "done":
        out.print(f"RMA {rma_id}: request mailed")
    else:
        err.print("the request mail is queued for the daemon; see 'svcbridge jobs list'")


@rma.command("list")
@click.option("--state", type=click.Choice(STATES))
@click.option("--vendor")
@click.option("--ticket", "ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def rma_list(
    ctx: click.Context, state: str | None, vendor: str | None, ref: str | None, as_json: bool
) -> None:
    app = _app(ctx)
    rows = app.rmas.by_ticket(ref) if ref else app.rmas.list(RmaState(state) if state else None, vendor)
    if ref and (state or vendor):
        rows = [
            r for r in rows if (not state or r.state == state) and (not vendor or r.vendor == vendor.upper())
        ]
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in rows], ensure_ascii=False, indent=2))
        return
    table = Table("id", "ticket", "vendor", "number", "state", "tracking", "parts", "updated")
    for r in rows:
        table.add_row(
            str(r.id),
            r.ticket_ref,
            r.vendor,
            r.number or "",
            r.state.value,
            f"{r.carrier or ''} {r.tracking or ''}".strip(),
            ", ".join(p.part for p in r.parts),
            r.updated_at.isoformat(timespec="minutes"),
        )
    out.print(table)


@rma.command("show")
@click.argument("rma_id", type=int)
@click.pass_context
def rma_show(ctx: click.Context, rma_id: int) -> None:
    got = _app(ctx).rmas.get(rma_id)
    if got is None:
        err.print(f"no RMA {rma_id}")
        sys.exit(1)
    click.echo(json.dumps(got.model_dump(mode="json"), ensure_ascii=False, indent=2))


@rma.command("set")
@click.argument("rma_id", type=int)
@click.argument("state", type=click.Choice(STATES))
@click.option("--number")
@click.option("--carrier")
@click.option("--tracking")
@click.option("--note")
@click.pass_context
def rma_set(
    ctx: click.Context,
    rma_id: int,
    state: str,
    number: str | None,
    carrier: str | None,
    tracking: str | None,
    note: str | None,
) -> None:
    """Move RMA_ID to STATE (with the vendor's number, the carrier and tracking number)."""
    app = _app(ctx)
    try:
        got = app.rmas.move(
            rma_id,
            RmaState(state),
            source="cli",
            number=number,
            carrier=carrier,
            tracking=tracking,
            note=note,
            remind_after=_remind(app),
        )
    except (LookupError, ValueError) as exc:
        err.print(str(exc))
        sys.exit(1)
    out.print(got.summary() if got else f"RMA {rma_id}: nothing changed")
