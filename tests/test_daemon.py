"""The daemon as a real process: a dropped .eml shows up as a ticket, SIGTERM exits 0, and kill -9 at
the worst moments loses nothing and makes no second ticket or second notice on restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import eml, free_port

BIN = Path(sys.executable).parent / "svcbridge"


def write_config(tmp_path: Path, port: int, http: str = "") -> Path:
    """A daemon on loopback with a Maildir and the spool transport; ``http``: more [http] lines."""
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(
        f"""
data_dir = "{tmp_path}/var"
shutdown_grace = 5
[http]
port = {port}
{http}
[log]
format = "json"
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.maildir]
path = "{tmp_path}/maildir"
interval = 0.1
[plugins.email.outbound]
spool_dir = "{tmp_path}/outgoing"
"""
    )
    return cfg


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_stray_daemons():
    """Whatever a test asserts, no daemon it started outlives it."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def start(cfg: Path, faults: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
    if faults:
        env["SVCBRIDGE_FAULTS"] = faults
    proc = subprocess.Popen([str(BIN), "--config", str(cfg), "run"], env=env, cwd=cfg.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _STARTED.append(proc)
    return proc


def wait_for(cond, timeout: float = 20.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def cli(cfg: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
    return subprocess.run([str(BIN), "--config", str(cfg), *args], env=env, cwd=cfg.parent, check=True,
                          capture_output=True, text=True).stdout


def tickets(cfg: Path) -> list[dict]:
    return json.loads(cli(cfg, "tickets", "list", "--json"))


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def test_dropped_mail_becomes_ticket_and_sigterm_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    proc = start(cfg)
    try:
        wait_for(lambda: _healthy(port))
        new = tmp_path / "maildir" / "new"
        t0 = time.monotonic()
        (new / "1.eml").write_bytes(eml())
        wait_for(lambda: _ready_tickets(port))
        latency = time.monotonic() - t0
        print(f"drop -> ticket visible: {latency:.3f} s")
        assert [t["ref"] for t in tickets(cfg)] == ["SB-000001"]
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'svcbridge_source_up{source="maildir"} 1.0' in metrics
    finally:
        code = stop(proc)
    out = proc.stdout.read().decode()
    assert code == 0, out
    assert '"event": "stopped"' in out


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _ready_tickets(port: int) -> bool:
    # "/" is the console behind a login now; the metrics say when the first ticket is created
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return 'outcome="created"} 1.0' in metrics


@pytest.mark.parametrize("point", ["after_journal", "after_store", "after_remote_commit"])
def test_kill_9_loses_nothing_and_duplicates_nothing(tmp_path: Path, point: str) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True)
    (new / "1.eml").write_bytes(eml())
    proc = start(cfg, faults=point)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # died at the fault point
    if point == "after_journal":
        assert (new / "1.eml").exists()  # journaled but not yet acknowledged
    proc = start(cfg)
    try:
        wait_for(lambda: _healthy(port))
        wait_for(lambda: not list(new.iterdir()))
        wait_for(lambda: {r["status"] for r in json.loads(cli(cfg, "outbox", "list", "--json"))} == {"done"})
        time.sleep(0.5)  # a moment for any (wrong) second delivery to show up
    finally:
        assert stop(proc) == 0
    assert [t["ref"] for t in tickets(cfg)] == ["SB-000001"]
    assert len(list((tmp_path / "outgoing").glob("*.eml"))) == 1  # one acknowledgement, not two
    journal = cli(cfg, "outbox", "list", "--json")
    assert {r["status"] for r in json.loads(journal)} == {"done"}
    shown = json.loads(cli(cfg, "tickets", "show", "SB-000001", "--json"))
    assert [e["type"] for e in shown["events"]].count("received") == 1


# ---------------------------------------------------------------------- a failing source's next try
class _Throttled:
    """A source whose peer says 429 with Retry-After once, then works."""

    name, channel, interval = "throttled", "email", 600.0

    def __init__(self, exc: Exception) -> None:
        self.exc, self.polls = exc, []

    async def poll(self, ctx: object) -> int:
        self.polls.append(time.monotonic())
        if len(self.polls) == 1:
            raise self.exc
        return 0


def test_retry_delay_honours_retry_after_and_backs_off_otherwise() -> None:
    from svcbridge.daemon import MAX_RETRY_AFTER, MAX_SOURCE_BACKOFF, source_retry_delay
    from svcbridge.errors import AuthFailed, NotReady

    assert source_retry_delay(NotReady("429", retry_after=42.0), 60.0, 1) == 42.0
    assert source_retry_delay(NotReady("429", retry_after=10 * 86400.0), 60.0, 1) == MAX_RETRY_AFTER
    assert source_retry_delay(NotReady("5xx"), 1.0, 3) == 8.0  # no hint: exponential
    assert source_retry_delay(OSError("reset"), 60.0, 9) == MAX_SOURCE_BACKOFF
    assert source_retry_delay(AuthFailed("revoked"), 1.0, 1) == MAX_SOURCE_BACKOFF  # no login storm
    assert source_retry_delay(NotReady("429", retry_after=0.0), 60.0, 1) == 1.0  # "now", not a tight loop
    assert source_retry_delay(OSError("down"), 60.0, 5000) == MAX_SOURCE_BACKOFF  # days of failures


async def test_source_loop_comes_back_when_the_peer_said(make_app) -> None:
    """Retry-After 0.2 s on a source polled every 10 minutes: the next poll follows the peer's hint."""
    import asyncio

    from svcbridge.daemon import _source_loop
    from svcbridge.errors import NotReady

    app = make_app()
    src = _Throttled(NotReady("throttled", retry_after=0.2))
    app.sources[src.name] = src
    task = asyncio.create_task(_source_loop(app, src.name))
    try:
        for _ in range(100):
            if len(src.polls) >= 2:
                break
            await asyncio.sleep(0.05)
        # with the plain backoff (interval * 2) the second poll would come 20 minutes later
        assert len(src.polls) == 2
        assert src.polls[1] - src.polls[0] >= 0.2
    finally:
        app.stopping.set()
        await asyncio.wait_for(task, 5)
        app.store.engine.dispose()


# ---------------------------------------------------------------------- HTTP that cannot start
def test_a_taken_http_port_ends_the_start_with_the_reason_and_no_lease(tmp_path: Path) -> None:
    """Issue 12 item 9: the daemon logged "started", held the pipeline lease and processed nothing."""
    import socket

    from sqlalchemy import create_engine, text

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = write_config(tmp_path, port)
        new = tmp_path / "maildir" / "new"
        new.mkdir(parents=True)
        (new / "1.eml").write_bytes(eml())
        proc = start(cfg)
        code = proc.wait(timeout=30)
    out = proc.stdout.read().decode()
    assert code == 1, out
    failed = [json.loads(ln) for ln in out.splitlines() if '"http_bind_failed"' in ln]
    assert failed and f"127.0.0.1:{port}" == failed[0]["address"]
    assert "Address already in use" in failed[0]["error"]
    assert '"event": "started"' not in out
    engine = create_engine(f"sqlite:///{tmp_path}/var/svcbridge.db")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM leases")).scalar() == 0
    engine.dispose()
    assert (new / "1.eml").exists()  # nothing was taken in by a daemon that is not running
    # the next start on a free port takes the mail in at once (no lease to wait out)
    port = free_port()
    proc = start(write_config(tmp_path, port))
    try:
        wait_for(lambda: _healthy(port))
        wait_for(lambda: _ready_tickets(port), timeout=10)
    finally:
        assert stop(proc) == 0


async def test_http_server_ending_by_itself_stops_the_daemon_with_exit_1(make_app) -> None:
    import asyncio

    from svcbridge.daemon import _until_stopped

    app = make_app()
    app.stopping = asyncio.Event()

    async def broken() -> None:
        raise OSError("listener gone")

    task = asyncio.create_task(broken())
    assert await asyncio.wait_for(_until_stopped(app, task), 5) == 1
    assert app.stopping.is_set()
    app.stopping = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, app.stopping.set)
    assert await asyncio.wait_for(_until_stopped(app, None), 5) == 0
    app.store.engine.dispose()
