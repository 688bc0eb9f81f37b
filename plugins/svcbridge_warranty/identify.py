"""Which unit a message is about: candidates from its texts, the one the register knows preferred.

Used inline by ``classify_ticket`` (subject, body, attachment names, OCR text already on the draft) and
by the ``warranty.identify`` job for a fax whose OCR text arrives after the ticket was stored (the fax
plugin's ``fax.ocr`` job): that job waits for the OCR (retried until the ``ocr`` label is there), then
puts the unit on the ticket exactly as intake would have, and asks for the vendor and rules jobs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from svcbridge import (
    Asset,
    AssetLookup,
    AssetRecord,
    Job,
    Notification,
    NotReady,
    TicketChange,
    WorkQueue,
)

from . import ops
from .rules import unit_answer
from .settings import WarrantySettings

MAX_LOOKUPS = 8  # candidates asked of the register per message: a long OCR text may hold many
IDENTIFY_JOB = "warranty.identify"
MAX_TEXT = 50_000  # characters of each text searched


@dataclass
class Found:
    candidates: list[dict[str, Any]] = field(default_factory=list)
    record: AssetRecord | None = None
    serial: str | None = None
    vendor: str | None = None
    model: str | None = None

    def unit_label(self) -> dict[str, Any]:
        r = self.record
        if r is None:
            return {}
        values = {
            "serial": r.serial,
            "customer": r.customer,
            "site": r.site,
            "region": r.region,
            "contract": r.contract,
            "source": r.source,
        }
        return {k: v for k, v in values.items() if v}


async def identify(
    texts: list[tuple[str, str]], cfg: WarrantySettings, prefix: str, assets: AssetLookup
) -> Found | None:
    """The candidates in ``texts``; the first the register (or ``asset_lookup``) knows is the unit, else
    a labelled one or one of an ``open_vendors`` pattern is the serial; ``None`` without candidates."""
    extractor = cfg.extractor(prefix)
    # the serial is near the top; a huge body or OCR text must not hold the pipeline (about 2 ms per KB)
    candidates = extractor.find([(where, (text or "")[:MAX_TEXT]) for where, text in texts])
    if not candidates:
        return None
    chosen = None
    found = Found()
    for c in candidates[:MAX_LOOKUPS]:
        found.record = await assets.get(c.serial)
        if found.record is not None:
            chosen = c
            break
    found.candidates = [c.as_label() | ({"known": True} if c is chosen else {}) for c in candidates]
    if found.record is not None:
        found.serial = found.record.serial
        return found
    # nobody knows it: a labelled serial or an open vendor pattern is kept, a bare 7-character word is not
    for c in candidates:
        if c.how == "label" or (c.vendor in cfg.extraction.open_vendors):
            found.serial, found.vendor = c.serial, c.vendor or extractor.vendor_word(texts)
            found.model = extractor.model(texts)
            break
    return found


async def warranty_labels(
    record: AssetRecord, cfg: WarrantySettings, at: datetime, assets: AssetLookup, extra: list[dict[str, Any]]
) -> dict[str, Any]:
    """The labels of the local rules' answer: ``warranty`` and, out or excluded, ``paid_service``."""
    excluded = await asyncio.to_thread(assets.register.exclusions, record.serial)
    answer = unit_answer(record, cfg.terms_model(), at, excluded + extra)
    labels: dict[str, Any] = {"warranty": answer}
    if answer["status"] in ("out", "excluded"):
        labels["paid_service"] = {"why": answer["status"], "expired_parts": answer["expired_parts"]}
    return labels


async def identify_job(job: Job, work: WorkQueue) -> TicketChange | None:
    """A fax ticket without a serial: read the OCR text once the fax plugin stored it.

    Asked for by ``enrich_ticket`` (and retried until the text is there), or by the fax plugin itself
    right after its OCR when ``[plugins.fax.ocr] then_jobs`` names this kind. Whichever runs second
    finds the serial on the ticket and does nothing."""
    app, cfg = ops.current()
    ticket = job.ticket
    if ticket is None or ticket.asset.serial:
        return None
    if "ocr" not in ticket.labels:  # the OCR job has not answered yet: try again later (bounded)
        raise NotReady("waiting for the fax's OCR text")
    text = ticket.labels.get("ocr_text")
    prefix = str(getattr(app.settings, "ticket_prefix", None) or job.data.get("prefix") or "SB")
    found = await identify([("ocr", text)], cfg, prefix, app.assets) if text else None
    if found is None or found.serial is None:
        return None
    labels: dict[str, Any] = {"serial_candidates": found.candidates}
    notices: list[Notification] = []
    customer = None
    record = found.record
    if record is not None:
        asset = record.as_asset()
        labels["asset"] = found.unit_label()
        if record.customer and ticket.customer is None:
            customer = record.customer
        labels |= await warranty_labels(
            record, cfg, ticket.created_at, app.assets, ticket.labels.get("warranty_exclusions", [])
        )
        if "paid_service" in labels and cfg.alerts.sales is not None:
            seen = ticket.model_copy(update={"asset": asset, "customer": ticket.customer or record.customer})
            notices.append(ops.sales_notice(seen, cfg.alerts.sales, labels["warranty"], "rules"))
        if labels["warranty"]["end"]:
            asset.warranty_until = datetime.fromisoformat(labels["warranty"]["end"] + "T00:00:00+00:00")
    else:
        asset = Asset(serial=found.serial, vendor=found.vendor, model=found.model)
    vendor = (asset.vendor or "").lower()
    if vendor in cfg.vendors and cfg.vendors[vendor].enabled:
        data: dict[str, Any] = {"vendor": vendor, "serial": found.serial}
        work.enqueue(ops.vendor_kind(vendor), data, key=f"{ticket.ref}:{vendor}:{found.serial}")
    data = {"serial": found.serial, "category": ticket.category, "entitlement": "warranty" in labels}
    work.enqueue(ops.RULES_JOB, data, key=f"{ticket.ref}:{found.serial}:{ticket.category or '-'}")
    return TicketChange(
        asset=asset,
        customer=customer,
        labels=labels,
        notifications=notices,
        note=f"unit {found.serial} found in the fax's OCR text" + (f" ({record.customer})" if record else ""),
    )
