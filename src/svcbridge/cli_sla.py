"""``svcbridge sla milestone|override``, ``svcbridge followups`` and ``svcbridge report``: the SLA trail.

The SLA engine itself is a plugin (``svcbridge_sla``); the core never imports it. These commands write
what a person reports into the ticket's trail (an ``sla_milestone`` event with the real time, a
``followup_call`` event) and ask for the engine's ``sla.recompute`` job by name, in one transaction:
the job recomputes deadlines, records what was met and moves the timers. Without the plugin the job
waits (``svcbridge jobs list``) and the event is still in the trail. Reports are read from the trail
(``reports/``), so any past month can be recomputed.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from .cli_work import SafeConsole
from .models import TicketEvent, utcnow
from .store.jobs import enqueue_job
from .store.repo import Store

out = SafeConsole()
err = SafeConsole(stderr=True)
RECOMPUTE = "sla.recompute"  # the SLA plugin's job kind (a name, not an import)
MILESTONES = ("acknowledge", "response", "callback", "solution", "onsite", "restored", "resolved")
OUTCOMES = ("reached", "no_answer", "satisfied", "unsatisfied", "callback_requested")


def _app(ctx: click.Context) -> Any:
    root = ctx.find_root()
    return root.obj["app"](root)


def _when(value: str | None, tz: str = "UTC") -> datetime:
    """``--at``: ISO 8601 with an offset (``2026-03-09T11:30+08:00``); without one it is a wall-clock
    time in ``tz``, the deployment's ``timezone`` (what an engineer in Shanghai types is Shanghai time)."""
    if not value:
        return utcnow()
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"not an ISO time: {value!r} (e.g. 2026-03-09T11:30+08:00)") from exc
    return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))


def record_event(store: Store, ref: str, event: TicketEvent, job_key: str) -> bool:
    """Write ``event`` on ticket ``ref`` and ask for the SLA recomputation; False: no such ticket."""
    tid = store.id_for_ref(ref)
    if tid is None or store.get_ticket(tid, full=False) is None:
        return False
    with store.tx() as conn:
        store.add_event(conn, tid, event)
        enqueue_job(conn, RECOMPUTE, f"{ref}:{job_key}"[:300], tid, {})
    return True


def record_milestone(store: Store, ref: str, milestone: str, at: datetime, actor: str = "cli") -> bool:
    """A milestone with its real time (``at``), as a technician or agent reported it."""
    if milestone not in MILESTONES:
        raise ValueError(f"milestone {milestone!r}: one of {', '.join(MILESTONES)}")
    data = {"milestone": milestone, "at": at.isoformat(), "source": actor}
    ev = TicketEvent(type="sla_milestone", at=utcnow(), actor=actor, data=data)
    return record_event(store, ref, ev, f"ms:{milestone}:{at.isoformat()}")


@click.group()
def sla() -> None:
    """Service-level milestones reported by people (on site, restored, resolved ...)."""


@sla.command("milestone")
@click.argument("ref")
@click.argument("milestone", type=click.Choice(MILESTONES))
@click.option(
    "--at",
    "at",
    default=None,
    help="real time, ISO 8601 (default now), e.g. 2026-03-09T11:30+08:00; without an offset: [timezone]",
)
@click.option("--by", "by", default="cli", help="who reports it (technician's name)")
@click.pass_context
def sla_milestone(ctx: click.Context, ref: str, milestone: str, at: str | None, by: str) -> None:
    """Record that MILESTONE happened on ticket REF at its real time."""
    app = _app(ctx)
    when = _when(at, app.settings.timezone)
    if when > utcnow():
        err.print(f"{when.isoformat()} is in the future")
        sys.exit(2)
    if not record_milestone(app.store, ref, milestone, when, actor=f"cli:{by}"[:200]):
        err.print(f"no ticket {ref}")
        sys.exit(1)
    out.print(f"{ref}: {milestone} at {when.isoformat(timespec='minutes')} recorded")


@click.command("followups")
@click.option("--due", is_flag=True, help="only calls due now")
@click.option(
    "--record", "record", nargs=2, default=None, metavar="REF OUTCOME", help=f"one of {', '.join(OUTCOMES)}"
)
@click.option("--note", default="", help="what the customer said (with --record)")
@click.pass_context
def followups(ctx: click.Context, due: bool, record: tuple[str, str] | None, note: str) -> None:
    """The follow-up calls the contracts promise after a repair; --record REF OUTCOME logs one."""
    from .reports.trail import followup_calls

    app = _app(ctx)
    if record:
        ref, outcome = record
        if outcome not in OUTCOMES:
            err.print(f"outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
            sys.exit(2)
        ev = TicketEvent(type="followup_call", actor="cli", data={"outcome": outcome, "note": note[:2000]})
        if not record_event(app.store, ref, ev, f"call:{utcnow().isoformat()}"):
            err.print(f"no ticket {ref}")
            sys.exit(1)
        out.print(f"{ref}: call {outcome}")
        return
    from rich.table import Table

    tz = app.settings.timezone
    table = Table("ticket", "customer", "contact", f"resolved ({tz})", f"call due ({tz})", "status")
    for c in followup_calls(app.store, utcnow(), due_only=due):
        table.add_row(
            c.ref, c.customer or "-", c.contact, _local(c.resolved_at, tz), _local(c.due_at, tz), c.status
        )
    out.print(table)


def _local(iso: str, tz: str) -> str:
    """A stored time (UTC ISO) as the deployment's wall clock: cut to minutes, an ISO string showed
    the UTC time without its offset."""
    try:
        return datetime.fromisoformat(iso).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso[:16]


@click.command("report")
@click.argument("kind", type=click.Choice(["sla", "faults", "satisfaction"]))
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--customer", default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "html", "json"]), default="table")
@click.option("--output", "output", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--tz", default=None, help="time zone of the month, e.g. Asia/Shanghai (default: [timezone])")
@click.pass_context
def report(
    ctx: click.Context,
    kind: str,
    month: str,
    customer: str | None,
    fmt: str,
    output: Path | None,
    tz: str | None,
) -> None:
    """A monthly report computed from the event trail: SLA compliance, faults or satisfaction."""
    from .reports import build, render

    app = _app(ctx)
    try:
        data = build(app.store, kind, month, customer, tz or app.settings.timezone)
    except ValueError as exc:
        err.print(str(exc))
        sys.exit(2)
    text = render(data, fmt)
    if fmt == "table" and output is None:
        out.print(text)
    elif output is not None:
        output.write_text(text, encoding="utf-8")
        out.print(f"written {output}")
    else:
        click.echo(text, nl=not text.endswith("\n"))
