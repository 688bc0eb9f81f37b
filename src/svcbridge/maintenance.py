"""The daemon's store maintenance: retention (``store/retention.py``) and blob gc, every
``[store.retention] every_hours``, in one replica at a time.

Durable like a timer: the time of the last run is a checkpoint in the store, so a restart (or a
``kill -9`` loop) neither runs it again early nor skips it; the ``maintenance`` lease lets one replica
run it, and another takes over when that one is gone. With no retention configured only gc runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from .models import utcnow
from .store import lease, retention

if TYPE_CHECKING:
    from .app import App

log = structlog.get_logger("svcbridge.store")
LEASE = "maintenance"
CHECK_EVERY = 60.0  # seconds between "is it time?" checks


def run_due(app: App, holder: str, force: bool = False) -> dict[str, Any] | None:
    """Run retention and gc if their time has come and this process may; what was removed, else None."""
    cfg = app.settings.store
    every = timedelta(hours=cfg.retention.every_hours)
    if lease.acquire(app.store, LEASE, holder, ttl=max(600.0, CHECK_EVERY * 3)) is not None:
        return None
    last = app.store.get_checkpoint("store", "maintenance_last_run")
    now = utcnow()
    if not force and last and now - datetime.fromisoformat(last) < every:
        return None
    counts: dict[str, Any] = retention.purge(app.store, cfg.retention)
    counts["gc_blobs"], counts["gc_bytes"] = retention.gc(app.store, cfg.blob_grace_hours * 3600)
    app.store.set_checkpoint("store", "maintenance_last_run", now.isoformat())
    log.info("store_maintenance", **counts)
    return counts


def check_blobs(app: App) -> str | None:
    """The newest journal rows' blobs are in this process's blob store; else what is wrong (replicas
    on several hosts with a blob_dir each, or a restore without the blobs). Logged at start."""
    from sqlalchemy import select

    from .store import rawstore
    from .store import schema as t

    blobs = app.store.blobs
    if blobs is None:
        return None
    q = (
        select(t.journal.c.blob_ref, t.journal.c.blob_parts)
        .where(t.journal.c.purged_at.is_(None), t.journal.c.size.is_not(None))
        .order_by(t.journal.c.id.desc())
        .limit(20)
    )
    with app.store.engine.connect() as conn:
        keys = [k for r in conn.execute(q).mappings() for k in rawstore.keys_of(r)]
    missing = [k for k in keys if not blobs.has(k)]
    if not missing:
        return None
    return (
        f"{len(missing)} of the {len(keys)} newest blobs the database names are not in "
        f"{blobs.where}: replicas must share one blob store "
        '([store] blobs = "s3", or blob_dir on shared storage)'
    )


async def maintenance_loop(app: App) -> None:
    holder = lease.new_holder("daemon")
    with contextlib.suppress(Exception):
        problem = await asyncio.to_thread(check_blobs, app)
        if problem:
            log.error("blob_store_incomplete", detail=problem)
    try:
        while not app.stopping.is_set():
            try:
                await asyncio.to_thread(run_due, app, holder)
            except Exception as exc:  # store outage: the next check tries again
                log.error("store_maintenance_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(app.stopping.wait(), timeout=CHECK_EVERY)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(lease.release, app.store, LEASE, holder)
