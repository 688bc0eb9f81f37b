"""Settings of the django-helpdesk connector: the ``[plugins.djhelpdesk]`` table.

Example::

    [plugins.djhelpdesk]
    url = "https://support.example.com/helpdesk"   # where helpdesk.urls is mounted; /api/ is appended
    token_file = "/run/secrets/djhelpdesk-token"     # DRF token of a staff user (is_staff: the API needs it)
    queue = 1                                        # queue id
    [plugins.djhelpdesk.state_map.from_helpdesk]     # status code -> svcbridge state, over the defaults
    "5" = "closed"

django-helpdesk's statuses are integers: 1 Open, 2 Reopened, 3 Resolved, 4 Closed, 5 Duplicate; the state
maps are keyed by those codes (as strings in TOML). Priorities are 1 Critical .. 5 Very Low.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from svcbridge import HelpdeskSettings, StateMap, TicketState, check_priorities

_S = TicketState


class DjHelpdeskStateMap(StateMap):
    """django-helpdesk status codes <-> svcbridge states."""

    # Only follow-ups that change the status are seen (poll or webhook): a new ticket's "1 Open" is never
    # reported, so "1" here means "set back to Open" by an agent, i.e. work goes on.
    DEFAULT_FROM = {
        "1": _S.IN_PROGRESS,
        "2": _S.IN_PROGRESS,
        "3": _S.RESOLVED,
        "4": _S.CLOSED,
        "5": "",  # Duplicate: the work goes on in the other ticket; nothing to tell the customer
    }
    # svcbridge -> django-helpdesk; in practice only a customer's reply to a resolved ticket uses it (reopen)
    DEFAULT_TO = {
        _S.NEW: "1",
        _S.ACKNOWLEDGED: "1",
        _S.IN_PROGRESS: "2",
        _S.WAITING_CUSTOMER: "1",
        _S.WAITING_PARTS: "1",
        _S.ON_SITE: "1",
        _S.RESOLVED: "3",
        _S.CLOSED: "4",
    }


# django-helpdesk's Ticket.PRIORITY_CHOICES: 1 Critical, 2 High, 3 Normal, 4 Low, 5 Very Low
DEFAULT_PRIORITIES = {"P1": 1, "P2": 2, "P3": 3, "P4": 4}
# django-helpdesk 2.6's default HELPDESK_VALID_EXTENSIONS (helpdesk/settings.py); files without an extension
# are always accepted
DEFAULT_EXTENSIONS = [".txt", ".asc", ".pdf", ".doc", ".docx", ".odt", ".jpg", ".png", ".eml"]


class DjHelpdeskSettings(HelpdeskSettings):
    """``[plugins.djhelpdesk]``: one django-helpdesk instance through its DRF API (token auth)."""

    name: str = Field(default="djhelpdesk", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    token: SecretStr = Field(description="DRF token (Authorization: Token) of a staff user; use token_file")
    queue: int = Field(default=1, ge=1, description="id of the queue new tickets go to")
    priorities: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    state_map: DjHelpdeskStateMap = Field(default_factory=DjHelpdeskStateMap)
    submitter_email: bool = Field(
        default=False,
        description="give django-helpdesk the customer's address as submitter_email; it then mails the "
        "customer itself (its own acknowledgement, every public follow-up), next to svcbridge's notices",
    )
    public_followups: bool = Field(
        default=False,
        description="post the customer's follow-ups as public; with submitter_email django-helpdesk would "
        "mail the customer their own message back",
    )
    valid_extensions: list[str] | None = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS),
        description="the server's HELPDESK_VALID_EXTENSIONS; other files stay in svcbridge (django-helpdesk "
        "answers them with a 500 after saving half the follow-up). None: the server does not validate",
    )
    poll_interval: float = Field(default=10.0, gt=0, description="seconds between follow-up polls")
    poll_page_size: int = Field(default=100, ge=1, le=1000)
    poll_max_pages: int = Field(default=10, ge=1, description="pages read per poll; the rest next time")
    find_page_size: int = Field(
        default=500, ge=1, le=5000, description="tickets per page when looking a ticket up by reference"
    )
    webhook_token: SecretStr | None = Field(
        default=None,
        description="enables POST /hooks/<webhook_path>/<token> for HELPDESK_FOLLOWUP_WEBHOOK_URLS; "
        "django-helpdesk cannot sign its webhooks, so this secret in the URL is what authenticates them",
    )
    webhook_path: str = Field(default="djhelpdesk", pattern=r"^[a-z0-9][a-z0-9/_-]{0,63}$")

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, v: dict[str, Any]) -> dict[str, Any]:
        out = check_priorities(v, DEFAULT_PRIORITIES)
        bad = {k: p for k, p in out.items() if not 1 <= int(p) <= 5}
        if bad:
            raise ValueError(f"django-helpdesk priorities are 1..5, got {bad}")
        return out

    @field_validator("valid_extensions")
    @classmethod
    def _extensions(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        return ["." + e.strip().lower().lstrip(".") for e in v if e.strip()]

    @field_validator("webhook_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 24:
            raise ValueError("use at least 24 random characters (it is the only thing guarding the route)")
        if v is not None and not v.get_secret_value().replace("-", "").replace("_", "").isalnum():
            raise ValueError("only letters, digits, '-' and '_' (it goes into a URL path)")
        return v

    @property
    def api_base(self) -> str:
        """The DRF root with a trailing slash (httpx joins relative paths onto it)."""
        return (self.url if self.url.endswith("/api") else self.url + "/api") + "/"
