"""OAuth2 token flows for XOAUTH2 (plugins/svcbridge_email/oauth.py) against a fake token endpoint:
refresh-token rotation persisted atomically, client credentials, expiry / revocation / bad client as
AuthFailed, throttling and outages as NotReady, no redirect followed, no token or secret in any error.
XOAUTH2 against a real server is in test_imap_auth.py (Dovecot's oauth2 passdb)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fake_idp import SCOPE, FakeIdp, at, oauth_cfg, provider, rt
from svcbridge import AuthFailed, NotReady


async def test_refresh_token_rotation_is_persisted_atomically(tmp_path: Path) -> None:
    idp = FakeIdp()
    prov = provider(oauth_cfg(tmp_path), idp)
    assert await prov.access_token() == at(1)
    assert await prov.access_token() == at(1)  # cached until shortly before expiry
    path = tmp_path / "refresh.token"
    assert path.read_text() == f"{rt(1)}\n" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["refresh.token"]  # no temp file left behind
    prov.invalidate()
    assert await prov.access_token() == at(2) and idp.calls[1]["refresh_token"] == rt(1)
    idp.rotate = False  # a provider that keeps the refresh token: the file is left alone
    prov.invalidate()
    assert await prov.access_token() == at(3) and path.read_text() == f"{rt(2)}\n"
    assert idp.calls[2]["refresh_token"] == rt(2)
    assert "t0ken" not in repr(prov) and "secret" not in repr(prov)


async def test_client_credentials_flow(tmp_path: Path) -> None:
    idp = FakeIdp()
    prov = provider(oauth_cfg(tmp_path, flow="client_credentials"), idp)
    assert await prov.access_token() == at(1)
    assert idp.calls == [
        {
            "grant_type": "client_credentials",
            "client_id": "cid",
            "client_secret": "client-secret-value",
            "scope": SCOPE,
        }
    ]


@pytest.mark.parametrize(
    ("status", "body", "exc", "text"),
    [
        (
            400,
            {
                "error": "invalid_grant",
                "error_description": "AADSTS700082: The refresh token has expired due to "
                "inactivity. The token was issued on 2026-01-01 r3fresh-t0ken-0",
            },
            AuthFailed,
            "invalid_grant, AADSTS700082",
        ),
        (
            400,
            {
                "error": "invalid_grant",
                "error_description": "AADSTS50173: The provided grant has expired due to it being revoked.",
            },
            AuthFailed,
            "invalid_grant, AADSTS50173",
        ),
        (
            400,
            {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
            AuthFailed,
            "(invalid_grant)",
        ),
        (401, {"error": "invalid_client"}, AuthFailed, "invalid_client"),
        (503, {}, NotReady, "503"),
        (429, {}, NotReady, "429"),
        (200, {"token_type": "Bearer"}, NotReady, "without an access_token"),
    ],
    ids=["expired", "revoked", "google-revoked", "bad-client", "503", "429", "no-token"],
)
async def test_token_failures_are_classified_and_leak_nothing(
    tmp_path: Path, status, body, exc, text
) -> None:
    idp = FakeIdp()
    idp.answer = [httpx.Response(status, json=body)]
    prov = provider(oauth_cfg(tmp_path), idp)
    with pytest.raises(exc) as info:
        await prov.access_token()
    assert text in str(info.value)
    assert rt(0) not in str(info.value) and "client-secret-value" not in str(info.value)
    assert (tmp_path / "refresh.token").read_text() == f"{rt(0)}\n"  # nothing rotated on a failure


async def test_token_endpoint_redirect_is_not_followed(tmp_path: Path) -> None:
    idp = FakeIdp()
    idp.answer = [httpx.Response(302, headers={"Location": "https://evil.example.net/steal"})]
    prov = provider(oauth_cfg(tmp_path), idp)
    with pytest.raises(AuthFailed, match="HTTP 302"):
        await prov.access_token()
    assert len(idp.calls) == 1


