"""Mail-specific threading, ahead of the core default (which is ``trylast``).

- The same mail twice (two watched mailboxes, a redelivery with an extra ``Received:``) has the same
  Message-ID *and* the same sender and content: a duplicate, the ticket only notes it came again.
- The same Message-ID with different content (a client that reuses ids, an edited resend) is never
  dropped silently: it is stored as a follow-up on that ticket.
- A reply to, or a bounce of, a mail svcbridge sent threads onto the ticket that mail was about.
- Other systems' ticket numbers in the subject (``INC0012345`` from ServiceNow, ``REQ-42`` from Jira)
  thread onto the ticket that carries that number as a link, per ``ticket_patterns``.
"""

from __future__ import annotations

import hashlib
import re

from svcbridge import ExternalLink, ThreadMatch, TicketDraft, TicketLookup


def content_key(draft: TicketDraft) -> str:
    """A hash of who wrote what and attached, blind to transport headers.

    The sender is part of it: the same subject, text and attachments from someone else (a colleague's
    copy, a form mail, a client reusing Message-IDs) are that person's own message, never a duplicate.
    (The link it goes into, ``message_content``, carries the Message-ID as well.)
    """
    h = hashlib.sha256()
    h.update((draft.contact.email or draft.contact.phone or "").strip().lower().encode() + b"\0")
    h.update(draft.subject.encode())
    h.update(b"\0" + draft.body_text.strip().encode())
    for a in draft.attachments:
        h.update(b"\0" + a.sha256.encode())
    return h.hexdigest()[:32]


def _other_sender(draft: TicketDraft, requester: str | None) -> bool:
    mine = (draft.contact.email or "").lower()
    return bool(mine and requester and mine != requester.lower())


def add_content_link(draft: TicketDraft) -> None:
    ids = [ln.value for ln in draft.links if ln.system == "email" and ln.kind == "message_id"]
    if ids:
        draft.links.append(
            ExternalLink(system="email", kind="message_content", value=f"{ids[0]}#{content_key(draft)}")
        )


def thread(
    draft: TicketDraft, lookup: TicketLookup, patterns: dict[str, re.Pattern[str]]
) -> ThreadMatch | None:
    if draft.channel != "email":
        return None
    for ln in draft.links:
        if ln.kind == "message_content":
            same = lookup.by_link(ln.system, ln.kind, ln.value)
            if same:
                return ThreadMatch(ticket_ref=same.ref, duplicate=True, reason="same Message-ID and content")
    for ln in draft.links:
        if ln.kind == "message_id":
            other = lookup.by_link(ln.system, ln.kind, ln.value)
            if other:
                # keep it: a different message under a reused id is news, not a duplicate
                draft.links = [x for x in draft.links if x.kind != "message_id"]
                if _other_sender(draft, other.contact.email):
                    break  # someone else's mail under that id: its own message, threaded on its own
                return ThreadMatch(ticket_ref=other.ref, reason="same Message-ID, different content")
    for ref in draft.thread_refs:  # a reply to, or a bounce of, a mail svcbridge sent
        if ref.system == "email" and ref.kind == "message_id":
            ours = lookup.by_link("email", "sent_message_id", ref.value)
            if ours:
                return ThreadMatch(ticket_ref=ours.ref, reason="refers to a mail we sent")
    for system, rx in patterns.items():
        for number in rx.findall(draft.subject):
            found = lookup.by_link(system, "ticket", number)
            if found:
                return ThreadMatch(ticket_ref=found.ref, reason=f"{system} number {number}")
    return None
