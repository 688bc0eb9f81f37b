"""Spooled notices reach the pickup once across kill -9, with real daemon processes.

The spool transport sends several notices at once (issue 19): it keeps a receipt per item instead of
marking one send in flight. Here the daemon kills itself (``SVCBRIDGE_FAULTS=after_remote_commit``)
right after a notice is spooled and before its outcome is recorded, three times over, while a pickup
(an MTA's, a cron job's) moves every spooled file away as soon as it appears: a resend after the
restart must write nothing, so the pickup sees each acknowledgement exactly once.
"""

from __future__ import annotations

import email
import threading
import time
from pathlib import Path

from conftest import eml, free_port
from test_daemon import _healthy, start, stop, wait_for, write_config

MAILS = 24


class Pickup(threading.Thread):
    """Moves each ``*.eml`` out of the spool as soon as it is there, keeping what it took."""

    def __init__(self, spool: Path, into: Path) -> None:
        super().__init__(daemon=True)
        self.spool, self.into, self.done = spool, into, threading.Event()
        self.taken = 0
        into.mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        while not self.done.wait(0.005):
            for f in sorted(self.spool.glob("*.eml")) if self.spool.exists() else []:
                self.taken += 1
                f.rename(self.into / f"{self.taken:05d}-{f.name}")


def test_spooled_acknowledgements_are_picked_up_once_across_kill_9(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, port)
    pickup = Pickup(tmp_path / "outgoing", tmp_path / "picked")
    pickup.start()
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    for i in range(MAILS):  # a sender each: the per-recipient cap on automatic mail stays out of it
        (new / f"{i:03d}.eml").write_bytes(
            eml(subject=f"case {i}", msgid=f"<s{i}@x>", sender=f"c{i}@example.com")
        )
    crashes = 0
    try:
        for _ in range(3):  # each start dies right after its first notice is spooled, before recording it
            proc = start(cfg, faults="after_remote_commit")
            proc.wait(timeout=60)
            crashes += proc.returncode == -9
        assert crashes == 3
        proc = start(cfg)
        try:
            wait_for(lambda: _healthy(port))
            wait_for(lambda: pickup.taken >= MAILS, timeout=60)
            time.sleep(2)  # time for a (wrong) second copy to be written
        finally:
            stop(proc)
    finally:
        pickup.done.set()
        pickup.join(timeout=5)
    picked = sorted((tmp_path / "picked").iterdir())
    ids = [email.message_from_bytes(p.read_bytes())["Message-ID"] for p in picked]
    tickets = sorted(email.message_from_bytes(p.read_bytes())["X-Svcbridge-Ticket"] for p in picked)
    assert len(picked) == MAILS, f"{len(picked)} files picked up for {MAILS} acknowledgements"
    assert len(set(ids)) == MAILS and tickets == [f"SB-{i:06d}" for i in range(1, MAILS + 1)]
