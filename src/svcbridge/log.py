"""structlog set-up: JSON in production, console in a terminal, secrets redacted everywhere.

Every known secret value (from settings) is replaced by ``**********`` in every string of every log
line, whatever path it took (a config dump, an HTTP error text, an exception message), because a
secret can leak through text we did not write ourselves.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
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


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    lvl = getattr(logging, level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _merge_scope,
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
    handler.addFilter(_StdlibRedactor())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO))
    for noisy in ("httpx", "httpcore", "alembic.runtime.migration", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _StdlibRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        return True
