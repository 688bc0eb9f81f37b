"""Settings of the Jira Service Management connector: the ``[plugins.jsm]`` table.

Example::

    [plugins.jsm]
    url = "https://acme.atlassian.net"          # /rest/servicedeskapi is appended
    email = "svcbridge@acme.example"            # Basic email:api_token ...
    api_token_file = "/run/secrets/jsm-token"
    # oauth_token_file = "/run/secrets/jsm-oauth" # ... or an OAuth 2.0 (3LO) Bearer token instead
    service_desk_id = "1"
    request_type_id = "10"
    webhook_secret_file = "/run/secrets/jsm-hook"  # the admin webhook's secret (X-Hub-Signature sha256=)
    [plugins.jsm.state_map.from_helpdesk]
    "waiting for vendor" = "waiting_parts"

``state_map.to_helpdesk`` names *transitions* (``GET /request/{key}/transition``), not statuses: JSM moves
a request only along its workflow. Several names may be given as ``"Reopen|Back to in progress"``; the
first one the request currently offers is taken, because workflows name them differently.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from svcbridge import HelpdeskSettings, StateMap, TicketState, check_priorities

_S = TicketState


class JsmStateMap(StateMap):
    """Statuses of JSM's default service-desk workflows <-> svcbridge; transitions to take for each state.

    The status and transition names are those of Atlassian's default IT service-desk workflow; the
    contract (§1.4) names none of them, so a site with its own workflow lists what differs in TOML.
    """

    DEFAULT_FROM = {
        "open": _S.ACKNOWLEDGED,
        "waiting for support": _S.ACKNOWLEDGED,
        "in progress": _S.IN_PROGRESS,
        "work in progress": _S.IN_PROGRESS,
        "escalated": _S.IN_PROGRESS,
        "waiting for customer": _S.WAITING_CUSTOMER,
        "pending": _S.WAITING_PARTS,
        "resolved": _S.RESOLVED,
        "done": _S.RESOLVED,
        "closed": _S.CLOSED,
        "canceled": _S.CLOSED,
        "cancelled": _S.CLOSED,
        "declined": _S.CLOSED,
    }
    DEFAULT_TO = {
        _S.NEW: "Back to waiting for support|Waiting for support",
        _S.ACKNOWLEDGED: "Back to waiting for support|Waiting for support",
        _S.IN_PROGRESS: "Reopen|Back to in progress|Start progress|In progress",
        _S.WAITING_CUSTOMER: "Respond to customer|Waiting for customer",
        _S.WAITING_PARTS: "Pending",
        _S.ON_SITE: "Back to in progress|Start progress|In progress",
        _S.RESOLVED: "Resolve this issue|Resolve|Resolved",
        _S.CLOSED: "Close|Closed",
    }


# Jira's default priority names; sent only with send_priority, because a request type without the
# priority field rejects the whole create with 400
DEFAULT_PRIORITIES = {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low"}


class JsmSettings(HelpdeskSettings):
    """``[plugins.jsm]``: one Jira Service Management Cloud site, one service desk and request type."""

    name: str = Field(default="jsm", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    email: str | None = Field(default=None, description="Atlassian account e-mail for Basic auth")
    api_token: SecretStr | None = Field(default=None, description="API token of that account (token_file)")
    oauth_token: SecretStr | None = Field(default=None, description="OAuth 2.0 (3LO) Bearer token instead")
    service_desk_id: str = Field(pattern=r"^\d+$", description="serviceDeskId new requests go to")
    request_type_id: str = Field(pattern=r"^\d+$", description="requestTypeId of new requests")
    comment_public: bool = Field(
        default=True,
        description="post the customer's follow-ups as public comments (visible on the portal); false: "
        "internal comments",
    )
    send_priority: bool = Field(
        default=False,
        description="send requestFieldValues.priority {name} on create, and set the issue's priority when a "
        "ticket change raises or lowers it (PUT /rest/api/3/issue/{key}); only if the request type and the "
        "issue's edit screen have the priority field",
    )
    priorities: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    due_field: str | None = Field(
        default=None,
        pattern=r"^(duedate|customfield_\d{1,12})$",
        description="issue field that gets the SLA engine's earliest open deadline "
        "(PUT /rest/api/3/issue/{key}): duedate (a date, UTC) or a date-time custom field; unset: not sent",
    )
    state_map: JsmStateMap = Field(default_factory=JsmStateMap)
    page_size: int = Field(default=50, ge=1, le=100, description="limit per page of a paged GET")
    max_pages: int = Field(default=20, ge=1, description="pages read per listing before giving up")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="secret of the Jira admin webhook (sha256 X-Hub-Signature); no secret, no route",
    )
    webhook_path: str = Field(default="jsm", pattern=r"^[a-z0-9][a-z0-9/_-]{0,63}$")

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_priorities(v, DEFAULT_PRIORITIES)

    @model_validator(mode="after")
    def _auth(self) -> JsmSettings:
        basic = bool(self.email) and self.api_token is not None
        if basic == (self.oauth_token is not None):
            raise ValueError("set either email + api_token (Basic) or oauth_token (Bearer), not both")
        return self

    @property
    def api_base(self) -> str:
        return self.site + "/rest/servicedeskapi/"

    @property
    def site(self) -> str:
        """The site's root (``url`` without ``/rest/servicedeskapi``): the Jira platform API is under it."""
        return self.url.removesuffix("/rest/servicedeskapi")
