"""What the customer is told when an RMA moves ("your replacement part has shipped"), when configured.

``[plugins.rma.customer] states`` lists the transitions the customer hears of (none by default: the
helpdesk always does). The text comes from ``templates[state][language]`` (zh-CN, zh-TW and en built in;
the ticket's language, else the contact's, else ``default_language``), plain text with ``{ref}``,
``{rma}``, ``{carrier}``, ``{tracking}``, ``{parts}``. The notice goes to the ticket's own channel (mail
or SMS) at the contact's address, written with the transition and sent once by the outbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from svcbridge import Notification, Rma, RmaState, Ticket

TEMPLATES: dict[str, dict[str, str]] = {
    "replacement_shipped": {
        "zh-CN": "您好，工单 {ref} 的更换备件（{parts}）已由厂商发出。{carrier} {tracking}",
        "zh-TW": "您好，工單 {ref} 的更換備件（{parts}）已由廠商寄出。{carrier} {tracking}",
        "en": "Your replacement part ({parts}) for ticket {ref} has shipped. {carrier} {tracking}",
    },
    "replacement_received": {
        "zh-CN": "您好，工单 {ref} 的更换备件已到货，工程师将与您联系安排更换。",
        "zh-TW": "您好，工單 {ref} 的更換備件已到貨，工程師將與您聯繫安排更換。",
        "en": "The replacement part for ticket {ref} has arrived; an engineer will contact you to fit it.",
    },
}


class CustomerSettings(BaseModel):
    """``[plugins.rma.customer]``."""

    model_config = ConfigDict(extra="forbid")
    states: list[RmaState] = Field(default_factory=list, description="transitions the customer is told of")
    default_language: str = "zh-CN"
    templates: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in TEMPLATES.items()}
    )


def _clean(text: Any) -> str:
    # C0/C1 controls and U+2028/2029: every break str.splitlines() knows (mail headers refuse them all)
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+", " ", str(text or ""))[:200].strip()


def notices(cfg: CustomerSettings) -> Callable[[Rma, RmaState | None, Ticket], list[Notification]]:
    """The ``RmaBook.customer_notices`` callable for this configuration."""

    def build(rma: Rma, old: RmaState | None, ticket: Ticket) -> list[Notification]:
        if rma.state not in cfg.states or old == rma.state:
            return []
        texts = cfg.templates.get(rma.state.value) or {}
        lang = ticket.language or ticket.contact.language or cfg.default_language
        text = (
            texts.get(lang)
            or texts.get(lang.split("-")[0])
            or texts.get(cfg.default_language)
            or texts.get("en")
        )
        channel = ticket.channel if ticket.channel in ("email", "sms") else "email"
        to = ticket.contact.phone if channel == "sms" else ticket.contact.email
        if not text or not to:
            return []
        parts = ", ".join(p.part for p in rma.parts)
        body = text.format(
            ref=ticket.ref,
            rma=rma.id,
            carrier=_clean(rma.carrier),
            tracking=_clean(rma.tracking),
            parts=_clean(parts),
        ).strip()
        # the subject is a header: one line even when a configured template has several
        return [
            Notification(
                channel=channel,
                template=f"rma_{rma.state.value}",
                to=to,
                subject=_clean(body)[:80],
                body=body,
            )
        ]

    return build
