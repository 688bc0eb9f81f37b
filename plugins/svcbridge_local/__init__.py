"""The ``local`` helpdesk: tickets live in svcbridge's own store (the embedded default).

Delivering a new ticket records that the local helpdesk holds it; agents change state with
``svcbridge tickets set-state`` and the customer is notified like with any other helpdesk.
"""

from __future__ import annotations

from typing import Any

from svcbridge import DeliveryItem, DeliveryResult, ExternalLink, hookimpl


class LocalSink:
    name = "local"

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        if item.kind == "create":
            link = ExternalLink(system="local", kind="ticket", value=item.ticket.ref)
            return DeliveryResult(links=[link], detail="stored locally")
        return DeliveryResult(detail=f"{item.payload.get('type', item.kind)} recorded")

    async def reconcile(self, item: DeliveryItem) -> DeliveryResult | None:
        if item.kind == "create" and item.ticket.link("local", "ticket"):
            return DeliveryResult(detail="already stored locally")
        return None


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    register(LocalSink())
