"""The numbers of each report, from a month's tickets and their trails (``trail.py``).

Every figure is a count or a share of counts the tests recompute by hand; a share with nothing to
divide is ``None`` (shown as "-"), never 0 % or 100 %.
"""

from __future__ import annotations

from datetime import datetime
from statistics import median
from typing import Any

from ..models import Ticket
from .trail import Outcome, count_by, outcomes, share

PROMISE = 95.0  # the contracts' service-timeliness rate, in percent


def _compliance(items: list[Outcome]) -> dict[str, Any]:
    met = sum(1 for o in items if o.status == "met")
    missed = sum(1 for o in items if o.status == "missed")
    return {"met": met, "missed": missed, "open": len(items) - met - missed, "rate": share(met, met + missed)}


def _group(pairs: list[tuple[str, Outcome]]) -> dict[str, dict[str, Any]]:
    keys = sorted({k for k, _ in pairs})
    return {k: _compliance([o for kk, o in pairs if kk == k]) for k in keys}


def _minutes(values: list[float]) -> dict[str, Any]:
    mins = sorted(round(v / 60.0, 1) for v in values)
    if not mins:
        return {"count": 0, "median": None, "max": None, "values": []}
    return {"count": len(mins), "median": round(median(mins), 1), "max": mins[-1], "values": mins}


def sla_report(tickets: list[Ticket], now: datetime) -> dict[str, Any]:
    per_ticket = {tk.ref: outcomes(tk, now) for tk in tickets}
    every = [o for found in per_ticket.values() for o in found]
    by_ref = {tk.ref: tk for tk in tickets}
    decided = {ref: [o for o in found if o.status != "open"] for ref, found in per_ticket.items()}
    counted = [ref for ref, found in decided.items() if found]
    timely = [ref for ref in counted if all(o.status == "met" for o in decided[ref])]
    rate = share(len(timely), len(counted))

    def pairs(key: Any) -> list[tuple[str, Outcome]]:
        return [(str(key(by_ref[o.ticket]) or "-"), o) for o in every]

    return {
        "timeliness": {
            "tickets_counted": len(counted),
            "tickets_timely": len(timely),
            "rate": rate,
            "promise": PROMISE,
            # on the counts: the shown rate is rounded (94.97 % shows as 95.0) and must not pass
            "meets_promise": None if rate is None else len(timely) * 100 >= PROMISE * len(counted),
        },
        "by_target": _group([(o.target, o) for o in every]),
        "by_priority": _group(pairs(lambda tk: f"P{int(tk.priority)}")),
        "by_region": _group(pairs(lambda tk: tk.labels.get("region"))),
        "by_customer": _group(pairs(lambda tk: tk.customer)),
        "response_minutes": _minutes(
            [
                float(o.used_s)
                for o in every
                if o.target in ("acknowledge", "first_response") and o.used_s is not None
            ]
        ),
        "onsite_minutes": _minutes(
            [float(o.used_s) for o in every if o.target == "onsite" and o.used_s is not None]
        ),
        "breaches": [
            {
                "ticket": o.ticket,
                "target": o.target,
                "deadline": o.deadline,
                "late_min": round(o.late_s / 60.0, 1) if o.late_s is not None else None,
                "escalated": o.escalated,
                "customer": by_ref[o.ticket].customer,
            }
            for o in every
            if o.status == "missed"
        ],
    }


def faults_report(tickets: list[Ticket], now: datetime) -> dict[str, Any]:
    serials: dict[str, list[str]] = {}
    for tk in tickets:
        if tk.asset.serial:
            serials.setdefault(tk.asset.serial, []).append(tk.ref)
    repeats = [
        {"serial": s, "model": _model(tickets, s), "tickets": refs}
        for s, refs in sorted(serials.items())
        if len(refs) > 1
    ]
    return {
        "by_category": count_by(tickets, lambda tk: tk.category),
        "by_model": count_by(tickets, lambda tk: tk.asset.model),
        "by_part": _parts(tickets),
        "by_fault_level": count_by(tickets, lambda tk: tk.fault_level.value if tk.fault_level else None),
        "by_priority": count_by(tickets, lambda tk: f"P{int(tk.priority)}"),
        "repeat_failures": repeats,
    }


def _parts(tickets: list[Ticket]) -> dict[str, int]:
    """Tickets per part: the parts plugin's ``labels.parts.items[].part`` (a ticket counts once per
    part), else a plain ``labels.part``."""
    found: list[str] = []
    for tk in tickets:
        items = (
            (tk.labels.get("parts") or {}).get("items") if isinstance(tk.labels.get("parts"), dict) else None
        )
        names = {str(i["part"]) for i in items or [] if isinstance(i, dict) and i.get("part")}
        if not names and tk.labels.get("part"):
            names = {str(tk.labels["part"])}
        found += sorted(names)
    return count_by(found, lambda p: p)


def _model(tickets: list[Ticket], serial: str) -> str | None:
    return next((tk.asset.model for tk in tickets if tk.asset.serial == serial and tk.asset.model), None)


def _first_contact(evs: list[Any]) -> bool | None:
    """None: never resolved; else whether it was solved at first contact: the customer did not have
    to write again before the first resolution, and it was not reopened after it (by the customer's
    reply or a helpdesk state). A message after the resolution that reopens nothing (the survey
    answer) does not count against it."""
    done = ("resolved", "closed")
    # the trail's order (by time, then as written), so same-second events keep their sequence
    first = next(
        (i for i, e in enumerate(evs) if e.type == "status_changed" and e.data.get("to") in done), None
    )
    if first is None:
        return None
    if any(e.type == "message_received" for e in evs[:first]):
        return False
    return not any(
        e.type == "reopened" or (e.type == "status_changed" and e.data.get("to") not in done)
        for e in evs[first:]
    )


def satisfaction_report(tickets: list[Ticket], now: datetime) -> dict[str, Any]:
    scores: list[int] = []
    comments: list[dict[str, Any]] = []
    surveyed = 0
    calls: dict[str, int] = {}
    resolved = fcr = 0
    for tk in tickets:
        evs = tk.events
        if any(e.type == "notified" and e.data.get("template") == "survey" for e in evs):
            surveyed += 1
        replies = [e for e in evs if e.type == "survey_reply" and isinstance(e.data.get("score"), int)]
        if replies:
            last = replies[-1]  # a customer who answers twice changed their mind: the last counts
            scores.append(int(last.data["score"]))
            if last.data.get("comment"):
                comments.append(
                    {"ticket": tk.ref, "score": last.data["score"], "comment": last.data["comment"]}
                )
        for e in evs:
            if e.type == "followup_call":
                k = str(e.data.get("outcome"))
                calls[k] = calls.get(k, 0) + 1
        first_contact = _first_contact(evs)
        if first_contact is not None:
            resolved += 1
            fcr += first_contact
    dist = {str(s): scores.count(s) for s in range(1, 6)}
    return {
        "surveys_sent": surveyed,
        "replies": len(scores),
        "response_rate": share(len(scores), surveyed),
        "average": round(sum(scores) / len(scores), 2) if scores else None,
        "distribution": dist,
        "satisfied_rate": share(sum(1 for s in scores if s >= 4), len(scores)),
        "comments": comments,
        "resolved": resolved,
        "first_contact_resolution": fcr,
        "fcr_rate": share(fcr, resolved),
        "followup_calls": calls,
    }
