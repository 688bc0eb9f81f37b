"""The ``svcbridge`` command line (click + rich).

Exit codes: 0 ok, 1 error, 2 configuration error (``check-config`` and every command that loads the
config), 75 (EX_TEMPFAIL) from ``ingest`` when the store is unavailable so an MTA retries later.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from . import __version__
from . import log as logmod
from .cli_work import SafeConsole
from .errors import ConfigError, StoreUnavailable
from .models import TRANSITIONS, RawMessage, StatusUpdate, TicketState, can_transition
from .settings import Settings, load_settings

EX_TEMPFAIL = 75
out = SafeConsole()  # customer text is never markup and never reaches the terminal raw (cli_work.py)
err = SafeConsole(stderr=True)


def _settings(ctx: click.Context) -> Settings:
    try:
        s = load_settings(ctx.obj["config"])
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)
    logmod.configure(s.log.format, _cli_level(ctx, s.log.level))
    logmod.add_secrets(s.secret_values())
    return s


_LEVELS = ("debug", "info", "warning", "error")


def _cli_level(ctx: click.Context, configured: str) -> str:
    """``run`` logs at the configured level; every other command warnings and errors only, unless
    ``-v`` (then at least INFO): a command's own output is what it prints, not the pipeline's log."""
    obj = ctx.find_root().obj or {}
    if obj.get("daemon"):
        return configured
    if obj.get("verbose"):
        return min(configured, "info", key=_LEVELS.index)
    return max(configured, "warning", key=_LEVELS.index)


def _app(ctx: click.Context, migrate: bool = True) -> Any:
    from .app import App

    settings = _settings(ctx)
    try:
        return App.build(settings, migrate=migrate)
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)


def _print_config_errors(exc: ConfigError) -> None:
    for path, msg in exc.errors:
        err.print(Text("config error", "red"), f"{path}: {msg}")


@click.group()
@click.option("--config", "config", envvar="SVCBRIDGE_CONFIG", default=None, help="TOML settings file")
@click.option("-v", "--verbose", is_flag=True, help="log INFO lines too (commands other than run)")
@click.version_option(__version__, prog_name="svcbridge")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """svcbridge: every customer message becomes one ticket in your helpdesk."""
    # "app" builds the App for command groups that live in their own modules (cli_work.py)
    ctx.obj = {"config": config, "app": _app, "verbose": verbose}


@main.command()
@click.option("--once", is_flag=True, help="process all waiting work, then exit (cron mode)")
@click.pass_context
def run(ctx: click.Context, once: bool) -> None:
    """Run the daemon (sources, pipeline, outbox, HTTP)."""
    # A SIGTERM during start-up (migrations, plugin set-up) is a clean stop too; serve() replaces this
    # handler with the graceful one once the loop runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx.obj["daemon"] = True  # logs at the configured level (INFO by default)
    from .memory import limit_arenas

    limit_arenas()  # before the threads start: their arenas are what grows (memory.py)
    app = _app(ctx)
    if once:
        res = asyncio.run(app.run_once())
        out.print(f"polled {res['polled']}, processed {res['processed']}")
        for source, holder in sorted(res["left"].items()):  # another process holds it (a daemon replica)
            out.print(f"left {source} to {holder}")
        return
    from .daemon import serve

    sys.exit(asyncio.run(serve(app)))


@main.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the settings and every plugin section; print each error with its TOML path (exit 2)."""
    from .app import collect_settings_models
    from .plugins import make_plugin_manager
    from .store import db as dbmod

    try:
        s = load_settings(ctx.obj["config"])
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)
    logmod.configure(s.log.format, _cli_level(ctx, s.log.level))
    pm = make_plugin_manager(plugins_dir=s.plugins_dir, blocked=s.blocked_plugins)
    models, errors = collect_settings_models(pm)
    errors += s.validate_plugins(models)
    # sinks exist once their plugins registered them from valid sections: only then is routing known
    errors += s.routing_errors({sink.name for _, sink in pm.register_objects("register_sinks", s)})
    try:
        dbmod.check_driver(s.db_url)
    except ConfigError as exc:
        errors += exc.errors
    if errors:
        _print_config_errors(ConfigError(errors))
        sys.exit(2)
    out.print(f"config ok ({s.config_path or 'built-in defaults'})")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins: name, version, hooks, status (loaded / blocked / failed with the reason)."""
    from .app import collect_settings_models
    from .plugins import make_plugin_manager

    s = _settings(ctx)
    pm = make_plugin_manager(plugins_dir=s.plugins_dir, blocked=s.blocked_plugins)
    models, _ = collect_settings_models(pm)
    for section, msg in s.validate_plugins(models):
        owner = next((n for n, i in pm.infos.items() if section.split(".")[1] in (n, n.split("_")[-1])), None)
        if owner and pm.infos[owner].status == "loaded":
            pm.infos[owner].status, pm.infos[owner].reason = "failed", f"{section}: {msg}"
    rows = [vars(i) for i in pm.infos.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("name", "version", "origin", "status", "hooks")
    for r in rows:
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        table.add_row(r["name"], r["version"], r["origin"], status, ", ".join(r["hooks"]))
    out.print(table)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply the Alembic migrations (also done on every start)."""
    from .store import db as dbmod

    s = _settings(ctx.find_root())
    try:
        engine = dbmod.make_engine(s.db_url)
    except ConfigError as exc:
        _print_config_errors(exc)
        sys.exit(2)
    from .store.openblobs import open_blobs

    # 0012 moves stored bytes into the blob store
    dbmod.upgrade(engine, blobs=open_blobs(s.store, s.blob_dir))
    out.print(f"database at revision {dbmod.current_revision(engine)}")


@main.command()
@click.argument("file", type=click.File("rb"))
@click.option("--channel", default="email", show_default=True)
@click.option("--source", default="ingest", show_default=True)
@click.pass_context
def ingest(ctx: click.Context, file: Any, channel: str, source: str) -> None:
    """Run one raw message (FILE or - for stdin) through the pipeline and print the ticket reference."""
    try:
        data = file.read()
    except OSError as exc:
        err.print(f"cannot read input: {exc}")
        sys.exit(EX_TEMPFAIL)
    try:
        app = _app(ctx)
        raw = RawMessage(
            channel=channel, source=source, external_id=hashlib.sha256(data).hexdigest(), raw=data
        )
        res = app.store.journal_insert(raw)
    except Exception as exc:  # store down, disk full, locked: the MTA keeps the mail and retries
        err.print(f"store unavailable, try again later: {type(exc).__name__}")
        sys.exit(EX_TEMPFAIL)
    # From here on the message is safe in the journal: exit 0 whatever processing does. With a daemon
    # running on the same store, it holds the pipeline lease and processes the entry (PipelineBusy).
    try:
        outcome = _process(app, res.journal_id) if res.new or _pending(app, res) else None
        _close(app)  # the lease goes back before delivery: the next mail's ingest need not wait
        if outcome is None:
            row = app.store.journal_row(res.journal_id)
            ref = app.store.ref_for(row["ticket_id"]) if row and row["ticket_id"] else "-"
            out.print(ref)
        elif outcome.status == "quarantined":
            err.print(f"quarantined: {outcome.reason}")
        else:
            out.print(outcome.ticket_ref or "-")
        asyncio.run(app.delivery.drain())
    except StoreUnavailable as exc:
        err.print(f"journaled; processing deferred: {exc}")
    finally:
        _close(app)


def _process(app: Any, journal_id: int) -> Any:
    """The pipeline up to this entry, here: after releasing leases of dead local processes (an
    ingest killed mid-way), waiting a little for another one-shot command, never for a daemon."""
    from .app import ONESHOT_WAIT, pid_alive
    from .store import lease

    lease.release_orphans(app.store, pid_alive)
    return asyncio.run(app.pipeline.process(journal_id, wait=ONESHOT_WAIT))


def _close(app: Any) -> None:
    """Give the pipeline lease back at once: a daemon on the same store need not wait for it."""
    try:
        app.pipeline.close()
    except Exception as exc:  # the lease runs out by itself
        err.print(f"note: {type(exc).__name__}: {exc}")


def _pending(app: Any, res: Any) -> bool:
    row = app.store.journal_row(res.journal_id)
    return bool(row and row["status"] == "pending")


# ---------------------------------------------------------------------------------------------- tickets
@main.group()
def tickets() -> None:
    """Tickets in svcbridge's own store (the ``local`` helpdesk)."""


@tickets.command("list")
@click.option("--state", type=click.Choice([s.value for s in TicketState]))
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets_list(ctx: click.Context, state: str | None, limit: int, as_json: bool) -> None:
    app = _app(ctx.find_root())
    items = app.store.list_tickets(state, limit)
    if as_json:
        click.echo(json.dumps([t.model_dump(mode="json") for t in items], indent=2, ensure_ascii=False))
        return
    table = Table("ref", "state", "prio", "channel", "subject", "contact", "created")
    for t in items:
        table.add_row(
            t.ref,
            t.state.value,
            f"P{int(t.priority)}",
            t.channel,
            t.subject[:60],
            t.contact.email or t.contact.phone or "",
            t.created_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@tickets.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def tickets_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    app = _app(ctx.find_root())
    t = app.store.get_ticket(ref)
    if t is None:
        err.print(f"no ticket {ref}")
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(t.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    out.print(Text(t.ref, "bold"), f"{t.state.value} P{int(t.priority)} via {t.channel}")
    out.print(f"subject: {t.subject}", highlight=False, markup=False)
    out.print(f"contact: {t.contact.model_dump(exclude_none=True)}", highlight=False, markup=False)
    if t.sla_policy or t.deadlines:  # the SLA engine's policy and the deadlines still open
        by_time = sorted(t.deadlines.items(), key=lambda x: x[1])
        due = ", ".join(f"{k} {v.isoformat(timespec='minutes')}" for k, v in by_time) or "-"
        fault = t.fault_level.value if t.fault_level else "-"
        out.print(f"sla: {t.sla_policy or '-'}  fault: {fault}  due: {due}", highlight=False, markup=False)
    if t.category or t.labels:
        found = json.dumps(t.labels, ensure_ascii=False)
        out.print(f"category: {t.category or '-'}  labels: {found}", highlight=False, markup=False)
    for ev in t.events:
        out.print(
            f"  {ev.at.isoformat(timespec='seconds')} {ev.type} by {ev.actor}", highlight=False, markup=False
        )
    for ln in t.links:
        out.print(f"  link {ln.system}/{ln.kind}: {ln.value}", highlight=False, markup=False)
    for a in t.attachments:
        out.print(
            f"  attachment {a.safe_name} {a.size} B {a.content_type} ({a.original_name})",
            highlight=False,
            markup=False,
        )


@tickets.command("set-state")
@click.argument("ref")
@click.argument("state", type=click.Choice([s.value for s in TicketState]))
@click.option("--reply", default=None, help="public reply sent to the customer")
@click.pass_context
def tickets_set_state(ctx: click.Context, ref: str, state: str, reply: str | None) -> None:
    """Change a ticket's state as an agent of the local helpdesk; the customer is notified."""
    app = _app(ctx.find_root())
    target = TicketState(state)
    t = app.store.get_ticket(ref)
    if t is None:
        err.print(f"no ticket {ref}")
        sys.exit(1)
    if not can_transition(t.state, target):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[t.state]))
        err.print(f"{ref} cannot go from {t.state.value} to {state} (allowed: {allowed}); nothing was sent")
        sys.exit(1)
    upd = StatusUpdate(ticket_ref=ref, system="local", state=target, public_reply=reply, actor="cli")
    ok = asyncio.run(app.pipeline.apply_status_update(upd))
    now = app.store.get_ticket(ref)
    if not ok or now is None or now.state != target:  # changed meanwhile by someone else
        err.print(f"no change applied to {ref} (it is {now.state.value if now else 'gone'})")
        sys.exit(1)
    asyncio.run(app.delivery.drain())
    out.print(f"{ref} -> {state}")


# ---------------------------------------------------------------------------------------------- quarantine
@main.group()
def quarantine() -> None:
    """Messages a stage could not process, kept with the reason."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    app = _app(ctx.find_root())
    rows = app.store.quarantine_list()
    if as_json:
        click.echo(
            json.dumps(
                [{k: v for k, v in r.items() if k != "traceback"} for r in rows], default=str, indent=2
            )
        )
        return
    table = Table("id", "journal", "source", "stage", "plugin", "error")
    for r in rows:
        table.add_row(
            str(r["id"]), str(r["journal_id"]), r["source"], r["stage"], r["plugin"] or "", r["error"][:80]
        )
    out.print(table)


@quarantine.command("show")
@click.argument("qid", type=int)
@click.pass_context
def quarantine_show(ctx: click.Context, qid: int) -> None:
    app = _app(ctx.find_root())
    r = app.store.quarantine_get(qid)
    if r is None:
        err.print(f"no quarantine entry {qid}")
        sys.exit(1)
    for k in (
        "id",
        "journal_id",
        "source",
        "external_id",
        "channel",
        "stage",
        "plugin",
        "error",
        "at",
        "resolved",
    ):
        out.print(f"{k}: {r[k]}", highlight=False, markup=False)
    out.print(r["traceback"] or "", highlight=False, markup=False)


@quarantine.command("retry")
@click.argument("qid", type=int)
@click.pass_context
def quarantine_retry(ctx: click.Context, qid: int) -> None:
    """Put the message back into the pipeline (after a fix) and process it now."""
    app = _app(ctx.find_root())
    try:
        jid = app.store.quarantine_release(qid, "retry")
    except KeyError as exc:
        err.print(str(exc.args[0]))
        sys.exit(1)
    try:
        outcome = _process(app, jid)
    except StoreUnavailable as exc:  # PipelineBusy: the running daemon processes it
        out.print(f"pending: {exc}", markup=False)
        return
    finally:
        _close(app)
    out.print(f"{outcome.status} {outcome.ticket_ref or outcome.reason}", markup=False)


@quarantine.command("drop")
@click.argument("qid", type=int)
@click.pass_context
def quarantine_drop(ctx: click.Context, qid: int) -> None:
    """Give up on a message (it stays in the journal, marked dropped)."""
    app = _app(ctx.find_root())
    try:
        app.store.quarantine_release(qid, "drop")
    except KeyError as exc:
        err.print(str(exc.args[0]))
        sys.exit(1)
    out.print(f"dropped {qid}")


# ---------------------------------------------------------------------------------------------- outbox
@main.group()
def outbox() -> None:
    """Deliveries to helpdesks and notifications to customers."""


@outbox.command("list")
@click.option("--dead", is_flag=True, help="only dead letters")
@click.option("--parked", is_flag=True, help="only items parked after an auth failure")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def outbox_list(ctx: click.Context, dead: bool, parked: bool, as_json: bool) -> None:
    app = _app(ctx.find_root())
    status = "dead" if dead else "parked" if parked else None
    rows = app.delivery.outbox.list(status)
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    table = Table("id", "ticket", "kind", "target", "status", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            app.store.ref_for(r["ticket_id"]),
            r["kind"],
            r["target"],
            r["status"],
            str(r["attempts"]),
            (r["last_error"] or "")[:60],
        )
    out.print(table)


@outbox.command("replay")
@click.argument("item_id", type=int)
@click.pass_context
def outbox_replay(ctx: click.Context, item_id: int) -> None:
    """Queue a dead, parked or done item again (same idempotency key)."""
    app = _app(ctx.find_root())
    if not app.delivery.outbox.replay(item_id):
        err.print(f"no dead/parked/done item {item_id}")
        sys.exit(1)
    out.print(f"item {item_id} queued")


# ---------------------------------------------------------------------------------------------- jobs, timers
from .cli_work import jobs, timers  # noqa: E402  (groups defined beside, attached here)

main.add_command(jobs)
main.add_command(timers)
from .cli_users import users  # noqa: E402

main.add_command(users)
from .cli_assets import assets  # noqa: E402

main.add_command(assets)
from .cli_store import contacts, purge, store  # noqa: E402

main.add_command(purge)
main.add_command(contacts)
main.add_command(store)
from .cli_sla import followups, report, sla  # noqa: E402  (SLA milestones, follow-up calls, reports)

main.add_command(sla)
main.add_command(followups)
main.add_command(report)
from .cli_parts import parts  # noqa: E402  (spare parts from the ERP)

main.add_command(parts)
from .cli_rma import rma  # noqa: E402  (RMAs to vendors)

main.add_command(rma)
