"""Vendor warranty APIs (``docs api-contracts.md`` section 3): Dell, Lenovo, HP Inc, Cisco.

Each client turns one serial into one answer ``{vendor, serial, status, start, end, coverage}``
(``status``: in | out | unknown; ``end`` the latest coverage end, a calendar date). Dell, HP and Cisco
take an OAuth2 client-credentials token, cached until shortly before it expires; a 401 drops it and
asks once more with a fresh one, a second 401 is ``AuthFailed`` (the vendor's jobs park, an alert is
raised), as is any other 403 of an API call (Cisco's "developer inactive"). 429 (and Cisco's 403
``ERR_403_DEVELOPER_OVER_QPS``) is ``NotReady`` with the Retry-After.
Outages (5xx, timeouts, refused connections) are ``VendorDown``; the caller (``ops.py``) counts them
on the vendor's circuit breaker and falls back to the last known answer, marked stale.

Every call goes through ``svcbridge.http_request`` / ``make_client`` (the SSRF guard); the secret
comes from the environment or a file and is never logged.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from svcbridge import AuthFailed, NotReady, PermanentError, make_client

from .settings import VendorSettings

DEFAULTS = {
    "dell": ("https://apigtwb2c.us.dell.com", "https://apigtwb2c.us.dell.com/auth/oauth/v2/token"),
    "lenovo": ("https://supportapi.lenovo.com", None),
    "hp": ("https://warranty.api.hp.com", "https://warranty.api.hp.com/oauth/v1/token"),
    "cisco": ("https://apix.cisco.com", "https://id.cisco.com/oauth2/default/v1/token"),
}


_CLIENT: ContextVar[httpx.AsyncClient] = ContextVar("vendor_http_client")  # the running ``ask``'s client


class VendorDown(Exception):
    """The vendor did not answer (5xx, timeout, connection refused): counted on its breaker."""


@dataclass
class Breaker:
    """Opens after ``threshold`` failures in a row; after ``cooldown`` seconds it is half open: ONE
    trial goes through (the jobs running beside it are refused until it ends), its success closes it,
    its failure opens it for another cool-down. A refused call is no failure of the vendor."""

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False  # a half-open trial is under way

    def allow(self, now: float) -> bool:
        """May a call go to the vendor now? Taking the half-open trial (no await between the check and
        the set: jobs share one event loop)."""
        if self.opened_at is None:
            return True
        if self.trial or now - self.opened_at < self.cooldown:
            return False
        self.trial = True
        return True

    def retry_in(self, now: float) -> float:
        return 0.0 if self.opened_at is None else max(0.0, self.cooldown - (now - self.opened_at))

    def success(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now
        self.trial = False

    def release(self) -> None:
        """The call ended saying nothing about the vendor being up (429, refused credentials): the next
        one may try."""
        self.trial = False

    @property
    def open(self) -> bool:
        return self.opened_at is not None


def retry_after(value: str | None, default: float = 60.0) -> float:
    """Seconds to wait from a Retry-After header: seconds (``7``, ``2.5``) or an HTTP date (RFC 9110)."""
    text = (value or "").strip()
    try:
        seconds = float(text)
        return min(max(0.0, seconds), 86400.0) if seconds == seconds else default  # NaN, inf: bounded
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), 86400.0)


def _day(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def summarise(
    vendor: str, serial: str, periods: list[tuple[date | None, date | None, str]], today: date
) -> dict[str, Any]:
    """The answer from coverage periods ``(start, end, description)``: in while the latest end is today
    or later; ``unknown`` when the vendor gave no period at all (never a silent "out")."""
    ends = [e for _s, e, _d in periods if e]
    starts = [s for s, _e, _d in periods if s]
    end = max(ends) if ends else None
    return {
        "vendor": vendor,
        "serial": serial,
        "status": "unknown" if end is None else ("in" if today <= end else "out"),
        "start": min(starts).isoformat() if starts else None,
        "end": end.isoformat() if end else None,
        "coverage": [
            {"start": s.isoformat() if s else None, "end": e.isoformat() if e else None, "what": d[:200]}
            for s, e, d in periods
        ][:20],
        "source": f"vendor:{vendor}",
    }


@dataclass
class VendorClient:
    """One vendor's API; ``lookup(serial, today, part_number)`` -> answer."""

    name: str
    settings: VendorSettings
    allow: tuple[str, ...] = ()  # [outbound_allow] of the settings: a vendor proxy inside the network
    transport: httpx.AsyncBaseTransport | None = None  # tests: an in-process fake
    _token: str | None = None
    _expires: float = 0.0
    calls: list[str] = field(default_factory=list)  # what was asked, for logs and tests (no secrets)

    @property
    def base(self) -> str:
        return (self.settings.base_url or DEFAULTS[self.name][0]).rstrip("/")

    async def ask(self, serial: str, today: date, part_number: str | None = None) -> dict[str, Any]:
        """``lookup`` with an HTTP client of its own, closed after: jobs of one vendor run side by side
        (one closing a shared client would break the others' requests); the token is shared."""
        client = make_client(
            self.base, timeout=self.settings.timeout, transport=self.transport, allow=self.allow
        )
        token = _CLIENT.set(client)
        try:
            return await self.lookup(serial, today, part_number)
        finally:
            _CLIENT.reset(token)
            await client.aclose()

    # ------------------------------------------------------------------ OAuth2 client credentials
    async def token(self) -> str:
        if self._token and time.monotonic() < self._expires:
            return self._token
        secret = self.settings.secret()
        if not self.settings.client_id or not secret:
            raise AuthFailed(f"{self.name}: client_id and a client secret (env or file) are required")
        url = self.settings.token_url or DEFAULTS[self.name][1]
        assert url is not None
        form = {
            "grant_type": "client_credentials",
            "client_id": self.settings.client_id,
            "client_secret": secret,
        }
        self.calls.append("token")
        res = await self._send("POST", url, data=form)
        if res.status_code in (400, 401, 403):
            raise AuthFailed(f"{self.name}: token refused ({res.status_code})")
        self._check(res)
        body = res.json()
        self._token = str(body["access_token"])
        # renewed a minute early: a token that expires during the call is a needless 401
        self._expires = time.monotonic() + max(30.0, float(body.get("expires_in", 3600)) - 60.0)
        return self._token

    async def authed(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A call with the bearer token; a 401 renews the token once."""
        for attempt in (1, 2):
            headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {await self.token()}"}
            res = await self._send(method, url, headers=headers, **kwargs)
            if res.status_code == 403 and "OVER_QPS" not in res.text[:500]:
                # the token is good but the app may not call (Cisco: "developer inactive"): the keys
                # must be fixed; the lookups park (an alert) instead of being dropped for good
                raise AuthFailed(f"{self.name}: API call refused (403)")
            if res.status_code != 401:
                return res
            self._token = None  # revoked or expired early: one fresh token, then it is the credentials
            if attempt == 2:
                raise AuthFailed(f"{self.name}: 401 with a fresh token")
        raise AssertionError("unreachable")

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await _CLIENT.get().request(method, url, **kwargs)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise VendorDown(f"{self.name}: {type(exc).__name__}") from exc

    def _check(self, res: httpx.Response) -> None:
        if res.status_code == 429 or (res.status_code == 403 and "OVER_QPS" in res.text[:500]):
            raise NotReady(
                f"{self.name}: rate limited", retry_after=retry_after(res.headers.get("Retry-After"))
            )
        if res.status_code >= 500:
            raise VendorDown(f"{self.name}: HTTP {res.status_code}")
        if res.status_code == 404:
            return
        if res.status_code >= 400:
            raise PermanentError(f"{self.name}: HTTP {res.status_code}")

    async def lookup(self, serial: str, today: date, part_number: str | None = None) -> dict[str, Any]:
        raise NotImplementedError


class Dell(VendorClient):
    async def lookup(self, serial: str, today: date, part_number: str | None = None) -> dict[str, Any]:
        self.calls.append(f"entitlements {serial}")
        res = await self.authed(
            "GET", f"{self.base}/PROD/sbil/eapi/v5/asset-entitlements", params={"servicetags": serial}
        )
        self._check(res)
        rows = res.json() if res.status_code == 200 else []
        row = next((r for r in rows if str(r.get("serviceTag", "")).upper() == serial), None)
        if row is None or row.get("invalid"):
            return summarise("dell", serial, [], today) | {"invalid": True}
        periods = [
            (_day(e.get("startDate")), _day(e.get("endDate")), str(e.get("serviceLevelDescription") or ""))
            for e in row.get("entitlements") or []
        ]
        return summarise("dell", serial, periods, today) | {"product": row.get("productLineDescription")}


class Lenovo(VendorClient):
    async def lookup(self, serial: str, today: date, part_number: str | None = None) -> dict[str, Any]:
        key = self.settings.secret()
        if not key:
            raise AuthFailed("lenovo: the ClientID key (env or file) is required")
        self.calls.append(f"warranty {serial}")
        res = await self._send(
            "GET", f"{self.base}/v2.5/warranty", params={"Serial": serial}, headers={"ClientID": key}
        )
        if res.status_code in (401, 403):
            raise AuthFailed(f"lenovo: ClientID refused ({res.status_code})")
        self._check(res)
        body = res.json() if res.status_code == 200 else {}
        periods = [
            (_day(w.get("Start")), _day(w.get("End")), str(w.get("Name") or w.get("Description") or ""))
            for w in body.get("Warranty") or []
        ]
        return summarise("lenovo", serial, periods, today) | {"product": body.get("Product")}


class HP(VendorClient):
    async def lookup(self, serial: str, today: date, part_number: str | None = None) -> dict[str, Any]:
        self.calls.append(f"queries {serial}")
        query = {"sn": serial} | ({"pn": part_number} if part_number else {})
        res = await self.authed("POST", f"{self.base}/productwarranty/v2/queries", json=[query])
        self._check(res)
        rows = res.json() if res.status_code == 200 else []
        offers = [o for r in rows[:1] for o in r.get("offers") or []]
        periods = [
            (
                _day(o.get("serviceObligationLineItemStartDate")),
                _day(o.get("serviceObligationLineItemEndDate")),
                str(o.get("offerDescription") or ""),
            )
            for o in offers
        ]
        return summarise("hp", serial, periods, today)


class Cisco(VendorClient):
    async def lookup(self, serial: str, today: date, part_number: str | None = None) -> dict[str, Any]:
        self.calls.append(f"coverage {serial}")
        res = await self.authed("GET", f"{self.base}/sn2info/v2/coverage/summary/serial_numbers/{serial}")
        self._check(res)
        body = res.json() if res.status_code == 200 else {}
        # field names per Cisco's sn2info documentation (the contract file lists the paths only)
        rows = [r for r in body.get("serial_numbers") or [] if str(r.get("sr_no", "")).upper() == serial]
        periods = []
        for r in rows:
            end = _day(r.get("coverage_end_date")) or _day(r.get("warranty_end_date"))
            periods.append((_day(r.get("coverage_start_date")), end, str(r.get("service_line_descr") or "")))
        return summarise("cisco", serial, periods, today)


CLIENTS: dict[str, type[VendorClient]] = {"dell": Dell, "lenovo": Lenovo, "hp": HP, "cisco": Cisco}
