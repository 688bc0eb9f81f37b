"""Settings of the Zammad connector: the ``[plugins.zammad]`` table.

Example::

    [plugins.zammad]
    url = "https://zammad.example.com"        # /api/v1 is appended
    token_file = "/run/secrets/zammad-token"   # Authorization: Token token=...
    group = "Users"
    webhook_secret_file = "/run/secrets/zammad-hook"   # the trigger webhook's "HMAC SHA1 Signature Token"
    [plugins.zammad.state_map.from_helpdesk]
    "pending reminder" = "waiting_parts"
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from svcbridge import HelpdeskSettings, StateMap, TicketState, check_priorities

_S = TicketState


class ZammadStateMap(StateMap):
    """Zammad's default state names (``api/ticket/states.rst``) <-> svcbridge."""

    DEFAULT_FROM = {
        "new": _S.ACKNOWLEDGED,
        "open": _S.IN_PROGRESS,
        "pending reminder": _S.WAITING_CUSTOMER,
        "pending close": _S.RESOLVED,
        "closed": _S.CLOSED,
        "merged": "",  # merged into another ticket: the work goes on there, nothing to tell the customer
    }
    DEFAULT_TO = {
        _S.NEW: "new",
        _S.ACKNOWLEDGED: "open",
        _S.IN_PROGRESS: "open",
        _S.WAITING_CUSTOMER: "pending reminder",
        _S.WAITING_PARTS: "pending reminder",
        _S.ON_SITE: "open",
        _S.RESOLVED: "closed",
        _S.CLOSED: "closed",
    }


# Zammad's default priorities; the contract shows only "3 high", the other two names are Zammad's seed data
DEFAULT_PRIORITIES = {"P1": "3 high", "P2": "3 high", "P3": "2 normal", "P4": "1 low"}


class ZammadSettings(HelpdeskSettings):
    """``[plugins.zammad]``: one Zammad instance, token auth, signed trigger webhooks."""

    name: str = Field(default="zammad", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    token: SecretStr = Field(description="API token of svcbridge's own Zammad user (use token_file)")
    group: str = Field(default="Users", description="group new tickets go to")
    customer: str | None = Field(
        default=None,
        description="customer (email, login or id) for tickets without an e-mail address (SMS, fax); "
        "with an address the customer is 'guess:<email>' (Zammad creates it when new)",
    )
    article_type: str = Field(default="note", description="type of the articles svcbridge adds")
    fields: dict[str, Any] = Field(
        default_factory=dict,
        description="extra ticket attributes set on create (custom object attributes, e.g. "
        '{service_contract = "gold"}); they may not replace the ones svcbridge sets',
    )
    state_map: ZammadStateMap = Field(default_factory=ZammadStateMap)
    priorities: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    webhook_secret: SecretStr | None = Field(
        default=None, description="the trigger webhook's HMAC SHA1 Signature Token; no secret, no route"
    )
    webhook_path: str = Field(default="zammad", pattern=r"^[a-z0-9][a-z0-9/_-]{0,63}$")

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_priorities(v, DEFAULT_PRIORITIES)

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(v) & {"title", "group", "customer", "priority", "article", "state"})
        if taken:
            raise ValueError(f"set by svcbridge or by their own setting: {taken}")
        return v

    @property
    def api_base(self) -> str:
        return (self.url if self.url.endswith("/api/v1") else self.url + "/api/v1") + "/"
