"""RMAs from the helpdesk and the vendor reminder: ``/rma`` commands in internal notes, ``rma.reminder``.

An agent writes, in an internal note of the ticket in RT, Zammad, GLPI, JSM, ServiceNow or
django-helpdesk (whatever the helpdesk reports as ``StatusUpdate.internal_note``)::

    /rma DELL part=PSU                      open an RMA (part=PN or PN:SERIAL, repeatable; fault="...")
    /rma DELL part=PSU:CN0ABC12 fault="no output on 12 V rail"
    /rma 3 shipped_to_vendor carrier=SF tracking=SF1234567890     move RMA 3
    /rma 3 approved number=R123456789

``status_updated`` reads the commands and asks for the durable job ``rma.command`` per command, keyed
by the helpdesk's event id and the line, and the RMA is opened with that key as its ``source_key``: a
note read twice (a redelivered webhook, a poll after a crash) acts once. The job answers with a note
on the ticket (the RMA, or why the command was refused); svcbridge's own notes are not read back by
the helpdesk connectors (their marker), so an answer never re-triggers a command.

``[plugins.rma] reminder_days`` (default 7): when a vendor has not moved an RMA for that long, the
``rma.reminder`` timer of the ticket puts a note for the agents on it and looks again later.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shlex
from datetime import timedelta
from typing import Any

from pydantic import Field

from svcbridge import (
    Job,
    JobKind,
    NotReady,
    PermanentError,
    PluginSettings,
    RmaPart,
    RmaState,
    StatusUpdate,
    ThreadMatch,
    Ticket,
    TicketChange,
    TicketDraft,
    Timer,
    TimerKind,
    WorkQueue,
    hookimpl,
    utcnow,
)

from .cisco import CiscoRma, CiscoRmaSource, CiscoSettings
from .customer import CustomerSettings, notices
from .mail import MailSettings, apply_reply, read_reply, request_mail

__all__ = [
    "CiscoRma",
    "CiscoRmaSource",
    "CiscoSettings",
    "CustomerSettings",
    "MailSettings",
    "RmaSettings",
    "parse_commands",
    "read_reply",
    "request_mail",
]
__version__ = "0.1.0"

# svcbridge's own answers ("/rma done: ...") are no commands, should a helpdesk hand one back without
# the marker its connector skips: answering an answer would go on for ever
_LINE = re.compile(r"^\s*/rma\s+(?!(?:done|refused|not understood):)(.+)$", re.IGNORECASE | re.MULTILINE)
_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]{1,100}")
_host: dict[str, Any] = {}


class RmaSettings(PluginSettings):
    """``[plugins.rma]``."""

    reminder_days: float = Field(default=7, gt=0, description="a reminder when a vendor has not moved an RMA")
    commands: bool = Field(default=True, description="act on /rma commands in helpdesk internal notes")
    cisco: CiscoSettings | None = Field(default=None, description="Cisco's RMA status API, polled")
    mail: MailSettings = Field(
        default_factory=MailSettings, description="RMA by e-mail: vendor mailboxes, rules"
    )
    customer: CustomerSettings = Field(
        default_factory=CustomerSettings, description="what the customer hears"
    )


def parse_commands(note: str) -> list[dict[str, Any]]:
    """The ``/rma`` lines of a note, each ``{"open": vendor, "parts": [...], "fault": ..}`` or
    ``{"move": id, "state": .., "number"/"carrier"/"tracking": ..}`` or ``{"error": why, "line": ..}``."""
    out: list[dict[str, Any]] = []
    for m in _LINE.finditer(note or ""):
        line = m.group(1).strip()
        try:
            words = shlex.split(line.replace("“", '"').replace("”", '"'))
        except ValueError as exc:
            out.append({"error": f"cannot read it: {exc}", "line": line})
            continue
        if not words:  # only blanks the pattern's \s does not take (U+3000 after a space)
            out.append({"error": "no vendor or RMA id", "line": line})
            continue
        head, rest = words[0], words[1:]
        opts: dict[str, list[str]] = {}
        free = []
        for w in rest:
            if "=" in w:
                k, _, v = w.partition("=")
                opts.setdefault(k.lower(), []).append(v)
            else:
                free.append(w)
        if head.isdigit():  # str.isdigit() also takes '²' (int() refuses it) and ids past any column
            state = (free[0] if free else "").lower()
            if not re.fullmatch(r"[0-9]{1,12}", head):
                out.append({"error": f"not an RMA id: {head[:20]!r}", "line": line})
                continue
            if state not in {s.value for s in RmaState}:
                out.append({"error": f"unknown state {state!r}", "line": line})
                continue
            cmd = {"move": int(head), "state": state, "line": line}
            cmd.update({k: opts[k][-1] for k in ("number", "carrier", "tracking") if k in opts})
            bad = [
                k for k in ("number", "carrier", "tracking") if k in cmd and not _VALUE.fullmatch(str(cmd[k]))
            ]
            if bad:  # the store's columns hold 100; a control character has no place in a number
                out.append({"error": f"{bad[0]}: 1-100 characters on one line", "line": line})
                continue
            out.append(cmd)
            continue
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,49}", head):
            out.append({"error": f"not a vendor: {head!r}", "line": line})
            continue
        parts = [p for p in opts.get("part", []) if p]
        if not parts:
            out.append({"error": "no part= given", "line": line})
            continue
        out.append(
            {
                "open": head.upper(),
                "parts": parts,
                "fault": opts["fault"][-1] if "fault" in opts else None,
                "line": line,
            }
        )
    return out


@hookimpl
def register_settings(register: Any) -> None:
    register("rma", RmaSettings)


@hookimpl
def startup(app: Any) -> None:
    _host["app"] = app
    cfg: RmaSettings = app.plugin_config("rma") or RmaSettings()
    if cfg.customer.states and getattr(app, "rmas", None) is not None:
        app.rmas.customer_notices = notices(cfg.customer)


@hookimpl
async def shutdown(app: Any) -> None:
    for src in (getattr(app, "sources", None) or {}).values():
        if isinstance(src, CiscoRmaSource):
            await src.api.close()
    if _host.get("app") is app:
        _host.pop("app", None)


def _book() -> Any:
    app = _host.get("app")
    if app is None or getattr(app, "rmas", None) is None:
        raise NotReady("RMAs are not available yet (not started)")
    return app.rmas


@functools.cache
def _defaults() -> RmaSettings:
    # built once: the default mail rules are validated models, and _cfg() runs in thread_message and
    # classify_ticket for every message (a fresh RmaSettings() each time was 0.3 ms of a 5 ms mail)
    return RmaSettings()


def _cfg() -> RmaSettings:
    app = _host.get("app")
    return (app.plugin_config("rma") if app else None) or _defaults()


@hookimpl
def status_updated(ticket: Ticket, update: StatusUpdate, jobs: WorkQueue) -> None:
    if not update.internal_note or "/rma" not in update.internal_note.lower() or not _cfg().commands:
        return
    event = update.external_event_id or hashlib.sha256(update.internal_note.encode()).hexdigest()[:16]
    for n, cmd in enumerate(parse_commands(update.internal_note)):
        key = f"rma-cmd:{ticket.ref}:{update.system}:{event}:{n}"
        jobs.enqueue(
            "rma.command", {**cmd, "system": update.system, "actor": update.actor, "key": key}, key=key
        )


def command(job: Job) -> TicketChange | None:
    """Act on one ``/rma`` line; the answer is a note on the ticket (the RMA's own note comes too)."""
    if job.ticket is None:
        raise PermanentError("rma.command: no ticket")
    d = job.data
    source = f"helpdesk:{d.get('system')}"
    if "error" in d:
        return TicketChange(note=f"/rma not understood: {d['error']}\n> {d.get('line', '')}")
    book, remind = _book(), timedelta(days=_cfg().reminder_days)
    try:
        if "open" in d:
            parts = [
                RmaPart(part=p.partition(":")[0], serial=p.partition(":")[2] or None) for p in d["parts"]
            ]
            rma = book.open(
                job.ticket.ref,
                d["open"],
                parts,
                fault=d.get("fault"),
                source=source,
                source_key=d["key"],
                remind_after=remind,
            )
            mail = request_mail(_cfg().mail, rma, job.ticket)
            sent = f"\nrequest mailed to {mail.to}" if mail and book.send(rma.id, [mail], "request") else ""
            return TicketChange(note=f"/rma done: {rma.summary()}{sent}")
        got = book.get(int(d["move"]))
        if got is None or got.ticket_ref != job.ticket.ref:
            return TicketChange(note=f"/rma refused: this ticket has no RMA {d['move']}")
        rma = book.move(
            got.id,
            RmaState(d["state"]),
            source=source,
            number=d.get("number"),
            carrier=d.get("carrier"),
            tracking=d.get("tracking"),
            key=d["key"],
            remind_after=remind,
        )
        return TicketChange(note=f"/rma done: {(rma or got).summary()}")
    except ValueError as exc:
        return TicketChange(note=f"/rma refused: {exc}")


def remind(timer: Timer, work: WorkQueue) -> TicketChange | None:
    """The vendor has not moved this ticket's RMAs: say which, and look again in reminder_days."""
    if timer.ticket is None:
        return None
    days, now = _cfg().reminder_days, utcnow()
    before = now - timedelta(days=days)
    open_ = [r for r in _book().by_ticket(timer.ticket.ref) if not r.state.is_final]
    idle = [r for r in open_ if r.updated_at <= before]
    if open_:
        # next: when the first RMA that moved lately falls silent (a vendor's move by the Cisco poll
        # or a mail does not move this timer, so 'now + days' came up to days late); an idle one,
        # already reported now, again in reminder_days
        later = [r.updated_at + timedelta(days=days) for r in open_ if r.updated_at > before]
        work.schedule("rma.reminder", min([*later, now + timedelta(days=days)]), dict(timer.data))
    if not idle:
        return None
    lines = [f"- {r.summary()} (no change since {r.updated_at.date().isoformat()})" for r in idle]
    return TicketChange(
        labels={"rma_stalled": [r.id for r in idle]},
        note=f"RMA reminder: the vendor has not moved these for {days:g} days:\n" + "\n".join(lines),
    )


@hookimpl
def register_sources(register: Any, settings: Any) -> None:
    cfg: RmaSettings | None = settings.plugin_config("rma")
    if cfg is not None and cfg.cisco is not None:
        register(CiscoRmaSource(cfg.cisco, list(settings.outbound_allow), _book))


def request(job: Job) -> TicketChange | None:
    """Mail the request of RMA ``data.rma`` to its vendor's mailbox (the CLI's ``rma open`` asks)."""
    book = _book()
    rma = book.get(int(job.data["rma"]))
    if rma is None or job.ticket is None:
        raise PermanentError(f"rma.request: no RMA {job.data.get('rma')}")
    mail = request_mail(_cfg().mail, rma, job.ticket)
    if mail is None or not book.send(rma.id, [mail], "request"):
        return None
    return TicketChange(note=f"RMA {rma.id}: request mailed to {mail.to}")


def mail_reply(job: Job) -> TicketChange | None:
    return apply_reply(_cfg().mail, _book(), job)


def _message_id(draft: TicketDraft) -> str:
    ids = [ln.value for ln in draft.links if ln.system == "email" and ln.kind == "message_id"]
    return ids[0] if ids else hashlib.sha256((draft.subject + draft.body_text).encode()).hexdigest()[:24]


@hookimpl
def thread_message(draft: TicketDraft) -> ThreadMatch | None:
    """A vendor's mail without our [SB-...] tag that names one of our RMA numbers joins that RMA's ticket."""
    cfg = _cfg().mail
    vendor = cfg.vendor_of(draft.contact.email) if cfg.vendors else None
    app = _host.get("app")
    if vendor is None or app is None:
        return None
    number, _ = read_reply(cfg, f"{draft.subject}\n{draft.body_text}")
    rma = app.rmas.find(vendor, number) if number else None
    return ThreadMatch(ticket_ref=rma.ticket_ref, reason=f"RMA {number}") if rma else None


@hookimpl
def classify_ticket(draft: TicketDraft, ticket: Ticket | None, jobs: WorkQueue) -> None:
    """A reply on a ticket from a vendor's RMA mailbox: read it after the commit (a durable job)."""
    cfg = _cfg().mail
    if ticket is None or not cfg.vendors or draft.automated:
        return
    vendor = cfg.vendor_of(draft.contact.email)
    if vendor is None:
        return
    text = f"{draft.subject}\n{draft.body_text}"[:20000]
    mid = _message_id(draft)
    jobs.enqueue("rma.mail_reply", {"text": text, "vendor": vendor, "message_id": mid}, key=f"rma-mail:{mid}")


@hookimpl
def register_job_kinds(register: Any) -> None:
    for name, run in (("rma.command", command), ("rma.request", request), ("rma.mail_reply", mail_reply)):
        register(JobKind(name, run, timeout=60, max_attempts=10, backoff_initial=5, backoff_max=600))


@hookimpl
def register_timer_kinds(register: Any) -> None:
    register(TimerKind("rma.reminder", remind))
