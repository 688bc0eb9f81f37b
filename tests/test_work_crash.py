"""Durable jobs and timers across ``kill -9``, with the real daemon process.

A plugin in ``plugins_dir`` asks for a warranty lookup and a callback timer for each new ticket; its
handlers append a line to a file for every call (the vendor's side of the world). The daemon is
killed right after a handler returned and before its outcome was recorded (``SVCBRIDGE_FAULTS``),
restarted, and then: the handler ran again (at least once: handlers must be safe to repeat), but its
effects are on the ticket exactly once (one ``ticket_updated`` event, one outbox row per helpdesk).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import eml, free_port
from test_daemon import _healthy, cli, start, stop, wait_for, write_config

PLUGIN = '''
"""A test plugin: a warranty job and a callback timer for every new ticket."""
from datetime import timedelta

from svcbridge import JobKind, TicketChange, TimerKind, hookimpl, utcnow

CALLS = {calls!r}


def _note(what):
    with open(CALLS, "a") as f:
        f.write(what + "\\n")


@hookimpl
def enrich_ticket(draft, ticket, jobs):
    if ticket is None:
        jobs.enqueue("warranty.lookup", {{"serial": "SN1"}})
        jobs.schedule("callback.due", utcnow() + timedelta(seconds=0.5))


def lookup(job):
    _note("lookup " + job.ticket.ref)
    return TicketChange(labels={{"warranty": "in"}}, note="in warranty")


def callback(timer):
    _note("callback " + timer.ticket.ref)
    return TicketChange(labels={{"callback": "due"}})


@hookimpl
def register_job_kinds(register):
    register(JobKind("warranty.lookup", lookup))


@hookimpl
def register_timer_kinds(register):
    register(TimerKind("callback.due", callback))
'''


def setup(tmp_path: Path) -> tuple[Path, int, Path]:
    port = free_port()
    cfg = write_config(tmp_path, port)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    calls = tmp_path / "calls.txt"
    (plugins / "aftersales.py").write_text(textwrap.dedent(PLUGIN.format(calls=str(calls))))
    cfg.write_text(f'plugins_dir = "{plugins}"\n' + cfg.read_text())
    return cfg, port, calls


def show(cfg: Path) -> dict:
    return json.loads(cli(cfg, "tickets", "show", "SB-000001", "--json"))


@pytest.mark.parametrize("point", ["job_after_run", "timer_after_fire"])
def test_a_job_or_timer_killed_before_its_record_reruns_and_counts_once(tmp_path: Path, point: str) -> None:
    cfg, port, calls = setup(tmp_path)
    proc = start(cfg, faults=point)
    wait_for(lambda: _healthy(port))
    (tmp_path / "maildir" / "new" / "1.eml").write_bytes(eml())
    assert proc.wait(timeout=30) == -9  # died right after a handler returned
    what = "lookup" if point == "job_after_run" else "callback"
    assert calls.read_text().splitlines().count(f"{what} SB-000001") == 1

    proc = start(cfg)  # no fault: recover() frees the dead process's claims at once
    try:
        wait_for(lambda: _healthy(port))

        def settled() -> dict | None:
            t = show(cfg)
            return t if {"warranty", "callback"} <= set(t.get("labels") or {}) else None

        ticket = wait_for(settled, timeout=30)
    finally:
        assert stop(proc) == 0
    lines = calls.read_text().splitlines()
    assert lines.count(f"{what} SB-000001") == 2  # at least once: it ran again after the crash
    updates = [e for e in ticket["events"] if e["type"] == "ticket_updated"]
    by_origin = [e["data"]["origin"].split(":")[0] for e in updates]
    assert sorted(by_origin) == ["job", "timer"]  # each one's effects once
    assert len([e for e in ticket["events"] if e["type"] == "timer_fired"]) == 1
    jobs = json.loads(cli(cfg, "jobs", "list", "--json"))
    timers = json.loads(cli(cfg, "timers", "list", "--json"))
    assert [j["status"] for j in jobs] == ["done"] and [t["status"] for t in timers] == ["fired"]
