"""A fake of Cisco's token endpoint and Service Order Return (RMA) API, after api-contracts.md section 3.4.

``POST /oauth2/default/v1/token`` (form ``client_id``, ``client_secret``, ``grant_type=client_credentials``)
-> ``{access_token, token_type, expires_in}``; ``GET /return/v1.0/returns/rma_numbers/{rma}`` with the
bearer token -> ``{"returns": {"RmaRecord": [{"rmaNo", "status", "carrier", "trackingNumber"}]}}`` (the
contract names no reply fields: these are assumed, see docs/rma-and-parts.md), 404 for an unknown number,
403 for a path with a space, 403 ``ERR_403_DEVELOPER_OVER_QPS`` with ``over_qps``. ``revoke()`` makes
the tokens issued so far answer 401.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx

from .base import FakeService

CLIENT_ID, CLIENT_SECRET = "cisco-client", "cisco-s3cret"


class FakeCiscoRma(FakeService):
    host = "apix.cisco.test"

    def __init__(self) -> None:
        super().__init__()
        self.rmas: dict[str, dict[str, Any]] = {}
        self.tokens: set[str] = set()
        self.issued = 0
        self.over_qps = 0

    def revoke(self) -> None:
        self.tokens.clear()

    def error_body(self, status: int, detail: str) -> Any:
        return {"ErrorResponse": {"APIError": {"ErrorDescription": detail}}}

    def route(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        if path == "/oauth2/default/v1/token" and request.method == "POST":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            if (form.get("client_id"), form.get("client_secret"), form.get("grant_type")) != (
                CLIENT_ID,
                CLIENT_SECRET,
                "client_credentials",
            ):
                return httpx.Response(401, json={"error": "invalid_client"})
            tok = secrets.token_hex(12)
            self.tokens.add(tok)
            self.issued += 1
            return httpx.Response(200, json={"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
        prefix = "/return/v1.0/returns/rma_numbers/"
        if not path.startswith(prefix):
            return self.error(404, "not found")
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return httpx.Response(401, json={"error": "invalid_token"})
        if self.over_qps:
            self.over_qps -= 1
            return httpx.Response(403, text="<h1>Developer Over Qps</h1> ERR_403_DEVELOPER_OVER_QPS")
        number = path[len(prefix) :]
        if " " in number:
            return self.error(403, "Forbidden")
        rec = self.rmas.get(number)
        if rec is None:
            return self.error(404, f"RMA {number} not found")
        return httpx.Response(200, json={"returns": {"RmaRecord": [{"rmaNo": number, **rec}]}})
