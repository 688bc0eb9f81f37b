"""IMAP intake against a real, private Dovecot (tests/dovecot.py); nothing of IMAP is mocked.

Checkpoints and ``\\Seen``, after-actions (also without MOVE/UIDPLUS), UIDVALIDITY rescans, size limits,
IDLE (push, re-IDLE watchdog, kicked connection, no IDLE on the server), crash safety (exception and
real kill -9 between journal and acknowledgement), connection lost mid-batch, failing after-actions,
poison (unparseable FETCH reply, a mail the server dies on). TLS, logins and OAuth2 are in
test_imap_auth.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import imapclient.imapclient
import pytest

from conftest import eml
from dovecot import LEGACY_HOST, Dovecot
from imap_helpers import box, fresh, imap_app, mails, subjects, until
from svcbridge_email import imap as imap_mod
from svcbridge_email.imap import MAX_STRIKES, ImapSource

BIN = Path(sys.executable).parent / "svcbridge"


# ----------------------------------------------------------------------------------------- polling
async def test_poll_ingests_everything_once_including_seen_mail(make_app: Any, dovecot: Dovecot) -> None:
    user = "user1"
    dovecot.reset_mailbox(user)
    for i, raw in enumerate(mails(5, "p")):
        dovecot.append(user, raw, flags="\\Seen" if i == 2 else "")  # read on a phone first
    app = imap_app(make_app, box(dovecot, user))
    res = await app.run_once()
    assert res["polled"] == 5
    assert subjects(app) == [f"p case {i}" for i in range(5)]
    flags = dovecot.flags(user)
    assert [("\\Seen" in f) for f in flags.values()] == [False, False, True, False, False]  # BODY.PEEK[]
    again = await app.run_once()
    assert again["polled"] == 0 and app.store.count_tickets() == 5
    dovecot.append(user, eml(subject="p late", msgid="<plate@x>"))
    assert (await app.run_once())["polled"] == 1 and app.store.count_tickets() == 6
    assert len(dovecot.uids(user)) == 6  # after = none: the mail stays on the server
    assert app.store.get_checkpoint(f"imap:{user}", "last_uid") == str(max(dovecot.uids(user)))


async def test_batches_are_bounded_by_count_and_bytes(make_app: Any, dovecot: Dovecot) -> None:
    user = "user1"
    raws = [eml(subject=f"b case {i}", msgid=f"<b{i}@x>", body="x" * 800) for i in range(7)]
    fresh(dovecot, user, raws)
    app = imap_app(make_app, box(dovecot, user, batch=3, batch_bytes=2 * len(raws[0]) + 10))
    sizes: list[int] = []
    real = app.store.journal_insert_many
    app.store.journal_insert_many = lambda rs, *fence: (sizes.append(len(rs)), real(rs, *fence))[1]
    await app.run_once()
    assert sizes == [2, 2, 2, 1] and app.store.count_tickets() == 7


async def test_oversize_mail_is_a_headers_only_ticket_and_kept_whole(make_app: Any, dovecot: Dovecot) -> None:
    user = "user1"
    big = eml(subject="scan attached", msgid="<big@x>", body="x" * 8000)
    fresh(dovecot, user, [big, eml(subject="small", msgid="<small@x>")])
    app = imap_app(make_app, box(dovecot, user, max_size=4096))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "created"]
    by_subject = {t.subject: app.store.get_ticket(t.ref) for t in app.store.list_tickets(None, 10)}
    t = by_subject["scan attached"]
    assert t.description.startswith("[svcbridge: this mail is ") and "x" * 100 not in t.description
    assert by_subject["small"].description.strip() == "It jams on every page."
    journal_id = next(o.journal_id for o in res["outcomes"] if o.ticket_ref == t.ref)
    assert app.store.load_raw(journal_id).raw.replace(b"\r\n", b"\n") == big.replace(b"\r\n", b"\n")


@pytest.mark.parametrize(
    ("after", "host"),
    [
        ("flag", "127.0.0.1"),
        ("seen", "127.0.0.1"),
        ("move", "127.0.0.1"),
        ("delete", "127.0.0.1"),
        ("move", LEGACY_HOST),
        ("delete", LEGACY_HOST),
    ],
    ids=["flag", "flag-seen", "move", "delete", "move-copy-expunge", "delete-expunge"],
)
async def test_after_actions_happen_on_the_server(
    make_app: Any, dovecot: Dovecot, after: str, host: str
) -> None:
    user = "user2"
    fresh(dovecot, user, mails(3, after))
    dovecot.append(user, eml(subject="not ours", msgid="<human@x>"), folder="INBOX")
    kw = {"after": "flag", "flag": "\\Seen"} if after == "seen" else {"after": after, "move_to": "Done"}
    app = imap_app(make_app, box(dovecot, user, host=host, **kw))
    await app.run_once()
    assert app.store.count_tickets() == 4
    if after == "flag":
        assert all("$svcbridge" in f for f in dovecot.flags(user).values())
    elif after == "seen":
        assert all("\\Seen" in f for f in dovecot.flags(user).values())
    elif after == "move":  # the folder is created on first use
        assert dovecot.uids(user) == [] and len(dovecot.uids(user, "Done")) == 4
    else:
        assert dovecot.uids(user) == []
    dovecot.append(user, eml(subject="later", msgid="<later@x>"))
    assert (await app.run_once())["polled"] == 1 and app.store.count_tickets() == 5


async def test_uidvalidity_change_rescans_without_duplicates(make_app: Any, dovecot: Dovecot) -> None:
    user = "user3"
    originals = mails(4, "u")
    fresh(dovecot, user, originals)
    app = imap_app(make_app, box(dovecot, user))
    await app.run_once()
    assert app.store.count_tickets() == 4
    old, new = dovecot.rebuild_mailbox(user, [*originals, eml(subject="u new", msgid="<unew@x>")])
    res = await app.run_once()
    assert app.store.get_checkpoint(f"imap:{user}", "uidvalidity") == str(new) != str(old)
    assert res["polled"] == 5  # everything rescanned ...
    assert sorted(o.status for o in res["outcomes"]) == ["created"] + ["duplicate"] * 4  # ... one new ticket
    assert subjects(app) == ["u case 0", "u case 1", "u case 2", "u case 3", "u new"]
    assert (await app.run_once())["polled"] == 0


# ---------------------------------------------------------------------------------------------- IDLE
class Counter:
    """Counts calls of an IMAPClient method (the real one still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.n = 0
        real = getattr(imapclient.IMAPClient, name)

        def wrapped(client: Any, *a: Any, **kw: Any) -> Any:
            self.n += 1
            return real(client, *a, **kw)

        monkeypatch.setattr(imapclient.IMAPClient, name, wrapped)


async def stop(app: Any, task: asyncio.Task[None]) -> None:
    app.stopping.set()
    await asyncio.wait_for(task, timeout=15)  # returns promptly once asked to stop
    app.stopping.clear()


async def test_idle_turns_an_append_into_a_journaled_message_without_polling(
    make_app: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "bob"
    fresh(dovecot, user)
    idles = Counter(monkeypatch, "idle")
    app = imap_app(make_app, box(dovecot, user, poll_interval=3600))
    src, ctx = app.sources[f"imap:{user}"], app.context(f"imap:{user}")
    task = asyncio.create_task(src.run(ctx))
    try:
        await until(lambda: idles.n >= 1)
        t0 = time.monotonic()
        await asyncio.to_thread(dovecot.append, user, eml(subject="pushed", msgid="<idle@x>"))
        await until(lambda: app.store.journal_counts().get("pending", 0) == 1)
        print(f"APPEND -> journaled via IDLE: {time.monotonic() - t0:.3f} s")
    finally:
        await stop(app, task)
    await app.pipeline.drain()
    assert subjects(app) == ["pushed"] and app.health[src.name].ok


async def test_idle_is_renewed_and_survives_a_dropped_connection(
    make_app: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "carol"
    fresh(dovecot, user)
    idles, logins = Counter(monkeypatch, "idle"), Counter(monkeypatch, "login")
    app = imap_app(make_app, box(dovecot, user, poll_interval=3600, idle_timeout=0.3))
    src, ctx = app.sources[f"imap:{user}"], app.context(f"imap:{user}")
    task = asyncio.create_task(src.run(ctx))
    try:
        await until(lambda: idles.n >= 3)  # re-IDLE after idle_timeout, on the same connection
        assert logins.n == 1
        await asyncio.to_thread(dovecot.kick, user)  # the server drops the connection
        await until(lambda: logins.n == 2 and idles.n >= 5)  # noticed, reconnected, idling again
        await asyncio.to_thread(dovecot.append, user, eml(subject="after kick", msgid="<kick@x>"))
        await until(lambda: app.store.journal_counts().get("pending", 0) == 1)
    finally:
        await stop(app, task)
    assert app.health[src.name].ok


async def test_without_idle_on_the_server_run_polls(
    make_app: Any, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = "alice"
    fresh(dovecot, user)
    idles, selects = Counter(monkeypatch, "idle"), Counter(monkeypatch, "select_folder")
    app = imap_app(make_app, box(dovecot, user, host=LEGACY_HOST, poll_interval=0.1))
    src, ctx = app.sources[f"imap:{user}"], app.context(f"imap:{user}")
    task = asyncio.create_task(src.run(ctx))
    try:
        await until(lambda: selects.n >= 2)
        await asyncio.to_thread(dovecot.append, user, eml(subject="polled", msgid="<poll@x>"))
        await until(lambda: app.store.journal_counts().get("pending", 0) == 1)
    finally:
        await stop(app, task)
    assert idles.n == 0


# ------------------------------------------------------------------------------------ crash safety
async def test_exception_between_journal_and_acknowledgement(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user1"
    fresh(dovecot, user, mails(3, "c"))
    app = imap_app(make_app, box(dovecot, user, after="flag"))
    src = app.sources[f"imap:{user}"]

    def crash(client: Any, uids: list[int]) -> None:
        raise RuntimeError("killed before STORE")

    monkeypatch.setattr(src, "_after", crash)
    with pytest.raises(RuntimeError):
        await src.poll(app.context(src.name))
    assert app.store.journal_counts() == {"pending": 3}
    assert not any("$svcbridge" in f for f in dovecot.flags(user).values())
    monkeypatch.undo()
    res = await app.run_once()
    assert res["polled"] == 3 and app.store.journal_counts() == {
        "processed": 3
    }  # recognised, not re-journaled
    assert app.store.count_tickets() == 3
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())  # acknowledged now


def daemon_config(tmp_path: Path, dv: Dovecot, user: str, **extra: Any) -> list[str]:
    """A config file for a real ``svcbridge`` process with one IMAP mailbox; returns the command prefix."""
    (tmp_path / "pw").write_text(dv.users[user])
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    (tmp_path / "svcbridge.toml").write_text(f"""
data_dir = "{tmp_path}/var"
shutdown_grace = 5
[http]
enabled = false
[log]
format = "json"
[plugins.email]
from_address = "support@bridge.test"
[plugins.email.outbound]
spool_dir = "{tmp_path}/outgoing"
[[plugins.email.imap]]
name = "imap:proc"
host = "127.0.0.1"
port = {dv.imaps_port}
ca_file = "{dv.cafile}"
username = "{user}"
password_file = "{tmp_path}/pw"
{lines}""")
    return [str(BIN), "--config", str(tmp_path / "svcbridge.toml")]


ENV = {k: v for k, v in os.environ.items() if not k.startswith("SVCBRIDGE_")}


def cli_tickets(cmd: list[str], cwd: Path) -> list[str]:
    out = subprocess.run([*cmd, "tickets", "list", "--json"], env=ENV, cwd=cwd, capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    return [t["subject"] for t in json.loads(out)]


def test_kill_9_after_journal_then_restart_gives_one_ticket(dovecot: Dovecot, tmp_path: Path) -> None:
    user = "user2"
    fresh(dovecot, user, [eml(subject="survives kill -9", msgid="<k9@x>")])
    cmd = daemon_config(tmp_path, dovecot, user, after="flag")
    died = subprocess.run([*cmd, "run", "--once"], env=ENV | {"SVCBRIDGE_FAULTS": "after_journal"}, cwd=tmp_path,
                          capture_output=True, timeout=60)  # fmt: skip
    assert died.returncode == -signal.SIGKILL, died.stdout.decode()[-2000:]
    assert not any("$svcbridge" in f for f in dovecot.flags(user).values())  # journaled, not acknowledged
    ok = subprocess.run(
        [*cmd, "run", "--once"], env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "polled 1, processed 1" in ok.stdout, ok.stdout + ok.stderr
    assert cli_tickets(cmd, tmp_path) == ["survives kill -9"]
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())


def test_daemon_idles_and_stops_on_sigterm(dovecot: Dovecot, tmp_path: Path) -> None:
    """The real daemon drives ``run``: with a one-hour poll interval only IDLE can bring the mail in."""
    user = "user5"
    fresh(dovecot, user)
    cmd = daemon_config(tmp_path, dovecot, user, poll_interval=3600)
    proc = subprocess.Popen(
        [*cmd, "run"], env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not dovecot.idling(user):
            assert time.monotonic() < deadline and proc.poll() is None, "daemon did not start idling"
            time.sleep(0.1)
        t0 = time.monotonic()
        dovecot.append(user, eml(subject="pushed to the daemon", msgid="<dmn@x>"))
        while cli_tickets(cmd, tmp_path) != ["pushed to the daemon"]:
            assert time.monotonic() - t0 < 30, "no ticket"
            time.sleep(0.1)
        print(f"APPEND -> ticket via the daemon's IDLE: {time.monotonic() - t0:.3f} s")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert code == 0 and '"event": "stopped"' in out, out[-2000:]


async def test_connection_lost_mid_batch(make_app: Any, dovecot: Dovecot, monkeypatch) -> None:
    user = "user3"
    fresh(dovecot, user, mails(5, "d"))
    app = imap_app(make_app, box(dovecot, user, after="flag", batch=2))
    src = app.sources[f"imap:{user}"]
    real, calls = ImapSource._fetch, []

    def fetch(self: ImapSource, client: Any, uids: list[int], uv: str) -> Any:
        calls.append(uids)
        if len(calls) == 2:
            client.socket().shutdown(socket.SHUT_RDWR)  # the network goes away mid-FETCH
        return real(self, client, uids, uv)

    monkeypatch.setattr(ImapSource, "_fetch", fetch)
    with pytest.raises(imap_mod.CONNECTION_ERRORS):
        await src.poll(app.context(src.name))
    flagged = [u for u, f in dovecot.flags(user).items() if "$svcbridge" in f]
    # the first batch is journaled; its flag was queued behind the second FETCH (fetching overlaps
    # journaling) and went down with the connection: the next pass only acknowledges it
    assert app.store.journal_counts() == {"pending": 2} and flagged == []
    res = await app.run_once()
    assert res["processed"] == 5 and app.store.count_tickets() == 5
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())


async def test_the_next_batch_is_fetched_while_this_one_is_journaled(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user2"
    fresh(dovecot, user, mails(6, "o"))
    app = imap_app(make_app, box(dovecot, user, after="flag", batch=2))
    src = app.sources[f"imap:{user}"]
    spans: dict[str, list[tuple[float, float]]] = {"fetch": [], "journal": []}
    real_fetch, real_insert = ImapSource._fetch, app.store.journal_insert_many

    def fetch(self: ImapSource, client: Any, uids: list[int], uv: str) -> Any:
        t0 = time.monotonic()
        try:
            return real_fetch(self, client, uids, uv)
        finally:
            spans["fetch"].append((t0, time.monotonic()))

    def insert(raws: Any, fence: Any = None) -> Any:
        t0 = time.monotonic()
        time.sleep(0.3)  # a slow disk: the fetch of the next batch goes on meanwhile
        try:
            return real_insert(raws, fence)
        finally:
            spans["journal"].append((t0, time.monotonic()))

    monkeypatch.setattr(ImapSource, "_fetch", fetch)
    monkeypatch.setattr(app.store, "journal_insert_many", insert)
    assert await src.poll(app.context(src.name)) == 6
    assert len(spans["fetch"]) == 3 and len(spans["journal"]) == 3
    # fetch 2 began before journal 1 ended, fetch 3 before journal 2 ended
    assert all(spans["fetch"][i + 1][0] < spans["journal"][i][1] for i in range(2))
    assert all("$svcbridge" in f for f in dovecot.flags(user).values())  # every batch acknowledged
    assert app.store.journal_counts() == {"pending": 6}


# ------------------------------------------------------------------------------ after-action failures
async def test_refused_store_is_logged_and_not_retried(make_app: Any, dovecot: Dovecot) -> None:
    user = "user4"
    fresh(dovecot, user, mails(2, "s"))
    app = imap_app(make_app, box(dovecot, user, after="flag", flag="\\Bogus"))  # the server answers BAD
    res = await app.run_once()
    assert res["polled"] == 2 and app.store.count_tickets() == 2 and app.health[f"imap:{user}"].ok
    assert (await app.run_once())["polled"] == 0 and app.store.count_tickets() == 2


async def test_mail_expunged_elsewhere_before_the_move(make_app: Any, dovecot: Dovecot, monkeypatch) -> None:
    user = "user5"
    fresh(dovecot, user, mails(3, "e"))
    app = imap_app(make_app, box(dovecot, user, after="move", move_to="Done"))
    real = ImapSource._fetch

    def fetch_then_colleague_deletes(self: ImapSource, client: Any, uids: list[int], uv: str) -> Any:
        out = real(self, client, uids, uv)
        dovecot.expunge(user, uids[:1])  # someone deletes the first mail on their phone
        return out

    monkeypatch.setattr(ImapSource, "_fetch", fetch_then_colleague_deletes)
    res = await app.run_once()  # MOVE answers NO [EXPUNGEISSUED]: logged, journaled mail kept
    assert res["polled"] == 3 and app.store.count_tickets() == 3 and app.health[f"imap:{user}"].ok
    monkeypatch.undo()
    assert (await app.run_once())["polled"] == 0 and app.store.count_tickets() == 3


# ------------------------------------------------------------------------------------------- poison
def poison_parser(monkeypatch: pytest.MonkeyPatch, marker: bytes) -> None:
    """imapclient cannot parse the FETCH reply of any mail containing ``marker`` (the server's reply
    itself is real and complete; only the client-side parse fails, like an odd literal would)."""
    real = imapclient.imapclient.parse_fetch_response

    def parse(data: Any, *a: Any) -> Any:
        if marker in repr(data).encode():
            raise imapclient.exceptions.ProtocolError("unparseable FETCH response")
        return real(data, *a)

    monkeypatch.setattr(imapclient.imapclient, "parse_fetch_response", parse)


async def test_unparseable_fetch_reply_still_journals_the_bytes(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user2"
    raws = mails(4, "x")
    raws[1] = eml(subject="POISON but readable", msgid="<px@x>")
    fresh(dovecot, user, raws)
    poison_parser(monkeypatch, b"POISON")
    app = imap_app(make_app, box(dovecot, user, after="delete"))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created"] * 4
    assert "POISON but readable" in subjects(app) and dovecot.uids(user) == []
    (entry,) = [
        r for r in app.store.load_raws(list(range(1, 5))).values() if r.metadata.get("fetch_fallback")
    ]
    assert entry.raw == raws[1]  # byte-exact through the imaplib fallback


async def test_poison_first_in_the_box_does_not_use_up_the_batch(
    make_app: Any, dovecot: Dovecot, monkeypatch
) -> None:
    user = "user3"
    fresh(dovecot, user, [eml(subject=f"POISON {i}", msgid=f"<pz{i}@x>") for i in range(3)] + mails(2, "y"))
    poison_parser(monkeypatch, b"POISON")
    monkeypatch.setattr(imap_mod, "_raw_fetch", lambda client, uid: None)  # and no bytes to be had
    app = imap_app(make_app, box(dovecot, user, after="delete", batch=2))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created"] * 2 + ["quarantined"] * 3
    assert subjects(app) == ["y case 0", "y case 1"]
    quarantined = app.store.quarantine_list()
    assert len(quarantined) == 3 and all(
        q["external_id"].split(":")[1] in {"1", "2", "3"} for q in quarantined
    )
    assert dovecot.uids(user) == [1, 2, 3]  # poison is left on the server, the rest deleted
    assert (await app.run_once())["polled"] == 0 and len(app.store.quarantine_list()) == 3


async def test_a_mail_the_server_dies_on_is_quarantined_after_strikes(
    make_app: Any, dovecot: Dovecot
) -> None:
    """Dovecot answers a FETCH of an unreadable mail file with BYE: the real thing, no mock."""
    user = "user6"
    fresh(dovecot, user, mails(4, "z"))
    dovecot.make_unreadable(user, 2)
    app = imap_app(make_app, box(dovecot, user, after="delete"))
    src = app.sources[f"imap:{user}"]
    passes = 0
    while app.store.count_tickets() < 3 or not app.health[src.name].ok:
        passes += 1
        assert passes <= MAX_STRIKES + 3, "poison stalled the mailbox"
        await app.run_once()
    (q,) = app.store.quarantine_list()
    raw = app.store.load_raw(q["journal_id"])
    assert q["external_id"].endswith(":2") and "connection dropped 3 times" in raw.metadata["fetch_error"]
    assert subjects(app) == ["z case 0", "z case 2", "z case 3"]
    assert dovecot.uids(user) == [2]  # left for a human; the others deleted after journaling
    assert (await app.run_once())["polled"] == 0 and len(app.store.quarantine_list()) == 1
