"""Settings of the Request Tracker connector: the ``[plugins.rt]`` table.

Example::

    [plugins.rt]
    url = "https://rt.example.com"          # RT's WebBaseURL; /REST/2.0 is appended
    token_file = "/run/secrets/rt-token"    # or SVCBRIDGE_PLUGINS__RT__TOKEN; never in the file
    queue = "General"
    [plugins.rt.state_map.from_helpdesk]    # merged over the defaults below
    stalled = "waiting_parts"

The state maps are the shared ``StateMap`` ones (``from_helpdesk`` / ``to_helpdesk``), merged over RT's
default lifecycle, so a custom lifecycle only lists its extra statuses; an RT status mapped to ``""`` is
not reported. The keys of the RT-only days, ``from_rt`` / ``to_rt``, are still read, with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import structlog
from pydantic import Field, SecretStr, field_validator, model_validator

from svcbridge import HelpdeskSettings, StateMap, TicketState, check_priorities

log = structlog.get_logger("svcbridge.rt")
_S = TicketState
# the keys this connector used before it shared StateMap -> the shared ones
DEPRECATED_KEYS = {"from_rt": "from_helpdesk", "to_rt": "to_helpdesk"}


class RtStateMap(StateMap):
    """RT's default lifecycle <-> svcbridge. "new" in RT means "arrived, nobody worked on it yet"."""

    DEFAULT_FROM = {
        "new": _S.ACKNOWLEDGED,
        "open": _S.IN_PROGRESS,
        "stalled": _S.WAITING_CUSTOMER,
        "resolved": _S.RESOLVED,
        "rejected": _S.CLOSED,
        "deleted": _S.CLOSED,
    }
    # used when svcbridge itself changes the state in RT (a customer reply reopens)
    DEFAULT_TO = {
        _S.NEW: "new",
        _S.ACKNOWLEDGED: "open",
        _S.IN_PROGRESS: "open",
        _S.WAITING_CUSTOMER: "stalled",
        _S.WAITING_PARTS: "stalled",
        _S.ON_SITE: "open",
        _S.RESOLVED: "resolved",
        _S.CLOSED: "resolved",
    }

    @model_validator(mode="before")
    @classmethod
    def _deprecated_keys(cls, data: Any) -> Any:
        """``from_rt`` / ``to_rt`` -> ``from_helpdesk`` / ``to_helpdesk`` (the new key wins per status)."""
        if not isinstance(data, dict) or not DEPRECATED_KEYS.keys() & data.keys():
            return data
        out = dict(data)
        for old, new in DEPRECATED_KEYS.items():
            if old not in out:
                continue
            given = out.pop(old)
            msg = f"[plugins.rt.state_map] {old} is deprecated; use {new} (same entries)"
            # both: Python's warning for code and tests, a log line for whoever reads the daemon's log
            warnings.warn(msg, DeprecationWarning, stacklevel=2)
            where = "plugins.rt.state_map."
            log.warning("deprecated_setting", key=where + old, use=where + new)
            if isinstance(given, dict) and isinstance(out.get(new, {}), dict):
                out[new] = {**given, **out.get(new, {})}
            else:  # not a table: let the field's own validation say what is wrong with it
                out.setdefault(new, given)
        return out


DEFAULT_PRIORITIES: dict[str, int] = {"P1": 90, "P2": 70, "P3": 50, "P4": 20}


class RtSettings(HelpdeskSettings):
    """``[plugins.rt]``: one Request Tracker 5 instance reached through REST2 with an auth token."""

    name: str = Field(default="rt", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="sink name for routing")
    token: SecretStr = Field(description="REST2 auth token of svcbridge's own RT user (use token_file)")
    queue: str = "General"
    ref_custom_field: str | None = Field(
        default=None,
        pattern=r"^[^{}'\"\\]{1,200}$",
        description="ticket custom field holding svcbridge's reference; without it the [SB-000123] "
        "subject tag is used to find a ticket again",
    )
    customer_messages: Literal["correspond", "comment"] = Field(
        default="correspond", description="how a customer's follow-up is added to the RT ticket"
    )
    state_map: RtStateMap = Field(default_factory=RtStateMap)
    priorities: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    poll_interval: float = Field(default=30.0, gt=0, description="seconds between transaction polls")
    poll_page_size: int = Field(default=100, ge=1, le=100)
    poll_max_pages: int = Field(default=10, ge=1, description="pages read per poll; the rest next time")

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, v: dict[str, int]) -> dict[str, int]:
        return check_priorities(v, DEFAULT_PRIORITIES)

    @property
    def api_base(self) -> str:
        """The REST2 root, with a trailing slash (httpx joins relative paths onto it)."""
        return (self.url if self.url.endswith("/REST/2.0") else self.url + "/REST/2.0") + "/"
