"""Settings of the GLPI connector: the ``[plugins.glpi]`` table.

Example::

    [plugins.glpi]
    url = "https://glpi.example.com"                 # /apirest.php is appended (or give .../api)
    user_token_file = "/run/secrets/glpi-user-token" # or login + password_file (HTTP Basic)
    app_token_file = "/run/secrets/glpi-app-token"   # the API client's App-Token, when it has one
    entities_id = 0
    webhook_secret_file = "/run/secrets/glpi-hook"   # the GLPI 11 webhook's secret
    [plugins.glpi.fields]                            # extra Ticket input, e.g. category and group
    itilcategories_id = 12
    _groups_id_assign = 3

GLPI ticket statuses are numbers (``CommonITILObject``): 1 new, 2 assigned, 3 planned, 4 waiting,
5 solved, 6 closed. The state maps use them as strings.
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from svcbridge import HelpdeskSettings, StateMap, TicketState, check_priorities

_S = TicketState


class GlpiStateMap(StateMap):
    """GLPI ticket status (1..6) <-> svcbridge."""

    DEFAULT_FROM = {
        "1": _S.ACKNOWLEDGED,  # new: arrived, nobody took it yet
        "2": _S.IN_PROGRESS,  # assigned
        "3": _S.IN_PROGRESS,  # planned
        "4": _S.WAITING_CUSTOMER,  # waiting
        "5": _S.RESOLVED,  # solved
        "6": _S.CLOSED,
    }
    DEFAULT_TO = {
        _S.NEW: "1",
        _S.ACKNOWLEDGED: "1",
        _S.IN_PROGRESS: "2",
        _S.WAITING_CUSTOMER: "4",
        _S.WAITING_PARTS: "4",
        _S.ON_SITE: "3",
        _S.RESOLVED: "5",
        _S.CLOSED: "6",
    }

    @model_validator(mode="after")
    def _numeric(self) -> GlpiStateMap:
        bad = {k: v for k, v in self.to_helpdesk.items() if str(v) not in {"1", "2", "3", "4", "5", "6"}}
        if bad:
            raise ValueError(f"to_helpdesk: GLPI statuses are 1..6, got {bad}")
        return self


# GLPI urgency: 5 very high, 4 high, 3 medium, 2 low, 1 very low
DEFAULT_URGENCIES = {"P1": 5, "P2": 4, "P3": 3, "P4": 2}
TAKEN = {"name", "content", "status", "urgency", "type", "entities_id", "_users_id_requester",
         "time_to_resolve", "time_to_own"}  # fmt: skip


class GlpiSettings(HelpdeskSettings):
    """``[plugins.glpi]``: one GLPI (legacy REST ``apirest.php``), session auth, GLPI 11 webhooks."""

    name: str = Field(default="glpi", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    user_token: SecretStr | None = Field(
        default=None, description="the API user's token (use user_token_file)"
    )
    login: str | None = Field(default=None, description="HTTP Basic login, instead of user_token")
    password: SecretStr | None = Field(default=None, description="HTTP Basic password (use password_file)")
    app_token: SecretStr | None = Field(default=None, description="the API client's App-Token, if it has one")
    entities_id: int = Field(default=0, ge=0, description="entity new tickets go to")
    ticket_type: Literal[1, 2] = Field(default=1, description="1 incident, 2 request")
    requester_id: int | None = Field(
        default=None, ge=1, description="GLPI user id set as requester (_users_id_requester); none by default"
    )
    urgencies: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_URGENCIES))
    fields: dict[str, Any] = Field(
        default_factory=dict,
        description="extra Ticket input on create: itilcategories_id, _groups_id_assign...",
    )
    private_followups: bool = Field(default=False, description="customer follow-ups as private follow-ups")
    due_field: Literal["time_to_resolve", "time_to_own"] | None = Field(
        default=None,
        description="Ticket field that gets the SLA engine's earliest open deadline (create and PUT); unset: "
        "not sent (leave it to a GLPI SLA that computes it)",
    )
    due_timezone: str = Field(default="UTC", description="the zone GLPI reads the API's datetimes in")
    state_map: GlpiStateMap = Field(default_factory=GlpiStateMap)
    webhook_secret: SecretStr | None = Field(
        default=None, description="GLPI 11 webhook secret; no secret, no route"
    )
    webhook_path: str = Field(default="glpi", pattern=r"^[a-z0-9][a-z0-9/_-]{0,63}$")

    @field_validator("urgencies")
    @classmethod
    def _urgencies(cls, v: dict[str, Any]) -> dict[str, Any]:
        out = check_priorities(v, DEFAULT_URGENCIES)
        bad = {k: u for k, u in out.items() if u not in range(1, 6)}
        if bad:
            raise ValueError(f"GLPI urgencies are 1..5, got {bad}")
        return out

    @field_validator("due_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(v) & TAKEN)
        if taken:
            raise ValueError(f"set by svcbridge or by their own setting: {taken}")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> GlpiSettings:
        basic = self.login is not None or self.password is not None
        if self.user_token is None and not basic:
            raise ValueError("give user_token (user_token_file) or login and password")
        if self.user_token is not None and basic:
            raise ValueError("give user_token or login/password, not both")
        if basic and (not self.login or self.password is None):
            raise ValueError("HTTP Basic needs both login and password")
        return self

    @property
    def api_base(self) -> str:
        url = self.url
        return (url if url.endswith(("/apirest.php", "/api")) else url + "/apirest.php") + "/"
