"""Rows of the store as the models plugins see, and back: journal rows, attachments, tickets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..models import Asset, Attachment, Contact, FaultLevel, Priority, RawMessage, Ticket, TicketState


def journal_row(raw: RawMessage) -> dict[str, Any]:
    return {
        "source": raw.source,
        "channel": raw.channel,
        "external_id": raw.external_id,
        "content_hash": raw.content_hash,
        "received_at": raw.received_at,
        "raw": raw.raw,
        "blob_ref": raw.blob_ref,
        "meta": raw.metadata,
        "status": "pending",
        "attempts": 0,
    }


def attachment_model(a: Any, data: bytes | None = None) -> Attachment:
    return Attachment(
        sha256=a["sha256"],
        size=a["size"],
        content_type=a["content_type"],
        safe_name=a["safe_name"],
        original_name=a["original_name"],
        content_id=a["content_id"],
        data=data,
    )


def ticket_from_row(r: Any) -> Ticket:
    return Ticket(
        id=int(r["id"]),
        ref=r["ref"],
        state=TicketState(r["state"]),
        channel=r["channel"],
        subject=r["subject"] or "",
        description=r["description"] or "",
        contact=Contact(**(r["contact"] or {})),
        customer=r["customer"],
        asset=Asset(**(r["asset"] or {})),
        priority=Priority(r["priority"]),
        fault_level=FaultLevel(r["fault_level"]) if r["fault_level"] else None,
        sla_policy=r["sla_policy"],
        language=r["language"],
        deadlines={k: datetime.fromisoformat(v) for k, v in (r["deadlines"] or {}).items()},
        category=r["category"],
        labels=r["labels"] or {},
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )
