"""A private Dovecot for tests: random loopback ports (IMAP with STARTTLS, IMAPS), a self-signed
certificate, a passwd-file with several users, Maildir storage in a throw-away directory, and an
OAuth2 passdb backed by a local token-introspection endpoint (so XOAUTH2 is tested end to end).

Nothing of the system's Dovecot configuration is used (``dovecot -c <own conf> -F``): the instance runs
in the foreground as a child process with its own base_dir, and ``stop()`` terminates it and removes
its directory. Users:

- ``alice``, ``bob``, ``carol``, ``user1`` .. ``user6``: password login.
- ``oauth``: no password; logs in with XOAUTH2 using a token registered with ``grant_token``.

Connected through ``127.0.0.1`` the server has every capability Dovecot has; through ``LEGACY_HOST``
(127.0.0.2, same ports) it advertises nothing but ``IMAP4rev1`` after login (a ``local`` settings
filter): no IDLE, no MOVE, no UIDPLUS, like an old or stripped-down server. That tests the fallbacks.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

USERS = {f"user{i}": f"pw-user{i}" for i in range(1, 7)} | {
    "alice": "alice-pw",
    "bob": "bob-pw",
    "carol": "carol-pw",
}
LEGACY_HOST = "127.0.0.2"
OAUTH_USER = "oauth"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Introspection(ThreadingHTTPServer):
    """RFC 7662 token introspection: ``POST token=...`` -> ``{"active": true, "username": ...}``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _IntrospectionHandler)
        self.tokens: dict[str, str] = {}
        self.seen: list[str] = []


class _IntrospectionHandler(BaseHTTPRequestHandler):
    server: _Introspection

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        token = form.get("token", "")
        self.server.seen.append(token)
        user = self.server.tokens.get(token)
        body = json.dumps({"active": True, "username": user} if user else {"active": False}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Dovecot:
    root: Path
    imap_port: int
    imaps_port: int
    cafile: Path
    introspection: _Introspection
    binary: str = "/usr/sbin/dovecot"
    proc: subprocess.Popen[bytes] | None = None
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))

    # ------------------------------------------------------------------ test helpers (stdlib imaplib)
    def client(self, user: str) -> imaplib.IMAP4_SSL:
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        c = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=ctx, timeout=30)
        if user == OAUTH_USER:  # no password: a token of its own, straight through XOAUTH2
            self.grant_token("test-helper-token")
            c.authenticate("XOAUTH2", lambda _: f"user={user}\1auth=Bearer test-helper-token\1\1".encode())
        else:
            c.login(user, self.users[user])
        return c

    def append(self, user: str, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        c = self.client(user)
        try:
            typ, data = c.append(folder, flags or None, None, raw)
            assert typ == "OK", data
        finally:
            c.logout()

    def create(self, user: str, folder: str) -> None:
        c = self.client(user)
        try:
            c.create(folder)
        finally:
            c.logout()

    def uids(self, user: str, folder: str = "INBOX", criteria: str = "ALL") -> list[int]:
        c = self.client(user)
        try:
            typ, _ = c.select(folder)
            assert typ == "OK", f"cannot select {folder}"
            typ, data = c.uid("SEARCH", criteria)
            return [int(x) for x in data[0].split()]
        finally:
            c.logout()

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, set[str]]:
        c = self.client(user)
        try:
            c.select(folder)
            _typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
            out: dict[int, set[str]] = {}
            for line in data:
                if not line:
                    continue
                text = line.decode() if isinstance(line, bytes) else line[0].decode()
                uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
                out[uid] = set(text.split("FLAGS (")[1].split(")")[0].split())
            return out
        finally:
            c.logout()

    def expunge(self, user: str, uids: list[int], folder: str = "INBOX") -> None:
        """Delete messages from another session (a colleague, a phone)."""
        c = self.client(user)
        try:
            c.select(folder)
            c.uid("STORE", ",".join(map(str, uids)), "+FLAGS.SILENT", "(\\Deleted)")
            c.expunge()
        finally:
            c.logout()

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        c = self.client(user)
        try:
            _typ, data = c.status(folder, "(UIDVALIDITY)")
            return int(data[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))
        finally:
            c.logout()

    def reset_mailbox(self, user: str) -> None:
        """Throw the user's Maildir away: the next login recreates it (UIDVALIDITY from the clock)."""
        shutil.rmtree(self.root / "mail" / user, ignore_errors=True)

    def rebuild_mailbox(self, user: str, raws: list[bytes]) -> tuple[int, int]:
        """Recreate the mailbox with ``raws`` under a new UIDVALIDITY; returns (old, new).

        Dovecot takes a new mailbox's UIDVALIDITY from the clock in seconds, so a rebuild within the
        same second is simply repeated until the value differs.
        """
        old = self.uidvalidity(user)
        for _ in range(50):
            self.reset_mailbox(user)
            for raw in raws:
                self.append(user, raw)
            new = self.uidvalidity(user)
            if new != old:
                return old, new
            time.sleep(0.1)
        raise AssertionError("UIDVALIDITY did not change")

    def kick(self, user: str) -> None:
        """Drop every connection of ``user`` (doveadm kick), like a server restart or a NAT timeout."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        subprocess.run(
            [str(doveadm), "-c", str(self.root / "dovecot.conf"), "kick", user],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def make_unreadable(self, user: str, uid: int) -> None:
        """Make one stored mail unreadable for the server: Dovecot answers its FETCH with BYE."""
        maildir = self.root / "mail" / user / "Maildir"
        # dovecot-uidlist: a header line, then "<uid> [fields] :<file name base>" per message
        lines = (maildir / "dovecot-uidlist").read_text().splitlines()[1:]
        base = next(line.split(":", 1)[1] for line in lines if int(line.split()[0]) == uid)
        path = next(p for sub in ("cur", "new") for p in (maildir / sub).iterdir() if p.name.startswith(base))
        os.chmod(path, 0)

    def idling(self, user: str) -> bool:
        """True while a session of ``user`` on this instance sits in IDLE (from the imap process title)."""
        assert self.proc is not None
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                title = (proc / "cmdline").read_bytes()
                if not (title.startswith(f"dovecot/imap [{user} ".encode()) and b" IDLE]" in title):
                    continue
                # other test runs may have a Dovecot with the same user names: only our master's children
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    return True
        return False

    def grant_token(self, token: str, user: str = OAUTH_USER) -> None:
        """Make the fake identity provider's introspection endpoint accept ``token`` for ``user``."""
        self.introspection.tokens[token] = user

    def add_users(self, users: dict[str, str]) -> None:
        """Add password users (Dovecot re-reads the passwd-file when it changes)."""
        with (self.root / "users").open("a") as f:
            f.writelines(f"{u}:{{PLAIN}}{p}:65534:65534::{self.root}/mail/{u}::\n" for u, p in users.items())

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.introspection.shutdown()
        self.introspection.server_close()
        shutil.rmtree(self.root, ignore_errors=True)


def _cert(root: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(root / "key.pem"),
            "-out",
            str(root / "cert.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )


def start_dovecot(binary: str = "/usr/sbin/dovecot") -> Dovecot:
    # Not under pytest's tmp_path: mail processes run as nobody and pytest's tmp dirs are root-only.
    root = Path(tempfile.mkdtemp(prefix="svcb-dovecot-"))
    root.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
    with contextlib.suppress(LookupError, PermissionError):
        shutil.chown(root / "mail", "nobody", "nogroup")
    _cert(root)
    # passwd-file as passdb and userdb: user:{scheme}password:uid:gid:gecos:home:shell:userdb fields
    lines = []
    for user, pw in USERS.items():
        lines.append(f"{user}:{{PLAIN}}{pw}:65534:65534::{root}/mail/{user}::\n")
    lines.append(f"{OAUTH_USER}::65534:65534::{root}/mail/{OAUTH_USER}::\n")
    (root / "users").write_text("".join(lines))

    intro = _Introspection()
    threading.Thread(target=intro.serve_forever, name="fake-introspection", daemon=True).start()
    (root / "oauth2.conf.ext").write_text(
        f"introspection_mode = post\n"
        f"introspection_url = http://127.0.0.1:{intro.server_address[1]}/introspect\n"
        f"force_introspection = yes\n"
        f"username_attribute = username\n"
        f"active_attribute = active\n"
        f"active_value = true\n"
    )
    dv = Dovecot(root, _port(), _port(), root / "cert.pem", intro, binary)
    (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1 {LEGACY_HOST}
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
# plaintext LOGIN on the non-TLS port is allowed so tests can see that svcbridge itself refuses it
disable_plaintext_auth = no
verbose_proctitle = yes  # "dovecot/imap [user ip IDLE]": lets tests see a client idling
# tests log in with wrong passwords on purpose: no failure delay, and no per-IP auth penalty slowing
# every later login from 127.0.0.1 (the penalty socket is closed off in service anvil below)
auth_failure_delay = 0
auth_mechanisms = plain login xoauth2 oauthbearer
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
# the scale bench holds hundreds of IDLE connections: one imap process each (the default limit is 100)
default_process_limit = 1000
default_client_limit = 4000
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1 {LEGACY_HOST}
    port = {dv.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1 {LEGACY_HOST}
    port = {dv.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
local {LEGACY_HOST} {{
  protocol imap {{
    imap_capability = IMAP4rev1
  }}
}}
""")
    dv.proc = subprocess.Popen(
        [binary, "-c", str(root / "dovecot.conf"), "-F"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", dv.imaps_port), timeout=0.5):
                return dv
        except OSError:
            if dv.proc.poll() is not None:
                break
            time.sleep(0.05)
    log = dv.log()
    dv.stop()
    raise RuntimeError(f"dovecot did not start: {log[-2000:]}")
