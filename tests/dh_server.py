"""A private django-helpdesk for the tests: installed if missing, started on a free loopback port.

``tests/helpdesks/setup-django-helpdesk.sh`` does the work (django-helpdesk 2.6.1 from PyPI in a venv of its
own, pinned; SQLite, gunicorn; project, DB, uploads and the server's outgoing mail under a fresh
``/tmp/svcbridge-dh-*`` dir). ``running_dh()`` starts one server (for a session-scoped fixture);
``DhServer.reset()`` puts back the pristine DB (under a second, server restart included) so a test starts at
ticket 1 and svcbridge's references never meet another test's tickets. ``reset(webhook=url)`` restarts it
with ``HELPDESK_FOLLOWUP_WEBHOOK_URLS`` set.

Two accounts: ``svc_token`` belongs to the staff user ``svcbridge`` the connector uses, ``token`` to the
superuser ``admin``, who plays the agent. Under CI=true a missing or broken server fails the tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conftest import free_port
from server_setup import run_setup, running

SCRIPT = Path(__file__).resolve().parent / "helpdesks" / "setup-django-helpdesk.sh"


@dataclass
class DhServer:
    api: str  # e.g. http://127.0.0.1:41234/helpdesk/api
    token: str  # admin: the agent
    svc_token: str  # the svcbridge staff user
    state: Path
    port: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Where helpdesk.urls is mounted: what ``[plugins.djhelpdesk] url`` is set to."""
        return self.api.removesuffix("/api")

    def _run(self, action: str, **env: str) -> dict[str, str]:
        return _script(action, self.port, self.state, **env)

    def reset(self, webhook: str | None = None) -> None:
        t0 = time.monotonic()
        env = {"HELPDESK_FOLLOWUP_WEBHOOK_URLS": webhook} if webhook else {}
        out = self._run("reset", **env)
        self.token, self.svc_token = out["DH_TOKEN"], out["DH_SVC_TOKEN"]
        self.timings["last_reset"] = time.monotonic() - t0

    def stop(self) -> None:
        self._run("stop")

    def agent(self) -> httpx.Client:
        return httpx.Client(base_url=self.api + "/", headers={"Authorization": f"Token {self.token}"}, timeout=30)

    def plugin_config(self, **extra: Any) -> dict[str, Any]:
        """``[plugins.djhelpdesk]`` for a svcbridge talking to this server as the svcbridge user."""
        return {"url": self.url, "token": self.svc_token, "queue": 1, "poll_interval": 0.2, **extra}

    # ------------------------------------------------------------------ read-back helpers (as admin)
    def tickets(self) -> list[dict[str, Any]]:
        with self.agent() as c:
            r = c.get("tickets/", params={"page_size": 1000})
            r.raise_for_status()
            return list(r.json()["results"])

    def ticket(self, tid: Any) -> dict[str, Any]:
        with self.agent() as c:
            r = c.get(f"tickets/{tid}/")
            r.raise_for_status()
            return dict(r.json())

    def files(self, tid: Any) -> dict[str, str]:
        """Attachment file name -> sha256 of the bytes django-helpdesk stored on disk, for one ticket."""
        out: dict[str, str] = {}
        for f in self.ticket(tid)["followup_set"]:
            for a in f["followupattachment_set"]:
                # the API gives a URL under MEDIA_URL, which gunicorn does not serve: read MEDIA_ROOT instead
                rel = httpx.URL(a["file"]).path.split("/attachments/", 1)[1]
                path = self.state / "media" / "helpdesk" / "attachments" / rel
                out[a["filename"]] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def reply(self, tid: Any, text: str, public: bool = True, new_status: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"ticket": int(tid), "comment": text, "public": public}
        if new_status is not None:
            body["new_status"] = new_status
        with self.agent() as c:
            r = c.post("followups/", json=body)
            r.raise_for_status()
            return dict(r.json())


def _script(action: str, port: int, state: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DH_PORT": str(port), "DH_STATE": str(state), **extra}
    if not extra:
        env.pop("HELPDESK_FOLLOWUP_WEBHOOK_URLS", None)
    return run_setup(SCRIPT, action, env)


def start_dh() -> DhServer:
    """Install the server venv if needed (pip, pinned) and start a private django-helpdesk."""
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    _script("install", 0, Path(tempfile.gettempdir()))
    timings["install"] = time.monotonic() - t0
    state = Path(tempfile.mkdtemp(prefix="svcbridge-dh-", dir="/tmp"))
    port = free_port()
    t0 = time.monotonic()
    try:
        out = _script("start", port, state)
    except Exception:
        _script("stop", port, state)
        shutil.rmtree(state, ignore_errors=True)
        raise
    timings["start"] = time.monotonic() - t0
    return DhServer(out["DH_URL"], out["DH_TOKEN"], out["DH_SVC_TOKEN"], state, port, timings)


def running_dh() -> contextlib.AbstractContextManager[DhServer]:
    """A started django-helpdesk for a test session (fails under CI=true, skips elsewhere, when it cannot run)."""
    return running(start_dh, "django-helpdesk")
