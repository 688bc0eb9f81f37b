"""Fake vendor warranty APIs, following ../shared/reference/api-contracts.md section 3 (one Starlette app).

Mounted per vendor under ``/dell``, ``/lenovo``, ``/hp``, ``/cisco``:

- Dell: ``POST /dell/auth/oauth/v2/token`` (client credentials, in the form or as Basic), then
  ``GET /dell/PROD/sbil/eapi/v5/asset-entitlements?servicetags=A,B`` with the bearer token: an array of
  ``{serviceTag, invalid, shipDate, productLineDescription, entitlements:[{startDate, endDate, ...}]}``.
- Lenovo: ``GET /lenovo/v2.5/warranty?Serial=`` with header ``ClientID``: ``{Serial, Product, InWarranty,
  Purchased, Shipped, Warranty:[{ID, Name, Start, End}]}``.
- HP Inc: ``POST /hp/oauth/v1/token`` then ``POST /hp/productwarranty/v2/queries`` with ``[{"sn", "pn"}]``:
  ``[{offers:[{offerDescription, serviceObligationLineItemStartDate, ...EndDate}]}]``.
- Cisco: ``POST /cisco/oauth2/default/v1/token`` (form), then
  ``GET /cisco/sn2info/v2/coverage/summary/serial_numbers/{sn}``; over the limit 403
  ``ERR_403_DEVELOPER_OVER_QPS``.

Controls: ``units[vendor][serial] = [(start, end, what)]``; ``mode[vendor]`` = ``ok`` | ``down`` (503) |
``hang`` | ``429`` | ``revoke`` (the current tokens stop working once: a 401, a fresh token works) |
``badcreds`` (every token request refused). ``calls`` logs ``(vendor, what)``; ``tokens_issued`` counts.
The same app runs in-process (``httpx.ASGITransport``) or on loopback under uvicorn (``serve``).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CLIENT_ID, CLIENT_SECRET, LENOVO_KEY = "svcb-client", "s3cret-value", "lenovo-key-1"
VENDORS = ("dell", "lenovo", "hp", "cisco")


class VendorFake:
    def __init__(self) -> None:
        self.units: dict[str, dict[str, list[tuple[str, str, str]]]] = {v: {} for v in VENDORS}
        self.mode: dict[str, str] = {v: "ok" for v in VENDORS}
        self.tokens: dict[str, str] = {}  # token -> vendor
        self.tokens_issued: dict[str, int] = {v: 0 for v in VENDORS}
        self.calls: list[tuple[str, str]] = []
        self.in_flight: dict[str, int] = {v: 0 for v in VENDORS}
        self.app = Starlette(
            routes=[
                Route("/dell/auth/oauth/v2/token", self._token("dell"), methods=["POST"]),
                Route("/dell/PROD/sbil/eapi/v5/asset-entitlements", self.dell),
                Route("/lenovo/v2.5/warranty", self.lenovo, methods=["GET", "POST"]),
                Route("/hp/oauth/v1/token", self._token("hp"), methods=["POST"]),
                Route("/hp/productwarranty/v2/queries", self.hp, methods=["POST"]),
                Route("/cisco/oauth2/default/v1/token", self._token("cisco"), methods=["POST"]),
                Route("/cisco/sn2info/v2/coverage/summary/serial_numbers/{sn}", self.cisco),
            ]
        )

    # ------------------------------------------------------------------ auth
    def _token(self, vendor: str) -> Any:
        async def issue(request: Request) -> Response:
            form = _form(await request.body())
            cid, sec = form.get("client_id"), form.get("client_secret")
            basic = request.headers.get("authorization", "")
            if basic.lower().startswith("basic "):
                cid, _, sec = base64.b64decode(basic[6:]).decode().partition(":")
            self.calls.append((vendor, "token"))
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            if self.mode[vendor] == "badcreds" or (cid, sec) != (CLIENT_ID, CLIENT_SECRET):
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            token = secrets.token_hex(8)
            self.tokens[token] = vendor
            self.tokens_issued[vendor] += 1
            return JSONResponse({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

        return issue

    async def _gate(self, vendor: str, request: Request, what: str) -> Response | None:
        """The faults and the bearer check every API call goes through (None: serve it)."""
        self.calls.append((vendor, what))
        mode = self.mode[vendor]
        if mode == "down":
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        if mode == "hang":  # held: ``in_flight`` says a request is waiting right now
            self.in_flight[vendor] += 1
            try:
                await asyncio.sleep(30)
            finally:
                self.in_flight[vendor] -= 1
        if mode == "429":
            if vendor == "cisco":
                return JSONResponse(
                    {"ErrorResponse": {"APIError": {"ErrorCode": "ERR_403_DEVELOPER_OVER_QPS"}}},
                    status_code=403,
                )
            return JSONResponse({"error": "too many requests"}, status_code=429, headers={"Retry-After": "7"})
        if vendor == "lenovo":
            return (
                None if request.headers.get("ClientID") == LENOVO_KEY else JSONResponse({}, status_code=401)
            )
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if mode == "revoke":  # every token issued so far stops working
            self.tokens = {}
            self.mode[vendor] = "ok"
        if self.tokens.get(token) != vendor:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return None

    # ------------------------------------------------------------------ the APIs
    async def dell(self, request: Request) -> Response:
        tags = [
            t.strip().upper() for t in request.query_params.get("servicetags", "").split(",") if t.strip()
        ]
        if (bad := await self._gate("dell", request, f"entitlements {','.join(tags)}")) is not None:
            return bad
        out = []
        for tag in tags[:100]:
            periods = self.units["dell"].get(tag)
            out.append(
                {
                    "serviceTag": tag,
                    "invalid": periods is None,
                    "shipDate": periods[0][0] + "T00:00:00Z" if periods else None,
                    "productLineDescription": "POWEREDGE R750" if periods else None,
                    "entitlements": [
                        {
                            "startDate": s + "T00:00:00Z",
                            "endDate": e + "T23:59:59Z",
                            "serviceLevelDescription": w,
                            "serviceLevelCode": "ND",
                            "entitlementType": "INITIAL",
                        }
                        for s, e, w in periods or []
                    ],
                }
            )
        return JSONResponse(out)

    async def lenovo(self, request: Request) -> Response:
        serial = request.query_params.get("Serial") or _form(await request.body()).get("Serial", "")
        if (bad := await self._gate("lenovo", request, f"warranty {serial}")) is not None:
            return bad
        periods = self.units["lenovo"].get(serial.upper(), [])
        return JSONResponse(
            {
                "Serial": serial,
                "Product": "20W0-THINKPAD T14" if periods else None,
                "InWarranty": bool(periods),
                "Purchased": periods[0][0] if periods else None,
                "Shipped": periods[0][0] if periods else None,
                "Country": "CN",
                "Warranty": [
                    {"ID": f"W{i}", "Name": w, "Description": w, "Type": "BASE", "Start": s, "End": e}
                    for i, (s, e, w) in enumerate(periods)
                ],
            }
        )

    async def hp(self, request: Request) -> Response:
        body = await request.json()
        sn = str(body[0].get("sn", "")).upper() if isinstance(body, list) and body else ""
        pn = str(body[0].get("pn", "")) if isinstance(body, list) and body else ""
        if (
            bad := await self._gate("hp", request, f"queries {sn}" + (f" pn={pn}" if pn else ""))
        ) is not None:
            return bad
        periods = self.units["hp"].get(sn, [])
        return JSONResponse(
            [
                {
                    "sn": sn,
                    "offers": [
                        {
                            "offerDescription": w,
                            "serviceObligationTypeCode": "W",
                            "serviceObligationLineItemStartDate": s,
                            "serviceObligationLineItemEndDate": e,
                        }
                        for s, e, w in periods
                    ],
                }
            ]
        )

    async def cisco(self, request: Request) -> Response:
        sn = request.path_params["sn"].upper()
        if (bad := await self._gate("cisco", request, f"coverage {sn}")) is not None:
            return bad
        rows = [
            {
                "sr_no": sn,
                "is_covered": "YES",
                "coverage_start_date": s,
                "coverage_end_date": e,
                "service_line_descr": w,
            }
            for s, e, w in self.units["cisco"].get(sn, [])
        ]
        return JSONResponse(
            {"pagination_response_record": {"page_index": 1, "last_index": 1}, "serial_numbers": rows}
        )


def _form(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (no python-multipart needed)."""
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def serve(fake: VendorFake, port: int) -> Any:
    """Run the fake on 127.0.0.1:port in a thread (for a daemon in another process); returns the server."""
    import uvicorn

    config = uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server
