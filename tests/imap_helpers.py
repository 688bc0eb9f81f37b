"""What the IMAP test modules share: mailbox settings for the private Dovecot, corpus helpers, waits.

The ``dovecot`` fixture itself (one private server per test module) is in conftest.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from conftest import eml
from dovecot import Dovecot


def box(dv: Dovecot, user: str, **kw: Any) -> dict[str, Any]:
    cfg = {
        "name": f"imap:{user}",
        "host": "127.0.0.1",
        "port": dv.imaps_port,
        "tls": "implicit",
        "ca_file": str(dv.cafile),
        "username": user,
        "password": dv.users.get(user),
        "poll_interval": 0.2,
        "idle_timeout": 30,
    }
    return cfg | kw


def imap_app(make_app: Callable[..., Any], *boxes: dict[str, Any], **kw: Any) -> Any:
    return make_app(plugins={"email": {"imap": list(boxes), "maildir": None}}, **kw)


def mails(n: int, tag: str) -> list[bytes]:
    return [
        eml(subject=f"{tag} case {i}", msgid=f"<{tag}{i}@example.com>", body=f"body {i}") for i in range(n)
    ]


def fresh(dv: Dovecot, user: str, raws: list[bytes] = ()) -> None:  # type: ignore[assignment]
    dv.reset_mailbox(user)
    for raw in raws:
        dv.append(user, raw)


def subjects(app: Any) -> list[str]:
    return sorted(t.subject for t in app.store.list_tickets(limit=1000))


async def until(cond: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
