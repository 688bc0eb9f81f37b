"""Named crash points for crash-safety tests: ``SVCBRIDGE_FAULTS=after_journal`` makes the process
SIGKILL itself right there, exactly like ``kill -9`` at the worst moment; ``pause:before_journal``
makes it SIGSTOP itself there once (a process paused by the machine; the test sends SIGCONT).
Unset in production."""

from __future__ import annotations

import os
import signal

_paused: set[str] = set()


def fault(point: str) -> None:
    """Crash (or pause once) for real at a named point when ``SVCBRIDGE_FAULTS`` lists it."""
    wanted = os.environ.get("SVCBRIDGE_FAULTS", "")
    if not wanted:
        return
    points = wanted.split(",")
    if point in points:
        os.kill(os.getpid(), signal.SIGKILL)
    if f"pause:{point}" in points and point not in _paused:
        _paused.add(point)
        os.kill(os.getpid(), signal.SIGSTOP)
