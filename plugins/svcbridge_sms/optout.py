"""Who said STOP: a small durable register of opted-out numbers, read before every SMS is sent.

The register is a SQLite file of the plugin's own (``<data_dir>/sms-optout.db``, or ``optout_db``):
the classify stage records a ``STOP`` / ``退订`` (and a later ``START``) as it processes the message,
and every SMS notifier asks ``blocked(number)`` before it sends. Writing is idempotent (a message
processed again after a crash writes the same row), so it needs no place in the ticket's transaction.
The opt-out is also recorded on the ticket (label ``sms_opt_out``), where agents and helpdesks see it.
Several replicas must share the file (a shared volume) or point ``optout_db`` at one path.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

_lock = threading.Lock()


class OptOuts:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS optouts (phone TEXT PRIMARY KEY, at TEXT NOT NULL, "
                "word TEXT NOT NULL, source TEXT NOT NULL)"
            )

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)  # autocommit: one statement
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def record(self, phone: str, word: str, source: str, at: datetime) -> None:
        with _lock, self._db() as db:
            db.execute(
                "INSERT INTO optouts(phone, at, word, source) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(phone) DO UPDATE SET at = excluded.at, word = excluded.word, "
                "source = excluded.source WHERE excluded.at >= optouts.at",
                (phone, at.isoformat(), word[:40], source[:100]),
            )

    def clear(self, phone: str, at: datetime) -> None:
        with _lock, self._db() as db:  # a START older than the STOP does not undo it
            db.execute("DELETE FROM optouts WHERE phone = ? AND at <= ?", (phone, at.isoformat()))

    def blocked(self, phone: str | None) -> str | None:
        """When and how ``phone`` opted out (``'退订 at 2026-...'``), or None."""
        if not phone:
            return None
        with self._db() as db:
            row = db.execute("SELECT word, at FROM optouts WHERE phone = ?", (phone,)).fetchone()
        return f"{row[0]!r} at {row[1]}" if row else None
