"""Which channel a customer is told on, and at which address: a registry built from the notifiers.

The core knows no channel names. A notifier says how to reach a contact on its channel
(``address(contact)``; without one, the contact's e-mail address else phone number) and whether its
messages carry HTML (``html``). A ticket's customer is told on the ticket's own channel when a
notifier serves it and the contact has an address there; otherwise on the first channel of
``[notifications] fallback_channels`` that can reach them (a fax customer answered by mail, a web
form answered by SMS). When none can, the notice is still composed for the ticket's channel and
kept: delivery parks it with a visible alert (``/readyz``) until a notifier exists, instead of
retrying it every minute for ever (``delivery.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .models import Contact, Ticket

__all__ = ["ChannelDirectory", "Reach"]


@dataclass(frozen=True)
class Reach:
    """Where a notice goes: the channel, the address, HTML or not, and whether a notifier serves it."""

    channel: str
    to: str
    html: bool
    served: bool = True


class ChannelDirectory:
    """The channels notifiers registered, and the operator's fallback order."""

    def __init__(self, notifiers: Mapping[str, Any], fallback: Sequence[str] = ()) -> None:
        self.notifiers = dict(notifiers)
        self.fallback = list(fallback)

    def __contains__(self, channel: str) -> bool:
        return channel in self.notifiers

    def address(self, channel: str, contact: Contact) -> str | None:
        """The contact's address on ``channel`` (None when unknown or no notifier serves it)."""
        notifier = self.notifiers.get(channel)
        if notifier is None:
            return None
        how = getattr(notifier, "address", None)
        return how(contact) if callable(how) else (contact.email or contact.phone)

    def html(self, channel: str) -> bool:
        return bool(getattr(self.notifiers.get(channel), "html", False))

    def reach(self, ticket: Ticket) -> Reach | None:
        """Where to tell this ticket's customer: its own channel, a fallback, or (unserved) its own
        channel with any address we have, so the notice waits visibly. None: no address at all."""
        for channel in (ticket.channel, *self.fallback):
            to = self.address(channel, ticket.contact)
            if to:
                return Reach(channel, to, self.html(channel))
        to = ticket.contact.email or ticket.contact.phone
        if ticket.channel not in self.notifiers and to:
            return Reach(ticket.channel, to, html=False, served=False)
        return None
