"""Settings of the Request Tracker connector: the ``[plugins.rt]`` table.

Example::

    [plugins.rt]
    url = "https://rt.example.com"          # RT's WebBaseURL; /REST/2.0 is appended
    token_file = "/run/secrets/rt-token"    # or SVCBRIDGE_PLUGINS__RT__TOKEN; never in the file
    queue = "General"
    [plugins.rt.state_map.from_rt]          # merged over the defaults below
    stalled = "waiting_parts"

The state maps are merged over the defaults, so a custom lifecycle only lists its extra statuses. An RT
status mapped to ``""`` is not reported to svcbridge at all.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from svcbridge import PluginSettings, Priority, TicketState

# RT's default lifecycle -> svcbridge. "new" in RT means "arrived, nobody worked on it yet".
DEFAULT_FROM_RT: dict[str, str] = {
    "new": TicketState.ACKNOWLEDGED.value,
    "open": TicketState.IN_PROGRESS.value,
    "stalled": TicketState.WAITING_CUSTOMER.value,
    "resolved": TicketState.RESOLVED.value,
    "rejected": TicketState.CLOSED.value,
    "deleted": TicketState.CLOSED.value,
}
# svcbridge -> RT, used when svcbridge itself changes the state in RT (a customer reply reopens).
DEFAULT_TO_RT: dict[str, str] = {
    TicketState.NEW.value: "new",
    TicketState.ACKNOWLEDGED.value: "open",
    TicketState.IN_PROGRESS.value: "open",
    TicketState.WAITING_CUSTOMER.value: "stalled",
    TicketState.WAITING_PARTS.value: "stalled",
    TicketState.ON_SITE.value: "open",
    TicketState.RESOLVED.value: "resolved",
    TicketState.CLOSED.value: "resolved",
}
DEFAULT_PRIORITIES: dict[str, int] = {"P1": 90, "P2": 70, "P3": 50, "P4": 20}
_STATES = {s.value for s in TicketState}


class StateMap(BaseModel):
    """RT status <-> svcbridge state, both directions; each table is merged over the defaults."""

    model_config = ConfigDict(extra="forbid")
    from_rt: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FROM_RT))
    to_rt: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TO_RT))

    @field_validator("from_rt")
    @classmethod
    def _from_rt(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: s for k, s in v.items() if s and s not in _STATES}
        if bad:
            raise ValueError(f"unknown svcbridge states {bad}; use one of {sorted(_STATES)} or ''")
        return {**DEFAULT_FROM_RT, **{k.lower(): s for k, s in v.items()}}

    @field_validator("to_rt")
    @classmethod
    def _to_rt(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v if k not in _STATES)
        if bad:
            raise ValueError(f"unknown svcbridge states {bad}; use any of {sorted(_STATES)}")
        empty = sorted(k for k, s in v.items() if not s)
        if empty:
            raise ValueError(f"empty RT status for {empty}")
        return {**DEFAULT_TO_RT, **v}

    def state(self, rt_status: str) -> TicketState | None:
        value = self.from_rt.get(rt_status.lower(), "")
        return TicketState(value) if value else None


class RtSettings(PluginSettings):
    """``[plugins.rt]``: one Request Tracker 5 instance reached through REST2 with an auth token."""

    url: str = Field(description="RT's WebBaseURL, e.g. https://rt.example.com or https://example.com/rt")
    token: SecretStr = Field(description="REST2 auth token of svcbridge's own RT user (use token_file)")
    queue: str = "General"
    name: str = Field(default="rt", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="sink name for routing")
    ref_custom_field: str | None = Field(
        default=None,
        pattern=r"^[^{}'\"\\]{1,200}$",
        description="ticket custom field holding svcbridge's reference; without it the [SB-000123] "
        "subject tag is used to find a ticket again",
    )
    customer_messages: Literal["correspond", "comment"] = Field(
        default="correspond", description="how a customer's follow-up is added to the RT ticket"
    )
    state_map: StateMap = Field(default_factory=StateMap)
    priorities: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    poll_interval: float = Field(default=30.0, gt=0, description="seconds between transaction polls")
    poll_page_size: int = Field(default=100, ge=1, le=100)
    poll_max_pages: int = Field(default=10, ge=1, description="pages read per poll; the rest next time")
    timeout: float = Field(default=30.0, gt=0, description="seconds per HTTP request")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, v: dict[str, int]) -> dict[str, int]:
        names = {p.name for p in Priority}
        bad = sorted(k for k in v if k not in names)
        if bad:
            raise ValueError(f"unknown priorities {bad}; use {sorted(names)}")
        return {**DEFAULT_PRIORITIES, **v}

    @property
    def api_base(self) -> str:
        """The REST2 root, with a trailing slash (httpx joins relative paths onto it)."""
        return (self.url if self.url.endswith("/REST/2.0") else self.url + "/REST/2.0") + "/"
