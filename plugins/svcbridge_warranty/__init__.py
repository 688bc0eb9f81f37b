"""Assets and warranty at intake: which unit, whose, in or out of warranty per part, repeat or batch.

Active when ``[plugins.assets]`` is in the configuration (``docs/warranty.md``). Hooks:

- ``classify_ticket``: the **fault category** from keyword rules (``category.py``), unless an agent
  overrode it; the **serial** from subject, body, attachment names and OCR text (``serials.py``):
  every candidate kept in the label ``serial_candidates``, the one the register (or the
  ``asset_lookup`` hook: an ERP) knows preferred; its unit lands on ``draft.asset`` and its customer
  on ``draft.customer`` when the sender is unknown.
- ``enrich_ticket``: the **local warranty answer** (``rules.py``) per part and for the unit as the
  label ``warranty`` (out -> label ``paid_service``), then durable jobs, never a remote call inline:
  ``warranty.vendor`` (the vendor's answer, ``vendors.py``) and ``warranty.rules`` (repeat failure,
  batch defect: ``ops.py``).
- ``compose_notifications``: the notice to the sales contact for an out-of-warranty unit.
- ``status_updated``: an agent's ``#category NAME`` or ``#exclude REASON [PART]`` note from the
  helpdesk becomes a ``warranty.command`` job: an event, the label, the warranty answered again.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from svcbridge import (
    AssetLookup,
    ChannelDirectory,
    EventType,
    Host,
    JobKind,
    Notification,
    Settings,
    StatusUpdate,
    Ticket,
    TicketDraft,
    TicketEvent,
    WorkQueue,
    hookimpl,
    utcnow,
)

from . import ops
from .category import categorize, override_command
from .identify import IDENTIFY_JOB, identify, identify_job, warranty_labels
from .settings import WarrantySettings

__version__ = "0.1.0"
SECTION = "assets"  # [plugins.assets]: "warranty" is the plugin guide's example section
_EXCLUDE = re.compile(r"^\s*[/#]exclude\s+(?P<reason>[a-z_]+)(?:\s+(?P<part>[a-z0-9_-]+))?\s*$", re.I | re.M)


def _cfg(settings: Settings | None) -> WarrantySettings | None:
    cfg = settings.plugin_config(SECTION) if settings is not None else None
    return cfg if isinstance(cfg, WarrantySettings) else None


@hookimpl
def register_settings(register: Any) -> None:
    register(SECTION, WarrantySettings)


@hookimpl
def register_job_kinds(register: Any, settings: Settings) -> None:
    cfg = _cfg(settings)
    if cfg is None:
        return
    ops.remember(cfg)
    for vendor, vs in cfg.vendors.items():
        # one kind per vendor: refused credentials park that vendor's lookups, not the others'
        kind = JobKind(
            ops.vendor_kind(vendor),
            ops.vendor_job,
            timeout=vs.timeout * 3,
            max_attempts=vs.max_attempts,
            backoff_initial=vs.retry_initial,
            backoff_max=vs.retry_max,
        )
        register(kind)
    register(JobKind(ops.RULES_JOB, ops.rules_job, timeout=30.0))
    register(JobKind(ops.COMMAND_JOB, ops.command_job, timeout=30.0))
    register(JobKind(ops.BATCH_ALERT_JOB, ops.batch_alert_job, timeout=30.0))
    register(JobKind(ops.SALES_JOB, ops.sales_job, timeout=30.0))
    # a fax's OCR takes a while: checked again with backoff, up to about an hour
    register(
        JobKind(
            IDENTIFY_JOB, identify_job, timeout=30.0, max_attempts=15, backoff_initial=10.0, backoff_max=600.0
        )
    )


@hookimpl
def startup(app: Host) -> None:
    cfg = app.plugin_config(SECTION)
    if isinstance(cfg, WarrantySettings):
        ops.configure(app, cfg)


@hookimpl
def shutdown(app: Host) -> None:
    ops.configure(None, None)


@hookimpl
async def classify_ticket(
    draft: TicketDraft, ticket: Ticket | None, settings: Settings, assets: AssetLookup
) -> None:
    cfg = _cfg(settings)
    if cfg is None or draft.automated:
        return
    # a follow-up categorises only a ticket that has none yet: "the screen is fine now" must not turn a
    # power fault into a display one; an agent's category (category_override) is never touched
    if ticket is None or not (ticket.category or ticket.labels.get("category_override")):
        category, hits = categorize(draft.subject, draft.body_text, cfg.categories)
        if category:
            draft.category = category
            draft.labels["category_keywords"] = hits
    if ticket is not None and ticket.asset.serial:
        return  # the unit is known; a follow-up does not move the ticket to another one
    await _identify(draft, cfg, settings, assets)


async def _identify(
    draft: TicketDraft, cfg: WarrantySettings, settings: Settings, assets: AssetLookup
) -> None:
    texts = [("subject", draft.subject), ("body", draft.body_text)]
    texts += [("attachment", a.original_name) for a in draft.attachments if a.original_name]
    if isinstance(draft.labels.get("ocr_text"), str):
        texts.append(("ocr", draft.labels["ocr_text"]))
    found = await identify(texts, cfg, settings.ticket_prefix, assets)
    if found is None:
        return
    draft.labels["serial_candidates"] = found.candidates
    record = found.record
    if record is None:
        if found.serial:
            draft.asset.serial = found.serial
            draft.asset.vendor = draft.asset.vendor or found.vendor
            draft.asset.model = draft.asset.model or found.model
        return
    for name, value in record.as_asset().model_dump(exclude_none=True).items():
        setattr(draft.asset, name, value)
    draft.labels["asset"] = found.unit_label()
    if record.customer:
        if draft.customer is None:
            draft.customer = record.customer  # the unit says whose it is when the sender does not
        elif draft.customer != record.customer:
            draft.labels["asset_customer_mismatch"] = {"sender": draft.customer, "unit": record.customer}


@hookimpl
async def enrich_ticket(
    draft: TicketDraft, ticket: Ticket | None, settings: Settings, jobs: WorkQueue, assets: AssetLookup
) -> None:
    cfg = _cfg(settings)
    if cfg is None or draft.automated:
        return
    serial = draft.asset.serial or (ticket.asset.serial if ticket is not None else None)
    if not serial:
        if ticket is None and draft.channel == "fax" and not _chained_after_ocr(settings):
            jobs.enqueue(IDENTIFY_JOB, {"prefix": settings.ticket_prefix})  # waits for the fax's OCR text
        return
    record = await assets.get(serial)
    vendor = ((record.vendor if record else None) or draft.asset.vendor or "").strip().lower()
    if record is not None:
        at = draft.received_at or (ticket.created_at if ticket is not None else None) or utcnow()
        extra = ticket.labels.get("warranty_exclusions", []) if ticket is not None else []
        draft.labels.update(await warranty_labels(record, cfg, at, assets, extra))
        if draft.labels["warranty"]["end"]:
            draft.asset.warranty_until = _midnight(draft.labels["warranty"]["end"])
        if "paid_service" in draft.labels and cfg.alerts.tell_customer and ticket is None:
            draft.labels["paid_service_notice"] = True  # the acknowledgement templates say so
        if "paid_service" in draft.labels and ticket is not None and not ticket.labels.get("paid_service"):
            # found on a follow-up: compose_notifications tells sales only for a new ticket; one job
            # per ticket (its key) tells them after the commit, once
            jobs.enqueue(ops.SALES_JOB, {}, key=f"{ticket.ref}:sales")
    if vendor in ops.VENDORS and vendor in cfg.vendors and cfg.vendors[vendor].enabled:
        data: dict[str, Any] = {"vendor": vendor, "serial": serial}
        if record is not None and record.extra.get("product_number"):  # HP: serials are unique only with it
            data["part_number"] = str(record.extra["product_number"])
        jobs.enqueue(ops.vendor_kind(vendor), data, key=f"{jobs.ticket_ref}:{vendor}:{serial}")
    category = draft.category or (ticket.category if ticket is not None else None)
    # after the commit: the entitlement as a note for the helpdesk, repeat failure and batch defect
    data = {"serial": serial, "category": category, "entitlement": "warranty" in draft.labels}
    jobs.enqueue(ops.RULES_JOB, data, key=f"{jobs.ticket_ref}:{serial}:{category or '-'}")


@hookimpl
def compose_notifications(
    ticket: Ticket,
    event: TicketEvent,
    draft: TicketDraft | None,
    settings: Settings,
    channels: ChannelDirectory,
) -> list[Notification] | None:
    cfg = _cfg(settings)
    if cfg is None or event.type != EventType.RECEIVED or (draft is not None and draft.automated):
        return None
    if not ticket.labels.get("paid_service") or cfg.alerts.sales is None:
        return None
    return [ops.sales_notice(ticket, cfg.alerts.sales, ticket.labels.get("warranty") or {}, "rules")]


@hookimpl
def status_updated(ticket: Ticket, update: StatusUpdate, jobs: WorkQueue) -> None:
    cfg = ops.current_cfg()
    note = update.internal_note or ""
    if cfg is None or not note:
        return
    data: dict[str, Any] = {"by": update.actor, "system": update.system}
    category = override_command(note, cfg.categories)
    if category:
        data["category"] = category
    m = _EXCLUDE.search(note)
    if m:
        data["exclude"] = {"reason": m["reason"].lower(), "part": (m["part"] or "").lower() or None}
    if "category" in data or "exclude" in data:
        digest = hashlib.sha256(note.encode()).hexdigest()[:12]
        key = update.external_event_id or f"{update.at.isoformat()}:{digest}"
        jobs.enqueue(ops.COMMAND_JOB, data, key=f"{ticket.ref}:warranty-cmd:{key}")


def _chained_after_ocr(settings: Settings) -> bool:
    """``[plugins.fax.ocr] then_jobs`` asks for the identification right after the OCR: no waiting job."""
    ocr = getattr(settings.plugin_config("fax"), "ocr", None)
    return IDENTIFY_JOB in (getattr(ocr, "then_jobs", None) or [])


def _midnight(day: str) -> datetime:
    """A calendar date as the ticket's ``warranty_until`` (midnight UTC of that day)."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC)
