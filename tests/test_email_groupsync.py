"""Spooled notices are made durable in groups (svcbridge_email/groupsync.py): each caller returns only
once its own file is fsynced, the directory is fsynced once per group, a failed round is tried again."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from svcbridge_email import groupsync
from svcbridge_email.groupsync import GroupSync


def test_many_senders_one_directory_fsync_per_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[Path, bool]] = []

    def fsync(path: Path, directory: bool = False) -> None:
        time.sleep(0.005)  # a disk: the others queue up meanwhile
        synced.append((path, directory))

    monkeypatch.setattr(groupsync, "fsync_path", fsync)
    g = GroupSync()
    early: list[str] = []

    def send(i: int) -> None:
        f = tmp_path / f"{i}.eml"
        f.write_bytes(b"x")
        g.durable(f, tmp_path)
        if (f, False) not in synced:
            early.append(f.name)  # returned before its own file was on disk

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not early
    files = [p for p, d in synced if not d]
    assert sorted(files) == sorted(tmp_path / f"{i}.eml" for i in range(16))  # each file once
    assert 1 <= sum(d for _p, d in synced) < 8  # the directory once per group, not once per file


def test_a_failed_round_is_tried_again_by_the_next_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fsync(path: Path, directory: bool = False) -> None:
        calls.append(path)
        if len(calls) == 1:
            raise OSError(5, "EIO")

    monkeypatch.setattr(groupsync, "fsync_path", fsync)
    g = GroupSync()
    a, b = tmp_path / "a.eml", tmp_path / "b.eml"
    with pytest.raises(OSError):
        g.durable(a, tmp_path)
    g.durable(b, tmp_path)  # takes a's file along: it is still not known to be on disk
    assert calls.count(a) == 2 and calls.count(b) == 1


def test_a_file_a_pickup_took_is_not_an_error(tmp_path: Path) -> None:
    g = GroupSync()
    g.durable(tmp_path / "gone.eml", tmp_path)  # renamed away by an MTA's pickup before the fsync
