"""``svcbridge assets import|show|list|exclude|notify-owners``: the asset register from the command line.

Attached to the main group by ``cli.py`` (the App comes from the factory in ``ctx.obj["app"]``).

- ``import FILE [--dry-run]``: CSV or XLSX (``assetimport.py``); one line per row: added, changed
  (with the fields), unchanged or refused (with the reason); a refused row never stops the others.
  Exit status 1 when a row was refused, so a scheduled import is noticed.
- ``exclude SERIAL REASON``: a warranty exclusion (misuse, unauthorised repair, ...) on a unit, recorded
  in the register and, with ``--ticket``, as a ``warranty_exclusion`` event on that ticket that its
  helpdesks get as a note; the warranty plugin reads it on its next answer.
- ``notify-owners MODEL --ticket REF``: the batch-defect notice: one notification per contact owning a
  unit of that model, written to the outbox under the ticket (keys per contact: running it twice sends
  nothing twice), spread out at ``--per-minute`` (the rows' due times: the pace survives a restart;
  the outbox's per-recipient limits apply on top), each send recorded as an event.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from sqlalchemy import select, update

from . import changes
from .assetimport import ImportFileError, RowResult, merge, parse, read_rows
from .assets import EXCLUSION_REASONS, AssetRecord
from .cli_work import err, out
from .models import Notification, TicketEvent, utcnow
from .store import outbox as ob
from .store import schema
from .store.assets import AssetStore
from .work import TicketChange


def _app(ctx: click.Context) -> Any:
    root = ctx.find_root()
    return root.obj["app"](root)


def _register(ctx: click.Context) -> tuple[Any, AssetStore]:
    app = _app(ctx)
    return app, AssetStore(app.store)


@click.group()
def assets() -> None:
    """The asset register: units by serial, their parts, customer, contract and dates."""


@assets.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="report what would change, write nothing")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON lines")
@click.option(
    "--encoding", help="a CSV's encoding (default: UTF-8, else GB18030 or Big5, whichever reads plausibly)"
)
@click.pass_context
def assets_import(ctx: click.Context, file: Path, dry_run: bool, as_json: bool, encoding: str | None) -> None:
    """Add or update units from a CSV or XLSX file (a row per unit, or per part of a unit)."""
    register = _register(ctx)[1]
    try:
        parsed = parse(read_rows(file, encoding))
    except ImportFileError as exc:
        err.print(f"cannot import {file.name}: {exc}")
        sys.exit(2)
    results: list[RowResult] = list(parsed.refused)
    for serial, (line, fields, parts) in parsed.units.items():
        try:
            record = merge(register.get(serial), serial, fields, parts)
            outcome, changed = register.upsert(record, dry_run=dry_run)
        except Exception as exc:  # a row the store refuses (a value too long for a column)
            results.append(RowResult(line, serial, "refused", f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        detail = ", ".join(changed)
        results += [RowResult(n, serial, outcome, detail) for n in parsed.lines[serial]]
    results.sort(key=lambda r: r.line)
    _report(results, dry_run, as_json)
    if any(r.result == "refused" for r in results):
        sys.exit(1)


def _report(results: list[RowResult], dry_run: bool, as_json: bool) -> None:
    if as_json:
        for r in results:
            click.echo(json.dumps(r.__dict__, ensure_ascii=False))
    else:
        table = Table("line", "serial", "result", "detail")
        for r in results:
            table.add_row(str(r.line), r.serial, r.result, r.detail)
        out.print(table)
    counts = {
        k: sum(1 for r in results if r.result == k) for k in ("added", "changed", "unchanged", "refused")
    }
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    err.print(("dry run: " if dry_run else "") + f"rows: {summary}")


@assets.command("show")
@click.argument("serial")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def assets_show(ctx: click.Context, serial: str, as_json: bool) -> None:
    """One unit: its register entry, parts, exclusions and the last warranty answers kept for it."""
    _a, register = _register(ctx)
    record = register.get(serial)
    if record is None:
        err.print(f"no unit {serial!r} in the register")
        sys.exit(1)
    answers = {}
    for system in ("warranty", *(f"vendor:{v}" for v in ("dell", "lenovo", "hp", "cisco"))):
        got = register.last_answer(system, record.serial)
        if got:
            answers[system] = {"at": got[1].isoformat(), "answer": got[0]}
    data = {
        **record.model_dump(mode="json"),
        "exclusions": register.exclusions(record.serial),
        "answers": answers,
    }
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    _print_unit(record, data)


def _print_unit(record: AssetRecord, data: dict[str, Any]) -> None:
    for key in ("serial", "vendor", "model", "product_line", "customer", "site", "region", "contract"):
        out.print(f"{key:>16}: {data.get(key) or '-'}")
    out.print(f"{'timezone':>16}: {record.timezone}")
    out.print(f"{'invoice_date':>16}: {record.invoice_date or '-'}")
    out.print(f"{'production_date':>16}: {record.production_date or '-'}")
    out.print(f"{'contacts':>16}: {', '.join(record.contacts) or '-'}")
    parts = Table("category", "part number", "serial", "installed", "replaced from", "paid repair")
    for p in record.parts:
        parts.add_row(
            p.category,
            p.part_number,
            p.serial or "-",
            str(p.installed or "-"),
            p.replaced_from or "-",
            "yes" if p.paid_repair else "",
        )
    out.print(parts)
    for ex in data["exclusions"]:
        out.print(f"exclusion: {ex['reason']} ({ex['part'] or 'unit'}) by {ex['actor']} at {ex['at']}")
    warranty = data["answers"].get("warranty")
    if warranty:
        w = warranty["answer"]
        out.print(f"warranty: {w.get('status')} until {w.get('end') or '-'} (computed {warranty['at']})")


@assets.command("list")
@click.option("--customer")
@click.option("--model")
@click.option("--limit", type=int, default=200, show_default=True)
@click.pass_context
def assets_list(ctx: click.Context, customer: str | None, model: str | None, limit: int) -> None:
    """Units of the register, by serial."""
    _a, register = _register(ctx)
    table = Table("serial", "vendor", "model", "customer", "region", "invoice", "parts")
    for r in register.listing(limit=limit, customer=customer, model=model):
        table.add_row(
            r.serial,
            r.vendor or "-",
            r.model or "-",
            r.customer or "-",
            r.region or "-",
            str(r.invoice_date or "-"),
            str(len(r.parts)),
        )
    out.print(table)


@assets.command("exclude")
@click.argument("serial")
@click.argument("reason", type=click.Choice(EXCLUSION_REASONS))
@click.option("--part", help="a part category (default: the whole unit)")
@click.option(
    "--ticket", "ref", help="the ticket this decision belongs to (an event, a note to its helpdesks)"
)
@click.option("--note", help="why, for the trail")
@click.option("--actor", default="cli", show_default=True)
@click.pass_context
def assets_exclude(
    ctx: click.Context,
    serial: str,
    reason: str,
    part: str | None,
    ref: str | None,
    note: str | None,
    actor: str,
) -> None:
    """Apply a warranty exclusion to a unit (or one part category of it)."""
    app, register = _register(ctx)
    ticket = app.store.by_ref(ref) if ref else None
    if ref and ticket is None:
        err.print(f"no ticket {ref}")
        sys.exit(1)
    try:
        done = register.add_exclusion(serial, reason, actor=actor, part=part, note=note, ticket_ref=ref)
    except (KeyError, ValueError):
        err.print(f"no unit {serial!r} in the register")
        sys.exit(1)
    if ticket is not None:
        text = f"warranty exclusion: {reason} ({part or 'whole unit'}) on {done['serial']} by {actor}"
        change = TicketChange(
            labels={"warranty_exclusions": [*ticket.labels.get("warranty_exclusions", []), done]},
            note=text + (f": {note}" if note else ""),
            events=[TicketEvent(type="warranty_exclusion", actor=actor, data=done)],
        )
        with app.store.tx() as conn:
            changes.record(conn, app.store, ticket, change, plugin=None, origin=f"exclusion:{done['at']}")
    out.print(f"exclusion {reason} recorded on {done['serial']}" + (f" ({ref})" if ref else ""))


@assets.command("notify-owners")
@click.argument("model")
@click.option("--ticket", "ref", required=True, help="the batch-defect ticket the notices belong to")
@click.option("--channel", default="email", show_default=True, help="email, sms, ...")
@click.option("--subject", required=True)
@click.option("--body", required=True, help="the text (plain; never markup)")
@click.option(
    "--per-minute",
    type=click.IntRange(1, 6000),
    default=30,
    show_default=True,
    help="rate: the notices are spread out in the outbox at this many a minute",
)
@click.option("--dry-run", is_flag=True)
@click.pass_context
def assets_notify_owners(
    ctx: click.Context,
    model: str,
    ref: str,
    channel: str,
    subject: str,
    body: str,
    per_minute: int,
    dry_run: bool,
) -> None:
    """One notice to every contact owning a unit of MODEL, through the outbox (the batch-defect mailing)."""
    app, register = _register(ctx)
    ticket = app.store.by_ref(ref)
    if ticket is None:
        err.print(f"no ticket {ref}")
        sys.exit(1)
    contacts: dict[str, list[str]] = {}
    for unit in register.by_model(model):
        for c in unit.contacts:
            is_mail = "@" in c
            if (channel == "email") == is_mail:
                contacts.setdefault(c, []).append(unit.serial)
    if not contacts:
        err.print(f"no {channel} contact owns a unit of model {model!r}")
        sys.exit(1)
    notes = [
        Notification(
            channel=channel,
            template="batch_defect",
            to=to,
            subject=subject,
            body=body,
            data={"model": model, "serials": serials},
            automatic=True,
        )
        for to, serials in sorted(contacts.items())
    ]
    origin = f"owners:{model.lower()}:{channel}"  # names the model and channel, not the run
    keys = _not_queued(app, ticket, notes, origin)
    notes = list(keys.values())
    for n in notes:
        out.print(
            ("would send" if dry_run else "queued") + f" {channel} to {n.to} ({len(n.data['serials'])} units)"
        )
    if not notes:
        out.print("every owner was already notified")
    if dry_run or not notes:
        return
    events = [
        TicketEvent(type="batch_notice", actor="cli", data={"to": n.to, "channel": channel, "model": model})
        for n in notes
    ]
    change = TicketChange(
        notifications=notes, events=events, note=f"batch-defect notice for {model}: {len(notes)}"
    )
    now = utcnow()
    with app.store.tx() as conn:
        changes.record(conn, app.store, ticket, change, plugin=None, origin=origin)
        # the rate limit: the i-th notice is due i/per_minute minutes from now (the outbox keeps the pace
        # across restarts; its per-recipient limits still apply on top)
        for i, key in enumerate(keys):
            due = now + timedelta(seconds=60.0 * i / per_minute)
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.idempotency_key == key)
                .values(next_attempt_at=due)
            )
    last = 60.0 * (len(keys) - 1) / per_minute
    out.print(f"{len(keys)} notices queued, the last due in {last:.0f} s")


def _not_queued(app: Any, ticket: Any, notes: list[Notification], origin: str) -> dict[str, Notification]:
    """The notices whose outbox key does not exist yet (a second run sends and records nothing twice)."""
    keys = {
        key: n
        for n, (_t, key, _p) in zip(notes, ob.notification_rows(ticket, notes, f"chg:{origin}:"), strict=True)
    }
    with app.store.engine.connect() as conn:
        q = select(schema.outbox.c.idempotency_key).where(schema.outbox.c.idempotency_key.in_(list(keys)))
        done = {row[0] for row in conn.execute(q)}
    return {k: n for k, n in keys.items() if k not in done}
