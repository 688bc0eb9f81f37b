"""An SMTP sink that keeps every transaction (aiosmtpd), for counting what customers really got.

The spool transport writes a file per Message-ID and would hide a resend; a real SMTP conversation
per send is what a customer's mailbox sees.
"""

from __future__ import annotations

import threading
from typing import Any

from aiosmtpd.controller import Controller

from conftest import free_port


class Keeper:
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        with self.lock:
            self.messages.append(bytes(envelope.original_content or envelope.content))
        return "250 kept"


class SmtpSink:
    """``with SmtpSink() as sink``: ``sink.port``, ``sink.messages`` (every DATA received, in order)."""

    def __init__(self) -> None:
        self.keeper = Keeper()
        self._port = free_port()  # the controller checks it is up by connecting: no port 0
        self.controller = Controller(self.keeper, hostname="127.0.0.1", port=self._port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def messages(self) -> list[bytes]:
        with self.keeper.lock:
            return list(self.keeper.messages)
