"""IMAP's overlapped fetch and journal (imap.py ``_sync``) on its stop paths, without a server: the
mailbox's blocking calls are replaced, the journal is a fake context.

A cancellation that arrives while a batch is journaled is held until the next batch's FETCH lets go of
the connection; it must then end the pass as a cancellation, whatever that FETCH did. A FETCH that lost
the connection replaced it with the connection error, so a source cancelled by its heartbeat (lease
lost) or by shutdown went on polling as after a network error.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from svcbridge_email import ImapSettings
from svcbridge_email.imap import ImapSource


class Ctx:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.checkpoints: dict[str, str] = {}
        self.journaling = asyncio.Event()
        self.submitted: list[list[Any]] = []

    async def get_checkpoint(self, key: str) -> str | None:
        return self.checkpoints.get(key)

    async def set_checkpoint(self, key: str, value: str) -> None:
        self.checkpoints[key] = value

    def expect(self, n: int, size: int) -> None:
        pass

    async def submit_many(self, raws: list[Any]) -> None:
        self.submitted.append(raws)
        self.journaling.set()
        await asyncio.sleep(3600)  # a slow store: cancelled here

    async def confirm_lease(self) -> None:
        pass


def source(
    monkeypatch: pytest.MonkeyPatch, second: threading.Event, error: BaseException | None = None
) -> ImapSource:
    cfg = ImapSettings(name="box", host="127.0.0.1", username="u", password="p", batch=2, after="flag")
    src = ImapSource(cfg)
    monkeypatch.setattr(src, "_select", lambda client: "7")
    monkeypatch.setattr(src, "_new_messages", lambda client, last: {1: 10, 2: 10, 3: 10, 4: 10})
    monkeypatch.setattr(src, "_after", lambda client, ack: None)

    def fetch(client: Any, uids: list[int], uv: str) -> Any:
        if uids[0] == 3:  # the second batch: the connection drops once the test says so
            second.wait(10)
            raise error or ConnectionResetError(104, "connection reset by peer")
        return [src._raw(u, uv, b"Subject: x\r\n\r\nx\r\n", {}) for u in uids], list(uids)

    monkeypatch.setattr(src, "_fetch", fetch)
    return src


@pytest.mark.parametrize("error", [None, RuntimeError("unexpected in FETCH")], ids=["dropped", "other"])
async def test_a_cancellation_during_the_journal_is_not_lost_to_the_next_fetchs_error(
    monkeypatch: pytest.MonkeyPatch, error: BaseException | None
) -> None:
    second = threading.Event()
    src = source(monkeypatch, second, error)
    ctx = Ctx()
    task = asyncio.ensure_future(src._sync(ctx, client=None))  # type: ignore[arg-type]
    await asyncio.wait_for(ctx.journaling.wait(), 5)  # batch 1 is being journaled, batch 2 fetched
    task.cancel()  # shutdown, or the heartbeat found the lease lost
    await asyncio.sleep(0.05)
    second.set()  # now the second FETCH loses the connection
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    assert ctx.checkpoints["last_uid"] == "0"  # nothing acknowledged, the checkpoint not moved
    src._worker.shutdown()
