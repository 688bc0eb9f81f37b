"""Who said STOP: the store's opt-out register (``svcbridge.OptOutRegister``), and the file it replaced.

The register is the store's table ``sms_optouts``: the classify stage records a ``STOP`` / ``退订`` (and
a later ``START``), every SMS notifier asks ``blocked(number)`` before it sends, and every replica
sees what any of them recorded. The opt-out is also recorded on the ticket (label ``sms_opt_out``),
where agents and helpdesks see it.

Before, the register was a SQLite file of this plugin (``<data_dir>/sms-optout.db``, or
``optout_db``), seen only by the replica that wrote it. ``import_file`` copies such a file's numbers
into the store once (a later STOP or START recorded in the store wins, by time) and renames it
``*.imported``: an opt-out is never lost in the move, and never imported twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from datetime import datetime
from pathlib import Path

import structlog

from svcbridge import OptOutRegister

__all__ = ["OptOutRegister", "import_file"]

log = structlog.get_logger("svcbridge.sms")
_lock = threading.Lock()


def import_file(path: Path, register: OptOutRegister) -> int:
    """Copy the opt-outs of the old register file ``path`` into the store; the number copied."""
    with _lock:
        if not path.is_file():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT phone, at, word, source FROM optouts").fetchall()
        except sqlite3.DatabaseError:  # no table (never written) or not a register: nothing to copy
            rows = []
        finally:
            db.close()
        for phone, at, word, source in rows:
            register.record(phone, word, source, datetime.fromisoformat(at))
        # FileNotFoundError: another process on this data_dir imported it meanwhile (the same rows)
        with contextlib.suppress(FileNotFoundError):
            path.rename(path.with_name(path.name + ".imported"))
        log.info("sms_optouts_imported", file=str(path), numbers=len(rows))
        return len(rows)
