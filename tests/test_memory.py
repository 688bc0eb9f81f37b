"""svcbridge/memory.py: glibc's malloc arenas capped for the daemon's threads, an operator's
MALLOC_ARENA_MAX left alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svcbridge.memory import limit_arenas

GLIBC = sys.platform == "linux" and os.confstr("CS_GNU_LIBC_VERSION") is not None


@pytest.mark.skipif(not GLIBC, reason="mallopt(M_ARENA_MAX) is glibc's")
def test_arenas_are_capped_on_glibc() -> None:
    code = "from svcbridge.memory import limit_arenas; print(limit_arenas())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_an_operators_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_arenas(0) is False  # 0: leave glibc's default
