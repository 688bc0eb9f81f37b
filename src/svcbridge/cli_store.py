"""``svcbridge purge``, ``svcbridge contacts erase`` and ``svcbridge store usage|gc|move-blobs``.

``store move-blobs --to s3|local`` moves the blobs between the local directory and the S3 bucket
(``store/blobmove.py``: verified one by one, resumable).

Attached to the main group by ``cli.py``. ``purge`` applies ``[store.retention]`` once (the daemon
does it every ``every_hours``, ``maintenance.py``); ``--dry-run`` counts. ``contacts erase`` carries
out a data-protection erasure (``store/erasure.py``) and records who did it (``--by``, else $USER).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import Any

import click

from .cli_work import err, out


def _app(ctx: click.Context) -> Any:
    root = ctx.find_root()
    return root.obj["app"](root)


def _print(counts: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(counts, default=str))
        return
    for k, v in counts.items():
        if k != "helpdesk_links":
            out.print(f"{k:22} {v}")


@click.command("purge")
@click.option("--dry-run", is_flag=True, help="count what would be removed, remove nothing")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def purge(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Apply the retention policy ([store.retention]) now; never touches undelivered or quarantined data."""
    from .store import retention

    app = _app(ctx)
    policy = app.settings.store.retention
    counts: dict[str, Any] = retention.purge(app.store, policy, dry_run=dry_run)
    grace = app.settings.store.blob_grace_hours * 3600
    counts["gc_blobs"], counts["gc_bytes"] = retention.gc(app.store, grace, dry_run=dry_run)
    if dry_run:
        counts["dry_run"] = True
    _print(counts, as_json)


@click.group("contacts")
def contacts() -> None:
    """A person's data in the store."""


@contacts.command("erase")
@click.argument("address")
@click.option("--by", "by", default=None, help="who carries out the request (default: $USER)")
@click.option("--force", is_flag=True, help="also drop the person's undelivered outbox rows")
@click.option("--dry-run", is_flag=True, help="show what would be erased")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def contacts_erase(
    ctx: click.Context, address: str, by: str | None, force: bool, dry_run: bool, as_json: bool
) -> None:
    """Erase ADDRESS (e-mail or phone): messages, attachments, contact data; an anonymous trail stays."""
    from .store.erasure import ErasureRefused, erase

    operator = by or os.environ.get("USER") or getpass.getuser()
    app = _app(ctx)
    try:
        result = erase(app.store, address, operator, force=force, dry_run=dry_run)
    except ErasureRefused as exc:
        err.print(f"refused: {exc}")
        sys.exit(1)
    except ValueError as exc:
        err.print(str(exc))
        sys.exit(2)
    if not as_json:
        _print(result, False)
        for link in result["helpdesk_links"]:  # copies there are the operator's to erase
            out.print(f"also held by {link['system']} ({link['kind']} {link['value']}) for {link['ticket']}")
        if not dry_run:
            out.print(f"erased by {operator}")
        return
    _print(result, True)


@click.group("store")
def store() -> None:
    """The blob store: usage, garbage collection, moving old rows' bytes out."""


@store.command("usage")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def store_usage(ctx: click.Context, as_json: bool) -> None:
    """Blobs held, the database's size, and the raw mail volume the journal holds."""
    from sqlalchemy import func, select

    from .store import schema as t

    app = _app(ctx)
    blobs, blob_bytes = app.store.blobs.usage() if app.store.blobs is not None else (0, 0)
    with app.store.engine.connect() as conn:
        size = func.coalesce(t.journal.c.size, func.length(t.journal.c.raw), 0)
        mail = conn.execute(select(func.count(), func.coalesce(func.sum(size), 0))).one()
        db_bytes = None
        if app.store.engine.dialect.name == "sqlite":
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
            db_bytes = (pages - free) * (conn.exec_driver_sql("PRAGMA page_size").scalar() or 4096)
        else:
            db_bytes = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    counts = {
        "journal_rows": int(mail[0]),
        "mail_bytes": int(mail[1]),
        "blobs": blobs,
        "blob_bytes": blob_bytes,
        "database_bytes": db_bytes,
    }
    if mail[1]:
        counts["growth"] = round((blob_bytes + (db_bytes or 0)) / int(mail[1]), 3)
    _print(counts, as_json)


@store.command("gc")
@click.option("--dry-run", is_flag=True)
@click.option("--grace-hours", type=float, default=None, help="default [store] blob_grace_hours")
@click.pass_context
def store_gc(ctx: click.Context, dry_run: bool, grace_hours: float | None) -> None:
    """Remove blobs no row names (orphans of a crash, freed by retention) older than the grace period."""
    from .store import retention

    app = _app(ctx)
    grace = (grace_hours if grace_hours is not None else app.settings.store.blob_grace_hours) * 3600
    n, size = retention.gc(app.store, grace, dry_run=dry_run)
    out.print(f"{'would remove' if dry_run else 'removed'} {n} blobs, {size} bytes")


@store.command("move-blobs")
@click.option(
    "--to", "to", type=click.Choice(["local", "s3"]), default=None,
    help="move every blob from the other store into this one ([store] blob_dir <-> [store.s3])",
)
@click.option("--keep-source", is_flag=True, help="with --to: copy, leave the source as it is")
@click.pass_context
def store_move_blobs(ctx: click.Context, to: str | None, keep_source: bool) -> None:
    """Move bytes still kept in rows into the blob store; with --to, move blobs between local and S3."""
    from .store.blobmove import move_between, run_chunks

    app = _app(ctx)
    assert app.store.blobs is not None
    if to is None:
        j, a = run_chunks(app.store.engine.begin, app.store.blobs)
        out.print(f"moved {j} raw messages and {a} attachments into the blob store")
        return
    from .store.openblobs import open_blobs

    s = app.settings
    try:
        src = open_blobs(s.store, s.blob_dir, "s3" if to == "local" else "local")
        dst = open_blobs(s.store, s.blob_dir, to)
    except ValueError as exc:
        err.print(str(exc))
        sys.exit(2)
    res = move_between(
        src, dst, keep_source=keep_source,
        progress=lambda r: err.print(f"{r.moved + r.already} blobs so far, {len(r.failed)} failed"),
    )
    verb = "copied" if keep_source else "moved"
    out.print(f"{verb} {res.moved} blobs ({res.bytes} bytes) from {src.where} to {dst.where}; "
              f"{res.already} were there already")
    for line in res.failed:
        err.print(f"not moved: {line}")
    if res.failed:
        sys.exit(1)
    if to != s.store.blobs:
        out.print(f'now set [store] blobs = "{to}", restart, and run this again for blobs written meanwhile')
