"""The ``local`` helpdesk: tickets live in svcbridge's own store (the embedded default).

Delivering a new ticket records that the local helpdesk holds it; agents change state with
``svcbridge tickets set-state`` and the customer is notified like with any other helpdesk.
"""

from __future__ import annotations

from typing import Any

from svcbridge import DeliveryItem, DeliveryResult, ExternalLink, Ticket, hookimpl


class LocalSink:
    name = "local"

    def store_inline(self, kind: str, ticket: Ticket, payload: dict[str, Any]) -> DeliveryResult:
        """Recorded in the transaction that stores the ticket (``svcbridge.InlineSink``): the local
        helpdesk is svcbridge's own store, so a trip through the outbox would only add work."""
        if kind == "create":
            link = ExternalLink(system="local", kind="ticket", value=ticket.ref)
            return DeliveryResult(links=[link], detail="stored locally")
        return DeliveryResult(detail=f"{payload.get('type', kind)} recorded")

    async def deliver(self, item: DeliveryItem) -> DeliveryResult:
        # `outbox replay` of a local row, or rows queued before this sink recorded inline
        return self.store_inline(item.kind, item.ticket, item.payload)

    async def reconcile(self, item: DeliveryItem) -> DeliveryResult | None:
        if item.kind == "create" and item.ticket.link("local", "ticket"):
            return DeliveryResult(detail="already stored locally")
        return None


@hookimpl
def register_sinks(register: Any, settings: Any) -> None:
    register(LocalSink())
