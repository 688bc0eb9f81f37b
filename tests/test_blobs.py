"""The blob store (issue 19 item 1): raw mail and attachment bytes stored once, by sha256, outside the
database; written durably before the commit that names them; existing stores moved out by migration 0012.
"""

from __future__ import annotations

import base64
import email.message
import email.policy
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, select

from svcbridge.maintenance import check_blobs
from svcbridge.store import db, split
from svcbridge.store import schema as t
from svcbridge.store.blobs import LocalBlobs
from svcbridge.store.repo import Store
from test_email_pipeline import drop


def mail(*files: tuple[str, bytes], text: str = "打印机卡纸 printer jams", policy=email.policy.SMTP,
         msgid: str = "<b1@example.com>", sender: str = "alice@example.com") -> bytes:
    m = email.message.EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = sender, "support@bridge.test", "扫描件 scan", msgid
    m.set_content(text)
    for name, data in files:
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m.as_bytes(policy=policy)


def rnd(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def b64_mail(body: bytes, eol: bytes = b"\r\n") -> bytes:
    head = (b"From: a@b.example\nSubject: x\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: application/pdf\n'
            b"Content-Transfer-Encoding: base64\n\n").replace(b"\n", eol)
    return head + body + b"--B--" + eol


def lines(data: bytes, n: int, eol: bytes) -> bytes:
    enc = base64.b64encode(data)
    return b"".join(enc[i : i + n] + eol for i in range(0, len(enc), n))


# (case, raw, how many parts are cut out)
CASES = [
    ("SMTP policy CRLF, two files", mail(("a.pdf", rnd(50_000)), ("b.tif", rnd(9_000, 2))), 2),
    ("default policy LF", mail(("a.pdf", rnd(50_000)), policy=email.policy.default), 1),
    ("same file twice in one mail", mail(("a.pdf", rnd(20_000)), ("copy.pdf", rnd(20_000))), 1),
    ("small file stays in the skeleton", mail(("s.txt", rnd(500))), 0),
    ("76-char lines, last line full", b64_mail(lines(rnd(57 * 100), 76, b"\r\n")), 1),
    ("72-char lines LF", b64_mail(lines(rnd(30_001), 72, b"\n"), b"\n"), 1),
    ("64-char lines CRLF, short last line", b64_mail(lines(rnd(30_002), 64, b"\r\n")), 1),
    ("uneven line lengths are not cut", b64_mail(lines(rnd(9_000), 76, b"\r\n")[:-200] + b"QUJD\r\n" * 40), 0),
    ("junk after the padding is not cut", b64_mail(lines(rnd(9_001), 76, b"\r\n") + b"!!junk!!\r\n"), 0),
    ("non-zero bits in the padding are not cut", b64_mail(lines(rnd(9_001), 76, b"\r\n")[:-5] + b"R==\r\n"), 0),
    ("padding in the middle is not cut", b64_mail(b"QQ==" + lines(rnd(9_000), 76, b"\r\n")[4:]), 0),
    ("a character outside the alphabet is not cut", b64_mail(b"Q*" + lines(rnd(9_000), 76, b"\r\n")[2:]), 0),
    ("no newline at the very end", b64_mail(lines(rnd(9_000), 76, b"\r\n"))[:-2], 1),
    ("not base64 at all", b64_mail(("中文正文 " * 2000).encode() + b"\r\n"), 0),
    ("empty", b"", 0),
]


@pytest.mark.parametrize(("case", "raw", "cut"), CASES, ids=[c[0] for c in CASES])
def test_split_rebuilds_every_byte(case: str, raw: bytes, cut: int) -> None:
    chunks, parts = split.split(raw)
    stored = b"".join(bytes(c) for c in chunks)
    assert split.join(stored, parts.get) == raw
    assert len(parts) == cut
    assert split.part_keys(stored) == [m for m in split.part_keys(stored) if m in parts]
    for sha, data in parts.items():
        assert hashlib.sha256(data).hexdigest() == sha
    if cut:  # what the stdlib decodes as the attachment is the blob: stored once
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        decoded = {hashlib.sha256(p.get_payload(decode=True)).hexdigest() for p in msg.walk() if not p.is_multipart()}
        assert set(parts) <= decoded
        assert len(stored) < len(raw) // 10


def test_local_blobs_put_get_touch_delete(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path / "b")
    key = hashlib.sha256(b"x").hexdigest()
    assert blobs.put_many({key: [b"", memoryview(b"x")]}) == 1
    assert blobs.get(key) == b"x" and blobs.has(key)
    os.utime(blobs.path(key), (1, 1))
    assert blobs.put_many({key: b"x"}) == 0  # present: touched, not written again
    assert blobs.path(key).stat().st_mtime > 1
    assert list(blobs.keys(older_than=3600)) == [] and list(blobs.keys()) == [(key, 1)]
    assert blobs.delete(key) and blobs.get(key) is None and not blobs.delete(key)
    with pytest.raises(ValueError):
        blobs.path("../../etc/passwd")
    assert not list((tmp_path / "b" / "tmp").iterdir())  # no temporary file left behind


async def test_mail_and_attachments_are_stored_once_outside_the_database(make_app, tmp_path: Path) -> None:
    app = make_app(outbox={"auto_limits": {10: 100}})
    scan, photo = rnd(300_000, 7), rnd(80_000, 8)
    first = mail(("scan.tif", scan), ("photo.jpg", photo))
    again = mail(("扫描.tif", scan), msgid="<b2@example.com>", sender="bob@example.com")  # the same scan
    drop(tmp_path, "1", first)
    drop(tmp_path, "2", again)
    drop(tmp_path, "3", first)  # the same mail twice: one journal row is a duplicate
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "created", "duplicate"]
    blobs = app.store.blobs
    count, size = blobs.usage()
    assert count == 2 and size == len(scan) + len(photo)  # each file once, however often it came
    with app.store.engine.connect() as conn:
        stored = conn.execute(select(t.journal.c.raw, t.journal.c.size)).all()
        atts = conn.execute(select(t.attachments.c.data, t.attachments.c.safe_name)).all()
    assert all(len(r) < 4096 and s for r, s in stored)  # headers and text, the rest is in blobs
    assert [d for d, _ in atts] == [None, None, None]
    for o in res["outcomes"]:
        assert app.store.load_raw(o.journal_id).raw in (first, again)
    t1 = app.store.get_ticket("SB-000001")
    got = {a.safe_name: a.data for a in app.store.attachments_with_data(t1.id)}
    assert sorted(got.values()) == sorted([scan, photo])
    by_ticket, _ = app.store.attachments_bulk({1, 2}, set())
    assert [a.data for a in by_ticket[2]] == [scan]


async def test_a_missing_blob_quarantines_with_the_reason_instead_of_guessing(make_app, tmp_path: Path) -> None:
    app = make_app()
    raw = mail(("scan.tif", rnd(60_000, 3)))
    res = app.store.journal_insert(
        __import__("svcbridge").RawMessage(channel="email", source="t", external_id="1", raw=raw)
    )
    (key,) = app.store.blobs.keys()
    app.store.recent.take(res_hash := app.store.journal_row(res.journal_id)["content_hash"], len(raw))
    assert res_hash  # read from the store, as another process or a restart would (store/recent.py)
    assert check_blobs(app) is None
    app.store.blobs.delete(key[0])
    assert "replicas must share one blob store" in (check_blobs(app) or "")  # logged at start
    loaded = app.store.load_raw(res.journal_id)
    assert loaded.raw is None and "missing from the blob store" in loaded.metadata["fetch_error"]
    out = await app.run_once()
    assert [o.status for o in out["outcomes"]] == ["quarantined"]


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/var"\n[http]\nenabled = false\n[plugins.email]\n'
                   f'from_address = "support@bridge.test"\n[plugins.email.outbound]\nspool_dir = "{tmp_path}/out"\n')
    return cfg


def _ingest(cfg: Path, raw: bytes, faults: str = "") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "SVCBRIDGE_FAULTS": faults}
    return subprocess.run([sys.executable, "-m", "svcbridge", "--config", str(cfg), "ingest", "-"],
                          input=raw, capture_output=True, env=env, timeout=120)


def test_kill_between_blob_write_and_commit_leaves_an_orphan_never_a_dangling_row(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    raw = mail(("scan.tif", rnd(200_000, 5)))
    died = _ingest(cfg, raw, "after_blobs")
    assert died.returncode == -signal.SIGKILL
    engine = db.make_engine(f"sqlite:///{tmp_path}/var/svcbridge.db")
    with engine.connect() as conn:
        assert conn.execute(select(t.journal.c.id)).all() == []  # nothing committed
    blobs = LocalBlobs(tmp_path / "var" / "blobs")
    assert [k for k, _ in blobs.keys()] == list(split.split(raw)[1])  # the orphan: gc takes it later
    ok = _ingest(cfg, raw)  # the MTA retries
    assert ok.returncode == 0, ok.stderr
    store = Store(engine, "SB", blobs)
    with engine.connect() as conn:
        (jid,) = conn.execute(select(t.journal.c.id)).scalars().all()
    assert store.load_raw(jid).raw == raw
    assert blobs.usage()[0] == 1  # the blob written before the kill is the one the row names


def db_size(engine) -> int:
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.exec_driver_sql("PRAGMA page_count").scalar()) * 4096


def test_migration_0012_moves_bytes_out_of_an_older_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    sqlite3.connect(tmp_path / "old.db").execute("PRAGMA journal_mode=WAL").close()  # as an old release made it
    engine = db.make_engine(url)
    command.upgrade(db.alembic_config(engine), "0011")
    raws = [mail(("f.pdf", rnd(100_000, i)), msgid=f"<{i}@x>") for i in range(5)]
    small = b"From: a@b\r\nSubject: hi\r\n\r\nshort\r\n"
    files = [rnd(100_000, 0), b"tiny file"]
    now = __import__("svcbridge").models.utcnow()
    with engine.begin() as conn:
        conn.execute(insert(t.tickets.c.id.table).values(id=1, ref="SB-000001", state="new", channel="email",
                     subject="", description="", contact={}, asset={}, priority=3, deadlines={},
                     created_at=now, updated_at=now, labels={}))
        for i, raw in enumerate([*raws, small]):
            conn.exec_driver_sql(
                "INSERT INTO journal (source, channel, external_id, content_hash, received_at, raw, meta, status,"
                " attempts) VALUES (?, 'email', ?, ?, ?, ?, '{}', 'processed', 1)",
                ("old", str(i), hashlib.sha256(raw).hexdigest(), now.isoformat(), raw))
        for i, data in enumerate(files):
            conn.exec_driver_sql(
                "INSERT INTO attachments (ticket_id, sha256, size, content_type, safe_name, data)"
                " VALUES (1, ?, ?, 'application/pdf', ?, ?)",
                (hashlib.sha256(data).hexdigest(), len(data), f"f{i}.pdf", data))
    before = db_size(engine)
    blobs = LocalBlobs(tmp_path / "blobs")
    db.upgrade(engine, blobs=blobs)
    assert db.current_revision(engine) >= "0012"
    store = Store(engine, "SB", blobs)
    loaded = store.load_raws(list(range(1, 7)))
    assert [loaded[i].raw for i in range(1, 7)] == [*raws, small]
    assert sorted(a.data for a in store.attachments_with_data(1)) == sorted(files)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2  # incremental from now on
        rows = conn.execute(select(t.journal.c.raw, t.journal.c.size)).all()
        assert all(s is not None and (r is None or len(r) < 4096) for r, s in rows)
        assert conn.execute(select(t.attachments.c.data)).scalars().all() == [None, b"tiny file"]
    after = db_size(engine)
    assert after < before / 3, (before, after)
    assert blobs.usage()[1] == 5 * 100_000  # the file of mail 0 and attachment 0 are one blob
