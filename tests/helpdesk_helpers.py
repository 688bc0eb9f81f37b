"""What the real-helpdesk tests (test_rt.py, test_djhelpdesk.py) share.

- mails: ``mail_with_files`` (four attachments by default: PNG, latin-1 and UTF-8 text, a binary blob),
  ``drop`` into the maildir source, ``outgoing`` from the mail spool, ``text_of`` a notice's plain part;
- in-process: ``poll`` (one round of the daemon's status poll loop for a sink), ``item_for`` (an outbox
  row as the ``DeliveryItem`` the host would deliver);
- the daemon as a process: ``daemon_config`` (maildir in, spool out, one helpdesk section), ``start``,
  ``log_tail``, ``outbox`` (its rows, read-only), ``crash_at`` (run until a fault point SIGKILLs it) and
  ``crash_then_recover``.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from svcbridge import DeliveryItem

BIN = Path(sys.executable).parent / "svcbridge"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + bytes(range(256)) * 40
LATIN1 = "Zählerstand: 4711 Grüße\r\n".encode("latin-1")
UTF8 = "打印机卡纸 — ça coince\n".encode()
# 128 KiB of incompressible bytes; .bin is an extension django-helpdesk refuses by default
BLOB = hashlib.sha256(b"seed").digest() * 4096


# ---------------------------------------------------------------------- mails
def mail_with_files(
    subject: str = "Printer jams", msgid: str = "<m1@example.com>", body: str = "It jams on every page.",
    extra: dict[str, str] | None = None, files: list[tuple[str, str, bytes]] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.com>"
    msg["To"] = "support@bridge.test"
    msg["Subject"] = subject
    msg["Message-ID"] = msgid
    for k, v in (extra or {}).items():
        msg[k] = v
    msg.set_content(body)
    if files is None:
        files = [("photo.png", "image/png", PNG), ("zaehler.txt", "text/plain", LATIN1),
                 ("notes.txt", "text/plain", UTF8), ("dump.bin", "application/octet-stream", BLOB)]
    for name, ctype, data in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def drop(tmp_path: Path, name: str, data: bytes) -> None:
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / name).write_bytes(data)


def outgoing(spool: Path) -> list[email.message.EmailMessage]:
    files = sorted(spool.glob("*.eml")) if spool.exists() else []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]  # type: ignore[misc]


def text_of(m: email.message.EmailMessage) -> str:
    part = m.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else ""


# ---------------------------------------------------------------------- in-process
async def poll(app: Any, name: str) -> list[Any]:
    """One round of the daemon's status poll loop for sink `name`, then deliver what it queued."""
    sink, key = app.delivery.sinks[name], f"sink:{name}"
    cursor = app.store.get_checkpoint(key, "cursor")
    updates, new_cursor = await sink.poll_changes(cursor)
    for upd in updates:
        await app.pipeline.apply_status_update(upd)
    if new_cursor is not None and new_cursor != cursor:
        app.store.set_checkpoint(key, "cursor", new_cursor)
    await app.delivery.drain()
    return updates


def item_for(app: Any, target: str, ref: str, kind: str = "create") -> DeliveryItem:
    """The outbox row of `kind` for ticket `ref` and sink `target`, as the item the host would deliver."""
    ticket = app.store.get_ticket(ref)
    row = next(r for r in app.delivery.outbox.list()
               if r["kind"] == kind and r["target"] == target and r["ticket_id"] == ticket.id)
    payload = row["payload"] or {}
    journal = int(payload["journal_id"]) if payload.get("journal_id") else None
    atts = app.store.attachments_with_data(ticket.id, journal) if journal else app.store.attachments_with_data(ticket.id)
    return DeliveryItem(id=row["id"], kind=kind, target=target, idempotency_key=row["idempotency_key"], ticket=ticket,
                        payload=payload, attempts=row["attempts"], attachments=atts)


# ---------------------------------------------------------------------- the daemon as a process
def daemon_config(tmp_path: Path, sink: str, section: str, spool: Path | None = None,
                  name: str = "svcbridge.toml") -> Path:
    """A daemon config: maildir in, mail spool out, everything routed to `sink`; `section` is its table."""
    cfg = tmp_path / name
    cfg.write_text(f"""
data_dir = "{tmp_path}/var"
outbound_allow = ["127.0.0.1/32"]
shutdown_grace = 5
[http]
enabled = false
[log]
format = "json"
[outbox]
backoff_initial = 0.2
backoff_max = 1.0
poll_interval = 0.1
[routing]
default = ["{sink}"]
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.maildir]
path = "{tmp_path}/maildir"
interval = 0.1
[plugins.email.outbound]
spool_dir = "{spool or tmp_path / 'outgoing'}"
{section.strip()}
""")
    return cfg


def start(cfg: Path, faults: str = "") -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
    if faults:
        env["SVCBRIDGE_FAULTS"] = faults
    log = (cfg.parent / "daemon.log").open("ab")  # a file, not a pipe nobody reads while we wait
    log.write(f"--- start faults={faults!r}\n".encode())
    log.flush()
    try:
        return subprocess.Popen([str(BIN), "--config", str(cfg), "run"], env=env, cwd=cfg.parent,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def log_tail(cfg: Path) -> str:
    return (cfg.parent / "daemon.log").read_text(errors="replace")[-4000:]


def outbox(tmp_path: Path) -> list[tuple[str, str, str]]:
    db = tmp_path / "var" / "svcbridge.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            return conn.execute("select kind, target, status from outbox order by id").fetchall()
        except sqlite3.OperationalError:
            return []


def wait_settled(tmp_path: Path, n: int, cfg: Path, timeout: float = 60.0) -> None:
    """Until at least `n` outbox rows are all done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = outbox(tmp_path)
        if len(rows) >= n and all(r[2] == "done" for r in rows):
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {n} outbox rows done: {outbox(tmp_path)}\n{log_tail(cfg)}")


def crash_at(cfg: Path, faults: str, log_cfg: Path | None = None, timeout: float = 90) -> None:
    """Run `cfg` with fault point `faults` until the daemon SIGKILLs itself there."""
    proc = start(cfg, faults)
    log_cfg = log_cfg or cfg
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"fault point {faults} never reached:\n{log_tail(log_cfg)}") from None
    assert code == -signal.SIGKILL, log_tail(log_cfg)


def crash_then_recover(cfg: Path, tmp_path: Path, faults: str, rows: int, crash_cfg: Path | None = None) -> float:
    """Run with a fault point until the daemon SIGKILLs itself, then cleanly until the outbox settles.

    Returns the seconds from the first start until `rows` outbox rows were done.
    """
    t0 = time.monotonic()
    crash_at(crash_cfg or cfg, faults, log_cfg=cfg)
    proc = start(cfg)
    try:
        wait_settled(tmp_path, rows, cfg)
        took = time.monotonic() - t0
        time.sleep(0.6)  # a few more poll rounds: room for a (wrong) second notice to appear
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log_tail(cfg)
    return took


def sent(tmp_path: Path) -> list[email.message.Message]:
    """The notices the spool transport wrote, oldest first."""
    d = tmp_path / "outgoing"
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(d.glob("*.eml"))] if d.exists() else []


def plugin(name: str, **hooks: Any) -> Any:
    """A plugin object with the given hook implementations (a fresh plugin manager takes it in ``extra``)."""
    import types

    from svcbridge import hookimpl

    mod = types.SimpleNamespace(__name__=name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


class Recorder:
    """A helpdesk sink (not inline) that records what it is sent: stands for a helpdesk."""

    name = "desk"

    def __init__(self) -> None:
        self.items: list[Any] = []

    async def deliver(self, item: Any) -> Any:
        from svcbridge import DeliveryResult

        self.items.append(item)
        return DeliveryResult(detail="ok")

    async def reconcile(self, item: Any) -> None:
        return None


def recorder_plugin(desk: Recorder) -> Any:
    return plugin("deskplugin", register_sinks=lambda register: register(desk))
