"""Repeated errors are written once per window with a count (issue 12 item 4: the log of a daemon
under attack grew by hundreds of MB of identical ``accept()`` tracebacks)."""

from __future__ import annotations

import io
import json
import logging

import structlog

from svcbridge import log as logmod


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _setup(window: float = 60.0) -> tuple[io.StringIO, Clock]:
    buf = io.StringIO()
    logmod.configure("json", "info", stream=buf, repeat_window=window)
    clock = Clock()
    logmod._REPEATS.clock = clock
    return buf, clock


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(ln) for ln in buf.getvalue().splitlines() if ln.startswith("{")]


def test_the_same_error_is_written_once_per_window_with_a_count() -> None:
    buf, clock = _setup()
    log = structlog.get_logger("t")
    for i in range(1000):
        log.error("source_failed", source="maildir", error="OSError: [Errno 24] Too many open files", retry_in=i)
    log.error("source_failed", source="imap:sales", error="OSError: [Errno 24] Too many open files")
    log.error("source_failed", source="maildir", error="TimeoutError: read")
    for i in range(3):
        log.info("processed", ticket=f"SB-{i}")  # not an error: every line is written
    lines = _lines(buf)
    assert [(ln["event"], ln.get("source"), ln.get("ticket")) for ln in lines] == [
        ("source_failed", "maildir", None),
        ("source_failed", "imap:sales", None),
        ("source_failed", "maildir", None),
        ("processed", None, "SB-0"),
        ("processed", None, "SB-1"),
        ("processed", None, "SB-2"),
    ]
    assert logmod.flush_repeats() == 0  # the window is not over yet
    clock.now += 61
    assert logmod.flush_repeats() == 1  # the count of the left-out lines, in one line
    summary = _lines(buf)[-1]
    assert summary["event"] == "source_failed" and summary["repeated"] == 999
    assert summary["source"] == "maildir" and summary["level"] == "error"
    # the next window starts with a line written again
    log.error("source_failed", source="maildir", error="OSError: [Errno 24] Too many open files")
    assert len(_lines(buf)) == 8


def test_a_count_rides_on_the_next_line_and_everything_is_flushed_at_exit() -> None:
    buf, clock = _setup()
    log = structlog.get_logger("t")
    for _ in range(5):
        log.warning("http_connection_closed", reason="header_timeout", error="headers not complete")
    clock.now += 61
    log.warning("http_connection_closed", reason="header_timeout", error="headers not complete")
    assert [ln.get("repeated") for ln in _lines(buf)] == [None, 4]
    log.warning("http_connection_closed", reason="header_timeout", error="headers not complete")
    assert logmod.flush_repeats(everything=True) == 1
    assert _lines(buf)[-1]["repeated"] == 1


def test_library_tracebacks_are_collapsed_too() -> None:
    buf, clock = _setup()
    lg = logging.getLogger("asyncio")
    for fd in range(500):
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            lg.error("socket.accept() out of system resource\nsocket: <fd=%d>", fd, exc_info=True)
    text = buf.getvalue()
    assert text.count("Traceback") == 1 and text.count("out of system resource") == 1
    clock.now += 61
    assert logmod.flush_repeats() == 1
    assert "socket.accept() out of system resource (repeated 499 times in 60 s)" in buf.getvalue()


def test_many_distinct_errors_stay_bounded() -> None:
    buf, _clock = _setup()
    log = structlog.get_logger("t")
    for i in range(10_000):
        log.error("webhook_failed", error=f"bad {i}")
    assert len(_lines(buf)) == 10_000
    assert len(logmod._REPEATS._seen) <= logmod._REPEATS.max_keys
