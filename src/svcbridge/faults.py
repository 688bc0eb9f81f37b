"""Named crash points for crash-safety tests: ``SVCBRIDGE_FAULTS=after_journal`` makes the process
SIGKILL itself right there, exactly like ``kill -9`` at the worst moment. Unset in production."""

from __future__ import annotations

import os
import signal


def fault(point: str) -> None:
    """Crash for real at a named point when ``SVCBRIDGE_FAULTS`` lists it."""
    if point in os.environ.get("SVCBRIDGE_FAULTS", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
