"""Which sinks a new ticket goes to: the first matching ``[[routing.rules]]`` entry, else the default."""

from __future__ import annotations

from .models import Ticket
from .settings import RoutingSettings


class Router:
    def __init__(self, settings: RoutingSettings) -> None:
        self.settings = settings

    def route(self, ticket: Ticket, source: str | None) -> list[str]:
        """Sinks for a new ticket from ``source``, in the order of the rule (or of ``default``)."""
        for rule in self.settings.rules:
            if rule.channel and rule.channel != ticket.channel:
                continue
            if rule.source and rule.source != source:
                continue
            if rule.customer and rule.customer != ticket.customer:
                continue
            if rule.max_priority and int(ticket.priority) > rule.max_priority:
                continue
            return list(rule.sinks)
        return list(self.settings.default)
