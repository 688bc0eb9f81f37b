"""Cisco's Service Order Return (RMA) API: the status of RMAs by number, polled, mapped onto ours.

Per ../shared/reference/api-contracts.md section 3.4: OAuth2 client credentials at
``POST https://id.cisco.com/oauth2/default/v1/token`` (form ``client_id``, ``client_secret``,
``grant_type=client_credentials``), then ``GET https://apix.cisco.com/return/v1.0/returns/rma_numbers/{rma}``
with ``Authorization: Bearer``. The API reads RMAs, it does not create them: the RMA is opened by mail or
on Cisco's portal and its number recorded (``svcbridge rma set ID approved --number``, ``/rma ID approved
number=...``). A space in a path parameter answers 403, so numbers are checked before they are sent;
over the rate limit Cisco answers 403 ``ERR_403_DEVELOPER_OVER_QPS``: that is a wait, not bad credentials.

The contract does not give the reply's field names; the connector reads ``status`` / ``rmaStatus``,
``carrier`` and ``trackingNumber`` / ``tracking`` of the record (first of ``returns.RmaRecord``, or the
object itself), and ``status_map`` turns Cisco's words into ``RmaState`` (configurable; an unknown
word is logged and ignored). ``CiscoRmaSource`` is a source in the daemon's sense: every ``interval``
seconds it reads each open CISCO RMA that has a number and applies what changed (``RmaBook.move`` with
the vendor's status and tracking as the event key, so the same answer twice changes nothing).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from pydantic import Field, SecretStr

from svcbridge import (
    AuthFailed,
    NotReady,
    PermanentError,
    PluginSettings,
    RmaState,
    http_request,
    make_client,
)

log = structlog.get_logger("svcbridge.rma.cisco")
_NUMBER = re.compile(r"^[A-Za-z0-9-]{4,30}$")

DEFAULT_MAP = {
    "booked": "approved",
    "open": "approved",
    "entered": "approved",
    "awaiting return": "approved",
    "shipped": "replacement_shipped",
    "delivered": "replacement_received",
    "received": "received_by_vendor",
    "defective received": "received_by_vendor",
    "closed": "closed",
    "cancelled": "cancelled",
    "canceled": "cancelled",
}


class CiscoSettings(PluginSettings):
    """``[plugins.rma.cisco]``."""

    client_id: str
    client_secret: SecretStr
    token_url: str = "https://id.cisco.com/oauth2/default/v1/token"  # noqa: S105 - a URL, not a secret
    base_url: str = "https://apix.cisco.com"
    interval: float = Field(default=900, gt=0, description="seconds between two readings of open RMAs")
    timeout: float = Field(default=20, gt=0)
    status_map: dict[str, RmaState] = Field(
        default_factory=lambda: {k: RmaState(v) for k, v in DEFAULT_MAP.items()}
    )


class CiscoRma:
    """Token cache and the one call."""

    def __init__(self, cfg: CiscoSettings, allow: list[str]) -> None:
        self.cfg, self.allow = cfg, allow
        self.client: httpx.AsyncClient | None = None
        self.token: tuple[str, float] | None = None

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = make_client(
                self.cfg.base_url, timeout=self.cfg.timeout, transport=self.cfg.transport, allow=self.allow
            )
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _token(self, fresh: bool = False) -> str:
        if self.token and not fresh and self.token[1] > time.monotonic():
            return self.token[0]
        form = {
            "client_id": self.cfg.client_id,
            "client_secret": self.cfg.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        resp = await http_request(self._client(), "POST", self.cfg.token_url, "cisco token", data=form)
        data = resp.json()
        self.token = (
            str(data["access_token"]),
            time.monotonic() + max(60, int(data.get("expires_in", 3600)) - 60),
        )
        return self.token[0]

    async def status(self, number: str) -> dict[str, Any] | None:
        """The RMA's record (status, carrier, tracking) or ``None`` when Cisco does not know it."""
        if not _NUMBER.match(number):
            raise PermanentError(f"cisco: {number!r} is not an RMA number")
        for fresh in (False, True):  # a 401 gets one fresh token
            headers = {"Authorization": "Bearer " + await self._token(fresh)}
            try:  # not http_request: a 403 here is read (over QPS) before it is classified
                resp = await self._client().get(f"/return/v1.0/returns/rma_numbers/{number}", headers=headers)
            except httpx.TransportError as exc:  # refused, reset, timed out: a wait, as for a 5xx
                raise NotReady(f"cisco rma: {type(exc).__name__}") from None
            if resp.status_code == 403 and "OVER_QPS" in resp.text:
                raise NotReady("cisco: over the rate limit (ERR_403_DEVELOPER_OVER_QPS)", retry_after=60)
            if resp.status_code == 401 and not fresh:
                continue
            if resp.status_code == 404:
                return None
            if resp.status_code in (401, 403):
                raise AuthFailed(f"cisco rma: HTTP {resp.status_code}")
            if resp.status_code >= 300:
                from svcbridge import classify_response

                classify_response(resp, "cisco rma")
            return _record(resp.json())
        return None


def _record(data: Any) -> dict[str, Any] | None:
    if isinstance(data, dict) and isinstance(data.get("returns"), dict):
        recs = data["returns"].get("RmaRecord") or []
        data = recs[0] if recs else None
    if not isinstance(data, dict):
        return None
    return {
        "status": str(data.get("status") or data.get("rmaStatus") or "").strip(),
        "carrier": data.get("carrier") or None,
        "tracking": data.get("trackingNumber") or data.get("tracking") or None,
    }


class CiscoRmaSource:
    """Reads Cisco's status of every open CISCO RMA with a number; a ``svcbridge.Source`` for the daemon."""

    name = "rma:cisco"
    channel = "rma"

    def __init__(self, cfg: CiscoSettings, allow: list[str], book: Any) -> None:
        self.cfg, self.interval = cfg, cfg.interval
        self.api = CiscoRma(cfg, allow)
        self.book = book  # a callable returning the RmaBook (the host's, known from startup)

    async def poll(self, ctx: Any) -> int:
        book = self.book()
        moved = 0
        # the open RMAs (list() gave the first 200 by id, closed ones included: past 200 Cisco RMAs
        # in the store a new one was never read)
        for rma in book.stale(datetime.now(UTC) + timedelta(days=1)):
            if rma.vendor != "CISCO" or rma.state.is_final or not rma.number:
                continue
            try:
                rec = await self.api.status(rma.number)
            except PermanentError as exc:
                log.warning("cisco_rma_refused", rma=rma.id, error=str(exc))
                continue
            except (NotReady, AuthFailed) as exc:
                ctx.report(False, str(exc))
                raise
            if rec is None or not rec["status"]:
                continue
            state = self.cfg.status_map.get(rec["status"].lower())
            if state is None:
                log.warning("cisco_rma_status_unknown", rma=rma.id, status=rec["status"][:60])
                continue
            key = f"cisco:{rec['status']}:{rec['tracking'] or ''}"
            try:
                got = book.move(
                    rma.id,
                    state,
                    source="vendor:cisco",
                    carrier=rec["carrier"],
                    tracking=rec["tracking"],
                    note=f"Cisco status: {rec['status']}",
                    key=key,
                )
            except ValueError as exc:  # behind what we know (a late report): keep ours
                log.info("cisco_rma_not_moved", rma=rma.id, error=str(exc))
                continue
            moved += got is not None
        ctx.report(True, f"{moved} RMA(s) moved")
        return 0
