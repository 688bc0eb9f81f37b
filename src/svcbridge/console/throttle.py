"""The console's login rate limit, kept in the store so that every replica counts the same attempts.

Counted in one daemon's memory, N replicas behind a load balancer gave an attacker N times the guesses.
Here each key (``user:<name>``, ``addr:<address or IPv6 /64>``) has:

- a **sliding window**: an attempt is a ``login_attempts`` row, counted as it starts (before the slow
  password check, so parallel guesses count); a key with ``limit`` rows inside ``window`` seconds is
  refused without checking the password. A good password removes the user's rows and gives back the
  address's one attempt;
- a **lockout with backoff**: a wrong password that leaves a key at the limit locks it for ``window``
  seconds, each further lockout of that key doubles the time, up to ``lockout_max``; a key quiet for
  ``lockout_max`` after its last lockout starts again at one window;
- a **cleanup**: at most once a minute per process, rows older than the window and keys quiet for
  longer than a lockout go.

Each call is one short transaction. It writes before it reads (``INSERT ... ON CONFLICT DO NOTHING``
of the keys' rows, then ``SELECT ... FOR UPDATE`` in key order): SQLite takes its write lock at the
first write and PostgreSQL locks the rows, so two replicas' checks of one key run one after the other
and a burst of parallel guesses is counted exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..models import utcnow
from ..store import schema as t

CLEANUP_EVERY = 60.0  # seconds between two cleanups in one process


@dataclass(frozen=True)
class Verdict:
    admitted: bool  # the password may be checked (the attempt is counted)
    note: bool = False  # refused, and the first refusal of a lockout in this window: audit it


class LoginThrottle:
    def __init__(
        self,
        engine: Engine,
        limit: int,
        window: float,
        lockout_max: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine, self.limit, self.window = engine, limit, timedelta(seconds=window)
        self.lockout_max = timedelta(seconds=max(lockout_max, window))
        self.clock = clock
        self._cleaned = 0.0
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert_keys = insert(t.login_throttle).on_conflict_do_nothing(index_elements=["key"])

    def _lock_rows(self, conn: Any, keys: list[str], now: datetime) -> dict[str, Any]:
        conn.execute(self._insert_keys, [{"key": k, "strikes": 0, "touched_at": now} for k in keys])
        q = select(t.login_throttle).where(t.login_throttle.c.key.in_(keys)).order_by(t.login_throttle.c.key)
        return {r["key"]: r for r in conn.execute(q.with_for_update()).mappings()}

    def _counts(self, conn: Any, keys: list[str], now: datetime) -> dict[str, int]:
        a = t.login_attempts
        q = (
            select(a.c.key, func.count())
            .where(a.c.key.in_(keys), a.c.at > now - self.window)
            .group_by(a.c.key)
        )
        return {k: int(n) for k, n in conn.execute(q)}

    def attempt(self, *keys: str) -> Verdict:
        """Count an attempt for every key, or refuse it when one of them is at its limit or locked."""
        ordered, now = sorted(set(keys)), self.clock()
        self._maybe_cleanup(now)
        with self.engine.begin() as conn:
            rows = self._lock_rows(conn, ordered, now)
            counts = self._counts(conn, ordered, now)
            blocked = [
                k
                for k in ordered
                if counts.get(k, 0) >= self.limit
                or (rows[k]["locked_until"] is not None and t.aware(rows[k]["locked_until"]) > now)
            ]
            tc = t.login_throttle.c
            if blocked:
                fresh = [
                    k
                    for k in blocked
                    if rows[k]["noted_at"] is None or now - t.aware(rows[k]["noted_at"]) > self.window
                ]
                if fresh:
                    conn.execute(update(t.login_throttle).where(tc.key.in_(fresh)).values(noted_at=now))
                return Verdict(False, bool(fresh))
            conn.execute(t.login_attempts.insert(), [{"key": k, "at": now} for k in ordered])
            conn.execute(update(t.login_throttle).where(tc.key.in_(ordered)).values(touched_at=now))
        return Verdict(True)

    def failed(self, *keys: str) -> None:
        """A wrong password (its attempt is counted already): a key now at its limit is locked."""
        ordered, now = sorted(set(keys)), self.clock()
        with self.engine.begin() as conn:
            rows = self._lock_rows(conn, ordered, now)
            counts = self._counts(conn, ordered, now)
            for k in ordered:
                row = rows[k]
                until = t.aware(row["locked_until"]) if row["locked_until"] is not None else None
                if counts.get(k, 0) < self.limit or (until is not None and until > now):
                    continue
                # quiet for a whole lockout_max since the last lockout: the backoff starts over
                strikes = 0 if until is None or now - until > self.lockout_max else int(row["strikes"])
                lock = min(self.window * 2 ** min(strikes, 30), self.lockout_max)
                conn.execute(
                    update(t.login_throttle)
                    .where(t.login_throttle.c.key == k)
                    .values(strikes=strikes + 1, locked_until=now + lock, touched_at=now)
                )

    def succeeded(self, user_key: str, *other: str) -> None:
        """A good password: the user's count and lockout start over; the other keys (the address) give
        back the one attempt counted for it, keeping the failures the address made."""
        a = t.login_attempts
        with self.engine.begin() as conn:
            conn.execute(delete(a).where(a.c.key == user_key))
            conn.execute(
                update(t.login_throttle)
                .where(t.login_throttle.c.key == user_key)
                .values(strikes=0, locked_until=None, noted_at=None)
            )
            for k in other:
                newest = conn.execute(select(func.max(a.c.id)).where(a.c.key == k)).scalar()
                if newest is not None:
                    conn.execute(delete(a).where(a.c.id == newest))

    @staticmethod
    def unlock(engine: Engine, *keys: str) -> int:
        """Forget the attempts and the lockout of ``keys`` (``svcbridge users unlock``): anyone who knows
        an operator's name can lock it out, and an administrator lets the operator in again without
        waiting out ``lockout_max``. The number of rows deleted."""
        a, tc = t.login_attempts, t.login_throttle.c
        with engine.begin() as conn:
            gone = conn.execute(delete(a).where(a.c.key.in_(keys))).rowcount or 0
            gone += conn.execute(delete(t.login_throttle).where(tc.key.in_(keys))).rowcount or 0
        return int(gone)

    def _maybe_cleanup(self, now: datetime) -> None:
        mono = time.monotonic()
        if mono - self._cleaned >= CLEANUP_EVERY:
            self._cleaned = mono
            self.cleanup(now)

    def cleanup(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete attempts outside the window and keys whose last lockout is past ``lockout_max``
        (their backoff would start over anyway); returns (attempts, keys) deleted."""
        now = now or self.clock()
        a, tc = t.login_attempts, t.login_throttle.c
        quiet = now - self.window - self.lockout_max
        with self.engine.begin() as conn:
            gone = conn.execute(delete(a).where(a.c.at <= now - self.window)).rowcount
            keys = conn.execute(
                delete(t.login_throttle).where(
                    and_(
                        tc.touched_at < quiet,
                        or_(tc.locked_until.is_(None), tc.locked_until < now - self.lockout_max),
                    )
                )
            ).rowcount
        return int(gone or 0), int(keys or 0)
