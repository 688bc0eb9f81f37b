"""Maildir intake with real files: only complete files are taken, one unreadable entry never stalls the rest.

Tests run as root (chmod 000 does not stop root): unreadable is a directory, a dangling symlink, or an
``open`` that raises PermissionError for one file.
"""

from __future__ import annotations

import builtins
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import eml


def _new(tmp_path: Path) -> Path:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    return new


def _deliver(tmp_path: Path, name: str, data: bytes, age: float = 5.0) -> Path:
    """The Maildir way: written in tmp/, renamed into new/; mtime ``age`` seconds in the past."""
    tmp = tmp_path / "maildir" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_bytes(data)
    past = time.time() - age
    os.utime(tmp / name, (past, past))
    target = _new(tmp_path) / name
    os.replace(tmp / name, target)
    return target


async def test_a_file_still_changing_is_left_for_the_next_pass(make_app, tmp_path: Path) -> None:
    app = make_app(plugins={"email": {"maildir": {"settle": 1.0}}})
    new = _new(tmp_path)
    (new / "fresh").write_bytes(eml(subject="Half written", msgid="<fresh@example.com>"))  # mtime: now
    _deliver(tmp_path, "old", eml(subject="Complete", msgid="<old@example.com>"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]
    assert (new / "fresh").exists() and not (new / "old").exists()
    assert [t.subject for t in app.store.list_tickets()] == ["Complete"]
    past = time.time() - 2
    os.utime(new / "fresh", (past, past))  # the writer is done
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]
    assert sorted(t.subject for t in app.store.list_tickets()) == ["Complete", "Half written"]
    assert list(new.iterdir()) == []


async def test_a_file_growing_while_read_is_not_taken(make_app, tmp_path: Path, monkeypatch) -> None:
    app = make_app()
    path = _deliver(tmp_path, "growing", eml(subject="Growing", msgid="<g@example.com>"))
    real_open = builtins.open

    def appending_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, *args, **kwargs)
        if str(file) == str(path) and "r" in (args[0] if args else kwargs.get("mode", "r")):
            with real_open(path, "ab") as w:  # the writer is still at it
                w.write(b"more text\r\n")
        return f

    monkeypatch.setattr(builtins, "open", appending_open)
    res = await app.run_once()
    assert res["outcomes"] == [] and path.exists()
    monkeypatch.setattr(builtins, "open", real_open)
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]
    assert "more text" in app.store.get_ticket("SB-000001").description


@pytest.mark.parametrize("kind", ["directory", "dangling symlink", "permission"])
async def test_an_unreadable_entry_is_quarantined_and_the_rest_go_on(
    make_app, tmp_path: Path, monkeypatch, kind: str
) -> None:
    app = make_app()
    _deliver(tmp_path, "a", eml(subject="Before", msgid="<a@example.com>"))
    new = _new(tmp_path)
    bad = new / "b"
    if kind == "directory":
        bad.mkdir()
    elif kind == "dangling symlink":
        bad.symlink_to(tmp_path / "nowhere.eml")
    else:
        _deliver(tmp_path, "b", eml(subject="Locked", msgid="<b@example.com>"))
        real_open = builtins.open

        def deny(file: Any, *args: Any, **kwargs: Any) -> Any:
            if str(file) == str(bad):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", deny)
    _deliver(tmp_path, "c", eml(subject="After", msgid="<c@example.com>"))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "created", "quarantined"]
    assert sorted(t.subject for t in app.store.list_tickets()) == ["After", "Before"]
    (q,) = app.store.quarantine_list()
    assert "unreadable file in new/" in q["error"]
    assert not os.path.lexists(bad)  # out of new/: never stalls or repeats
    assert os.path.lexists(tmp_path / "maildir" / "cur" / "b:2,")
    _deliver(tmp_path, "d", eml(subject="Later", msgid="<d@example.com>"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]  # the source is not in backoff


async def test_a_vanished_file_is_skipped(make_app, tmp_path: Path, monkeypatch) -> None:
    app = make_app()
    gone = _deliver(tmp_path, "gone", eml(subject="Gone", msgid="<gone@example.com>"))
    _deliver(tmp_path, "kept", eml(subject="Kept", msgid="<kept@example.com>"))
    real_stat = os.stat

    def vanish(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path) == str(gone) and os.path.lexists(gone):
            os.unlink(gone)  # another reader took it between the listing and the read
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", vanish)
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]
    assert app.store.quarantine_list() == []
