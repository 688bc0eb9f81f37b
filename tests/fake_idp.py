"""A fake OAuth2 token endpoint (RFC 6749 section 4.4 / 6, as Azure AD v2 and Google implement it) for
httpx.MockTransport: the real identity providers cannot run here. Form POST in, JSON out; every
refresh rotates the refresh token unless ``rotate`` is off; queued ``answer`` responses come first."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import httpx

from svcbridge_email import OAuth2Settings
from svcbridge_email.oauth import TokenProvider

TOKEN_URL = "https://login.example.com/tenant/oauth2/v2.0/token"
SCOPE = "https://outlook.office365.com/.default"


def at(n: int) -> str:
    """The n-th access token issued (distinctive, so a leak into a log is found by grep)."""
    return f"acc3ss-t0ken-{n}"


def rt(n: int) -> str:
    return f"r3fresh-t0ken-{n}"


class FakeIdp:
    def __init__(self, rotate: bool = True) -> None:
        self.calls: list[dict[str, str]] = []
        self.answer: list[httpx.Response] = []
        self.rotate = rotate

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        self.calls.append(form)
        if self.answer:
            return self.answer.pop(0)
        n = len(self.calls)
        body: dict[str, Any] = {"access_token": at(n), "expires_in": 3599, "token_type": "Bearer"}
        if self.rotate and form["grant_type"] == "refresh_token":
            body["refresh_token"] = rt(n)
        return httpx.Response(200, json=body)


def oauth_cfg(tmp_path: Path, flow: str = "refresh_token") -> OAuth2Settings:
    path = tmp_path / "refresh.token"
    path.write_text(f"{rt(0)}\n")
    return OAuth2Settings(
        flow=flow, token_url=TOKEN_URL, client_id="cid", client_secret="client-secret-value", scope=SCOPE,
        refresh_token_file=path if flow == "refresh_token" else None,
    )  # fmt: skip


def provider(cfg: OAuth2Settings, idp: FakeIdp) -> TokenProvider:
    """A TokenProvider talking to ``idp``; the host is allow-listed so the SSRF guard skips DNS."""
    return TokenProvider(cfg, transport=httpx.MockTransport(idp), allow=["login.example.com"])
