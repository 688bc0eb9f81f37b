"""The ``startup`` / ``shutdown`` hooks: a plugin opens its clients before any source polls and closes
them after the last work, in ``run --once`` and in the daemon; one plugin failing either way never stops
the others."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TextIO

import pytest
from structlog.testing import capture_logs

from conftest import eml
from svcbridge import Host, hookimpl
from svcbridge.plugins import make_plugin_manager


class Probe:
    """A source of its own, polled by the host; it needs what its plugin's startup opened."""

    channel = "email"
    interval = 0.05

    def __init__(self, owner: Pooled) -> None:
        self.owner, self.name = owner, f"probe:{owner.__name__}"

    async def poll(self, ctx: Any) -> int:
        self.owner.log.write("poll\n")  # ValueError on a closed file, AttributeError before startup
        self.owner.polled.set()
        return 0


class Pooled:
    """A plugin holding a client (here a file) for the process's lifetime, as an HTTP pool would."""

    def __init__(self, name: str, path: Path, outgoing: Path | None = None) -> None:
        self.__name__, self.path, self.outgoing = name, path, outgoing
        self.log: TextIO | None = None
        self.polled = asyncio.Event()
        self.started_with: Any = None
        self.spooled_at_shutdown: list[str] | None = None

    @hookimpl
    def register_sources(self, register):
        register(Probe(self))

    @hookimpl
    async def startup(self, app):
        await asyncio.sleep(0)  # async implementations are awaited before anything polls
        self.started_with = app
        self.log = self.path.open("a", encoding="utf-8")
        self.log.write(f"open email={app.plugin_config('email').from_address}\n")

    @hookimpl
    def shutdown(self, app):  # a plain def works as well
        assert app is self.started_with
        if self.outgoing is not None:  # what delivery had done when the plugin was told to close
            self.spooled_at_shutdown = sorted(p.name for p in self.outgoing.glob("*.eml"))
        assert self.log is not None
        self.log.write("close\n")
        self.log.close()


class FailsAtStartup:
    __name__ = "fragile"

    def __init__(self) -> None:
        self.classified = 0
        self.shut_down = False

    @hookimpl
    async def startup(self):
        raise ConnectionError("licence server unreachable")

    @hookimpl
    def classify_ticket(self, draft):
        self.classified += 1

    @hookimpl
    def shutdown(self):
        self.shut_down = True


class FailsAtShutdown:
    __name__ = "sloppy"

    @hookimpl
    def shutdown(self, app):
        raise RuntimeError("pool already closed")


async def test_run_once_opens_before_polling_and_closes_after_the_last_delivery(make_app, tmp_path: Path) -> None:
    plugin = Pooled("pooled", tmp_path / "pool.log", outgoing=tmp_path / "outgoing")
    app = make_app(pm=make_plugin_manager(extra=(plugin,)))
    assert isinstance(app, Host)  # the App is what the hooks are given
    (tmp_path / "maildir" / "new" / "1.eml").write_bytes(eml())

    res = await app.run_once()

    assert res["processed"] == 1
    assert plugin.started_with is app
    assert (tmp_path / "pool.log").read_text().splitlines() == ["open email=support@bridge.test", "poll", "close"]
    assert plugin.log is not None and plugin.log.closed
    assert plugin.spooled_at_shutdown and len(plugin.spooled_at_shutdown) == 1  # the acknowledgement was out
    app.store.engine.dispose()


async def test_a_failing_startup_marks_that_plugin_and_the_others_run(make_app, tmp_path: Path) -> None:
    fragile = FailsAtStartup()
    before = Pooled("before", tmp_path / "before.log")
    after = Pooled("after", tmp_path / "after.log")
    app = make_app(pm=make_plugin_manager(extra=(before, fragile, after)))
    (tmp_path / "maildir" / "new" / "1.eml").write_bytes(eml())

    with capture_logs() as logs:
        res = await app.run_once()

    assert res["processed"] == 1 and res["outcomes"][0].status != "quarantined"
    failed = [e for e in logs if e["event"] == "plugin_startup_failed"]
    assert [(e["plugin"], e["error"]) for e in failed] == [("fragile", "ConnectionError: licence server unreachable")]
    assert app.pm.infos["fragile"].status == "failed"
    assert "licence server unreachable" in app.pm.infos["fragile"].reason
    assert fragile.classified == 0 and not fragile.shut_down  # out of every hook, shutdown included
    for ok in (before, after):
        assert (tmp_path / f"{ok.__name__}.log").read_text().splitlines()[1:] == ["poll", "close"]
    app.store.engine.dispose()


async def test_a_failing_shutdown_is_logged_and_the_others_still_close(make_app, tmp_path: Path) -> None:
    first, last = Pooled("first", tmp_path / "first.log"), Pooled("last", tmp_path / "last.log")
    app = make_app(pm=make_plugin_manager(extra=(first, FailsAtShutdown(), last)))

    with capture_logs() as logs:
        await app.run_once()  # returns normally: a shutdown error never fails the run

    failed = [e for e in logs if e["event"] == "plugin_shutdown_failed"]
    assert [(e["plugin"], e["error"]) for e in failed] == [("sloppy", "RuntimeError: pool already closed")]
    assert first.log is not None and first.log.closed and last.log is not None and last.log.closed
    app.store.engine.dispose()


async def test_strict_mode_reraises_a_failing_startup(make_app) -> None:
    app = make_app(pm=make_plugin_manager(strict=True, extra=(FailsAtStartup(),)))
    with pytest.raises(ConnectionError, match="licence server"):
        await app.pm.lifecycle("startup", app=app)
    app.store.engine.dispose()


async def test_the_daemon_starts_plugins_before_its_sources_and_stops_them_at_the_end(
    make_app, tmp_path: Path
) -> None:
    from svcbridge.daemon import serve

    plugin = Pooled("pooled", tmp_path / "pool.log")
    app = make_app(pm=make_plugin_manager(extra=(plugin,)), shutdown_grace=2)
    task = asyncio.create_task(serve(app))
    try:
        await asyncio.wait_for(plugin.polled.wait(), 10)
        assert plugin.log is not None and not plugin.log.closed
        app.stopping.set()  # what SIGTERM does
        assert await asyncio.wait_for(task, 10) == 0
    finally:
        task.cancel()
        app.store.engine.dispose()
    lines = (tmp_path / "pool.log").read_text().splitlines()
    assert lines[0].startswith("open") and lines[-1] == "close" and set(lines[1:-1]) == {"poll"}
    assert plugin.log.closed


async def test_lifecycle_refuses_other_hooks(make_app) -> None:
    app = make_app()
    with pytest.raises(ValueError, match="not a lifecycle hook"):
        await app.pm.lifecycle("parse_message", raw=None)
    app.store.engine.dispose()
