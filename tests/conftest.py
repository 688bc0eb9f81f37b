"""Shared fixtures: a fresh plugin manager and a fresh store per test (pluggy's testing/conftest.py).

``make_app(**settings)`` builds a full ``App`` on a private SQLite file under tmp_path with entry-point
plugins loaded, so tests exercise the same wiring as the daemon. ``require_server(what, ok)`` fails
under CI=true (the server must be there) and skips elsewhere when a real server is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from svcbridge.app import App  # noqa: E402
from svcbridge.plugins import make_plugin_manager  # noqa: E402
from svcbridge.settings import load_settings  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_server(what: str, available: bool) -> None:
    """A test that needs a real server fails under CI=true when it is missing, and skips elsewhere."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} not available")


def require_binary(name: str, path: str | None = None) -> str:
    found = path if path and Path(path).exists() else shutil.which(name)
    require_server(name, bool(found))
    return str(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pm() -> Any:
    """A new plugin manager (built-ins and entry points), never shared between tests."""
    return make_plugin_manager()


@pytest.fixture
def base_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings for an isolated embedded instance under tmp_path (no config file is read)."""
    monkeypatch.chdir(tmp_path)  # the repo's config/svcbridge.toml must not leak into tests
    for key in list(os.environ):
        if key.startswith("SVCBRIDGE_"):
            monkeypatch.delenv(key)
    return {
        "data_dir": tmp_path / "var",
        # the in-process clients' Host names (TestClient's "testserver", httpx base URLs); the default
        # list (bound host, localhost, public_url) is tested in test_http_frontdoor.py
        "http": {"enabled": False, "allowed_hosts": ["testserver", "t", "bridge.test", "b.test", "console.test"]},
        "outbox": {"backoff_initial": 0.01, "backoff_max": 0.05, "poll_interval": 0.05},
        "plugins": {
            "email": {
                "from_address": "support@bridge.test",
                "maildir": {"path": str(tmp_path / "maildir"), "interval": 0.05, "settle": 0},
                "outbound": {"transport": "spool", "spool_dir": str(tmp_path / "outgoing")},
            }
        },
    }


@pytest.fixture
def make_app(base_settings: dict[str, Any], tmp_path: Path) -> Callable[..., App]:
    """Build an App; keyword arguments are deep-merged over base_settings."""

    def build(pm: Any = None, **overrides: Any) -> App:
        data = _merge(base_settings, overrides)
        settings = load_settings(None, **data)
        return App.build(settings, pm=pm)

    return build


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def eml(
    subject: str = "Printer jams",
    body: str = "It jams on every page.",
    sender: str = "Alice <alice@example.com>",
    msgid: str | None = "<m1@example.com>",
    extra: str = "",
) -> bytes:
    """A small, valid RFC 5322 message for tests that do not care about MIME details."""
    head = f"From: {sender}\r\nTo: support@bridge.test\r\nSubject: {subject}\r\n"
    if msgid:
        head += f"Message-ID: {msgid}\r\n"
    head += extra
    head += (
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    return (head + "\r\n" + body + "\r\n").encode("utf-8")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Any]:
    """A private Dovecot (tests/dovecot.py) on random loopback ports, one per test module."""
    from dovecot import start_dovecot

    binary = require_binary("dovecot", "/usr/sbin/dovecot")
    dv = start_dovecot(binary)
    yield dv
    dv.stop()


ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_up() -> bool:
    try:
        with create_engine(ADMIN).connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL (trust auth), dropped afterwards."""
    require_server("PostgreSQL on 127.0.0.1:5432", _pg_up())
    name = f"svcb_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        yield url
