"""A misbehaving Zammad over real HTTP: the in-memory ``FakeZammad`` (tests/fakes/zammad.py, the
contract svcbridge's Zammad connector speaks) served by uvicorn on a loopback port, in a thread of the
test process, so it outlives every ``kill -9`` of the daemon and keeps every ticket and file it took.

While ``chaos`` is on, each request draws one fate:

- ``500``: an error page before anything is done;
- ``429``: ``Retry-After: <1..retry_after_max>`` before anything is done;
- ``hang``: nothing is done and no answer comes before the client's timeout (``hang`` seconds);
- ``commit_hang``: the request is served (the ticket or article exists) and then the answer is held
  past the client's timeout: the caller never hears that it worked (what reconcile exists for);
- ``ok``: served at once.

``healthy()`` turns the faults off for the finish. ``fates`` counts what was drawn; ``fake.tickets`` /
``fake.articles`` are the record (every ticket created, every article with its files' bytes).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import free_port
from fakes.zammad import FakeZammad

TOKEN = "chaos-zammad-token"


class ChaosDesk:
    """``with ChaosDesk(timeout=1.5, seed=1) as desk``: ``desk.url``, ``desk.fake``, ``desk.fates``."""

    def __init__(
        self,
        *,
        client_timeout: float,
        seed: int = 0,
        p_500: float = 0.07,
        p_429: float = 0.07,
        p_hang: float = 0.05,
        p_commit_hang: float = 0.07,
        retry_after_max: int = 2,
    ) -> None:
        self.fake = FakeZammad(token=TOKEN)
        self.fake.fire_on_api_articles = False  # no trigger webhook is configured: keep no backlog
        self.lock = threading.Lock()  # the test thread reads the record while uvicorn serves
        self.rng = random.Random(seed)
        self.chaos = True
        self.p = {"500": p_500, "429": p_429, "hang": p_hang, "commit_hang": p_commit_hang}
        self.hang = client_timeout + 1.0
        self.retry_after_max = retry_after_max
        self.fates: Counter[str] = Counter()
        self.port = free_port()
        app = Starlette(routes=[Route("/{path:path}", self._serve, methods=["GET", "POST", "PUT"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False,
                                timeout_keep_alive=5, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="chaos-zammad", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChaosDesk:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("chaos helpdesk did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def healthy(self) -> None:
        with self.lock:
            self.chaos = False

    def _fate(self) -> str:
        with self.lock:
            if not self.chaos:
                fate = "ok"
            else:
                x, fate = self.rng.random(), "ok"
                for name, p in self.p.items():
                    if x < p:
                        fate = name
                        break
                    x -= p
            self.fates[fate] += 1
            return fate

    def _route(self, req: httpx.Request) -> httpx.Response:
        with self.lock:
            return self.fake.route(req)

    async def _serve(self, request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:  # the daemon was killed while it sent the request
            return Response(b"", status_code=499)
        fate = self._fate()
        if fate == "500":
            return Response(b"<html>Internal Server Error</html>", status_code=500, media_type="text/html")
        if fate == "429":
            after = str(self.rng.randint(1, self.retry_after_max))
            return Response(b'{"error":"too many requests"}', status_code=429, media_type="application/json",
                            headers={"Retry-After": after})
        if fate == "hang":
            await asyncio.sleep(self.hang)
            return Response(b'{"error":"gateway timeout"}', status_code=504, media_type="application/json")
        req = httpx.Request(request.method, str(request.url), headers=request.headers.raw, content=body)
        resp = self._route(req)
        if fate == "commit_hang":
            await asyncio.sleep(self.hang)  # done on our side; the caller has given up by now
        ctype = resp.headers.get("content-type", "application/json")
        return Response(resp.content, status_code=resp.status_code, media_type=ctype)

    # ------------------------------------------------------------------ the record
    def snapshot(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
        """Copies of (tickets, articles) as the helpdesk holds them now."""
        with self.lock:
            tickets = {k: dict(v) for k, v in self.fake.tickets.items()}
            articles = {k: dict(v) for k, v in self.fake.articles.items()}
        return tickets, articles
