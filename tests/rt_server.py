"""A private Request Tracker 5 for the tests: installed if missing, started on a free loopback port.

``tests/helpdesks/setup-rt.sh`` does the work (Debian's request-tracker5 with SQLite and the standalone
Starlet server; config, DB, logs and RT's outgoing mail all under a fresh ``/tmp/svcbridge-rt-*`` dir).
``running_rt()`` starts one RT (for a session-scoped fixture); ``RtServer.reset()`` puts back the pristine
DB (about 3 s, server restart included) so a test starts at ticket 1 and svcbridge's references
(SB-000001) never meet another test's tickets.

Two accounts: ``svc_token`` belongs to the dedicated ``svcbridge`` RT user the connector uses, ``token`` to
root, who plays the agent. Under CI=true a missing or broken RT fails the tests instead of skipping them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conftest import free_port
from server_setup import run_setup, running

SCRIPT = Path(__file__).resolve().parent / "helpdesks" / "setup-rt.sh"
RT_SERVER_BIN = "/usr/share/request-tracker5/libexec/rt-server"


@dataclass
class RtServer:
    url: str  # WebBaseURL, e.g. http://127.0.0.1:41234
    token: str  # root: the agent
    svc_token: str  # the svcbridge API user
    state: Path
    port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.url + "/REST/2.0"

    def _run(self, action: str) -> dict[str, str]:
        return _script(action, self.port, self.state)

    def reset(self) -> None:
        t0 = time.monotonic()
        env = self._run("reset")
        self.token, self.svc_token = env["RT_TOKEN"], env["RT_SVC_TOKEN"]
        self.timings["last_reset"] = time.monotonic() - t0

    def stop(self) -> None:
        self._run("stop")

    def agent(self) -> httpx.Client:
        """An HTTP client acting as the agent (root) on REST2."""
        return httpx.Client(
            base_url=self.api + "/", headers={"Authorization": f"token {self.token}"}, timeout=30
        )

    def plugin_config(self, **extra: Any) -> dict[str, Any]:
        """``[plugins.rt]`` for a svcbridge talking to this RT as the svcbridge user."""
        return {"url": self.url, "token": self.svc_token, "queue": "General", "poll_interval": 0.2, **extra}

    # ------------------------------------------------------------------ read-back helpers (as root)
    def tickets(self, query: str = "id > 0") -> list[dict[str, Any]]:
        with self.agent() as c:
            r = c.get("tickets", params={"query": query, "fields": "Subject,Status,Requestor", "per_page": 100})
            r.raise_for_status()
            return list(r.json()["items"])

    def files(self, ticket_id: str) -> dict[str, str]:
        """Attachment file name -> sha256 of the bytes RT stored, for one ticket."""
        out: dict[str, str] = {}
        with self.agent() as c:
            r = c.get(f"ticket/{ticket_id}/attachments", params={"fields": "Filename", "per_page": 100})
            r.raise_for_status()
            for item in r.json()["items"]:
                if item.get("Filename"):
                    a = c.get(f"attachment/{item['id']}").json()
                    out[item["Filename"]] = hashlib.sha256(base64.b64decode(a["Content"])).hexdigest()
        return out

    def history(self, ticket_id: str) -> list[dict[str, Any]]:
        with self.agent() as c:
            r = c.get(
                f"ticket/{ticket_id}/history",
                params={"fields": "Type,Field,OldValue,NewValue,Creator,Data", "per_page": 100},
            )
            r.raise_for_status()
            return list(r.json()["items"])

    def reply(self, ticket_id: str, text: str, kind: str = "correspond") -> None:
        with self.agent() as c:
            c.post(f"ticket/{ticket_id}/{kind}", json={"Content": text, "ContentType": "text/plain"}).raise_for_status()

    def set_status(self, ticket_id: str, status: str) -> None:
        with self.agent() as c:
            c.put(f"ticket/{ticket_id}", json={"Status": status}).raise_for_status()


def _script(action: str, port: int, state: Path) -> dict[str, str]:
    env = {**os.environ, "RT_PORT": str(port), "RT_STATE": str(state)}
    return run_setup(SCRIPT, action, env)


def start_rt() -> RtServer:
    """Install (if needed, as root) and start a private RT; raises RuntimeError when that fails."""
    timings: dict[str, float] = {}
    if not Path(RT_SERVER_BIN).exists():
        if os.geteuid() != 0:
            raise RuntimeError("request-tracker5 is not installed and we are not root")
        t0 = time.monotonic()
        _script("install", 0, Path(tempfile.gettempdir()))
        timings["install"] = time.monotonic() - t0
    state = Path(tempfile.mkdtemp(prefix="svcbridge-rt-", dir="/tmp"))
    os.chmod(state, 0o755)
    port = free_port()
    t0 = time.monotonic()
    try:
        env = _script("start", port, state)
    except Exception:
        _script("stop", port, state)
        raise
    timings["start"] = time.monotonic() - t0
    return RtServer(env["RT_URL"], env["RT_TOKEN"], env["RT_SVC_TOKEN"], state, port, timings)


def running_rt() -> contextlib.AbstractContextManager[RtServer]:
    """A started RT for a test session (fails under CI=true, skips elsewhere, when it cannot run)."""
    return running(start_rt, "Request Tracker 5")
