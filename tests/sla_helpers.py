"""Shared pieces of the SLA tests: a config with the issue's contract, a clock, a message at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from conftest import eml
from svcbridge import RawMessage

SH = ZoneInfo("Asia/Shanghai")


def sh(*a: int) -> datetime:
    return datetime(*a, tzinfo=SH)  # type: ignore[misc]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


SLA: dict[str, Any] = {
    "warn_at": 0.8,
    "calendars": {
        "office": {"holidays": "CN", "windows": ["09:00-18:00"]},
        "duty": {"holidays": "CN", "days": [1, 2, 3, 4, 5, 6, 7], "windows": ["08:00-24:00"]},
    },
    "rules": [
        {
            "name": "urgent words",
            "keywords": ["紧急", "無法使用", "无法使用", "全部中断", "down", "outage"],
            "priority": "urgent",
            "fault_level": 1,
        },
        {
            "name": "severe words",
            "keywords": ["严重", "嚴重", "severe", "degraded"],
            "priority": "severe",
            "fault_level": 2,
        },
        {
            "name": "missed hotline call",
            "channels": ["phone"],
            "labels": {"call.kind": ["missed"]},
            "priority": "P2",
        },
        {"name": "gold customers", "tiers": ["gold"], "priority": "P2"},
        {"name": "critical assets", "criticality": ["high"], "fault_level": 2},
        {"name": "how-to questions", "categories": ["question"], "fault_level": 4},
    ],
    "policies": [
        {
            "name": "p1-city",
            "priorities": ["P1"],
            "regions": ["city"],
            "targets": {
                "acknowledge": {"within": "10m"},
                "onsite": {"within": "1h", "calendar": "duty"},
                "resolution": {"within": "8h", "calendar": "duty"},
            },
        },
        {
            "name": "p1-province",
            "priorities": ["P1"],
            "targets": {
                "acknowledge": {"within": "10m"},
                "solution": {"within": "2h", "calendar": "office"},
                "onsite": {"within": "24h", "calendar": "office"},
                "unsolved": {"within": "4h", "calendar": "office"},
                "resolution": {"within": "48h"},
            },
        },
        {
            "name": "standard",
            "targets": {
                "first_response": {"within": "1d", "calendar": "office"},
                "resolution": {"within": "5d", "calendar": "office"},
            },
        },
    ],
    "escalation": [
        {"name": "Team lead", "channel": "email", "to": "lead@bridge.test"},
        {"name": "Service manager", "channel": "email", "to": "manager@bridge.test", "after": "2h"},
    ],
    "technicians": ["+8613800138000"],
}

CUSTOMERS = {
    "directory": [
        {
            "name": "City Hospital",
            "domains": ["city-hospital.example"],
            "region": "city",
            "labels": {"tier": "gold"},
        },
        {"name": "County Clinic", "domains": ["county.example"], "region": "province"},
    ]
}


def settings(**extra: Any) -> dict[str, Any]:
    return {"plugins": {"sla": {**SLA, **extra}, "customers": CUSTOMERS}}


def raw_mail(at: datetime, subject: str, body: str, sender: str, n: int = 1) -> RawMessage:
    data = eml(subject=subject, body=body, sender=sender, msgid=f"<sla{n}@example.com>")
    return RawMessage(channel="email", source="maildir", external_id=f"sla-{n}", received_at=at, raw=data)
