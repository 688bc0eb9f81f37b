"""``svcbridge jobs list|show|retry`` and ``svcbridge timers list|show|retry``: the durable work rows.

Attached to the main group by ``cli.py``; the App is built with the factory the main group puts in
``ctx.obj["app"]``, so this module does not import ``cli`` (no import cycle).

Both modules print through ``SafeConsole``: what they show comes from customers, helpdesks and
exceptions, so a string is never rich markup (``[/x] printer`` crashed ``tickets list``,
``[link=...]`` made a hidden hyperlink), never an emoji code, and control characters (ESC, OSC, the
other C0 and C1 codes but newline and tab) are shown as symbols instead of reaching the terminal.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` safe for a terminal: each control character but newline and tab becomes a visible
    symbol (ESC is shown as \u241b), so no escape or OSC sequence can act and nothing is hidden."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_picture, text.replace("\r\n", "\n"))


def _picture(m: re.Match[str]) -> str:
    code = ord(m.group())
    return chr(0x2400 + code) if code < 0x20 else "\u2421" if code == 0x7F else "\ufffd"


class SafeConsole(Console):
    """A rich console for text from outside: strings (printed or in table cells) are never markup,
    emoji codes or highlighted, and their control characters are shown, not sent (``clean``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(clean(text), **kwargs)


out = SafeConsole()
err = SafeConsole(stderr=True)
STATUSES = ("pending", "done", "fired", "dead", "parked", "cancelled")


def _app(ctx: click.Context) -> Any:
    root = ctx.find_root()
    return root.obj["app"](root)


def _ref(app: Any, ticket_id: Any) -> str:
    return app.store.ref_for(int(ticket_id)) if ticket_id is not None else "-"


def _dump(row: Any) -> str:
    return json.dumps(row, default=str, indent=2, ensure_ascii=False)


def _rows(ctx: click.Context, table: str) -> tuple[Any, Any]:
    app = _app(ctx)
    return app, getattr(app.work, table)


def _show(ctx: click.Context, table: str, what: str, row_id: int) -> None:
    """One row as JSON, with its ticket's reference; exit 1 when there is none."""
    app, rows = _rows(ctx, table)
    row = rows.get(row_id)
    if row is None:
        err.print(f"no {what} {row_id}")
        sys.exit(1)
    click.echo(_dump({**row, "ticket": _ref(app, row["ticket_id"])}))


def _retry(ctx: click.Context, table: str, what: str, row_id: int, done: str) -> None:
    """A row that is not pending runs again; exit 1 when there is none."""
    rows = _rows(ctx, table)[1]
    if not rows.retry(row_id):
        err.print(f"no {what} {row_id} that is not pending")
        sys.exit(1)
    out.print(f"{what} {row_id} {done}")


@click.group()
def jobs() -> None:
    """Durable jobs: lookups and other slow work plugins asked for, run after the ticket is stored."""


@jobs.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs_list(ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
    app, table_rows = _rows(ctx, "jobs")
    rows = table_rows.list(status, limit)
    if as_json:
        click.echo(_dump(rows))
        return
    table = Table("id", "kind", "key", "ticket", "status", "attempts", "next attempt", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["kind"],
            r["key"][:40],
            _ref(app, r["ticket_id"]),
            r["status"],
            str(r["attempts"]),
            str(r["next_attempt_at"])[:19] if r["status"] == "pending" else "",
            (r["last_error"] or "")[:60],
        )
    out.print(table)


@jobs.command("show")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_show(ctx: click.Context, job_id: int) -> None:
    """One job with its data, result and last error (JSON)."""
    _show(ctx, "jobs", "job", job_id)


@jobs.command("retry")
@click.argument("job_id", type=int)
@click.pass_context
def jobs_retry(ctx: click.Context, job_id: int) -> None:
    """Run a dead, parked or finished job again (its attempts start from zero)."""
    _retry(ctx, "jobs", "job", job_id, "queued")


@click.group()
def timers() -> None:
    """Durable timers: SLA warnings, escalations, surveys, reminders."""


@timers.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def timers_list(ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
    table_rows = _rows(ctx, "timers")[1]
    rows = table_rows.list(status, limit)
    if as_json:
        click.echo(_dump(rows))
        return
    table = Table("id", "name", "ticket", "due", "status", "fired", "late s", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["name"],
            r["scope"] or "-",
            str(r["due_at"])[:19],
            r["status"],
            str(r["fired_at"] or "")[:19],
            "" if r["late_s"] is None else f"{r['late_s']:.0f}",
            (r["last_error"] or "")[:60],
        )
    out.print(table)


@timers.command("show")
@click.argument("timer_id", type=int)
@click.pass_context
def timers_show(ctx: click.Context, timer_id: int) -> None:
    """One timer (JSON)."""
    _show(ctx, "timers", "timer", timer_id)


@timers.command("retry")
@click.argument("timer_id", type=int)
@click.pass_context
def timers_retry(ctx: click.Context, timer_id: int) -> None:
    """Arm a dead, fired or cancelled timer again; it fires at once (its due time is kept)."""
    _retry(ctx, "timers", "timer", timer_id, "armed")
