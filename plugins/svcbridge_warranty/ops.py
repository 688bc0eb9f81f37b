"""The warranty plugin's durable jobs and notices: vendor lookups, repeat / batch rules, agents' commands.

Jobs run after the ticket is committed (never inside intake), retried with backoff, their answer
stored once on the ticket (a ``ticket_updated`` event, a note to its helpdesks):

- ``warranty.vendor:<vendor>``: the vendor's answer (``vendors.py``), cached per serial for the
  vendor's ``ttl`` in the store (``Host.assets.keep_answer``). Each vendor has a circuit breaker; while
  it is down (or the breaker open) the last known answer is used, **marked stale**, and a re-check job
  is queued; without one the job fails and is retried (the failure is an alert on ``/readyz`` and
  ``svcbridge_jobs_total``): never a silent "out of warranty". One kind per vendor, so a vendor whose
  credentials are refused parks only its own jobs.
- ``warranty.rules``: repeat failure (same unit and category within ``repeat_days``: flag
  ``replace_unit``, notice to the service manager) and batch defect (same model and category from
  ``batch_customers`` distinct customers within ``batch_days``: label ``batch_defect``, alert to
  quality; ``svcbridge assets notify-owners`` then writes to every owner).
- ``warranty.command``: an agent's ``#category`` / ``#exclude`` note from the helpdesk.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import structlog

from svcbridge import (
    EXCLUSION_REASONS,
    Host,
    Job,
    Notification,
    NotReady,
    Ticket,
    TicketChange,
    TicketEvent,
    WorkQueue,
    utcnow,
)

from .rules import today_in, unit_answer
from .settings import Contact, WarrantySettings
from .vendors import CLIENTS, Breaker, VendorClient, VendorDown

log = structlog.get_logger("svcbridge.warranty")
VENDORS = tuple(CLIENTS)
VENDOR_JOB = "warranty.vendor"  # + ":<vendor>"
RULES_JOB = "warranty.rules"
COMMAND_JOB = "warranty.command"
SALES_JOB = "warranty.sales"  # keyed by the ticket: sales told once of a follow-up's out of warranty
BATCH_ALERT_JOB = "warranty.batch_alert"  # keyed by model, category and window: one alert
_state: dict[str, Any] = {}


def configure(app: Host | None, cfg: WarrantySettings | None) -> None:
    """Keep the Host (its ``assets``) and settings for the jobs; build one client and breaker per vendor.
    ``configure(None, None)`` at shutdown drops the Host; the settings stay for ``status_updated``."""
    kept = _state.get("cfg")
    _state.clear()
    if app is None or cfg is None:
        if kept is not None:
            _state["cfg"] = kept
        return
    allow = tuple(getattr(app.settings, "outbound_allow", ()) or ())
    _state.update(app=app, cfg=cfg, clients={}, breakers={})
    for name, vs in cfg.vendors.items():
        if vs.enabled:
            _state["clients"][name] = CLIENTS[name](name, vs, allow=allow)
            _state["breakers"][name] = Breaker(vs.breaker_threshold, vs.breaker_cooldown)


def current() -> tuple[Host, WarrantySettings]:
    if "app" not in _state:
        raise NotReady("the warranty plugin has not started yet")
    return _state["app"], _state["cfg"]


def current_cfg() -> WarrantySettings | None:
    return _state.get("cfg")


def remember(cfg: WarrantySettings) -> None:
    """The settings as the App was built with them (``status_updated`` has no settings argument)."""
    _state["cfg"] = cfg


def vendor_kind(vendor: str) -> str:
    return f"{VENDOR_JOB}:{vendor}"


# ---------------------------------------------------------------------------------------------- vendor
async def vendor_job(job: Job, work: WorkQueue) -> TicketChange | None:
    app, cfg = current()
    vendor, serial = job.data["vendor"], job.data["serial"]
    client: VendorClient = _state["clients"][vendor]
    breaker: Breaker = _state["breakers"][vendor]
    ttl = cfg.vendors[vendor].ttl
    ticket = job.ticket
    # the contract's calendar day: the unit's zone as the local rules answered it, else the default
    local = (ticket.labels.get("warranty") or {}) if ticket is not None else {}
    today = today_in(str(local.get("timezone") or cfg.default_timezone), utcnow())
    system = f"vendor:{vendor}"
    cached = app.assets.last_answer(system, serial)
    if cached and (utcnow() - cached[1]).total_seconds() < ttl and not job.data.get("recheck"):
        kept = {**_judged(cached[0], today), "cached_at": cached[1].isoformat()}
        return _vendor_change(ticket, cfg, kept, vendor)
    now = time.monotonic()
    try:
        if not breaker.allow(now):  # refused: no new failure (that would move the cool-down on)
            raise VendorDown(f"{vendor}: circuit open for {breaker.retry_in(now):.0f} s more")
        try:
            answer = await client.ask(serial, today, job.data.get("part_number"))
        except VendorDown:
            breaker.failure(time.monotonic())  # a failed trial after the cool-down opens it again
            raise
        except BaseException:
            breaker.release()
            raise
    except VendorDown as exc:
        log.warning(
            "vendor_lookup_failed", vendor=vendor, serial=serial, error=str(exc), breaker_open=breaker.open
        )
        # nothing to fall back on, or this is the re-check (the stale answer is on the ticket already):
        # retried with backoff, the kind shows as failing
        if cached is None or job.data.get("recheck"):
            raise NotReady(str(exc), retry_after=breaker.retry_in(time.monotonic()) or None) from exc
        stale = {
            **_judged(cached[0], today),
            "stale": True,
            "as_of": cached[1].isoformat(),
            "error": str(exc)[:200],
        }
        # the stale answer now, and ONE re-check job that retries until the vendor is back
        work.enqueue(vendor_kind(vendor), {**job.data, "recheck": 1}, key=f"{job.key}:recheck")
        return _vendor_change(ticket, cfg, stale, vendor)
    breaker.success()
    app.assets.keep_answer(system, serial, answer)
    return _vendor_change(ticket, cfg, {**answer, "at": utcnow().isoformat()}, vendor)


def _judged(answer: dict[str, Any], today: date) -> dict[str, Any]:
    """A kept answer's status on ``today``: the end date (the last covered day) may have passed since
    the vendor was asked."""
    end = answer.get("end")
    if not end:
        return answer
    return {**answer, "status": "in" if today <= date.fromisoformat(str(end)[:10]) else "out"}


def _vendor_change(
    ticket: Ticket | None, cfg: WarrantySettings, answer: dict[str, Any], vendor: str
) -> TicketChange:
    labels: dict[str, Any] = {"vendor_warranty": answer}
    stale = " (STALE: vendor unavailable, last known answer)" if answer.get("stale") else ""
    until = answer.get("end") or "-"
    note = f"{vendor} warranty for {answer['serial']}: {answer['status']}, until {until}{stale}"
    notices: list[Notification] = []
    local = (ticket.labels.get("warranty") or {}) if ticket is not None else {}
    # the vendor decides only where the local rules could not (no register entry or no start date)
    undecided = ticket is not None and local.get("status") in (None, "unknown") and not answer.get("stale")
    if (
        undecided
        and ticket is not None
        and answer["status"] == "out"
        and not ticket.labels.get("paid_service")
    ):
        labels["paid_service"] = {"why": "out", "expired_parts": ["unit"], "source": answer["source"]}
        if cfg.alerts.sales is not None:
            notices.append(sales_notice(ticket, cfg.alerts.sales, answer, answer["source"]))
    return TicketChange(labels=labels, note=note, notifications=notices)


# ---------------------------------------------------------------------------------------------- notices
def sales_notice(ticket: Ticket, to: Contact, answer: dict[str, Any], source: str) -> Notification:
    """The out-of-warranty notice for the sales contact: unit, customer, expired parts."""
    expired = ", ".join(answer.get("expired_parts") or ["unit"])
    body = (
        f"Ticket {ticket.ref}: unit {ticket.asset.serial or '-'}"
        f" ({ticket.asset.vendor or ''} {ticket.asset.model or ''})"
        f" of {ticket.customer or 'an unknown customer'} is out of warranty ({source}).\n"
        f"Expired or excluded: {expired}. Warranty end: {answer.get('end') or '-'}.\n"
        "The ticket is flagged for paid service."
    )
    return _notice(to, "warranty_out", f"[{ticket.ref}] out of warranty: {ticket.asset.serial or ''}", body)


def sales_job(job: Job, work: WorkQueue) -> TicketChange | None:
    """Out of warranty found on a follow-up: the sales notice, once per ticket (the job's key)."""
    _app, cfg = current()
    ticket = job.ticket
    if ticket is None or cfg.alerts.sales is None or not ticket.labels.get("paid_service"):
        return None
    notice = sales_notice(ticket, cfg.alerts.sales, ticket.labels.get("warranty") or {}, "rules")
    return TicketChange(notifications=[notice])


def _notice(
    to: Contact, template: str, subject: str, body: str, data: dict[str, Any] | None = None
) -> Notification:
    return Notification(
        channel=to.channel,
        template=template,
        to=to.to,
        subject=subject,
        body=body,
        data={"language": to.language, **(data or {})},
        automatic=False,
    )


# ---------------------------------------------------------------------------------------------- rules
def rules_job(job: Job, work: WorkQueue) -> TicketChange | None:
    app, cfg = current()
    ticket = job.ticket
    if ticket is None:
        return None
    serial, category = job.data["serial"], job.data.get("category")
    notes: list[str] = []
    if job.data.get("entitlement") and ticket.labels.get("warranty"):
        notes.append(
            unit_line(ticket)
            + "\n"
            + entitlement_text(serial, ticket.labels["warranty"], ticket.labels.get("paid_service"))
        )
        # the last answer per unit: ``svcbridge assets show`` prints it
        app.assets.keep_answer("warranty", serial, {**ticket.labels["warranty"], "ticket": ticket.ref})
    if not category:
        return TicketChange(note=notes[0]) if notes else None
    since = ticket.created_at - timedelta(days=max(cfg.alerts.repeat_days, cfg.alerts.batch_days))
    history = [f for f in app.assets.register.faults(category, since) if f["ticket"] != ticket.ref]
    labels: dict[str, Any] = {}
    events: list[TicketEvent] = []
    notices: list[Notification] = []
    repeat_since = ticket.created_at - timedelta(days=cfg.alerts.repeat_days)
    earlier = [
        f
        for f in history
        if f["serial"] == serial and f["at"] >= repeat_since and f["at"] <= ticket.created_at
    ]
    if earlier:
        info = {
            "serial": serial,
            "category": category,
            "earlier": [f["ticket"] for f in earlier][:20],
            "days": cfg.alerts.repeat_days,
        }
        labels["replace_unit"] = info
        events.append(TicketEvent(type="repeat_failure", data=info))
        notes.append(
            f"repeat failure: {category} on {serial} again (earlier: {', '.join(info['earlier'])}):"
            " replace the unit"
        )
        if cfg.alerts.service_manager is not None:
            notices.append(
                _notice(
                    cfg.alerts.service_manager,
                    "repeat_failure",
                    f"[{ticket.ref}] replace unit {serial}",
                    f"Unit {serial} of {ticket.customer or '-'} failed again ({category}) within "
                    f"{cfg.alerts.repeat_days} days: {', '.join(info['earlier'])} and {ticket.ref}. "
                    "The contract promises a replacement unit after repeated failures.",
                    info,
                )
            )
    model = ticket.asset.model
    if model:
        batch_since = ticket.created_at - timedelta(days=cfg.alerts.batch_days)
        same = [f for f in history if (f["model"] or "").lower() == model.lower() and f["at"] >= batch_since]
        customers = {f["customer"] or f["serial"] for f in same} | {ticket.customer or serial}
        if len(customers) >= cfg.alerts.batch_customers:
            info = {
                "model": model,
                "category": category,
                "customers": len(customers),
                "days": cfg.alerts.batch_days,
                "tickets": sorted({f["ticket"] for f in same} | {ticket.ref})[:50],
            }
            labels["batch_defect"] = info
            events.append(TicketEvent(type="batch_defect", data=info))
            notes.append(
                f"batch defect: {category} on {model} from {len(customers)} customers"
                f" in {cfg.alerts.batch_days} days"
            )
            if cfg.alerts.quality is not None:
                # one alert per model, category and window, whichever ticket's job comes first: the key
                # of a job row is unique in the store, so reports that arrive together (each job sees
                # the others' tickets, none "crossed the line" alone) or two runners alert once
                window = int(ticket.created_at.timestamp() // 86400) // max(1, cfg.alerts.batch_days)
                key = f"{model.strip().lower()}:{category}:{window}"
                work.enqueue(BATCH_ALERT_JOB, {**info, "ticket": ticket.ref}, key=key)
    if not (labels or notes):
        return None
    return TicketChange(labels=labels, events=events, notifications=notices, note="\n".join(notes))


def batch_alert_job(job: Job, work: WorkQueue) -> TicketChange | None:
    """The batch-defect alert to quality, once per model, category and window (the job's key)."""
    _app, cfg = current()
    ticket, info = job.ticket, job.data
    if ticket is None or cfg.alerts.quality is None:
        return None
    model, category = info["model"], info["category"]
    notice = _notice(
        cfg.alerts.quality,
        "batch_defect",
        f"batch defect: {model} / {category}",
        f"{info['customers']} customers reported {category} on {model} within"
        f" {info['days']} days ({', '.join(info['tickets'])}). To notify every"
        f" owner: svcbridge assets notify-owners '{model}' --ticket {ticket.ref}"
        " --subject ... --body ...",
        {k: v for k, v in info.items() if k != "ticket"},
    )
    return TicketChange(notifications=[notice])


def unit_line(ticket: Ticket) -> str:
    """Which unit, whose, which fault: the first line of the entitlement note."""
    a = ticket.asset
    what = " ".join(x for x in (a.vendor, a.model) if x)
    return (
        f"Unit {a.serial}"
        + (f" ({what})" if what else "")
        + f", customer {ticket.customer or '-'}"
        + (f", site {a.site}" if a.site else "")
        + f", fault category {ticket.category or '-'}"
    )


def entitlement_text(serial: str, w: dict[str, Any], paid: dict[str, Any] | None) -> str:
    """The local rules' answer as a note for the agents (an RT comment, a Zammad internal article)."""
    head = (
        f"Warranty ({w.get('source', 'rules')}) for {serial}: {str(w.get('status')).upper()}"
        f" until {w.get('end') or '-'} (rule {w.get('rule')}, start {w.get('start') or '-'}"
        f" from {w.get('start_source')}, {w.get('timezone', '')})"
    )
    parts = [
        f"- {p['category']}{' ' + p['part_number'] if p.get('part_number') else ''}: {p['status']}"
        f" until {p.get('end') or '-'} ({p['rule']})"
        + (f", excluded: {p['exclusion']}" if p.get("exclusion") else "")
        for p in w.get("parts") or []
    ]
    tail = [f"PAID SERVICE: {paid.get('why')} ({', '.join(paid.get('expired_parts') or [])})"] if paid else []
    return "\n".join([head, *parts, *tail])


# ---------------------------------------------------------------------------------------------- commands
async def command_job(job: Job, work: WorkQueue) -> TicketChange | None:
    app, cfg = current()
    ticket = job.ticket
    if ticket is None:
        return None
    by = str(job.data.get("by") or "agent")
    # built as plain values and made a TicketChange at the end: the runner keeps only the fields SET
    labels: dict[str, Any] = {}
    events: list[TicketEvent] = []
    notes: list[str] = []
    category = job.data.get("category")
    if category:
        labels["category_override"] = {"category": category, "by": by, "system": job.data.get("system")}
        events.append(
            TicketEvent(type="category_override", actor=by, data={"from": ticket.category, "to": category})
        )
        notes.append(f"fault category set to {category} by {by}")
        if ticket.asset.serial:  # the repeat / batch rules count the agent's category
            data = {"serial": ticket.asset.serial, "category": category}
            work.enqueue(RULES_JOB, data, key=f"{ticket.ref}:{ticket.asset.serial}:{category}")
    ex = job.data.get("exclude")
    if ex and ticket.asset.serial:
        if ex["reason"] not in EXCLUSION_REASONS:
            notes.append(f"unknown exclusion {ex['reason']!r}: one of {', '.join(EXCLUSION_REASONS)}")
        else:
            entry = {**ex, "actor": by, "ticket": ticket.ref, "at": utcnow().isoformat(), "note": None}
            excluded = [*ticket.labels.get("warranty_exclusions", []), entry]
            labels["warranty_exclusions"] = excluded
            events.append(TicketEvent(type="warranty_exclusion", actor=by, data=entry))
            notes.append(f"warranty exclusion {ex['reason']} ({ex['part'] or 'whole unit'}) by {by}")
            record = await app.assets.get(ticket.asset.serial)
            if record is not None:
                own = app.assets.register.exclusions(record.serial)
                answer = unit_answer(record, cfg.terms_model(), ticket.created_at, own + excluded)
                labels["warranty"] = answer
                if answer["status"] in ("out", "excluded"):
                    labels["paid_service"] = {
                        "why": answer["status"],
                        "expired_parts": answer["expired_parts"],
                    }
    if not (labels or events or notes):
        return None
    return TicketChange(
        labels=labels, events=events, category=category or None, note="\n".join(notes) or None
    )
