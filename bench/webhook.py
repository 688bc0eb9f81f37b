"""Webhook intake: signed Twilio-style SMS webhooks per second through the daemon (each one journaled
before the 200) against a bare Starlette handler that only verifies the signature. Same client, same
payloads, same concurrency; both servers are separate processes."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from svcbridge_twilio.signature import compute

from .common import Timer, ratio, report

ACCOUNT, TOKEN, PUBLIC = "AC" + "0" * 32, "bench-auth-token", "https://bridge.bench.test"
URL = PUBLIC + "/hooks/twilio/sms"
ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(base: str) -> None:
    for _ in range(400):
        try:
            httpx.get(base + "/healthz", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{base} did not start")


def requests(n: int, tag: str) -> list[tuple[dict[str, str], str]]:
    out = []
    for i in range(n):
        params = {
            "MessageSid": f"SM{tag}{i:08d}",
            "AccountSid": ACCOUNT,
            "From": f"+86138{i % 9999:08d}",
            "To": "+8675512345678",
            "Body": f"printer {i} jams",
            "NumMedia": "0",
        }
        out.append((params, compute(TOKEN, URL, list(params.items()))))
    return out


async def fire(base: str, reqs: list[tuple[dict[str, str], str]], concurrency: int = 16) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    ok = 0
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def one(params: dict[str, str], sig: str) -> None:
            nonlocal ok
            async with sem:
                r = await client.post("/hooks/twilio/sms", data=params, headers={"X-Twilio-Signature": sig})
                ok += r.status_code == 200

        with Timer() as t:
            await asyncio.gather(*(one(p, s) for p, s in reqs))
    return t.seconds, ok


def run(args: Any) -> dict[str, Any]:
    n = args.n or 2000
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port_ours, port_bare = _port(), _port()
        cfg = tmp / "svcbridge.toml"
        cfg.write_text(
            f'data_dir = "{tmp}/var"\n[http]\nport = {port_ours}\n[log]\nlevel = "error"\n'
            f'[plugins.twilio]\naccount_sid = "{ACCOUNT}"\npublic_url = "{PUBLIC}"\n'
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")},
            "SVCBRIDGE_PLUGINS__TWILIO__AUTH_TOKEN": TOKEN,
        }
        bin_ = Path(sys.executable).parent / "svcbridge"
        ours = subprocess.Popen(
            [str(bin_), "--config", str(cfg), "run"],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bare = subprocess.Popen(
            [sys.executable, "-m", "bench.bare_webhook_app", str(port_bare), TOKEN, URL],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait(f"http://127.0.0.1:{port_ours}")
            time.sleep(0.5)
            base_b, base_o = f"http://127.0.0.1:{port_bare}", f"http://127.0.0.1:{port_ours}"
            asyncio.run(fire(base_b, requests(200, "w")))
            asyncio.run(fire(base_o, requests(200, "w")))
            b_s, b_ok = asyncio.run(fire(base_b, requests(n, "b")))
            o_s, o_ok = asyncio.run(fire(base_o, requests(n, "o")))
            # Twilio retries of already delivered webhooks: answered 200, journaled once
            _dup_s, dup_ok = asyncio.run(fire(base_o, requests(n // 4, "o")))
        finally:
            for p in (ours, bare):
                p.terminate()
                p.wait(timeout=30)
        import sqlite3

        db = sqlite3.connect(tmp / "var" / "svcbridge.db")
        journaled = db.execute("SELECT count(*) FROM journal WHERE external_id LIKE 'SMo%'").fetchone()[0]
    b, o = n / b_s, n / o_s
    rows = [
        ("webhooks", n),
        ("concurrency", 16),
        ("bare signature check /s", b),
        ("svcbridge journaled /s", o),
        ("ratio", ratio(o, b)),
        ("200 answers (bare / ours)", f"{b_ok} / {o_ok}"),
        ("journaled rows (expect n, retries not added)", journaled),
        ("retry batch all 200", dup_ok == n // 4),
    ]
    return report(
        "webhook",
        rows,
        {
            "n": n,
            "bare_per_s": b,
            "svcbridge_per_s": o,
            "ratio": ratio(o, b),
            "journaled": journaled,
            "ok": [b_ok, o_ok],
            "retries_ok": dup_ok,
        },
    )
