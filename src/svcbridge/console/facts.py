"""What the overview shows and what ``/readyz`` reports: the same facts, computed in one place.

``problems`` is the truth behind readiness: a routed sink that is not configured, notices waiting for a
channel no notifier serves, a parked target, a source failing for longer than its threshold, a plugin
that failed to load (whatever it serves is silently missing). ``alerts``
are what delivery and jobs raised besides. Each names what to do (``hint``: English, the key the
console translates). Everything here is a handful of grouped counts: cheap enough for a
page that polls every few seconds all day.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..models import Target, utcnow
from ..store import schema as t

if TYPE_CHECKING:
    from ..app import App

HINTS = {
    "sink_not_configured": "configure the sink's plugin section (or fix [routing]); see Plugins for a failed "
    "plugin; its items wait in the outbox and go out once it exists",
    "no_notifier": "configure the channel's outbound side (e.g. [plugins.email.outbound]) or [notifications] "
    "fallback_channels, restart, then replay the parked notices",
    "target_parked": "fix the target's credentials or address, then unpark it on the Outbox page "
    "(or restart): its items go out again",
    "source_failing": "check the source's server, address and credentials; the error says what failed",
    "alert": "see the error; the Outbox or Jobs list shows the affected items",
    "plugin_failed": "fix the plugin's settings (the reason says what), restart; until then what it "
    "serves (a source, a helpdesk, a channel) does nothing",
}


@dataclass
class Problem:
    kind: str
    subject: str
    detail: str
    hint: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# an exception class name at the start of an error text or after a prefix ("failing for 3 min: OSError: ...")
_ERROR_CLASS = re.compile(
    r"\b([A-Z][A-Za-z0-9_]*(?:Error|Exception|Timeout|Failed|Refused|Denied|NotReady|Unavailable))\b"
)


def error_class(text: str | None) -> str | None:
    """The exception class an error text names, else None: what anonymous /readyz callers may see. The
    rest of the text quotes what a server said (a mailbox, a phone number, a customer's subject)."""
    found = _ERROR_CLASS.search(text or "")
    return found.group(1) if found else None


def public(p: Problem) -> dict[str, str | None]:
    """A problem as anonymous /readyz shows it: kind, component, error class; no detail, no hint."""
    return {"kind": p.kind, "subject": p.subject, "error": error_class(p.detail)}


def outbox_by_target(app: App) -> dict[str, dict[str, Any]]:
    """target -> {pending, parked, dead, last_error}; done items are not counted (they are history)."""
    q = (
        select(t.outbox.c.target, t.outbox.c.status, func.count(), func.max(t.outbox.c.id))
        # IN, not != "done": the (status, next_attempt_at) index skips the done history (millions of rows)
        .where(t.outbox.c.status.in_(("pending", "parked", "dead")))
        .group_by(t.outbox.c.target, t.outbox.c.status)
    )
    out: dict[str, dict[str, Any]] = {}
    last_ids: list[int] = []
    with app.store.engine.connect() as conn:
        for target, status, n, last_id in conn.execute(q):
            row = out.setdefault(target, {"pending": 0, "parked": 0, "dead": 0, "last_error": None})
            row[status] = int(n)
            if status in ("parked", "dead", "pending"):
                last_ids.append(int(last_id))
        if last_ids:  # the newest error per target, from the newest item of each state
            errs = conn.execute(
                select(t.outbox.c.target, t.outbox.c.last_error)
                .where(t.outbox.c.id.in_(last_ids), t.outbox.c.last_error.is_not(None))
                .order_by(t.outbox.c.id)
            )
            for target, err in errs:
                out[target]["last_error"] = err
    return out


def problems(app: App, by_target: dict[str, dict[str, Any]] | None = None) -> list[Problem]:
    """Why the daemon is not ready; an empty list when it is."""
    by_target = outbox_by_target(app) if by_target is None else by_target
    found: list[Problem] = []
    sinks = app.delivery.sinks
    for path, msg in app.settings.routing_errors(set(sinks)):
        found.append(Problem("sink_not_configured", path, msg, HINTS["sink_not_configured"]))
    for target, row in sorted(by_target.items()):
        waiting = row["pending"] + row["parked"]
        tgt = Target(target)
        if tgt.is_notify and tgt.channel not in app.delivery.notifiers and waiting:
            found.append(Problem("no_notifier", target, f"{waiting} notices waiting", HINTS["no_notifier"]))
        elif not tgt.is_notify and target not in sinks and waiting:
            found.append(
                Problem(
                    "sink_not_configured", target, f"{waiting} items waiting", HINTS["sink_not_configured"]
                )
            )
        elif row["parked"]:
            detail = f"{row['parked']} parked: {row['last_error'] or ''}".strip()
            found.append(Problem("target_parked", target, detail, HINTS["target_parked"]))
    for name, info in sorted(app.pm.infos.items()):  # "blocked" is the operator's choice, not a fault
        if info.status == "failed":
            found.append(Problem("plugin_failed", name, info.reason, HINTS["plugin_failed"]))
    threshold = app.settings.console.source_fail_threshold
    now = time.time()
    for name, h in sorted(app.health.items()):
        if not h.ok and h.failing_since is not None and now - h.failing_since >= threshold:
            mins = int((now - h.failing_since) // 60)
            found.append(
                Problem(
                    "source_failing", name, f"failing for {mins} min: {h.detail}", HINTS["source_failing"]
                )
            )
    return found


def alerts(app: App, found: list[Problem]) -> list[Problem]:
    """Alerts delivery and jobs raised that no problem already covers. Shown, but not a reason to be
    unready: a job kind failing now and then must not take the webhooks out of a load balancer."""
    seen = {p.subject for p in found}
    items = sorted({**app.delivery.alerts, **app.work.alerts}.items())
    return [Problem("alert", key, msg, HINTS["alert"]) for key, msg in items if key not in seen]


def sources(app: App) -> list[dict[str, Any]]:
    """Each source: ok / failing, last success, last error, backoff, lag (seconds since last success)."""
    now = time.time()
    threshold = app.settings.console.source_fail_threshold
    rows = []
    for name in sorted(set(app.sources) | set(app.health)):
        h = app.health.get(name)
        ok = h.ok if h else None
        row: dict[str, Any] = {
            "name": name,
            "state": "unknown" if h is None else "ok" if h.ok else "failing",
            "last_success": h.last_success if h else None,
            "last_error": None if h is None or h.ok else h.detail,
            "last_error_at": h.last_error_at if h else None,
            "failures": h.failures if h else 0,
            "retry_in": max(0.0, h.retry_at - now) if h and h.retry_at else None,
            "lag": now - h.last_success if h and h.last_success else None,
            "facts": _source_facts(app.sources.get(name)),
        }
        if ok is False and h and h.failing_since and now - h.failing_since >= threshold:
            row["state"] = "down"  # failing past its threshold: /readyz says not ready
        rows.append(row)
    return rows


def _source_facts(src: Any) -> dict[str, Any]:
    """A source's own facts for the overview (optional ``health_facts()``, e.g. an OAuth token's
    expiry); a source whose method fails still shows its state."""
    fn = getattr(src, "health_facts", None)
    if not callable(fn):
        return {}
    try:
        got = fn()
    except Exception as exc:  # a plugin bug must not take the overview down
        return {"health_facts_error": f"{type(exc).__name__}: {exc}"}
    return dict(got) if isinstance(got, dict) else {}


def breakers(app: App) -> dict[str, str]:
    """Targets whose circuit breaker is open (half-opens in N s) or counting failures."""
    out = {}
    for target, b in app.delivery.breakers.items():
        left = b.allow()
        if left > 0:
            out[target] = f"open ({int(left)} s)"
        elif b.failures:
            out[target] = f"closed, {b.failures} failures"
    return out


def overview(app: App) -> dict[str, Any]:
    by_target = outbox_by_target(app)
    now = utcnow()
    # whole clock hours (the last one still running): the buckets change when a ticket arrives or an
    # hour begins, not continuously, so an unchanged overview stays byte for byte the same (ETag, 304)
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    with app.store.engine.connect() as conn:
        journal = {
            r[0]: int(r[1])
            for r in conn.execute(
                select(t.journal.c.status, func.count())
                .where(t.journal.c.status.in_(("pending", "quarantined")))
                .group_by(t.journal.c.status)
            )
        }
        oldest = conn.execute(
            select(func.min(t.journal.c.received_at)).where(t.journal.c.status == "pending")
        ).scalar()
        quarantined = conn.execute(
            select(func.count()).select_from(t.quarantine).where(t.quarantine.c.resolved.is_(False))
        ).scalar_one()
        # one row of 24 cumulative counts ("created since hour h"), counted by the database over the
        # created_at index: fetching a busy day's timestamps into Python cost more than all the rest
        starts = [since + timedelta(hours=h) for h in range(24)]
        cumulative = conn.execute(
            select(*[func.count().filter(t.tickets.c.created_at >= s) for s in starts]).where(
                t.tickets.c.created_at >= since
            )
        ).one()
    counts = [int(c or 0) for c in cumulative] + [0]
    hours = [counts[h] - counts[h + 1] for h in range(24)]
    probs = problems(app, by_target)
    return {
        "ready": not probs,
        "problems": [p.as_dict() for p in probs],
        "alerts": [p.as_dict() for p in alerts(app, probs)],
        "sources": sources(app),
        "journal_pending": journal.get("pending", 0),
        "journal_oldest_age": (now - t.aware(oldest)).total_seconds() if oldest is not None else None,
        "quarantined": int(quarantined),
        "outbox": by_target,
        "breakers": breakers(app),
        "tickets_per_hour": hours,
        "tickets_24h": counts[0],  # not count(*) of all tickets: that scans the table every refresh
    }
