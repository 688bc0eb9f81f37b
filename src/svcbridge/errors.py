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
