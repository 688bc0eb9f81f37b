"""Operator accounts, console sessions and the audit trail, in the store.

Passwords are hashed with argon2id (argon2-cffi, memory-hard; its defaults follow RFC 9106's second
recommended profile). A session cookie is 32 random bytes; the store keeps only its SHA-256, so a copy of
the database does not log anyone in. Every console action (and every account change from the CLI) is an
audit row: who, what, on which object, when.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, insert, select, update

from ..models import utcnow
from ..store import schema as t

ROLES = ("admin", "readonly")
_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user does not exist, so a wrong name costs as long as a wrong password.
    Made on first use, not at import: every CLI command imports this module (cli_users.py), and one
    argon2id hash is 64 MiB and a few hundred milliseconds on a busy machine."""
    return _HASHER.hash(secrets.token_hex(16))


MIN_PASSWORD = 10


class AccountError(ValueError):
    """A refused account change (unknown user, weak password, bad role or time zone)."""


@dataclass(frozen=True)
class Operator:
    id: int
    username: str
    role: str
    tz: str | None

    @property
    def can_act(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    operator: Operator
    csrf: str
    expires_at: datetime


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short (at least {MIN_PASSWORD} characters)")


def _check_name(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 100 or any(not (c.isalnum() or c in "._-@") for c in name):
        raise AccountError("user names are 1-100 letters, digits and . _ - @")
    return name


def check_tz(tz: str | None) -> str | None:
    if tz is None:
        return None
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise AccountError(f"unknown time zone {tz!r} (e.g. Asia/Shanghai, Europe/Berlin, UTC)") from None
    return tz


class Accounts:
    """Accounts, sessions and audit rows; synchronous, one short transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ accounts
    def add(
        self, username: str, password: str, role: str = "admin", tz: str | None = None, actor: str = "cli"
    ) -> Operator:
        name = _check_name(username)
        _check_password(password)
        if role not in ROLES:
            raise AccountError(f"role must be one of {', '.join(ROLES)}")
        now = utcnow()
        with self.engine.begin() as conn:
            if conn.execute(select(t.operators.c.id).where(t.operators.c.username == name)).first():
                raise AccountError(f"user {name!r} exists (use passwd to change the password)")
            conn.execute(
                insert(t.operators).values(
                    username=name,
                    password_hash=_HASHER.hash(password),
                    role=role,
                    tz=check_tz(tz),
                    created_at=now,
                    updated_at=now,
                )
            )
            self._audit(conn, actor, "user_added", name, {"role": role})
        found = self.get(name)
        assert found is not None
        return found

    def passwd(self, username: str, password: str, actor: str = "cli") -> None:
        """New password; every session of the user ends (a leaked cookie dies with the old password)."""
        _check_password(password)
        with self.engine.begin() as conn:
            op = self._row(conn, username)
            conn.execute(
                update(t.operators)
                .where(t.operators.c.id == op["id"])
                .values(password_hash=_HASHER.hash(password), updated_at=utcnow())
            )
            conn.execute(delete(t.console_sessions).where(t.console_sessions.c.operator_id == op["id"]))
            self._audit(conn, actor, "user_password_changed", username, {})

    def remove(self, username: str, actor: str = "cli") -> None:
        with self.engine.begin() as conn:
            op = self._row(conn, username)
            conn.execute(delete(t.console_sessions).where(t.console_sessions.c.operator_id == op["id"]))
            conn.execute(delete(t.operators).where(t.operators.c.id == op["id"]))
            self._audit(conn, actor, "user_removed", username, {})

    def all(self) -> list[dict[str, Any]]:
        cols = [t.operators.c[n] for n in ("username", "role", "tz", "created_at", "updated_at")]
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(*cols).order_by(t.operators.c.username)).mappings()]

    def get(self, username: str) -> Operator | None:
        with self.engine.connect() as conn:
            r = conn.execute(select(t.operators).where(t.operators.c.username == username)).mappings().first()
        return Operator(int(r["id"]), r["username"], r["role"], r["tz"]) if r else None

    def verify(self, username: str, password: str) -> Operator | None:
        """The operator when the password matches; None otherwise (the same work either way)."""
        with self.engine.connect() as conn:
            r = conn.execute(select(t.operators).where(t.operators.c.username == username)).mappings().first()
        stored = r["password_hash"] if r else _dummy_hash()
        try:
            _HASHER.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if r is None:
            return None
        if _HASHER.check_needs_rehash(stored):  # parameters raised since: upgrade on the next login
            with self.engine.begin() as conn:
                conn.execute(
                    update(t.operators)
                    .where(t.operators.c.id == r["id"])
                    .values(password_hash=_HASHER.hash(password))
                )
        return Operator(int(r["id"]), r["username"], r["role"], r["tz"])

    @staticmethod
    def _row(conn: Any, username: str) -> Any:
        r = conn.execute(select(t.operators).where(t.operators.c.username == username)).mappings().first()
        if r is None:
            raise AccountError(f"no user {username!r}")
        return r

    # ------------------------------------------------------------------ sessions
    def open_session(self, op: Operator, ttl: float, idle: float | None = None) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown once, stored only hashed) and the session.
        ``expires_at`` is the idle deadline, moved on by each use (``session``) up to created + ``ttl``."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = utcnow()
        expires = now + timedelta(seconds=ttl if idle is None else min(ttl, idle))
        with self.engine.begin() as conn:
            conn.execute(delete(t.console_sessions).where(t.console_sessions.c.expires_at < now))
            conn.execute(
                insert(t.console_sessions).values(
                    token_hash=_digest(token),
                    operator_id=op.id,
                    csrf=csrf,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return token, Session(op, csrf, expires)

    def session(
        self, token: str | None, ttl: float | None = None, idle: float | None = None
    ) -> Session | None:
        """The live session of this cookie. With ``ttl`` and ``idle`` a use moves the idle deadline to
        now + idle, never past created + ttl (absolute lifetime); written at most once a minute."""
        if not token or len(token) > 200:
            return None
        q = (
            select(t.console_sessions, t.operators.c.username, t.operators.c.role, t.operators.c.tz)
            .join(t.operators, t.operators.c.id == t.console_sessions.c.operator_id)
            .where(t.console_sessions.c.token_hash == _digest(token))
        )
        with self.engine.connect() as conn:
            r = conn.execute(q).mappings().first()
        now = utcnow()
        expires = t.aware(r["expires_at"]) if r is not None else now
        if r is None or expires <= now:
            return None
        if ttl is not None and idle is not None:
            end = t.aware(r["created_at"]) + timedelta(seconds=ttl)
            if end <= now:
                return None
            moved = min(end, now + timedelta(seconds=idle))
            if (moved - expires).total_seconds() > 60:
                with self.engine.begin() as conn:
                    conn.execute(
                        update(t.console_sessions)
                        .where(t.console_sessions.c.token_hash == r["token_hash"])
                        .values(expires_at=moved)
                    )
                expires = moved
            expires = min(expires, end)
        op = Operator(int(r["operator_id"]), r["username"], r["role"], r["tz"])
        return Session(op, r["csrf"], expires)

    def close_session(self, token: str | None) -> None:
        if token:
            with self.engine.begin() as conn:
                conn.execute(
                    delete(t.console_sessions).where(t.console_sessions.c.token_hash == _digest(token))
                )

    # ------------------------------------------------------------------ audit
    def audit(self, actor: str, action: str, target: str | None = None, **detail: Any) -> None:
        with self.engine.begin() as conn:
            self._audit(conn, actor, action, target, detail)

    @staticmethod
    def _audit(conn: Any, actor: str, action: str, target: str | None, detail: dict[str, Any]) -> None:
        conn.execute(
            insert(t.audit_log).values(
                at=utcnow(),
                actor=actor[:200],
                action=action[:100],
                target=None if target is None else str(target)[:300],
                detail=detail,
            )
        )

    def audit_list(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        q = select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
