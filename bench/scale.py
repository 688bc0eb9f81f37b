"""Scale: 200 mailboxes (Dovecot users) held in IDLE by one daemon: RSS and idle CPU once all are
connected. Throughput of several replicas on PostgreSQL is reported as not available until the
multi-replica work (leases) lands."""

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

from .common import report

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
    env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
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
        ("replicas on PostgreSQL", "not available yet (multi-replica issue)"),
    ]
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
            "replicas": None,
        },
    )
