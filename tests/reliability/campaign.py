"""The chaos campaign (issue 12 item 3): real ``svcbridge run`` processes killed with SIGKILL again and
again while customers write in through a Maildir and a real Dovecot mailbox, into a misbehaving
Zammad (``chaosdesk.py``), with acknowledgements mailed to an SMTP sink that keeps every transaction.

Pieces:

- ``Corpus``: conversations (threads). Each opens with a mail and gets 0..3 replies; about a third are
  in Chinese; some mails carry files (unique bytes, some with Chinese names). Every mail carries a
  token (``CHAOS-T0012-M1``) in its body, so its words can be found on the helpdesk's tickets.
- ``Injector``: a thread that drops opening mails into the Maildir (tmp/ then rename into new/) or
  APPENDs them to the Dovecot mailbox, and sends a thread's replies once its acknowledgement reached
  the SMTP sink (the customer answers what they got: to the acknowledgement, to their own mail, or a
  new mail naming the ``[SB-...]`` reference). A few mails arrive twice: in both mailboxes (the same
  bytes), or redelivered by the MTA (one more ``Received:``); the copy must change nothing.
- ``Campaign``: the kill schedule (random moments, and every named crash point through
  ``SVCBRIDGE_FAULTS``), then a healthy finish (helpdesk healthy, one daemon until journal, outbox,
  jobs and timers are drained), then ``report()``: what the helpdesk, the SMTP sink and the store hold.

A small plugin (``PLUGIN``) gives every new ticket a job and a timer whose ticket changes reach Zammad
as internal notes, so ``job_after_run`` and ``timer_after_fire`` are crash points with effects.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import imaplib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent / "svcbridge"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
POINTS = ("after_journal", "after_store", "after_remote_commit", "job_after_run", "timer_after_fire")
TOKEN_RE = re.compile(r"CHAOS-T(\d{4})-M(\d)\b")
REF_RE = re.compile(r"\[(SB-\d{6})\]")
IMAP_USER = "carol"

PLUGIN = '''
"""Chaos campaign plugin: a lookup job and a callback timer for every new ticket."""
from datetime import timedelta

from svcbridge import JobKind, TicketChange, TimerKind, hookimpl, utcnow

CALLS = {calls!r}


def _note(what):
    with open(CALLS, "a") as f:
        f.write(what + "\\n")


@hookimpl
def enrich_ticket(draft, ticket, jobs):
    if ticket is None:
        jobs.enqueue("chaos.lookup", {{"serial": "SN1"}})
        jobs.schedule("chaos.callback", utcnow() + timedelta(seconds=0.5))


def lookup(job):
    _note("lookup " + job.ticket.ref)
    return TicketChange(labels={{"chaos": "checked"}}, note="chaos lookup ran")


def callback(timer):
    _note("callback " + timer.ticket.ref)
    return TicketChange(labels={{"callback": "due"}})


@hookimpl
def register_job_kinds(register):
    register(JobKind("chaos.lookup", lookup))


@hookimpl
def register_timer_kinds(register):
    register(TimerKind("chaos.callback", callback))
'''

ZH_SUBJECTS = ["打印机卡纸", "复印机无法开机", "扫描仪报错 E-302", "传真收不到", "碳粉盒漏粉"]
ZH_BODIES = [
    "您好，打印机每一页都卡纸，已经重启过两次，请尽快派人处理。谢谢。",
    "机器显示错误代码，说明书上找不到，请帮忙看一下。",
    "我们办公室的设备今天早上开始无法使用，影响工作，麻烦尽快回复。",
]
EN_SUBJECTS = ["Printer jams", "Copier will not start", "Scanner error E-302", "No fax received", "Toner leaks"]
EN_BODIES = [
    "Hello, the printer jams on every page. We restarted it twice already.",
    "The display shows an error code that is not in the manual. Please have a look.",
    "Our office device stopped working this morning; please call us back.",
]
ZH_NAMES = ["张伟", "王芳", "李娜", "刘洋", "陈静"]
EN_NAMES = ["Alice Smith", "Bob Jones", "Carol White", "Dan Brown", "Eve Black"]


# ---------------------------------------------------------------------------------------------- corpus
@dataclass
class Mail:
    thread: int
    k: int  # 0: the opening mail, 1..: replies
    source: str  # "maildir" | "imap"
    files: list[tuple[str, str, bytes]] = field(default_factory=list)  # (name, content type, bytes)
    style: str = ""  # replies: "ack" (to the acknowledgement), "own" (to their own mail), "tag" (new mail)
    sent_at: float | None = None
    raw: bytes | None = None  # built once: a retried APPEND sends the same bytes
    # a second copy, sent a moment later: "maildir"/"imap" with the same bytes (one mail reaching two
    # watched mailboxes), or "redelivery" (the same mailbox again with one more Received: header, an
    # MTA that retried after a lost 250)
    copy: str = ""
    copy_sent: bool = False

    @property
    def token(self) -> str:
        return f"CHAOS-T{self.thread:04d}-M{self.k}"


@dataclass
class Thread:
    n: int
    zh: bool
    sender: str
    subject: str
    mails: list[Mail]
    msgids: list[str] = field(default_factory=list)
    ref: str | None = None
    ack_msgid: str | None = None
    ack_subject: str | None = None


class Corpus:
    def __init__(self, n_mails: int, rng: random.Random, run_id: str) -> None:
        self.rng, self.run_id = rng, run_id
        self.threads: list[Thread] = []
        total = 0
        while total < n_mails:
            n = len(self.threads)
            zh = rng.random() < 0.35
            replies = min(rng.choice([0, 0, 1, 1, 2, 3]), n_mails - total - 1)
            name = rng.choice(ZH_NAMES if zh else EN_NAMES)
            addr = f"cust{n:04d}.{run_id}@{'kehu.example.cn' if zh else 'customer.example'}"
            subject = f"{rng.choice(ZH_SUBJECTS if zh else EN_SUBJECTS)} #{n}"
            mails = []
            for k in range(replies + 1):
                m = Mail(n, k, rng.choice(["maildir", "imap"]))
                x = rng.random()
                if x < 0.05:
                    m.copy = "imap" if m.source == "maildir" else "maildir"
                elif x < 0.08:
                    m.copy = "redelivery"
                if k:
                    m.style = rng.choice(["ack", "ack", "own", "tag"])
                if rng.random() < 0.3:
                    for j in range(rng.choice([1, 1, 2])):
                        m.files.append(self._file(m, j, zh))
                mails.append(m)
            self.threads.append(Thread(n, zh, f"{name} <{addr}>", subject, mails))
            total += len(mails)

    def _file(self, m: Mail, j: int, zh: bool) -> tuple[str, str, bytes]:
        size = self.rng.randint(300, 6000)
        data = f"{m.token} file {j}\n".encode() + self.rng.randbytes(size)
        if zh and self.rng.random() < 0.5:
            return f"故障照片-{m.thread}-{m.k}-{j}.jpg", "image/jpeg", data
        kind = self.rng.choice([("pdf", "application/pdf"), ("jpg", "image/jpeg"), ("bin", "application/octet-stream")])
        return f"file-{m.thread}-{m.k}-{j}.{kind[0]}", kind[1], data

    @property
    def mails(self) -> list[Mail]:
        return [m for t in self.threads for m in t.mails]

    def msgid(self, m: Mail) -> str:
        return f"<chaos.{self.run_id}.t{m.thread}.m{m.k}@customer.example>"

    def build(self, m: Mail) -> bytes:
        """The mail's bytes; a reply needs its thread's acknowledgement (ref, Message-ID) first."""
        if m.raw is not None:
            return m.raw
        t = self.threads[m.thread]
        msg = EmailMessage()
        msg["From"] = t.sender
        msg["To"] = "support@bridge.test"
        msg["Message-ID"] = self.msgid(m)
        msg["Date"] = email.utils.formatdate(localtime=True)
        texts = ZH_BODIES if t.zh else EN_BODIES
        if m.k == 0:
            msg["Subject"] = t.subject
            text = self.rng.choice(texts)
        else:
            if m.style == "ack":
                msg["Subject"] = f"Re: {t.ack_subject}"
                msg["In-Reply-To"] = t.ack_msgid
                msg["References"] = f"{t.msgids[0]} {t.ack_msgid}"
            elif m.style == "own":
                msg["Subject"] = f"Re: {t.subject}"
                msg["In-Reply-To"] = t.msgids[-1]
                msg["References"] = " ".join(t.msgids[-5:])
            else:
                msg["Subject"] = f"[{t.ref}] {'补充信息' if t.zh else 'more information'}"
            text = ("补充：" if t.zh else "One more thing: ") + self.rng.choice(texts)
        body = f"{m.token}\n\n{text}\n"
        if m.k and m.style == "ack":
            body += "\n> " + "\n> ".join(["(quoted acknowledgement)", f"[{t.ref}]"]) + "\n"
        msg.set_content(body, charset="utf-8", cte="8bit" if self.rng.random() < 0.5 else "base64")
        for name, ctype, data in m.files:
            main, sub = ctype.split("/")
            msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
        t.msgids.append(self.msgid(m))
        m.raw = msg.as_bytes(policy=email.policy.SMTP)
        return m.raw


# ---------------------------------------------------------------------------------------------- injection
class Injector(threading.Thread):
    """Delivers released opening mails, and each thread's replies once its acknowledgement arrived."""

    def __init__(self, corpus: Corpus, maildir: Path, dovecot: Any, smtp: Any, rng: random.Random) -> None:
        super().__init__(name="chaos-injector", daemon=True)
        self.corpus, self.maildir, self.dv, self.smtp, self.rng = corpus, maildir, dovecot, smtp, rng
        self.openings = [t.mails[0] for t in corpus.threads]
        self.released = 0  # openings allowed out so far
        self.replies_open = True  # False: hold replies (nothing)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.reconnects, self.last_drop = 0, ""  # IMAP sessions of the injector dropped by a kick
        self._imap: imaplib.IMAP4_SSL | None = None
        self._seen_smtp = 0
        self._due: list[tuple[float, Mail, bool]] = []  # (when, mail, its second copy)
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)

    # -- the driver's side
    def release(self, n: int) -> None:
        with self.lock:
            self.released = min(len(self.openings), self.released + n)

    def release_until(self, n: int) -> None:
        with self.lock:
            self.released = max(self.released, min(len(self.openings), n))

    def release_all(self) -> None:
        self.release(len(self.openings))

    def all_sent(self) -> bool:
        return all(m.sent_at is not None and (m.copy_sent or not m.copy) for m in self.corpus.mails)

    # -- the thread
    def run(self) -> None:
        sent_openings = 0
        while not self.stop.is_set():
            try:
                self._learn_acks()
                with self.lock:
                    limit = self.released
                if sent_openings < limit:
                    self._send(self.openings[sent_openings])
                    sent_openings += 1
                    time.sleep(self.rng.uniform(0.0, 0.08))
                    continue
                now = time.monotonic()
                ready = [x for x in self._due if x[0] <= now]
                if ready:
                    self._send(ready[0][1], copy=ready[0][2])
                    self._due.remove(ready[0])  # only once it is out: a failed APPEND is tried again
                    continue
                time.sleep(0.05)
            except (imaplib.IMAP4.abort, OSError) as exc:  # our session was kicked too: log in again
                self.reconnects += 1
                self.last_drop = f"{type(exc).__name__}: {exc}"
                self._imap = None
                time.sleep(0.1)
            except Exception as exc:  # keep going: an error here is reported, not a hung campaign
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self._imap = None
                time.sleep(0.2)
        with contextlib.suppress(Exception):
            if self._imap is not None:
                self._imap.logout()

    def _learn_acks(self) -> None:
        msgs = self.smtp.messages
        for raw in msgs[self._seen_smtp :]:
            m = email.message_from_bytes(raw, policy=email.policy.default)
            ref = str(m.get("X-Svcbridge-Ticket") or "")
            irt = str(m.get("In-Reply-To") or "")
            for t in self.corpus.threads:
                if t.msgids and t.msgids[0] == irt and t.ref is None:
                    t.ref, t.ack_msgid, t.ack_subject = ref, str(m["Message-ID"]), str(m["Subject"])
                    delay = 0.0
                    for reply in t.mails[1:]:
                        delay += self.rng.uniform(0.1, 1.5)  # the customer reads, then answers
                        self._due.append((time.monotonic() + delay, reply, False))
                    break
        self._seen_smtp = len(msgs)

    def _send(self, m: Mail, copy: bool = False) -> None:
        raw, where = self.corpus.build(m), m.source
        if copy:
            if m.copy == "redelivery":
                raw = b"Received: from mx2.customer.example by mx.bridge.test; retry\r\n" + raw
            else:
                where = m.copy
        if where == "maildir":
            name = f"{int(time.time() * 1e6)}.{m.token}{'.copy' if copy else ''}.chaos"
            tmp = self.maildir / "tmp" / name
            tmp.write_bytes(raw)
            os.rename(tmp, self.maildir / "new" / name)
        else:
            if self._imap is None:
                self._imap = self.dv.client(IMAP_USER)
            typ, data = self._imap.append("INBOX", None, None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND refused: {data}")
        if copy:
            m.copy_sent = True
            return
        m.sent_at = time.monotonic()
        if m.copy:
            self._due.append((time.monotonic() + self.rng.uniform(0.0, 3.0), m, True))


# ---------------------------------------------------------------------------------------------- daemon
@dataclass
class Run:
    n: int
    kind: str  # "random" | a crash point name | "finish"
    log: Path
    started: float
    ended: float = 0.0
    up_at: float = 0.0  # when it logged "started" (0: killed before)
    code: int | None = None
    self_killed: bool = False  # died at its own fault point
    inflight_reported: list[int] = field(default_factory=list)  # this start said these may have gone out
    died_inflight: list[int] = field(default_factory=list)  # ... so this run died with them in flight


def write_config(root: Path, smtp_port: int, desk_url: str, desk_token: str, dv: Any, desk_timeout: float) -> Path:
    (root / "secrets").mkdir(exist_ok=True)
    (root / "secrets" / "zammad").write_text(desk_token)
    (root / "secrets" / "imap").write_text(dv.users[IMAP_USER])
    plugins = root / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "chaosjobs.py").write_text(textwrap.dedent(PLUGIN.format(calls=str(root / "calls.txt"))))
    cfg = root / "svcbridge.toml"
    cfg.write_text(f"""
data_dir = "{root}/var"
shutdown_grace = 5
outbound_allow = ["127.0.0.1"]
plugins_dir = "{plugins}"
[http]
enabled = false
[log]
format = "json"
[outbox]
poll_interval = 0.2
backoff_initial = 0.2
backoff_max = 3
max_attempts = 10000
breaker_threshold = 8
breaker_cooldown = 2
[routing]
default = ["zammad"]
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.maildir]
path = "{root}/maildir"
interval = 0.1
[plugins.email.outbound]
transport = "smtp"
[plugins.email.outbound.smtp]
port = {smtp_port}
tls = "none"
timeout = 10
[[plugins.email.imap]]
name = "imap:chaos"
host = "127.0.0.1"
port = {dv.imaps_port}
ca_file = "{dv.cafile}"
username = "{IMAP_USER}"
password_file = "{root}/secrets/imap"
after = "flag"
poll_interval = 1
timeout = 20
[plugins.zammad]
url = "{desk_url}"
token_file = "{root}/secrets/zammad"
timeout = {desk_timeout}
""")
    return cfg


class Daemon:
    """Starts ``svcbridge run`` with its output in a file per run (a pipe nobody reads would block it)."""

    def __init__(self, cfg: Path, logs: Path) -> None:
        self.cfg, self.logs = cfg, logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[Run] = []
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, kind: str, faults: str = "") -> Run:
        env = dict(ENV)
        if faults:
            env["SVCBRIDGE_FAULTS"] = faults
        run = Run(len(self.runs) + 1, kind, self.logs / f"run{len(self.runs) + 1:03d}-{kind}.log", time.monotonic())
        out = run.log.open("wb")
        self.proc = subprocess.Popen([str(BIN), "--config", str(self.cfg), "run"], env=env, cwd=self.cfg.parent,
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.runs.append(run)
        return run

    def wait_started(self, timeout: float) -> bool:
        """Until the run logged ``started`` (sources, sinks and the pipeline are up); False: it died or
        did not get there in time."""
        assert self.proc is not None
        run, deadline = self.runs[-1], time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if b'"event": "started"' in run.log.read_bytes():
                run.up_at = time.monotonic()
                return True
            time.sleep(0.05)
        return False

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._ended()

    def term(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._ended()
        return code

    def _ended(self) -> None:
        run = self.runs[-1]
        if self.proc is not None and not run.ended:
            run.ended, run.code = time.monotonic(), self.proc.poll()

    def events(self, run: Run) -> list[dict[str, Any]]:
        out = []
        for line in run.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if isinstance(d, dict):
                    out.append(d)
        return out


# ---------------------------------------------------------------------------------------------- the store
class StoreView:
    """Read-only looks into the daemon's SQLite file (WAL: readers never block the daemon)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _q(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet (a kill during the first start)
            return []
        finally:
            conn.close()

    def counts(self, table: str) -> dict[str, int]:
        return {str(s): int(n) for s, n in self._q(f"SELECT status, count(*) FROM {table} GROUP BY status")}

    def message_ids(self) -> dict[str, int]:
        rows = self._q("SELECT value, ticket_id FROM links WHERE system='email' AND kind='message_id'")
        return {str(v): int(t) for v, t in rows}

    def refs(self) -> dict[int, str]:
        return {int(i): str(r) for i, r in self._q("SELECT id, ref FROM tickets")}

    def quarantined(self) -> list[tuple[Any, ...]]:
        return self._q("SELECT q.id, q.stage, q.plugin, substr(q.error, 1, 300), j.external_id FROM quarantine q "
                       "JOIN journal j ON j.id = q.journal_id WHERE q.resolved = 0")

    def idle(self) -> bool:
        busy = [
            self.counts("journal").get("pending", 0),
            self.counts("outbox").get("pending", 0),
            self.counts("jobs").get("pending", 0),
            self.counts("timers").get("pending", 0),
        ]
        return not any(busy)


# ---------------------------------------------------------------------------------------------- campaign
@dataclass
class Settings:
    kills: int = 5  # random kills
    point_rounds: int = 1  # each named crash point this many times
    mails: int = 40
    seed: int = 0
    p_kick: float = 0.25  # share of the other random kills preceded by an IMAP connection drop
    p_startup: float = 0.2  # share of random kills while the daemon starts; the others come ...
    min_up: float = 0.1  # ... this long after it logged "started" at the earliest ...
    max_up: float = 6.0  # ... and this long at the latest
    point_wait: float = 25.0  # a crash-point run not dead by then is killed by hand ("not reached")
    finish_timeout: float = 300.0


class Campaign:
    def __init__(self, root: Path, cfg: Path, injector: Injector, desk: Any, smtp: Any, s: Settings,
                 rng: random.Random) -> None:
        self.root, self.inj, self.desk, self.smtp, self.s, self.rng = root, injector, desk, smtp, s, rng
        self.daemon = Daemon(cfg, root / "logs")
        self.store = StoreView(root / "var" / "svcbridge.db")
        self.t0 = self.t_chaos = self.t_end = 0.0
        self.finish_code: int | None = None
        self.fates_in_chaos: dict[str, int] = {}
        self.at_chaos_end: dict[str, int] = {}
        self.kicks = 0
        self.kick_errors: list[str] = []
        self.drained = False

    def schedule(self) -> list[str]:
        plan = ["random"] * self.s.kills + [p for _ in range(self.s.point_rounds) for p in POINTS]
        self.rng.shuffle(plan)
        return plan

    def run(self) -> None:
        self.t0 = time.monotonic()
        plan = self.schedule()
        self.inj.start()
        for i, kind in enumerate(plan):
            # new conversations arrive through the whole campaign (the finish gets a share too), so
            # every run, the last crash-point run included, has fresh tickets, jobs and timers
            self.inj.release_until(len(self.inj.openings) * (i + 1) // (len(plan) + 1))
            if kind == "random":
                self.daemon.start(kind)
                if self.rng.random() < self.s.p_startup:  # while it starts (migrations, recovery, sources)
                    died = self.daemon.wait(self.rng.uniform(0.2, 3.0))
                elif self.daemon.wait_started(60):  # while it works
                    up = self.rng.uniform(self.s.min_up, self.s.max_up)
                    died = None
                    if self.rng.random() < self.s.p_kick:  # and its IMAP session drops on the way
                        died = self.daemon.wait(up * self.rng.random())
                        if died is None:
                            self.kick()
                    if died is None:
                        died = self.daemon.wait(up)
                else:
                    died = self.daemon.proc.poll() if self.daemon.proc else None
                if died is not None:  # it should not end by itself: keep the evidence
                    self.daemon._ended()
                    continue
                self.daemon.kill()
            else:
                run = self.daemon.start(kind, faults=kind)
                code = self.daemon.wait(self.s.point_wait / 2)
                if code is None:  # nothing came its way yet: one more conversation
                    self.inj.release(1)
                    code = self.daemon.wait(self.s.point_wait / 2)
                run.self_killed = code == -signal.SIGKILL
                self.daemon.kill()
        self.t_chaos = time.monotonic()
        self.fates_in_chaos = dict(self.desk.fates)
        self.at_chaos_end = {"remote_tickets": len(self.desk.snapshot()[0]), "smtp": len(self.smtp.messages),
                             "mails_sent": sum(1 for m in self.inj.corpus.mails if m.sent_at is not None)}
        self.desk.healthy()
        self.inj.release_all()
        self.daemon.start("finish")
        deadline = time.monotonic() + self.s.finish_timeout
        while time.monotonic() < deadline:
            if self.daemon.proc is not None and self.daemon.proc.poll() is not None:
                break  # the finish died: the report says so
            if self.inj.all_sent() and self._all_in() and self.store.idle():
                time.sleep(1.5)  # a last look: a notice or a create in its last moments
                if self.store.idle():
                    self.drained = True
                    break
            time.sleep(0.3)
        self.finish_code = self.daemon.term()
        self.t_end = time.monotonic()
        self.inj.stop.set()
        self.inj.join(timeout=10)

    def kick(self) -> None:
        """``doveadm kick``: every IMAP session of the mailbox drops (a server restart, a NAT timeout)."""
        try:
            self.inj.dv.kick(IMAP_USER)
            self.kicks += 1
        except subprocess.CalledProcessError:  # no session to drop at that moment
            pass
        except (OSError, subprocess.SubprocessError) as exc:
            self.kick_errors.append(str(exc)[:200])

    def _all_in(self) -> bool:
        copies = sum(1 for m in self.inj.corpus.mails if m.copy)
        if sum(self.store.counts("journal").values()) < len(self.inj.corpus.mails) + copies:
            return False  # a copy not journaled yet
        ids = self.store.message_ids()
        return all(self.inj.corpus.msgid(m) in ids for m in self.inj.corpus.mails)

    # ------------------------------------------------------------------ the report
    def report(self) -> dict[str, Any]:
        corpus = self.inj.corpus
        tickets, articles = self.desk.snapshot()
        # --- the helpdesk's record
        ref_of = {}  # remote ticket id -> svcbridge ref
        for tid, t in tickets.items():
            m = REF_RE.search(str(t.get("title", "")))
            ref_of[tid] = m.group(1) if m else f"?{tid}"
        remote_per_ref = Counter(ref_of.values())
        created_twice = sum(n - 1 for n in remote_per_ref.values() if n > 1)
        token_tickets: dict[str, set[int]] = defaultdict(set)
        token_posts: Counter[str] = Counter()
        file_posts: Counter[str] = Counter()
        notes: Counter[tuple[int, str]] = Counter()
        for a in articles.values():
            if a["internal"]:
                subj = str(a.get("subject") or "")
                notes[(a["ticket_id"], subj.split("]", 1)[0])] += 1
                continue
            for num, k in set(TOKEN_RE.findall(str(a.get("body") or ""))):
                tok = f"CHAOS-T{num}-M{k}"
                token_tickets[tok].add(a["ticket_id"])
                token_posts[tok] += 1
            for f in a.get("attachments") or []:
                file_posts[hashlib.sha256(f["data"]).hexdigest()] += 1
        mails = corpus.mails
        lost = [m.token for m in mails if not token_tickets.get(m.token)]
        posted_twice = sum(n - 1 for n in token_posts.values() if n > 1)  # one mail's words, twice
        thread_refs: dict[int, set[str]] = defaultdict(set)
        ref_threads: dict[str, set[int]] = defaultdict(set)
        for m in mails:
            for tid in token_tickets.get(m.token, ()):
                thread_refs[m.thread].add(ref_of[tid])
                ref_threads[ref_of[tid]].add(m.thread)
        split = sorted(t for t, refs in thread_refs.items() if len(refs) > 1)
        merged = sorted(r for r, ths in ref_threads.items() if len(ths) > 1)
        expected_files = {hashlib.sha256(d).hexdigest(): f"{m.token}:{n}" for m in mails for n, _, d in m.files}
        files_twice = sum(file_posts[h] - 1 for h in expected_files if file_posts[h] > 1)
        files_lost = sorted(v for h, v in expected_files.items() if not file_posts[h])
        notes_twice = sum(n - 1 for n in notes.values() if n > 1)
        # --- what customers got
        acks: Counter[str] = Counter()
        copies: Counter[str] = Counter()
        for raw in self.smtp.messages:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            acks[str(msg.get("X-Svcbridge-Ticket") or "?")] += 1
            copies[str(msg.get("Message-ID") or "?")] += 1
        notices_twice = sum(n - 1 for n in acks.values() if n > 1)
        same_mail_twice = sum(n - 1 for n in copies.values() if n > 1)
        no_ack = [t.n for t in corpus.threads if t.ref is None]
        # --- kills and what the restarts said
        runs = self.daemon.runs
        for run in runs:
            for ev in self.daemon.events(run):
                if ev.get("event") == "outbox_possibly_sent_before_crash":
                    run.inflight_reported += list(ev.get("outbox_ids") or [])
        # a start reports what was in flight when the last run that got going died (a run killed before
        # it logged "started" sent nothing and left its predecessor's marks to the next start)
        for i, run in enumerate(runs):
            if run.inflight_reported:
                went = [r for r in runs[:i] if b'"event": "started"' in r.log.read_bytes()]
                if went:
                    went[-1].died_inflight = sorted(set(went[-1].died_inflight) | set(run.inflight_reported))
        kills = [r for r in runs if r.kind != "finish"]
        inflight_kills = sum(1 for r in kills if r.died_inflight)
        # --- svcbridge's own store
        ids = self.store.message_ids()
        refs = self.store.refs()
        store_thread_refs: dict[int, set[str]] = defaultdict(set)
        for m in mails:
            if corpus.msgid(m) in ids:
                store_thread_refs[m.thread].add(refs.get(ids[corpus.msgid(m)], "?"))
        calls = (self.root / "calls.txt").read_text().splitlines() if (self.root / "calls.txt").exists() else []
        handler_calls = Counter(line.split()[0] for line in calls)
        return {
            "seed": self.s.seed,
            "kills": len(kills),
            "kills_random": sum(1 for r in kills if r.kind == "random"),
            "kills_at_points": {p: sum(1 for r in kills if r.kind == p and r.self_killed) for p in POINTS},
            "points_not_reached": sorted({r.kind for r in kills if r.kind in POINTS and not r.self_killed}),
            "kills_that_hit_an_inflight_send": inflight_kills,
            "notices_in_flight_at_kills": sum(len(r.died_inflight) for r in kills),
            "imap_connection_drops": self.kicks,
            "messages": len(mails),
            "conversations": len(corpus.threads),
            "messages_with_files": sum(1 for m in mails if m.files),
            "files": len(expected_files),
            "messages_maildir": sum(1 for m in mails if m.source == "maildir"),
            "messages_imap": sum(1 for m in mails if m.source == "imap"),
            "delivered_to_both_mailboxes": sum(1 for m in mails if m.copy in ("maildir", "imap")),
            "redelivered_by_the_mta": sum(1 for m in mails if m.copy == "redelivery"),
            "chinese_conversations": sum(1 for t in corpus.threads if t.zh),
            "mails_lost": len(lost),
            "conversations_split": len(split),
            "conversations_merged": len(merged),
            "remote_tickets_created_twice": created_twice,
            "files_posted_twice": files_twice,
            "notices_sent_twice": notices_twice,
            "extra": {
                "lost_tokens": lost[:50],
                "split_threads": split[:50],
                "merged_refs": merged[:50],
                "refs_created_twice": sorted(r for r, n in remote_per_ref.items() if n > 1)[:50],
                "messages_posted_twice": posted_twice,
                "files_lost": files_lost[:50],
                "notes_posted_twice": notes_twice,
                "same_notice_message_id_twice": same_mail_twice,
                "conversations_without_acknowledgement": no_ack[:50],
                "remote_tickets": len(tickets),
                "remote_articles": len(articles),
                "smtp_transactions": len(self.smtp.messages),
                "store_tickets": len(refs),
                "store_conversations_split": sum(1 for v in store_thread_refs.values() if len(v) > 1),
                "quarantined": [list(q) for q in self.store.quarantined()][:20],
                "outbox": self.store.counts("outbox"),
                "journal": self.store.counts("journal"),
                "jobs": self.store.counts("jobs"),
                "timers": self.store.counts("timers"),
                "handler_calls": dict(handler_calls),
                "helpdesk_fates": dict(self.desk.fates),
                "injector_errors": self.inj.errors[:10] + self.kick_errors[:5],
                "injector_imap_reconnects": self.inj.reconnects,
                "drained": self.drained,
                "finish_exit_code": self.finish_code,
                "helpdesk_fates_in_chaos": self.fates_in_chaos,
                "at_chaos_end": self.at_chaos_end,
                "runs": [
                    f"{r.n}:{r.kind}:{r.ended - r.started:.1f}s"
                    + ("" if r.kind != "random" else f" (up {r.ended - r.up_at:.1f}s)" if r.up_at else " (starting)")
                    + f":exit {r.code}"
                    + (":self-killed" if r.self_killed else "")
                    + (f":died with notice {r.died_inflight} in flight" if r.died_inflight else "")
                    for r in runs
                ],
                # a run that exited by itself (not killed, not at its crash point, not the finish's
                # SIGTERM): its log's end is the evidence
                "runs_that_ended_by_themselves": [
                    {"run": r.n, "kind": r.kind, "exit": r.code, "after_s": round(r.ended - r.started, 1),
                     "log_tail": r.log.read_text(errors="replace")[-3000:]}
                    for r in runs
                    if r.code != -signal.SIGKILL and not (r.kind == "finish" and r.code == 0)
                ],
            },
            "duration_s": round(self.t_end - self.t0, 1),
            "chaos_phase_s": round(self.t_chaos - self.t0, 1),
            "finish_phase_s": round(self.t_end - self.t_chaos, 1),
        }
