"""Who said STOP: the SMS opt-out register, the table ``sms_optouts`` of the store.

The SMS plugin's classify stage records a ``STOP`` / ``退订`` (and a later ``START``) as it processes
the message, and every SMS notifier asks ``blocked(number)`` before it sends. In the store, every
replica reads what any replica recorded (the register was a SQLite file in one replica's data_dir).
Writing is idempotent (a message processed again after a crash writes the same row) and ordered by
the time the customer said it, so it needs no place in the ticket's transaction: a STOP replayed
after a later START does not undo the START, a START older than the STOP does not undo the STOP.

Plugins get it as ``svcbridge.OptOutRegister.for_settings(settings)``: the hooks that need it are
given the settings only (classify, notifier construction), so the register opens its own engine on
the store's URL, once per URL and process (SQLite: a file handle; PostgreSQL: a small pool opened
as used).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from . import schema as t

__all__ = ["OptOutRegister"]

# one engine per store URL; a process normally has one, tests build hundreds of stores: the oldest
# beyond a few is disposed (its pooled connections closed, so no file handles pile up)
MAX_ENGINES = 8
OPTED_IN = ""  # the word of a START's row: the number said START at ``at`` (not blocked)
_engines: OrderedDict[str, Engine] = OrderedDict()
_lock = threading.Lock()


class OptOutRegister:
    """Opted-out numbers (E.164) with when and how they said it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def for_settings(cls, settings: Any) -> OptOutRegister:
        """The register of the store ``settings`` name (``database_url``, else data_dir's SQLite)."""
        from .db import make_engine

        url = settings.db_url
        with _lock:
            engine = _engines.get(url)
            if engine is None:
                engine = _engines[url] = make_engine(url)
                while len(_engines) > MAX_ENGINES:
                    _engines.popitem(last=False)[1].dispose()  # still usable: it opens a new pool
            _engines.move_to_end(url)
        return cls(engine)

    def record(self, phone: str, word: str, source: str, at: datetime) -> None:
        """``phone`` said STOP (``word``) at ``at``; a later STOP or START already recorded stays."""
        self._put(phone, word.strip()[:40] or "STOP", source, at)

    def _put(self, phone: str, word: str, source: str, at: datetime) -> None:
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        row = {"phone": phone, "at": at.astimezone(UTC), "word": word, "source": source[:100]}
        stmt = insert(t.sms_optouts).values(**row)
        stmt = stmt.on_conflict_do_update(
            index_elements=["phone"],
            set_={"at": stmt.excluded.at, "word": stmt.excluded.word, "source": stmt.excluded.source},
            where=stmt.excluded.at >= t.sms_optouts.c.at,
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def clear(self, phone: str, at: datetime) -> None:
        """``phone`` said START at ``at``: a STOP recorded after that time stays. The START stays as a
        row (word ``""``) so that an older STOP processed after it (replayed after a crash, a replica
        that was behind, the old file's import) does not opt the number out again; deleting the row
        forgot when the START was."""
        self._put(phone, OPTED_IN, "start", at)

    def blocked(self, phone: str | None) -> str | None:
        """When and how ``phone`` opted out (``'退订' at 2026-...``), or None."""
        if not phone:
            return None
        c = t.sms_optouts.c
        with self.engine.connect() as conn:
            row = conn.execute(select(c.word, c.at).where(c.phone == phone, c.word != OPTED_IN)).first()
        return f"{row.word!r} at {row.at.isoformat()}" if row else None
