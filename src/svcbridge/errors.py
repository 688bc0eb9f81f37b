"""Exceptions plugins raise to tell the host what a failure means.

The split follows Home Assistant's NotReady / AuthFailed / Error, because "what should the host do
next" is the only thing that matters about a failure::

    SvcbridgeError
     ├── NotReady          transient: retry later with backoff (5xx, timeout, 429 with retry_after)
     ├── AuthFailed        credentials refused: park the target, raise an alert, no retry storm
     ├── PermanentError    this item can never succeed as it is: dead-letter it, the rest go on
     │    └── ParseError   raw input cannot be understood: quarantine it with the reason
     ├── ConfigError       settings are wrong: reported by check-config, the daemon does not start
     └── StoreUnavailable  the journal cannot be written: nothing may be acknowledged upstream

Any other exception from a plugin is treated like NotReady for delivery and like ParseError for
intake stages; the host always records which plugin raised it.
"""

from __future__ import annotations

import re

__all__ = [
    "AuthFailed",
    "ConfigError",
    "NotReady",
    "ParseError",
    "PermanentError",
    "StoreUnavailable",
    "SvcbridgeError",
]


class SvcbridgeError(Exception):
    """Base of every error svcbridge defines."""


class NotReady(SvcbridgeError):
    """Transient failure; `retry_after` (seconds) comes from a Retry-After header when the peer sent one."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthFailed(SvcbridgeError):
    """The peer refused our credentials (401/403, revoked token)."""


class PermanentError(SvcbridgeError):
    """The item is rejected for good (422, validation); retrying the same payload cannot help."""


class ParseError(PermanentError):
    """The raw message cannot be parsed; it is quarantined with this message as the reason."""


class ConfigError(SvcbridgeError):
    """Invalid settings. `errors` holds (toml_path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in errors))
        self.errors = errors


class StoreUnavailable(SvcbridgeError):
    """The store could not commit; the caller must not acknowledge its source."""


class PipelineBusy(StoreUnavailable):
    """Another process holds the pipeline lease (``store/lease.py``): journal entries stay pending for it."""


class LeaseLost(StoreUnavailable):
    """This process no longer holds the lease of the source it acts for (``replicas.py``): it was paused
    or cut off from the store past the lease, and another replica may run the source now. Nothing was
    journaled; do not acknowledge or act upstream (no move, delete or flag), end the pass."""


# What an error kept in the store (outbox, jobs, timers, quarantine) must never carry. A peer's error
# page may echo the request (its Authorization header, a token in the URL); logs are redacted on the
# way out (log.py), stored text is redacted on the way in, here, and shown as stored by the CLI and
# the web pages.
_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)[?#][^\s\"'<>]*")
_AUTH = re.compile(
    r"(?i)\b(authorization|proxy-authorization|x-api-key|api[-_]?key|x-auth-token|cookie|set-cookie)"
    r"(\"?'?\s*[:=]\s*\"?'?)(?:(?:basic|bearer|token|digest|negotiate)\s+)?[^\s\"',;}]+"
)
_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}")
_NAMED = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|client_secret|access_token|refresh_token|token|auth_token|sig|signature)"
    r"(\"?'?\s*[:=]\s*\"?'?)[^\s\"',;&}]+"
)


def clean_error(text: str, limit: int = 4000) -> str:
    """An error excerpt as it may be stored: configured secrets redacted (as in the logs), credential
    headers and named credentials masked, URL query strings dropped; at most ``limit`` characters."""
    from .log import redact  # here, not at the top: log.py is configured late, errors.py is imported early

    text = _QUERY.sub(r"\1?...", str(text))
    text = _AUTH.sub(r"\1\2***", text)
    text = _SCHEME.sub(r"\1 ***", text)
    text = _NAMED.sub(r"\1\2***", text)
    return redact(text)[:limit]
