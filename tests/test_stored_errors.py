"""Issue 12 item 7: no secret in a stored error. A peer's error page that echoes the request (its
Authorization header, a token in the URL) must not land verbatim in the store or in what the CLI and
/readyz show. A canary secret is configured and pushed through every stored error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import eml
from svcbridge import AuthFailed, JobKind, NotReady, TimerKind, hookimpl
from svcbridge.errors import clean_error
from svcbridge.plugins import make_plugin_manager
from svcbridge.store import schema as t

CANARY = "canary-9f1b2c7d5e"
ECHO = (
    f"503 from https://desk.test/api/v1/tickets?api_key={CANARY}: "
    f'{{"request": {{"headers": {{"Authorization": "Bearer {CANARY}", "X-Api-Key": "{CANARY}"}}}}, '
    f"password={CANARY}, Basic dXNlcjpwYXNz}}"
)


@pytest.mark.parametrize(
    "text",
    [
        ECHO,
        f"Authorization: Token token={CANARY}",
        f"authorization: Basic {CANARY}",
        f"401 for url https://x.test/a?sig={CANARY}&b=1",
        f"client_secret={CANARY}&grant_type=x",
        f"the configured secret {CANARY} itself",
    ],
)
def test_clean_error_masks_credentials(text: str) -> None:
    from svcbridge import log as logmod

    logmod.add_secrets([CANARY])
    assert CANARY not in clean_error(text)


class Echo:
    name = "desk"

    async def deliver(self, item):
        raise NotReady(ECHO)

    async def reconcile(self, item):
        return None


class Refused(Echo):
    name = "desk2"

    async def deliver(self, item):
        raise AuthFailed(ECHO)


class Plugin:
    __name__ = "echoing"

    @hookimpl
    def register_sinks(self, register):
        register(Echo())
        register(Refused())

    @hookimpl
    def enrich_ticket(self, draft, ticket, jobs):
        if ticket is None:
            jobs.enqueue("echo.job")
            from datetime import UTC, datetime

            jobs.schedule("echo.timer", datetime(2000, 1, 1, tzinfo=UTC))
        if "quarantine" in draft.subject:
            raise RuntimeError(ECHO)

    @hookimpl
    def register_job_kinds(self, register):
        def boom(job):
            raise NotReady(ECHO)

        register(JobKind("echo.job", boom, backoff_initial=60))

    @hookimpl
    def register_timer_kinds(self, register):
        def boom(timer):
            raise RuntimeError(ECHO)

        register(TimerKind("echo.timer", boom, retry_in=60))


async def test_a_canary_secret_reaches_no_stored_error(make_app, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SVCBRIDGE_PLUGINS__WEBHOOK__SECRET", CANARY)  # a configured secret
    app = make_app(pm=make_plugin_manager(extra=(Plugin(),)), routing={"default": ["desk", "desk2"]},
                   outbox={"backoff_initial": 60.0, "backoff_max": 60.0})
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1").write_bytes(eml())
    (new / "2").write_bytes(eml(subject="quarantine me", msgid="<q@x>"))
    await app.run_once()
    stored: list[str] = []
    with app.store.engine.connect() as conn:
        for table, cols in ((t.outbox, ("last_error",)), (t.jobs, ("last_error",)), (t.timers, ("last_error",)),
                            (t.quarantine, ("error", "traceback"))):
            for row in conn.execute(select(*(table.c[c] for c in cols))):
                stored += [str(v) for v in row if v]
    assert len(stored) >= 5, stored  # every path produced an error
    assert all(CANARY not in s for s in stored), [s for s in stored if CANARY in s]
    assert CANARY not in json.dumps({**app.delivery.alerts, **app.work.alerts})
