"""structlog set-up: JSON in production, console in a terminal, secrets redacted everywhere.

Every known secret value (from settings) is replaced by ``**********`` in every string of every log
line, whatever path it took (a config dump, an HTTP error text, an exception message), because a
secret can leak through text we did not write ourselves.

An error repeated many times (a peer down, an attack on the HTTP side) is written once per window:
the first line of a kind (same event, error and source / sink / plugin / path) is written, the next
ones within ``REPEAT_WINDOW`` seconds are only counted, and the count is written as ``repeated=N``
with the next line of that kind, or by ``flush_repeats()`` (the daemon calls it every few seconds).
Library log lines (asyncio's ``accept()`` errors, uvicorn's "Invalid HTTP request") likewise.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

MASK = "**********"
_SECRETS: set[str] = set()

# Keys every log line in this context carries (journal_id, message_id, plugin, hook). One plain
# ContextVar holding a tuple, set and reset around each hook call: structlog's bound_contextvars made a
# ContextVar per key and scanned the whole context on every bind, a measurable cost per message.
SCOPE: ContextVar[tuple[tuple[str, Any], ...]] = ContextVar("svcbridge_log_scope", default=())


@contextmanager
def scope(**values: Any) -> Iterator[None]:
    """Bind ``values`` to every log line written inside the block (also from plugins)."""
    token = SCOPE.set((*SCOPE.get(), *values.items()))
    try:
        yield
    finally:
        SCOPE.reset(token)


def _merge_scope(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    # innermost scope first: a hook called from inside another names its own plugin; the line's
    # own keys win over both, as with structlog's contextvars
    for k, v in reversed(SCOPE.get()):
        event.setdefault(k, v)
    return event


def add_secrets(values: Iterable[str]) -> None:
    """Register secret values to redact from every log line from now on."""
    _SECRETS.update(v for v in values if v and len(v) >= 4)


def redact(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, MASK)
    return text


def _scrub(obj: Any) -> Any:
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_scrub(v) for v in obj)
    if isinstance(obj, BaseException):
        return redact(f"{type(obj).__name__}: {obj}")
    return obj


def _redact_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: _scrub(v) for k, v in event.items()} if _SECRETS else event


def _redact_rendered(_logger: Any, _name: str, rendered: Any) -> Any:
    # after rendering: catches secrets inside formatted tracebacks too
    return redact(rendered) if isinstance(rendered, str) and _SECRETS else rendered


REPEAT_WINDOW = 60.0
# fields that tell two failures apart although event and error are the same (another mailbox)
_IDENTITY = ("source", "sink", "target", "plugin", "hook", "path", "reason", "kind", "name")
_SUMMARY = "_repeat_summary"


class Repeats:
    """Which log lines of a kind to write: the first per window; the others are counted."""

    def __init__(self, window: float = REPEAT_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.clock = window, clock
        self.max_keys = 4096
        # key -> [window start, lines left out, how to write the summary]
        self._seen: dict[Hashable, list[Any]] = {}
        self._lock = threading.Lock()

    def admit(self, key: Hashable, summary: Callable[[int], None]) -> int | None:
        """None: leave this line out; else how many of its kind were left out before it."""
        now = self.clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.window:
                entry[1] += 1
                entry[2] = summary
                return None
            if len(self._seen) >= self.max_keys:
                self._expire(now)
            self._seen[key] = [now, 0, summary]
            return entry[1] if entry is not None else 0

    def flush(self, everything: bool = False) -> int:
        """Write the count of every kind whose window is over (of every kind at all, at exit); returns
        how many summaries were written."""
        with self._lock:
            due = self._expire(self.clock() + (self.window if everything else 0.0))
        for n, summary in due:
            summary(n)
        return len(due)

    def _expire(self, now: float) -> list[tuple[int, Callable[[int], None]]]:
        due = []
        for key, (start, n, summary) in list(self._seen.items()):
            if now - start >= self.window:
                del self._seen[key]
                if n:
                    due.append((n, summary))
        if len(self._seen) >= self.max_keys:  # a flood of distinct errors: forget the oldest half
            for key in list(self._seen)[: self.max_keys // 2]:
                del self._seen[key]
        return due


_REPEATS = Repeats()


def flush_repeats(everything: bool = False) -> int:
    """Write ``repeated=N`` for every kind of line left out in a window that is over (``everything``:
    in any window, when the process stops)."""
    return _REPEATS.flush(everything)


def _error_key(event: dict[str, Any]) -> str | None:
    err = event.get("error")
    if err is not None:
        return str(err)[:300]
    exc = event.get("exc_info")
    if exc is True:
        exc = sys.exc_info()[1]
    elif isinstance(exc, tuple):
        exc = exc[1]
    return f"{type(exc).__name__}: {exc}"[:300] if isinstance(exc, BaseException) else None


def _collapse_repeats(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    if event.pop(_SUMMARY, False):
        return event
    err = _error_key(event)
    if err is None:  # only errors repeat: "ticket_created" for every mail is not one thing
        return event
    ident = tuple((k, str(event[k])) for k in _IDENTITY if k in event)
    fields = {k: v for k, v in event.items() if k not in ("event", "exc_info")}
    name = str(event.get("event"))

    def summary(n: int) -> None:
        getattr(structlog.get_logger(), method)(name, **fields, repeated=n, **{_SUMMARY: True})

    left_out = _REPEATS.admit(("s", method, name, err, ident), summary)
    if left_out is None:
        raise structlog.DropEvent
    if left_out:
        event["repeated"] = left_out
    return event


class _StdlibRepeats(logging.Filter):
    """The same for library loggers: keyed by logger, level, first line of the message, exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY, False):
            return True
        first = record.getMessage().split("\n", 1)[0][:200]
        exc = record.exc_info[1] if record.exc_info else None
        key = ("l", record.name, record.levelno, first, type(exc).__name__ if exc else "")
        name, level = record.name, record.levelno

        def summary(n: int) -> None:
            logging.getLogger(name).log(
                level, "%s (repeated %d times in %g s)", first, n, _REPEATS.window, extra={_SUMMARY: True}
            )

        left_out = _REPEATS.admit(key, summary)
        if left_out is None:
            return False
        if left_out:
            record.msg, record.args = f"{record.getMessage()} (after {left_out} more like it)", ()
        return True


def configure(
    fmt: str = "auto", level: str = "info", stream: Any = None, repeat_window: float = REPEAT_WINDOW
) -> None:
    global _REPEATS
    _REPEATS = Repeats(repeat_window)
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    lvl = getattr(logging, level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _merge_scope,
        _collapse_repeats,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
        structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer, _redact_rendered],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # stdlib loggers (uvicorn, alembic, httpx) go through the same redaction
    handler = logging.StreamHandler(stream)
    handler.addFilter(_StdlibRepeats())
    handler.addFilter(_StdlibRedactor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO))
    # a uvicorn configured elsewhere in the process (its default dictConfig) gives its loggers their own
    # handlers and propagate=False: their lines would bypass the redaction and the repeat filter
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    for noisy in ("httpx", "httpcore", "alembic.runtime.migration", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _StdlibRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True
