"""Core default behaviour, registered as a plugin (``trylast``) so any plugin can override it.

- threading: a message id already stored is a duplicate; In-Reply-To / References ids and a
  ``[SB-000123]`` subject tag attach a message to its ticket;
- notifications: acknowledge a new ticket, tell the customer about state changes and agent replies,
  never to automated mail (bounces, auto-replies) and only when we have an address on that channel;
  the texts are Jinja2 templates in en, zh-CN and zh-TW (``templating.py``, ``templates/``).
"""

from __future__ import annotations

import re
from typing import Any

from svcbridge import (
    ChannelDirectory,
    EventType,
    Notification,
    ThreadMatch,
    Ticket,
    TicketDraft,
    TicketEvent,
    TicketLookup,
    hookimpl,
)

from .templating import pick_language, render

TAG = re.compile(r"\[([A-Z][A-Z0-9]{0,7}-\d{4,})\]")


@hookimpl(trylast=True)
def thread_message(draft: TicketDraft, lookup: TicketLookup) -> ThreadMatch | None:
    for link in draft.links:
        found = lookup.by_link(link.system, link.kind, link.value)
        if found:
            return ThreadMatch(ticket_ref=found.ref, duplicate=True, reason=f"{link.kind} already stored")
    for ref in draft.thread_refs:
        found = lookup.by_link(ref.system, ref.kind, ref.value)
        if found:
            return ThreadMatch(ticket_ref=found.ref, reason=f"refers to {ref.kind}")
    for tag in TAG.findall(draft.subject):
        found = lookup.by_ref(tag)
        if found:
            return ThreadMatch(ticket_ref=found.ref, reason="subject tag")
    return None


@hookimpl(trylast=True)
def compose_notifications(
    ticket: Ticket, event: TicketEvent, draft: TicketDraft | None, settings: Any, channels: ChannelDirectory
) -> list[Notification]:
    if draft is not None and (draft.automated or draft.suppress_autoreply):
        return []
    # the ticket's own channel, a configured fallback, or (no notifier yet) kept to wait visibly
    reach = channels.reach(ticket)
    if reach is None:
        return []
    if event.type == EventType.RECEIVED:
        template = "acknowledgement"
    elif event.type in (EventType.STATUS_CHANGED, EventType.AGENT_REPLY):
        template = event.type
    else:
        return []
    values: dict[str, Any] = {
        "ref": ticket.ref,
        "subject": ticket.subject,
        "state": ticket.state.value,
        "body": event.data.get("body", ""),
        "channel": reach.channel,
        "mail": reach.html,  # the "reply to this mail" footer: for channels whose notices are mail
        # what classification found (e.g. paid_service_notice): shipped and operators' templates may use it
        "labels": dict(ticket.labels),
    }
    # the customer's language as the parser saw it on their mail, else the ticket's (templating.py)
    lang = pick_language(ticket.contact.language or ticket.language)
    own = settings.notifications.templates_dir if settings is not None else None
    text = render(template, lang, values, str(own) if own else None)
    return [
        Notification(
            channel=reach.channel,
            template=template,
            to=reach.to,
            subject=f"[{ticket.ref}] {text.subject}",
            body=text.text,
            body_html=text.html if reach.html else None,
            data={"event": event.type, "state": ticket.state.value, "language": lang},
            automatic=template != "agent_reply",  # an agent's words are not an automatic mail
        )
    ]
