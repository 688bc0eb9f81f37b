"""Bounces and auto-replies (issue 13 item 8): never a customer ticket, an event on the ticket they concern.

``inspect`` reads a mail that is a delivery report (RFC 3464 ``multipart/report``, a Postfix, Exchange or
qmail bounce from MAILER-DAEMON / postmaster, with or without ``Auto-Submitted``) or an auto-reply
(``Auto-Submitted: auto-replied``, ``X-Autoreply``, a subject like "Out of Office"). For a bounce it
finds the failed recipient and the status (the ``message/delivery-status`` part, else the text) and the
Message-ID of the bounced mail (``text/rfc822-headers``, ``message/rfc822`` or headers quoted in the text),
so it threads onto the ticket of our notice (the ``email/sent_message_id`` links outbound.py records) or
onto a ``[SB-000123]`` reference in the subject or body.

On a matched ticket (``classify_ticket``) a bounce becomes the event "notice to X bounced: 550 5.1.1 ..."
and the label ``email_failing`` = {address, status, at}; an auto-reply becomes an event too. Neither is
answered (``draft.automated``). When nothing matches, no ticket is created: the mail is quarantined
(stage classify) with the reason "automated mail ... matches no ticket", kept for a look, never among the
customer tickets.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from svcbridge import ExternalLink, TicketDraft, utcnow

from . import msgid

BOUNCE_SUBJECT = re.compile(
    r"undeliver|returned to sender|delivery status notification|mail delivery (?:failed|failure|subsystem)"
    r"|failure notice|non[- ]?delivery|delivery has failed|could not be delivered|delivery failure",
    re.I,
)
OOO_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?reply|autoreply|auto:|abwesenheit)",
    re.I,
)
DAEMON = re.compile(r"^(?:mailer-daemon|postmaster)@", re.I)
REF = re.compile(r"\[([A-Z][A-Z0-9]{0,7}-\d{4,})\]")
SMTP = re.compile(r"\b([45]\d\d[ -][45]\.\d{1,3}\.\d{1,3}\b[^\r\n']*|[45]\d\d [^\r\n']*)")
STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
ADDR = re.compile(r"<?([A-Za-z0-9._%+=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?")
QUOTED_ID = re.compile(r"(?im)^\s*(?:message-id|in-reply-to):\s*(<[^>\s]{1,250}>)")
NOT_MAIL = "not a mail message"
_HEADER_LINE = re.compile(rb"^(?:From .*|[!-9;-~]{1,200}:.*)$")


@dataclass
class Report:
    kind: str  # "bounce" or "autoreply"
    recipient: str | None = None
    status: str | None = None
    refs: list[str] = field(default_factory=list)  # [SB-000123] references
    ids: list[str] = field(default_factory=list)  # Message-IDs of the bounced mail

    def summary(self, sender: str | None) -> str:
        if self.kind == "bounce":
            return f"notice to {self.recipient or 'the customer'} bounced: {self.status or 'no status given'}"
        return f"auto-reply from {sender or 'the customer'}"


def looks_like_mail(data: bytes) -> bool:
    """A header block first: the first line is a header (or an mbox ``From`` line) and has no NUL."""
    first = data.lstrip(b"\r\n")[:1000].split(b"\n", 1)[0].rstrip(b"\r")
    return b"\0" not in first and bool(_HEADER_LINE.match(first))


def inspect(data: bytes) -> Report | None:
    """The bounce or auto-reply `data` is, or None (also when reading it fails: then it is plain mail)."""
    try:
        return _inspect(email.message_from_bytes(data, policy=email.policy.compat32))
    except Exception:  # odd MIME the stdlib chokes on: parse_email already read what it could
        return None


def _inspect(msg: Message) -> Report | None:
    subject = str(msg.get("Subject", ""))
    frm = " ".join(a for _n, a in email.utils.getaddresses([str(v) for v in msg.get_all("From") or []]))
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    dsn = msg.get_content_type() == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() in ("delivery-status", "")
    )
    daemon = bool(DAEMON.match(frm.strip()))
    if dsn or msg.get("X-Failed-Recipients") or (BOUNCE_SUBJECT.search(subject) and (daemon or auto)):
        report = Report("bounce")
    elif auto == "auto-replied" or msg.get("X-Autoreply") or msg.get("X-Autorespond") or OOO_SUBJECT.match(
        subject
    ):
        report = Report("autoreply")
    else:
        return None
    texts = [subject]
    for part in msg.walk():
        ctype = part.get_content_type()
        payload = part.get_payload()
        if ctype == "message/delivery-status" and isinstance(payload, list):
            for block in payload:
                _status_block(report, block)
        elif ctype == "message/rfc822" and isinstance(payload, list) and payload:
            _original(report, payload[0])
        elif not part.is_multipart():
            raw = part.get_payload(decode=True)
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
            if ctype == "text/rfc822-headers":
                _original(report, email.message_from_string(text))
            elif part.get_content_maintype() == "text":
                texts.append(text)
    body = "\n".join(texts)
    report.refs = list(dict.fromkeys(REF.findall(body)))
    report.ids += [i for m in QUOTED_ID.findall(body) for i in msgid.split(m).ids]
    report.ids = list(dict.fromkeys(report.ids))
    if report.kind == "bounce":
        _from_text(report, body, str(msg.get("X-Failed-Recipients", "")), frm)
    return report


def _status_block(report: Report, block: Message) -> None:
    rcpt = block.get("Final-Recipient") or block.get("Original-Recipient")
    if rcpt and report.recipient is None:
        found = ADDR.search(str(rcpt).split(";", 1)[-1])
        report.recipient = found.group(1) if found else None
    diag = str(block.get("Diagnostic-Code") or "").split(";", 1)[-1]
    diag = " ".join(diag.split())
    status = str(block.get("Status") or "").strip()
    if report.status is None and (diag or status):
        report.status = diag if diag else status


def _original(report: Report, original: Message) -> None:
    for header in ("Message-ID", "In-Reply-To"):
        report.ids += msgid.split(original.get(header)).ids


def _from_text(report: Report, body: str, failed: str, daemon: str) -> None:
    """Postfix, Exchange and qmail bounces say it in prose."""
    if report.recipient is None:
        for candidate in [failed, *re.findall(r"<[^<>\s]+@[^<>\s]+>", body), body]:
            found = ADDR.search(candidate)
            if found and found.group(1).lower() != daemon.lower() and not DAEMON.match(found.group(1)):
                report.recipient = found.group(1)
                break
    if report.status is None:
        found = SMTP.search(body)
        if found:
            report.status = " ".join(found.group(1).split()).rstrip(".;")
        else:
            status = STATUS.search(body)
            report.status = status.group(1) if status else None


def mark(draft: TicketDraft, report: Report) -> None:
    """On the parsed draft: never answered, threads by the bounced mail's id, the report kept as scratch."""
    draft.automated = True
    draft.labels.setdefault("automated_reason", report.kind)
    known = {r.value for r in draft.thread_refs}
    for i in report.ids:
        if i not in known:
            draft.thread_refs.append(ExternalLink(system="email", kind="message_id", value=i))
    draft.labels["_report"] = {
        "kind": report.kind,
        "recipient": report.recipient,
        "status": report.status,
        "refs": report.refs,
    }


def thread_refs(draft: TicketDraft) -> list[str]:
    report = draft.labels.get("_report")
    return list(report["refs"]) if isinstance(report, dict) else []


class Unmatched(Exception):
    """An automated mail that concerns no ticket: quarantined, never a customer ticket."""


def classify(draft: TicketDraft, ticket: Any) -> None:
    report = draft.labels.pop("_report", None)
    if not isinstance(report, dict):
        return
    if ticket is None:
        raise Unmatched(f"automated mail ({report['kind']}) that matches no ticket: not a customer ticket")
    r = Report(report["kind"], report["recipient"], report["status"])
    draft.body_text = r.summary(draft.contact.email) + "\n\n" + draft.body_text
    if r.kind == "bounce" and r.recipient:
        at = utcnow().isoformat()
        draft.labels["email_failing"] = {"address": r.recipient, "status": r.status, "at": at}
