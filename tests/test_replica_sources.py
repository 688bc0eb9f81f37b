"""Replicas share the mailboxes (issue 19 item 4): real ``svcbridge run`` processes on one PostgreSQL
store and one Dovecot (four mailboxes, ``after = "move"``), killed with ``kill -9`` at random while
mail arrives. Checked: every mail journaled once and on a ticket; one ticket per conversation (each
reply on its opening mail's ticket); every after-action (the move, as Dovecot's mail_log reports its
expunge) done once; each source's lease held by one replica at a time; and the time from a kill until
the dead replica's sources run elsewhere, under the 10 s default.

``REPLICA_KILLS`` / ``REPLICA_MAILS`` / ``REPLICA_SEED`` make the campaign longer or replay one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.exc import ProgrammingError

from conftest import eml, require_binary
from svcbridge.models import utcnow
from svcbridge.replicas import Replicas
from svcbridge.store import lease
from svcbridge.store import schema as t

USERS = ["user1", "user2", "user3", "user4"]
SOURCES = ["imap:a", "imap:b", "imap:c", "imap:d", "poll:zammad"]


def holder(tag: str, pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{lease.HOST}:{pid}:{lease._started(pid)}:daemon-{tag}"


def spread(rs: list[Replicas], rounds: int = 4) -> list[set[str]]:
    for _ in range(rounds):
        for r in rs:
            r.round(SOURCES)
    return [r.held for r in rs]


async def test_sources_are_spread_held_once_and_handed_over(make_app) -> None:
    store = make_app().store
    a, b = Replicas(store, holder("a"), 6.0), Replicas(store, holder("b"), 6.0)
    held = spread([a, b])
    assert sorted(len(h) for h in held) == [2, 3] and not held[0] & held[1]  # each source once
    c = Replicas(store, holder("c"), 6.0)  # a replica joins: it gets its share
    held = spread([a, b, c], rounds=6)
    assert sorted(len(h) for h in held) == [1, 2, 2] and set().union(*held) == set(SOURCES)
    assert sum(len(h) for h in held) == len(SOURCES)
    c.leave()  # a clean stop gives everything back at once
    held = spread([a, b])
    assert sorted(len(h) for h in held) == [2, 3] and set().union(*held) == set(SOURCES)


async def test_a_dead_local_replica_is_replaced_at_once_a_remote_one_after_the_ttl(make_app) -> None:
    store = make_app().store
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout)
    gone = Replicas(store, f"{lease.HOST}:{dead_pid}:1:daemon-gone", 600.0)
    far = Replicas(store, "otherhost:4242:7:daemon-far", 600.0)
    for r in (gone, far):
        r.round(SOURCES[:2] if r is gone else SOURCES[2:4])
    live = Replicas(store, holder("live"), 600.0)
    assert live.round(SOURCES) >= set(SOURCES[:2])  # the dead local one's: at once
    assert not live.held & set(SOURCES[2:4])  # the remote one's lease still runs: not taken
    with store.tx() as conn:  # its TTL ran out
        conn.execute(update(t.leases).where(t.leases.c.holder == far.holder).values(expires_at=utcnow()))
    time.sleep(0.01)
    assert live.round(SOURCES) == set(SOURCES)


async def test_the_pipeline_lease_of_a_replica_whose_heartbeat_ran_out_is_taken_at_once(make_app) -> None:
    app = make_app(pipeline={"lease_ttl": 600})
    store = app.store
    far = Replicas(store, "otherhost:4242:7:daemon-far", 5.0)
    far.round(SOURCES)
    with store.tx() as conn:  # it holds the pipeline for ten more minutes
        conn.execute(t.leases.insert().values(name="pipeline", holder=far.holder,
                                              expires_at=utcnow() + timedelta(minutes=10)))
    assert app.pipeline.take_lease() == far.holder  # its heartbeat is fresh: a live holder
    with store.tx() as conn:  # killed: no heartbeat for longer than its TTL
        conn.execute(update(t.leases).where(t.leases.c.name == lease.HEARTBEAT + far.holder)
                     .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert app.pipeline.take_lease() is None


def _dovecot_with_mail_log() -> Any:
    from dovecot import start_dovecot

    dv = start_dovecot(require_binary("dovecot", "/usr/sbin/dovecot"))
    conf = dv.root / "dovecot.conf"
    conf.write_text(
        conf.read_text()
        + "\nmail_plugins = $mail_plugins notify mail_log\nplugin {\n  mail_log_events = expunge\n"
        "  mail_log_fields = uid box msgid\n}\n"
    )
    doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
    subprocess.run([doveadm, "-c", str(conf), "reload"], check=True, capture_output=True)
    time.sleep(0.5)
    for u in USERS:
        dv.reset_mailbox(u)
        dv.create(u, "Processed")
    return dv


def imap_boxes(dv: Any, users: list[str]) -> str:
    """One ``[[plugins.email.imap]]`` table per user of the Dovecot, mail moved to Processed."""
    return "".join(
        f"""
[[plugins.email.imap]]
name = "imap:{u}"
host = "127.0.0.1"
port = {dv.imaps_port}
tls = "implicit"
ca_file = "{dv.cafile}"
username = "{u}"
password = "{dv.users[u]}"
after = "move"
poll_interval = 0.3
idle_timeout = 30
"""
        for u in users
    )


def _config(tmp: Path, dv: Any, url: str) -> Path:
    boxes = imap_boxes(dv, USERS)
    cfg = tmp / "svcbridge.toml"
    cfg.write_text(
        f"""data_dir = "{tmp}/var"
database_url = "{url}"
shutdown_grace = 3
[http]
enabled = false
[log]
format = "json"
[outbox]
auto_limits = {{ 10 = 100000 }}
[pipeline]
lease_ttl = 30
[store]
source_lease_ttl = 6
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
spool_dir = "{tmp}/outgoing"
{boxes}"""
    )
    return cfg


class Replica:
    def __init__(self, cfg: Path, logs: Path, n: int) -> None:
        self.log = logs / f"replica-{n}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "svcbridge", "--config", str(cfg), "run"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=cfg.parent,
        )


def holders(engine: Any) -> dict[str, str]:
    try:
        with engine.connect() as conn:
            q = "SELECT name, holder FROM leases WHERE name LIKE 'source:%' AND expires_at > now()"
            return {r[0][len("source:") :]: r[1] for r in conn.execute(text(q))}
    except ProgrammingError:  # the first replica is still creating the store
        return {}


@pytest.mark.slow
def test_replicas_killed_at_random_share_the_mailboxes_without_doing_anything_twice(
    tmp_path: Path, pg_url: str
) -> None:
    seed = int(os.environ.get("REPLICA_SEED", random.randrange(10**6)))
    kills = int(os.environ.get("REPLICA_KILLS", 3))
    conversations = int(os.environ.get("REPLICA_MAILS", 12))
    print(f"REPLICA_SEED={seed}")
    rng = random.Random(seed)
    dv = _dovecot_with_mail_log()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = _config(tmp_path, dv, pg_url)
    engine = create_engine(pg_url)
    replicas = [Replica(cfg, logs, i) for i in range(3)]
    started = 3
    sent: dict[str, str] = {}  # message-id -> conversation
    recoveries: list[float] = []
    try:
        deadline = time.monotonic() + 120  # three interpreters starting on a loaded machine
        while len(set(holders(engine).values())) < 3 or len(holders(engine)) < len(USERS):
            assert time.monotonic() < deadline, "sources were never spread"
            time.sleep(0.2)
        spread = holders(engine)
        assert len(set(spread.values())) == 3, spread  # four mailboxes over three replicas: 2-1-1
        plan = list(range(conversations))
        kill_at = sorted(rng.sample(range(conversations * 2), kills))
        step = 0
        for phase in ("open", "reply"):
            for c in plan:
                user = USERS[c % len(USERS)]
                zh = c % 3 == 0
                subject = f"{'打印机故障' if zh else 'Printer fault'} {c}"
                if phase == "open":
                    mid = f"<c{c}-open@customer.example>"
                    raw = eml(subject=subject, msgid=mid, sender=f"C{c} <c{c}@customer.example>",
                              body=f"{'第一封' if zh else 'first'} token-{c}-a")
                else:
                    mid = f"<c{c}-reply@customer.example>"
                    raw = eml(subject=f"Re: {subject}", msgid=mid, sender=f"C{c} <c{c}@customer.example>",
                              body=f"token-{c}-b", extra=f"In-Reply-To: <c{c}-open@customer.example>\r\n")
                dv.append(user, raw)
                sent[mid] = str(c)
                if step in kill_at:
                    recoveries.append(_kill_one(replicas, engine, rng, cfg, logs, started))
                    started += 1
                step += 1
                time.sleep(rng.uniform(0.0, 0.15))
            if phase == "open":  # replies come once their opening mail has a ticket, as customers answer
                _wait_journaled(engine, conversations, 90)
                _wait_processed(engine, 90)
        _wait_journaled(engine, 2 * conversations, 120)
        _wait_processed(engine, 120)
    finally:
        for r in replicas:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in replicas:
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT external_id, source, status, ticket_id FROM journal")).all()
        links = dict(conn.execute(text("SELECT value, ticket_id FROM links WHERE kind = 'message_id'")).all())
        tickets = conn.execute(text("SELECT count(*) FROM tickets")).scalar()
    engine.dispose()
    expunges = [ln for ln in dv.log().splitlines() if "expunge" in ln and "msgid=" in ln]
    moved = {}
    for ln in expunges:
        mid = ln.split("msgid=", 1)[1].strip().strip(",")
        moved[mid] = moved.get(mid, 0) + 1
    processed = [r for r in rows if r[2] in ("processed", "duplicate")]
    report = {
        "seed": seed, "kills": len(recoveries), "mails": len(sent), "journal": len(rows),
        "tickets": tickets, "recovery_s": [round(x, 2) for x in recoveries],
        "moved_twice": {k: v for k, v in moved.items() if v > 1},
    }
    print(json.dumps(report))
    dv.stop()
    assert len(rows) == len(sent) == len(processed), report  # every mail once, each processed
    assert tickets == conversations, report  # one ticket per conversation
    for c in range(conversations):
        assert links[f"<c{c}-open@customer.example>"] == links[f"<c{c}-reply@customer.example>"]
    assert sorted(moved) == sorted(sent) and not report["moved_twice"], report  # each move once
    assert recoveries and max(recoveries) < 10.0, report


def _kill_one(replicas: list[Replica], engine: Any, rng: random.Random, cfg: Path, logs: Path, n: int) -> float:
    """kill -9 a replica holding a source, start a new one; seconds until its sources run elsewhere."""
    held = holders(engine)
    victims = [r for r in replicas if r.proc.poll() is None and any(f":{r.proc.pid}:" in h for h in held.values())]
    victim = rng.choice(victims or [r for r in replicas if r.proc.poll() is None])
    mine = {s for s, h in held.items() if f":{victim.proc.pid}:" in h}
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    t0 = time.monotonic()
    replicas[replicas.index(victim)] = Replica(cfg, logs, n)
    while True:
        now = holders(engine)
        if all(s in now and f":{victim.proc.pid}:" not in now[s] for s in mine):
            return time.monotonic() - t0
        if time.monotonic() - t0 > 30:
            return 30.0
        time.sleep(0.05)


def _wait_journaled(engine: Any, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            got = conn.execute(text("SELECT count(*) FROM journal")).scalar()
        if got >= n:
            return
        assert time.monotonic() < deadline, f"{got} of {n} mails journaled"
        time.sleep(0.2)


def _wait_processed(engine: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM journal WHERE status = 'pending'")).scalar()
        if not left:
            return
        assert time.monotonic() < deadline, f"{left} entries still pending"
        time.sleep(0.2)
