"""The daemon's HTTP connections under attack: header and body timeouts, a connection cap, fd headroom.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but waits for ever for the
headers of a request that never ends (slowloris), and its ``limit_concurrency`` counts those stalled
connections too, so at the limit every real request, ``/healthz`` included, would get a 503. This
module wraps uvicorn's h11 protocol instead:

- the request headers must be complete ``header_timeout`` seconds after the connection was made (or
  after the previous response on a keep-alive connection), the body ``body_timeout`` seconds after the
  headers; otherwise the connection is closed (a 408 first when part of a request came);
- at most ``cap`` connections are open: a new one beyond it closes the connection that has waited
  longest for its request headers (an attacker's stalled connection, never a request being answered),
  and only when every open connection is a request in progress does the new one get a
  ``503 Service Unavailable`` with ``Retry-After``, at once;
- the cap stays well below the file-descriptor limit (``connection_cap``), which the daemon raises to
  the hard limit at start (``raise_nofile_limit``): sources, the store and plugins always find a free
  descriptor, and asyncio never logs an ``accept()`` EMFILE.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

import h11
import structlog
from prometheus_client import Counter
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import metrics

log = structlog.get_logger("svcbridge.http")

# connections asyncio accepts in one go before any of them is seen by the protocol: the listen
# backlog, and fds the cap must leave free on top of the reserve
ACCEPT_BATCH = 100
FD_RESERVE_MIN = 128

CLOSED = Counter(
    "svcbridge_http_connections_closed_total",
    "HTTP connections the daemon closed itself, by reason",
    ["reason"],
    registry=metrics.REGISTRY,
)

_BUSY_BODY = b"too many connections, try again later\n"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\nretry-after: 5\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    cap: int


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may refuse: the cap follows the old limit
            log.warning("nofile_limit_unchanged", soft=soft, hard=hard, error=str(exc))
    return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(max_connections: int, nofile: int) -> int:
    """``max_connections``, lowered so that a quarter of the descriptors (at least 128) and two
    accept batches stay free for everything else.

    Two: asyncio's accept callback takes up to a batch of sockets at once, and their
    ``connection_made`` (where the oldest waiting connection is evicted) runs in the next loop
    iteration, in which the next batch is already accepted before the evicted sockets are closed
    (``transport.close`` closes them one iteration later still). One batch of headroom ran out under
    attack: an ``accept()`` EMFILE at 400 descriptors.
    """
    reserve = max(FD_RESERVE_MIN, nofile // 4)
    return max(1, min(max_connections, nofile - reserve - 2 * ACCEPT_BATCH))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is an OSError before anything else starts."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(ACCEPT_BATCH)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def guarded_protocol(limits: Limits) -> type[H11Protocol]:
    """An h11 protocol class for one server, with its own limits and its own waiting list."""

    class Guarded(_Guarded):
        pass

    Guarded.limits = limits
    Guarded.waiting = {}
    return Guarded


class _Guarded(H11Protocol):
    limits: Limits
    # connections waiting for request headers, oldest first (dicts keep insertion order)
    waiting: dict[_Guarded, float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._phase = ""  # "headers", "body" or "" (a request being answered, or closed)
        self._rejected = False

    # -- the connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.cap and not self._evict_oldest():
            self._rejected, self.transport = True, transport
            transport.write(BUSY)
            transport.close()
            CLOSED.labels(reason="busy").inc()
            log.warning("http_busy", error=f"{self.limits.cap} requests in progress, answered 503")
            return
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._leave()
        if not self._rejected:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._rejected:
            super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    # -- the request's progress
    def _follow(self) -> None:
        if self.transport.is_closing():
            self._leave()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._phase != "headers" and (self.cycle is None or self.cycle.response_complete):
                self._await_headers()  # keep-alive: the next request's headers are on the clock
        elif state is h11.SEND_BODY:
            if self._phase != "body":
                self._leave()
                self._phase = "body"
                self._timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)
        else:
            self._leave()  # a request is being answered: no clock on the application

    def _await_headers(self) -> None:
        self._leave()
        self._phase = "headers"
        self.waiting[self] = time.monotonic()
        self._timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _leave(self) -> None:
        self._phase = ""
        self.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a request came: say why it ends
            self.transport.write(TIMEOUT)
        self._close("header_timeout", f"request headers not complete within {self.limits.header_timeout:g} s")

    def _body_timeout(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self._close("body_timeout", f"request body not complete within {self.limits.body_timeout:g} s")

    def _evict_oldest(self) -> bool:
        victim = next(iter(self.waiting), None)
        if victim is None:
            return False
        victim.connections.discard(victim)  # counted out now: connection_lost comes a little later
        victim._close("evicted", f"connection limit {self.limits.cap}: closed the longest wait for headers")
        return True

    def _close(self, reason: str, error: str) -> None:
        self._leave()
        CLOSED.labels(reason=reason).inc()
        log.warning("http_connection_closed", reason=reason, error=error)
        self.transport.close()
