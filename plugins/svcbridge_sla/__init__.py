"""The SLA engine (issue 15): fault levels, business calendars, deadlines, warnings, escalation.

What no helpdesk models, as a plugin (``[plugins.sla]``, docs/sla.md):

- ``classify_ticket`` (last, after the customer directory and the categoriser): priority P1-P3 and
  fault level 1-4 from the rules (``classify.py``), unless the helpdesk overrode them; the policy
  (``policy.py``) and its deadlines from ``draft.received_at`` on the business calendars
  (``calendars.py``); the warning and breach timers. A technician's SMS ``ONSITE SB-000123 14:05``
  (到场 / 恢复 / 解决 ...) from a registered phone records a milestone.
- ``status_updated``: every state change (and an agent's ``#priority P1`` / ``#fault 2`` note, an
  override that wins) asks for the ``sla.recompute`` job, which recomputes the deadlines from the
  trail (pauses in waiting states), records what was met and moves or cancels the timers.
- timers ``sla_warn:<target>``, ``sla_breach:<target>``, ``sla_escalate:<target>``
  (``escalation.py``): durable rows, fired once even with several replicas, late ones say so.
- ``compose_notifications``: the satisfaction survey when a ticket is resolved (``followup.py``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import structlog

from svcbridge import (
    ChannelDirectory,
    Job,
    JobKind,
    Notification,
    Priority,
    Settings,
    StatusUpdate,
    ThreadMatch,
    Ticket,
    TicketChange,
    TicketDraft,
    TicketEvent,
    TicketLookup,
    Timer,
    TimerKind,
    WorkQueue,
    hookimpl,
    utcnow,
)

from .calendars import parse_duration
from .classify import FAULT_LEVELS, classify, facts_of, level_of, parse_priority
from .clock import ACTOR, plan, timer_names
from .engine import MILESTONES, policy_facts, start_of
from .escalation import base_change, fire
from .followup import (
    fault_words,
    followup_due,
    read_reply,
    reply_event,
    survey_for,
    survey_open,
    survey_sent_at,
)
from .policy import TARGETS, select_policy
from .settings import SlaSettings

__version__ = "0.1.0"
__all__ = ["SECTION", "SlaSettings"]

SECTION = "sla"
RECOMPUTE = "sla.recompute"
log = structlog.get_logger("svcbridge_sla")
_OVERRIDE = re.compile(r"#(priority|fault)\s*[:=]?\s*([A-Za-z0-9]+)", re.IGNORECASE)
_SMS_MILESTONE = re.compile(
    r"^\s*(onsite|on site|到场|到場|restored|恢复|恢復|resolved|解决|解決)\s+(SB-\d{1,12})"
    r"(?:\s+(\d{1,2}):(\d{2}))?\s*$",
    re.IGNORECASE,
)
_REF = re.compile(r"^\s*(SB-\d{1,12})\b", re.IGNORECASE)
_SMS_WORDS = {
    "onsite": "onsite", "on site": "onsite", "到场": "onsite", "到場": "onsite",
    "restored": "restored", "恢复": "restored", "恢復": "restored",
    "resolved": "resolved", "解决": "resolved", "解決": "resolved",
}  # fmt: skip

_cfg: dict[str, SlaSettings] = {}


def _settings(settings: Settings | None) -> SlaSettings | None:
    cfg = settings.plugin_config(SECTION) if settings is not None else None
    if isinstance(cfg, SlaSettings):
        _cfg["current"] = cfg  # timers and jobs get no Settings: the last loaded table serves them
        return cfg
    _cfg.pop("current", None)  # an instance without [plugins.sla] (another App in this process)
    return None


@hookimpl
def register_settings(register: Any) -> None:
    register(SECTION, SlaSettings)


@hookimpl(trylast=True)
def classify_ticket(draft: TicketDraft, ticket: Ticket | None, settings: Settings, jobs: WorkQueue) -> None:
    cfg = _settings(settings)
    if cfg is None:
        return
    if ticket is not None:
        _followup(draft, ticket, cfg, jobs)
        return
    labels = draft.labels
    facts = facts_of(draft.subject, draft.body_text, draft.customer, draft.channel, draft.category, labels)
    got = classify(facts, cfg.rules, min(cfg.default_priority, draft.priority), cfg.default_fault_level)
    draft.priority = min(draft.priority, got.priority)
    draft.fault_level = got.fault
    labels["sla_class"] = {
        "rules": got.matched,
        "fault_level": got.fault_level,
        "priority": int(draft.priority),
    }
    site = getattr(draft.asset, "site", None)
    pf = policy_facts(draft.customer, int(draft.priority), got.fault_level, draft.channel, labels, site)
    policy = select_policy(cfg.policies, pf)
    if policy is None:
        return
    draft.sla_policy = policy.name
    start = draft.received_at or utcnow()
    shadow = Ticket(
        id=0,
        ref=jobs.ticket_ref or "",
        channel=draft.channel,
        priority=draft.priority,
        created_at=start,
        events=[TicketEvent(type="received", at=start)],
    )
    p = plan(shadow, policy, cfg, start)
    if p.error:
        labels["sla_error"] = p.error
    draft.deadlines = {**draft.deadlines, **p.deadlines}  # another plugin's (callback_by) stay
    p.apply_timers(jobs)


def _followup(draft: TicketDraft, ticket: Ticket, cfg: SlaSettings, jobs: WorkQueue) -> None:
    """A follow-up: a survey answer, a technician's milestone SMS, or words that make it more urgent."""
    if ticket.state.is_closed and survey_open(ticket):
        answer = read_reply(draft.body_text or draft.subject, ticket.ref)
        if answer is not None:
            draft.labels["_keep_closed"] = True  # an answer to the survey is no new problem
            who = draft.contact.email or draft.contact.phone or "customer"
            # keyed by the survey: one score per survey, the first answer's, even when two answers
            # arrive together (their jobs would run side by side)
            sent = survey_sent_at(ticket) or draft.received_at or utcnow()
            jobs.enqueue(
                RECOMPUTE, {"survey": {**answer, "by": who}}, key=f"{ticket.ref}:survey:{sent.isoformat()}"
            )
            return
    m = _SMS_MILESTONE.match(draft.body_text or draft.subject or "")
    phone = draft.contact.phone
    if m and phone and phone in cfg.technicians and m.group(2).upper() == ticket.ref:
        at = draft.received_at or utcnow()
        if m.group(3):  # "14:05": the technician's local time today, in the ticket's calendar zone
            at = _local_time(ticket, cfg, at, int(m.group(3)), int(m.group(4)))
        data = {"milestone": _SMS_WORDS[m.group(1).lower()], "at": at.isoformat(), "source": f"sms:{phone}"}
        if ticket.state.is_closed:  # a technician's report on a solved ticket is no new problem
            draft.labels["_keep_closed"] = True
        jobs.enqueue(
            RECOMPUTE, {"milestone": data}, key=f"{ticket.ref}:ms:{data['milestone']}:{at.isoformat()}"
        )
        return
    if ticket.state.is_closed and ticket.sla_policy:
        # the customer's message reopens it (pipeline: a "reopened" event, no status update from a
        # helpdesk): the solution clocks run again from the trail
        at = (draft.received_at or utcnow()).isoformat()
        jobs.enqueue(RECOMPUTE, {}, key=f"{ticket.ref}:sla:reopened:{at}")
    if ticket.labels.get("sla_override"):
        return  # the helpdesk decided: the rules no longer move priority or level
    facts = facts_of(
        draft.subject, draft.body_text, ticket.customer, ticket.channel, ticket.category, ticket.labels
    )
    got = classify(facts, cfg.rules, ticket.priority, level_of(ticket.fault_level) or cfg.default_fault_level)
    if got.priority < ticket.priority:  # a follow-up can make it more urgent, never less
        draft.priority = got.priority
    old_level = level_of(ticket.fault_level)
    if old_level is None or got.fault_level < old_level:
        draft.fault_level = got.fault


@hookimpl(tryfirst=True)
def thread_message(draft: TicketDraft, lookup: TicketLookup) -> ThreadMatch | None:
    """A technician's milestone text and a survey answer quoting ``SB-000123`` belong to that ticket
    (SMS has no In-Reply-To; a mail answer threads by its headers already)."""
    cfg = _cfg.get("current")
    if cfg is None or draft.channel == "email":
        return None
    text = draft.body_text or draft.subject or ""
    m = _SMS_MILESTONE.match(text)
    if m and draft.contact.phone in cfg.technicians:
        ref = m.group(2).upper()
    else:
        found = _REF.match(text)
        if not found:
            return _bare_answer(draft, lookup, cfg, text)
        if read_reply(text, found.group(1).upper()) is None:
            return None
        ref = found.group(1).upper()
    ticket = lookup.by_ref(ref)
    if ticket is None:
        return None
    if not m and ticket.contact.phone != draft.contact.phone:
        return None  # a score for someone else's ticket is not taken from a stranger
    return ThreadMatch(ticket_ref=ticket.ref, reason="technician milestone" if m else "survey answer")


def _bare_answer(draft: TicketDraft, lookup: TicketLookup, cfg: SlaSettings, text: str) -> ThreadMatch | None:
    """An SMS "5" / "4 很满意" (full-width digits too) without a reference: the survey this number
    was sent within ``survey_window`` and has not answered, if any. Not when a conversation of this
    number is newer than the survey (the digit answers that), nor when the words after it report a
    fault (``2 台打印机无法使用``): those thread or open a ticket as any other text."""
    phone = draft.contact.phone
    if draft.channel != "sms" or not phone or not cfg.survey_window:
        return None
    answer = read_reply(text, "")
    if answer is None or fault_words(answer["comment"], [k for r in cfg.rules for k in r.keywords]):
        return None
    since = (draft.received_at or utcnow()) - parse_duration(cfg.survey_window)
    ticket = lookup.awaiting_survey(phone=phone, since=since)
    sent = survey_sent_at(ticket) if ticket is not None else None
    if ticket is None or sent is None:
        return None
    talk = lookup.open_by_contact(phone=phone)
    if talk is not None and talk.updated_at > sent:
        return None
    return ThreadMatch(ticket_ref=ticket.ref, reason="survey answer from the customer's number")


@hookimpl
def compose_notifications(
    ticket: Ticket, event: TicketEvent, settings: Settings, channels: ChannelDirectory
) -> list[Notification]:
    """The satisfaction survey once a ticket is resolved (``[plugins.sla] survey``)."""
    cfg = _settings(settings)
    if cfg is None or not cfg.survey or event.type != "status_changed" or event.data.get("to") != "resolved":
        return []
    note = survey_for(ticket, channels)
    return [note] if note is not None else []


def _local_time(ticket: Ticket, cfg: SlaSettings, received: datetime, hh: int, mm: int) -> datetime:
    policy = cfg.policy(ticket.sla_policy)
    tgt = policy.targets.get("onsite") if policy else None
    tz = cfg.calendar(tgt.calendar if tgt else "24x7")._tz
    sent = received.astimezone(tz)
    local = sent.replace(hour=min(hh, 23), minute=min(mm, 59), second=0, microsecond=0)
    if local <= sent:
        return local
    # "23:50" texted at 00:05 is yesterday's 23:50 (a later time today has not happened yet), unless
    # that is before the ticket began: then the text's own time, never later than the text
    yesterday = local - timedelta(days=1)
    return yesterday if yesterday >= start_of(ticket) else received


@hookimpl
def status_updated(ticket: Ticket, update: StatusUpdate, jobs: WorkQueue) -> None:
    cfg = _cfg.get("current")
    if cfg is None:
        return
    data: dict[str, Any] = {}
    override = _override(update.internal_note or "")
    if not ticket.sla_policy and not override:
        return  # no promise on this ticket: nothing to recompute
    if override:
        data["override"] = {**override, "by": update.actor, "system": update.system}
    key = update.external_event_id or f"{update.at.isoformat()}:{update.state}:{bool(override)}"
    jobs.enqueue(RECOMPUTE, data, key=f"{ticket.ref}:sla:{key}")


def _override(note: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for what, value in _OVERRIDE.findall(note):
        try:
            if what.lower() == "priority":
                found["priority"] = int(parse_priority(value))
            elif value.isdigit() and 1 <= int(value) <= 4:
                found["fault_level"] = int(value)
        except ValueError:
            continue
    return found


def recompute(job: Job, work: WorkQueue) -> TicketChange | None:
    """The ``sla.recompute`` job: milestone, override, then the plan from the trail."""
    cfg, ticket = _cfg.get("current"), job.ticket
    if cfg is None or ticket is None:
        return None
    now = utcnow()
    events: list[TicketEvent] = []
    change_fields: dict[str, Any] = {}
    survey = job.data.get("survey")
    # one score per survey: a second "5" sent before the first was recorded stays a message only
    if survey and isinstance(survey.get("score"), int) and survey_open(ticket):
        events.append(
            reply_event({k: survey[k] for k in ("score", "comment") if k in survey}, str(survey["by"]))
        )
    ms = job.data.get("milestone")
    if ms and ms.get("milestone") in MILESTONES:
        events.append(TicketEvent(type="sla_milestone", at=now, actor=str(ms.get("source", ACTOR)), data=ms))
    ov = job.data.get("override")
    if ov:
        events.append(TicketEvent(type="sla_override", at=now, actor=str(ov.get("by", "agent")), data=ov))
        if "priority" in ov:
            change_fields["priority"] = Priority(int(ov["priority"]))
        if "fault_level" in ov:
            change_fields["fault_level"] = FAULT_LEVELS[int(ov["fault_level"])]
    shadow = ticket.model_copy(update={"events": [*ticket.events, *events], **change_fields})
    p = plan(shadow, cfg.policy(ticket.sla_policy), cfg, now, events)
    p.apply_timers(work)
    change = base_change(shadow, p, events)
    for k, v in change_fields.items():
        setattr(change, k, v)
    if ov:
        change.labels = {**change.labels, "sla_override": {k: v for k, v in ov.items() if k != "system"}}
    policy = cfg.policy(ticket.sla_policy)
    after = (policy.followup_call_after if policy else None) or cfg.followup_call_after
    due = followup_due(shadow, parse_duration(after) if after else None)
    if due is not None:  # the contract's follow-up call after the repair: on the call list from now
        change.events.append(due)
    return change


@hookimpl
def startup(app: Any) -> None:
    cfg = app.plugin_config(SECTION)
    if isinstance(cfg, SlaSettings):
        _cfg["current"] = cfg
    else:
        _cfg.pop("current", None)


@hookimpl
def register_job_kinds(register: Any, settings: Settings) -> None:
    if _settings(settings) is not None:  # without [plugins.sla] no kinds: the idle loop polls nothing
        register(JobKind(RECOMPUTE, recompute, timeout=30.0))


def _handler(kind: str) -> Any:
    def handler(timer: Timer, work: WorkQueue) -> TicketChange | None:
        cfg = _cfg.get("current")
        return fire(kind, timer, work, cfg) if cfg is not None else None

    return handler


@hookimpl
def register_timer_kinds(register: Any, settings: Settings) -> None:
    if _settings(settings) is None:
        return
    for target in TARGETS:
        for kind, name in zip(("warn", "breach", "escalate"), timer_names(target), strict=True):
            register(TimerKind(name, _handler(kind), timeout=30.0))
