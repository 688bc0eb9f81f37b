"""Webhook signatures of the fax (and SMS) gateways, exactly as the providers sign.

- Telnyx (api-contracts 2.2): Ed25519 over ``"{telnyx-timestamp}|{raw body}"``, base64 signature in
  ``telnyx-signature-ed25519``, verified with the account's base64 public key (32 raw bytes); the
  timestamp must be within ``tolerance`` seconds (300, as the common clients use) either way.
- Sinch Fax v2.1 / Phaxio (api-contracts 2.4): ``X-Phaxio-Signature`` =
  ``hex(HMAC-SHA1(callback token, URL + sorted(name + value) + sorted(field name + sha1_hex(file))))``.

``ReplayGuard`` remembers signatures it accepted while they could still be fresh: the same signed
request sent again is refused (403) even inside the window; a provider's own retry is signed anew.
Verifiers never raise on malformed input: they answer False.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def telnyx_public_key(b64: str) -> Ed25519PublicKey:
    """The account's public key (base64 of 32 raw bytes, as the portal shows it); ValueError if not."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def telnyx_verify(
    key: Ed25519PublicKey,
    body: bytes,
    timestamp: str,
    signature: str,
    tolerance: float = 300.0,
    now: float | None = None,
) -> str | None:
    """None when the request is genuine and fresh, else why not (for the log, never for the sender)."""
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return "bad timestamp"
    if abs((now if now is not None else time.time()) - int(timestamp)) > tolerance:
        return "stale timestamp"
    try:
        sig = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "signature not base64"
    if len(sig) != 64:
        return "signature not 64 bytes"
    try:
        key.verify(sig, timestamp.encode() + b"|" + body)
    except InvalidSignature:
        return "signature does not match"
    return None


def phaxio_signature(
    token: str, url: str, params: Iterable[tuple[str, str]], files: Iterable[tuple[str, bytes]]
) -> str:
    """``X-Phaxio-Signature`` of a callback: params as (name, value), files as (field name, bytes)."""
    parts = [url]
    parts += [name + value for name, value in sorted(params)]
    # SHA-1 because Phaxio signs with it; usedforsecurity=False: a file digest inside the HMAC input
    parts += [
        name + hashlib.sha1(data, usedforsecurity=False).hexdigest()
        for name, data in sorted(files, key=lambda f: f[0])
    ]
    return hmac.new(token.encode(), "".join(parts).encode(), hashlib.sha1).hexdigest()


def phaxio_verify(
    token: str, url: str, params: list[tuple[str, str]], files: list[tuple[str, bytes]], signature: str
) -> bool:
    if not signature.isascii():
        return False
    return hmac.compare_digest(phaxio_signature(token, url, params, files), signature.strip().lower())


class ReplayGuard:
    """Signatures accepted in the last ``window`` seconds (bounded): a second use is a replay."""

    def __init__(self, window: float = 600.0, size: int = 100_000) -> None:
        self.window, self.size = window, size
        self.seen: OrderedDict[str, float] = OrderedDict()

    def first_use(self, signature: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        while self.seen and next(iter(self.seen.values())) < now - self.window:
            self.seen.popitem(last=False)
        if signature in self.seen:
            return False
        self.seen[signature] = now
        if len(self.seen) > self.size:
            self.seen.popitem(last=False)
        return True

    def forget(self, signature: str) -> None:
        """The request was not journaled (store down, 503): the provider may send it again."""
        self.seen.pop(signature, None)

    async def journal_once(self, signature: str, take: Callable[[], Awaitable[Any]]) -> Any:
        """Answer a request whose ``signature`` was just accepted with ``take()`` (a response).

        A request that was not journaled (any answer but 2xx: 400, 503, a 500 from a full disk, or an
        exception) is forgotten, so the provider's retry of it gets in instead of a 403.
        """
        try:
            resp = await take()
        except BaseException:
            self.forget(signature)
            raise
        if resp.status_code >= 300:
            self.forget(signature)
        return resp
