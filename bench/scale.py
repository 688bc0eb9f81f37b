"""Scale: 200 mailboxes (Dovecot users) held in IDLE by one daemon: RSS and idle CPU once all are
connected. Then throughput of 1, 2 and 3 replicas (``svcbridge run`` daemons) sharing one PostgreSQL
store and one mailbox of ``REPLICA_MAILS`` mails: seconds from start until every mail is processed,
and how the work was shared (journal entries, pipeline lease holder, outbox items per replica). With 2
and 3 replicas the one holding the mailbox's lease is killed (-9) a quarter of the way through: the
seconds until another replica runs the mailbox are reported (issue 19: within 10 s).

Replicas share intake and delivery; the pipeline runs in the holder of the pipeline lease only
(``store/lease.py``), so replicas add availability, not pipeline throughput: the figures say how much.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .common import daemon_env, report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
TICKS = os.sysconf("SC_CLK_TCK")


def _proc(pid: int) -> tuple[float, float, int]:
    """(RSS MB, CPU seconds, threads) of a process from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS")).split()[1]) / 1024
    threads = int(next(ln for ln in status.splitlines() if ln.startswith("Threads")).split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return rss, cpu, threads


def run(args: Any) -> dict[str, Any]:
    from dovecot import start_dovecot

    n = args.n or 200
    dv = start_dovecot()
    users = {f"scale{i:03d}": f"pw{i:03d}" for i in range(n)}
    dv.add_users(users)
    tmp = Path(tempfile.mkdtemp(prefix="svcb-scale-"))
    port = 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    boxes = []
    for u, p in users.items():
        (tmp / f"{u}.secret").write_text(p)
        boxes.append(
            f'[[plugins.email.imap]]\nname = "imap:{u}"\nhost = "127.0.0.1"\nport = {dv.imaps_port}\n'
            f'ca_file = "{dv.cafile}"\nusername = "{u}"\npassword_file = "{tmp}/{u}.secret"\n'
        )
    (tmp / "svcbridge.toml").write_text(
        f'data_dir = "{tmp}/var"\n[http]\nport = {port}\n[log]\nlevel = "error"\n'
        f'[plugins.email]\nfrom_address = "support@bench.test"\n' + "\n".join(boxes)
    )
    env = daemon_env()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "svcbridge"), "--config", str(tmp / "svcbridge.toml"), "run"],
        env=env,
        cwd=tmp,
        stdout=(tmp / "daemon.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        t0 = time.monotonic()
        up = 0
        while time.monotonic() - t0 < 120:
            time.sleep(1.0)
            try:
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                continue
            up = sum(
                1
                for ln in metrics.splitlines()
                if ln.startswith("svcbridge_source_up{") and ln.endswith(" 1.0")
            )
            if up >= n:
                break
        connect_s = time.monotonic() - t0
        time.sleep(3.0)
        _rss0, cpu0, threads = _proc(proc.pid)
        time.sleep(10.0)
        rss1, cpu1, _ = _proc(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        dv.stop()
        shutil.rmtree(dv.root, ignore_errors=True)
        log_tail = (tmp / "daemon.log").read_text(errors="replace")[-1500:]
        shutil.rmtree(tmp, ignore_errors=True)
    if up < n:
        print(log_tail)
    idle_cpu = (cpu1 - cpu0) / 10.0 * 100
    rows = [
        ("mailboxes", n),
        ("connected and idling", up),
        ("seconds until all connected", connect_s),
        ("RSS MB", rss1),
        ("idle CPU % of one core (10 s)", idle_cpu),
        ("threads", threads),
    ]
    replica_runs = replicas(args)
    for r in replica_runs:
        rows.append((f"{r['replicas']} replica(s) on PostgreSQL: mails/s", r["per_s"]))
    for r in replica_runs:
        if r["recovery_s"] is not None:  # the mailbox's holder killed a quarter of the way through
            label = f"{r['replicas']} replicas: mailbox running elsewhere after kill -9, s"
            rows.append((label, r["recovery_s"]))
    for r in replica_runs:
        rows.append(
            (
                f"{r['replicas']} replica(s): tickets / pipeline lease holder / replicas delivering",
                f"{r['tickets']} / replica {r['pipeline_holder']} / {r['delivering_replicas']}",
            )
        )
    return report(
        "scale",
        rows,
        {
            "mailboxes": n,
            "idling": up,
            "connect_s": connect_s,
            "rss_mb": rss1,
            "idle_cpu_pct": idle_cpu,
            "threads": threads,
            "replicas": replica_runs,
        },
    )


REPLICA_MAILS = 2000
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def replicas(args: Any) -> list[dict[str, Any]]:
    """1, 2, 3 daemons on one PostgreSQL database and one IMAP mailbox; a fresh database each time."""
    import uuid

    from sqlalchemy import create_engine, text

    from corpus import generate
    from dovecot import start_dovecot

    from .intake import fill_maildir

    n = REPLICA_MAILS
    dv = start_dovecot()
    fill_maildir(dv, "user1", [c.raw for c in generate(n, seed=11)])
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    out = []
    try:
        for count in (1, 2, 3):
            name = f"svcb_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
            try:
                out.append(_replica_run(dv, url, count, n))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
        dv.stop()
        shutil.rmtree(dv.root, ignore_errors=True)
    return out


def _replica_run(dv: Any, url: str, count: int, n: int) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    tmp = Path(tempfile.mkdtemp(prefix="svcb-replicas-"))
    (tmp / "imap.secret").write_text(dv.users["user1"])
    from svcbridge.store import db

    db.upgrade(db.make_engine(url))  # once, before the replicas race to create the schema
    procs = []
    env = daemon_env()
    t0 = time.monotonic()
    for i in range(count):
        home = tmp / f"r{i}"
        home.mkdir()
        (home / "svcbridge.toml").write_text(
            f'data_dir = "{home}/var"\ndatabase_url = "{url}"\n[http]\nenabled = false\n'
            f'[log]\nlevel = "error"\n[plugins.email]\nfrom_address = "support@bench.test"\n'
            f'[[plugins.email.imap]]\nname = "imap:bench"\nhost = "127.0.0.1"\nport = {dv.imaps_port}\n'
            f'ca_file = "{dv.cafile}"\nusername = "user1"\npassword_file = "{tmp}/imap.secret"\n'
            f'after = "none"\nbatch = 200\n[plugins.email.outbound]\nspool_dir = "{home}/outgoing"\n'
            f'[store]\nblob_dir = "{tmp}/blobs"\n'  # replicas share the blob store as they share the db
        )
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "svcbridge"),
                    "--config",
                    str(home / "svcbridge.toml"),
                    "run",
                ],
                env=env,
                cwd=home,
                stdout=(home / "daemon.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    engine = create_engine(url)
    done = 0
    recovery = None
    try:
        while time.monotonic() - t0 < 300:
            time.sleep(0.2)
            with engine.connect() as conn:
                done = (
                    conn.execute(text("SELECT count(*) FROM journal WHERE status <> 'pending'")).scalar() or 0
                )
            if count > 1 and recovery is None and done >= n // 4:
                recovery = _kill_source_holder(engine, procs)  # kill -9 mid-way: how long until it moves
            if done >= n:
                break
        seconds = time.monotonic() - t0
        with engine.connect() as conn:
            tickets = conn.execute(text("SELECT count(*) FROM tickets")).scalar()
            holders = conn.execute(text("SELECT count(DISTINCT claimed_by) FROM outbox")).scalar()
            holder = conn.execute(text("SELECT holder FROM leases WHERE name = 'pipeline'")).scalar()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait(timeout=60)
        engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "replicas": count,
        "mails": n,
        "processed": done,
        "seconds": seconds,
        "per_s": done / seconds,
        "tickets": tickets,
        # which replica held the pipeline lease at the end (by pid), and how many replicas delivered
        "pipeline_holder": next(
            (i for i, p in enumerate(procs) if holder and str(holder).split(":")[1] == str(p.pid)), None
        ),
        "delivering_replicas": holders,
        "recovery_s": recovery,
    }


def _kill_source_holder(engine: Any, procs: list[subprocess.Popen[bytes]]) -> float | None:
    """kill -9 the replica holding the mailbox; seconds until another replica holds it."""
    from sqlalchemy import text

    q = text("SELECT holder FROM leases WHERE name = 'source:imap:bench' AND expires_at > now()")
    with engine.connect() as conn:
        holder = conn.execute(q).scalar()
    victim = next((p for p in procs if holder and str(holder).split(":")[1] == str(p.pid)), None)
    if victim is None:
        return None
    victim.kill()
    victim.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        with engine.connect() as conn:
            now = conn.execute(q).scalar()
        if now and str(now).split(":")[1] != str(victim.pid):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None
