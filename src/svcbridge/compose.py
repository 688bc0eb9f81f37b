"""Composing a customer's notifications for a ticket event: every plugin's ``compose_notifications``.

Used by the pipeline (a new ticket, a follow-up) and by status updates (a state change, an agent's
reply); the outbox rows the notifications become are written by their callers' transactions.
"""

from __future__ import annotations

from .channels import ChannelDirectory
from .models import Notification, Ticket, TicketDraft, TicketEvent
from .plans import StageFailed
from .plugins import HookFailed, PluginManager
from .settings import Settings


class Composer:
    def __init__(
        self, pm: PluginManager, settings: Settings, channels: ChannelDirectory | None = None
    ) -> None:
        self.pm, self.settings = pm, settings
        # the registered notifiers' channels (App.build fills it): which channel reaches a customer
        self.channels = channels or ChannelDirectory({}, settings.notifications.fallback_channels)

    async def compose(
        self, ticket: Ticket, event: TicketEvent, draft: TicketDraft | None
    ) -> list[Notification]:
        """Gather ``compose_notifications`` from every plugin (raises StageFailed naming the plugin)."""
        try:
            found = await self.pm.call_each(
                "compose_notifications",
                ticket=ticket,
                event=event,
                draft=draft,
                settings=self.settings,
                channels=self.channels,
            )
        except HookFailed as exc:
            raise StageFailed("notify", exc.plugin, exc.exc) from exc
        return [n for batch in found for n in (batch if isinstance(batch, list) else [batch])]
