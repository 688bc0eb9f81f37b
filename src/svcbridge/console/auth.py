"""Who is asking: session cookies, the admin token, CSRF checks and login rate limiting.

- The session cookie is HttpOnly and SameSite=Strict (a cross-site form post does not carry it), Secure
  when the console is served over https (directly, or behind a proxy whose ``[http] public_url`` is
  https). Its value is random; the store keeps its hash.
- Every state-changing request needs the session's CSRF token in the form *and*, when the browser sends
  an Origin (or Referer), the console's own origin: a stale token (an old session, a password change) or
  a foreign page is refused with 403 and nothing happens.
- Scripts use ``Authorization: Bearer <admin token>`` (``[console] admin_token_file`` or the env); the
  token is compared in constant time and never logged (it is added to the log redaction); one shorter
  than 16 characters is refused (guessable, and bearer guesses are not rate limited).
- Login attempts are counted per user name and per client address in a sliding window as they start
  (parallel guesses count), a good password gives its attempt back; over ``login_attempts`` the login
  answers 429 without checking the password, and a key that reached it is locked out with a doubling
  backoff (throttle.py). The counts are in the store, shared by every replica; the client address is
  the one frontdoor.py resolved (``[http] trusted_proxies``), never a header the client wrote itself.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from ..settings import ConsoleSettings
from .accounts import Accounts, Session
from .throttle import LoginThrottle

MIN_TOKEN = 16  # bearer guesses are not rate limited (a script must not lock itself out): length is the guard
COOKIE = "sb_session"
LOGIN_COOKIE = "sb_login"  # double-submit token of the login form (no session exists yet)
TOKEN_ACTOR = "token"  # noqa: S105  (the audit name of the admin token, not a secret)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    tz: str | None
    csrf: str | None  # None for the admin token: no cookie, nothing a foreign page could ride on

    @property
    def can_act(self) -> bool:
        return self.role == "admin"


class Guard:
    def __init__(self, accounts: Accounts, cfg: ConsoleSettings, public_url: str | None = None) -> None:
        self.accounts, self.cfg = accounts, cfg
        # in the store: every replica counts the same attempts (throttle.py)
        self.limiter = LoginThrottle(
            accounts.engine, cfg.login_attempts, cfg.login_window, cfg.login_lockout_max
        )
        # behind a TLS reverse proxy the browser's origin is [http] public_url, not the loopback address
        # uvicorn sees; that origin is ours too, and https there means Secure cookies
        parts = urlsplit(public_url or "")
        self.public_origin = f"{parts.scheme}://{parts.netloc}".lower() if parts.netloc else None

    def principal(self, request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            token = self.cfg.token()
            given = auth[7:].strip()
            if token and len(token) >= MIN_TOKEN and hmac.compare_digest(given.encode(), token.encode()):
                return Principal(TOKEN_ACTOR, "admin", None, None)
            return None
        s: Session | None = self.accounts.session(
            request.cookies.get(COOKIE), self.cfg.session_hours * 3600, self.cfg.idle_minutes * 60
        )
        if s is None:
            return None
        return Principal(s.operator.username, s.operator.role, s.operator.tz, s.csrf)

    def same_origin(self, request: Request) -> bool:
        """False when the browser says the request comes from another origin."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin != "null"  # "null": a sandboxed or opaque origin is never ours
        parts = urlsplit(origin)
        theirs = f"{parts.scheme}://{parts.netloc}".lower()
        return theirs in (f"{request.url.scheme}://{request.url.netloc}".lower(), self.public_origin)

    def secure_cookies(self, request: Request) -> bool:
        return request.url.scheme == "https" or (self.public_origin or "").startswith("https://")

    def csrf_ok(self, request: Request, who: Principal, form: dict[str, str]) -> bool:
        if who.csrf is None:  # bearer token: no ambient credential to abuse
            return True
        given = form.get("csrf", "")
        return self.same_origin(request) and hmac.compare_digest(given.encode(), who.csrf.encode())


def cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    guard: Guard = request.app.state.console.guard
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=guard.secure_cookies(request),
        path="/",
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(24)
