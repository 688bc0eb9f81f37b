"""What the real-server test modules (rt_server.py, dh_server.py) share: their setup script and session.

``run_setup(script, action, env)`` runs ``tests/helpdesks/setup-*.sh <action>`` and returns the
``KEY=value`` lines it prints (a failure is a RuntimeError with the script's output tails).
``running(start, what)`` is the session's server: started by ``start()``, stopped and its state dir
removed afterwards; when it cannot start, the tests fail under CI=true and skip elsewhere.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from conftest import require_server


class Server(Protocol):
    state: Path

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


def run_setup(script: Path, action: str, env: dict[str, str]) -> dict[str, str]:
    """Run `script` `action` with `env` (the whole environment); its ``KEY=value`` output lines."""
    proc = subprocess.run(
        ["bash", str(script), action], env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script.name} {action} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and line[:1].isupper())


@contextlib.contextmanager
def running(start: Callable[[], S], what: str) -> Iterator[S]:
    """A started server for a test session (fails under CI=true, skips elsewhere, when it cannot run)."""
    try:
        server = start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        require_server(f"{what} ({exc})", False)
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.state, ignore_errors=True)
