"""Settings of the ServiceNow connector: the ``[plugins.servicenow]`` table.

Example::

    [plugins.servicenow]
    url = "https://acme.service-now.com"       # /api/now/v2/table is appended
    username = "svcbridge.integration"         # HTTP Basic ...
    password_file = "/run/secrets/snow-password"
    # token_file = "/run/secrets/snow-oauth"   # ... or an OAuth Bearer token from /oauth_token.do
    caller_id = "6816f79cc0a8016401c5a33be04be441"   # sys_id of the caller for every incident (optional)
    [plugins.servicenow.state_map.from_helpdesk]
    "3" = "waiting_parts"                      # On Hold means waiting for a vendor here

Give the integration user the time zone UTC: the Table API returns ``sys_updated_on`` in UTC, while an
encoded query compares date-times in the user's time zone, and ``poll_changes`` feeds one into the other.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from svcbridge import HelpdeskSettings, StateMap, TicketState, check_priorities

_S = TicketState


class ServiceNowStateMap(StateMap):
    """Incident ``state`` codes <-> svcbridge (contract §1.5, marked unverified: instances may differ)."""

    DEFAULT_FROM = {
        "1": _S.ACKNOWLEDGED,  # New: it reached the service desk
        "2": _S.IN_PROGRESS,
        "3": _S.WAITING_CUSTOMER,  # On Hold (its hold_reason is not in the contract)
        "6": _S.RESOLVED,
        "7": _S.CLOSED,
        "8": _S.CLOSED,  # Canceled
    }
    DEFAULT_TO = {
        _S.NEW: "1",
        _S.ACKNOWLEDGED: "1",
        _S.IN_PROGRESS: "2",
        _S.WAITING_CUSTOMER: "3",
        _S.WAITING_PARTS: "3",
        _S.ON_SITE: "2",
        _S.RESOLVED: "6",
        _S.CLOSED: "7",
    }


# urgency and impact (1 high .. 3 low); ServiceNow derives the incident priority from the pair
DEFAULT_URGENCY = {"P1": 1, "P2": 2, "P3": 2, "P4": 3}
DEFAULT_IMPACT = {"P1": 1, "P2": 1, "P3": 2, "P4": 2}


class ServiceNowSettings(HelpdeskSettings):
    """``[plugins.servicenow]``: one instance's incident table, Basic or Bearer auth, polled for changes."""

    name: str = Field(default="servicenow", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    username: str | None = Field(default=None, description="integration user for HTTP Basic")
    password: SecretStr | None = Field(default=None, description="its password (use password_file)")
    token: SecretStr | None = Field(default=None, description="OAuth Bearer token instead of Basic")
    caller_id: str | None = Field(default=None, description="caller_id (sys_id or user name) of incidents")
    contact_types: dict[str, str] = Field(
        default_factory=lambda: {"email": "email", "phone": "phone"},
        description="svcbridge channel -> incident contact_type; channels not listed send none",
    )
    reference_field: str = Field(
        default="correlation_id",
        pattern=r"^[a-z][a-z0-9_]{0,79}$",
        description="incident field that holds svcbridge's reference (find before create, polling)",
    )
    followup_field: str = Field(
        default="comments",
        pattern=r"^(comments|work_notes)$",
        description="journal field of the customer's follow-ups: comments (customer-visible) or work_notes",
    )
    close_code: str | None = Field(default=None, description="close_code sent when svcbridge resolves")
    urgency: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_URGENCY))
    impact: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_IMPACT))
    state_map: ServiceNowStateMap = Field(default_factory=ServiceNowStateMap)
    poll_interval: float = Field(default=30.0, gt=0, description="seconds between change polls")
    page_size: int = Field(default=100, ge=1, le=10000, description="sysparm_limit per page")
    max_pages: int = Field(default=10, ge=1, description="pages read per poll (the cursor resumes the rest)")

    @field_validator("urgency")
    @classmethod
    def _urgency(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_priorities(v, DEFAULT_URGENCY)

    @field_validator("impact")
    @classmethod
    def _impact(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_priorities(v, DEFAULT_IMPACT)

    @model_validator(mode="after")
    def _auth(self) -> ServiceNowSettings:
        basic = bool(self.username) and self.password is not None
        if basic == (self.token is not None):
            raise ValueError("set either username + password (Basic) or token (Bearer), not both")
        return self

    @property
    def api_base(self) -> str:
        base = self.url.removesuffix("/api/now/v2/table").removesuffix("/api/now/table")
        return base + "/api/now/v2/table/"
