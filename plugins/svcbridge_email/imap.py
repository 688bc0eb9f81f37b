"""IMAP source: one per mailbox, IDLE with a watchdog, checkpoints by (UIDVALIDITY, UID).

- **TLS first.** ``implicit`` (IMAPS) or ``starttls``. With ``starttls`` a server that does not offer
  STARTTLS, or answers it with NO/BAD, or a failed handshake, ends the attempt before any credential is
  sent: there is no plaintext fallback. ``none`` is accepted only for loopback hosts.
- **Login** with a password (``LOGIN``) or ``AUTHENTICATE XOAUTH2`` with a token from ``oauth.py``. A
  refused login raises ``AuthFailed`` from this source only: the daemon backs it off and reports it on
  /readyz, every other mailbox goes on. Nothing here ever calls ``sys.exit``.
- **What is new** is decided by the checkpoint (UIDVALIDITY, last UID), never by ``\\Seen``: mail read on
  a phone first is still ingested. The external id is ``"<uidvalidity>:<uid>"``. A UIDVALIDITY change
  resets the last UID and rescans the folder; the rescanned copies have new external ids, and the
  pipeline recognises them by content hash / Message-ID, so they make no second ticket.
- **Journal, then acknowledge.** New UIDs are fetched with ``BODY.PEEK[]`` (nothing is marked seen by
  fetching) in batches bounded by count and by bytes; a batch is journaled in one transaction
  (``submit_many``), then the after-action runs (``none``, ``flag``, ``move``, ``delete``), then the
  checkpoint moves. Each of the three is fenced on the source's lease (``ctx.confirm_lease``; the
  journal checks it in its own transaction): a replica paused past its lease acts no more. A crash in
  between fetches the batch again; the journal knows its external ids, so it is only acknowledged. A
  refused after-action (quota, mail expunged elsewhere) is logged and the checkpoint moves anyway: no
  reprocessing loop, no duplicate.
- **Poison.** When a batch FETCH fails on one message (a reply the parser cannot read, a NO for one
  broken mail file) the batch is fetched again one UID at a time. A message imapclient cannot parse is
  fetched once more through plain imaplib; if its bytes come back it is journaled like any other. If not,
  an empty entry is journaled with the error in its metadata, so the pipeline quarantines it with a
  reason; that mail is left untouched on the server (no after-action) and the checkpoint moves past it.
  Some servers drop the connection instead (Dovecot answers an unreadable mail file with BYE): a batch
  whose FETCH lost the connection is taken one UID at a time on the next pass, each attempt counted in
  the ``suspect`` checkpoint before it is made, and a UID that took the connection down ``MAX_STRIKES``
  times is journaled as unfetchable the same way. Poison never fills the batch forever.
- **IDLE.** ``run`` keeps one connection, syncs, then IDLEs until the server reports EXISTS, re-issuing
  IDLE every ``idle_timeout`` seconds (under the 29 minutes RFC 2177 allows). The re-IDLE round trip and
  TCP keepalive are the watchdog for a silently dead connection; a dropped connection is re-opened at
  once (then with backoff), a connection that cannot be opened is left to the daemon's per-source
  backoff. Without IDLE on the server (or ``idle = false``) ``run`` polls every ``poll_interval``.
- **Threads.** imapclient blocks, so every call runs in this mailbox's own single worker thread: the
  event loop never blocks, calls on one connection are serialised even when an await is cancelled, and
  thirty IDLE mailboxes cannot starve the default executor the journal uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from svcbridge import AuthFailed, IntakeContext, NotReady, RawMessage

from .batches import batches

log = structlog.get_logger("svcbridge.imap")
T = TypeVar("T")

# seconds per idle_check: how fast a stop request is noticed while idling; each tick costs a thread
# hand-off, so 200 idling mailboxes wake 67 times a second instead of 200 (bench scale)
IDLE_TICK = 3.0
# the connection itself is gone: the batch in hand is not journaled or not acknowledged, and the next
# pass (after a reconnect) fetches it again; never a reason to quarantine a message
CONNECTION_ERRORS = (IMAPClientAbortError, OSError, EOFError)
MAX_STRIKES = 3  # connection drops while fetching one message before it is treated as poison


class ImapSource:
    """One IMAP folder of one account (``[[plugins.email.imap]]``)."""

    channel = "email"

    def __init__(self, cfg: Any, tokens: Any = None) -> None:
        self.cfg = cfg
        self.name: str = cfg.name
        self.interval: float = cfg.poll_interval
        self.tokens = tokens  # oauth.TokenProvider for XOAUTH2, None for a password login
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"imap-{cfg.name}")
        self._folder_ready = False

    def health_facts(self) -> dict[str, Any]:
        """What the console's overview shows beside this source's state: the OAuth token's expiry."""
        left = self.tokens.expires_in() if self.tokens is not None else None
        return {} if left is None else {"oauth_token_expires_in": left}

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call in this mailbox's worker thread (context vars go along, as with to_thread)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await loop.run_in_executor(self._worker, call)

    # ------------------------------------------------------------------ connection (worker thread)
    def _tls_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)
        if not self.cfg.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self, token: str | None) -> IMAPClient:
        c = self.cfg
        try:
            client = IMAPClient(
                c.host,
                c.port,
                ssl=c.tls == "implicit",
                ssl_context=self._tls_context() if c.tls == "implicit" else None,
                timeout=c.timeout,
            )
        except (OSError, IMAPClientError) as exc:
            raise NotReady(f"cannot connect to {c.host}:{c.port}: {type(exc).__name__}: {exc}") from None
        try:
            if c.tls == "starttls":
                self._starttls(client)
            self._login(client, token)
        except BaseException:
            _drop(client)
            raise
        _keepalive(client.socket())
        self._folder_ready = False
        return client

    def _starttls(self, client: IMAPClient) -> None:
        """Upgrade to TLS or give up: no credential ever travels over the plaintext connection."""
        c = self.cfg
        try:
            offered = client.has_capability("STARTTLS")
        except (IMAPClientError, OSError) as exc:
            raise NotReady(
                f"{c.host}: CAPABILITY failed before STARTTLS: {exc}; credentials were not sent"
            ) from None
        if not offered:
            raise NotReady(f"{c.host}:{c.port} does not offer STARTTLS; credentials were not sent")
        try:
            client.starttls(self._tls_context())
        except (IMAPClientError, OSError) as exc:  # ssl.SSLError is an OSError
            raise NotReady(f"{c.host}:{c.port}: STARTTLS failed ({exc}); credentials were not sent") from None
        # imapclient asks for CAPABILITY again after STARTTLS (RFC 2595 3.1): pre-TLS ones may be forged

    def _login(self, client: IMAPClient, token: str | None) -> None:
        c = self.cfg
        try:
            if token is not None:
                client.oauth2_login(c.username, token)
            else:
                client.login(c.username, c.password.get_secret_value() if c.password else "")
        except LoginError as exc:
            # the server's words only (e.g. "[AUTHENTICATIONFAILED] ..."): never the credential
            raise AuthFailed(f"IMAP login refused for {c.username}@{c.host}: {str(exc)[:200]}") from None
        except CONNECTION_ERRORS as exc:
            raise NotReady(f"{c.host}: connection lost during login: {type(exc).__name__}") from None

    def _close(self, client: IMAPClient) -> None:
        try:
            client.logout()
        except Exception:  # a dead connection has nothing to log out from
            _drop(client)

    async def _open(self) -> IMAPClient:
        token = await self.tokens.access_token() if self.tokens is not None else None
        try:
            return await self._call(self._connect, token)
        except AuthFailed:
            if self.tokens is not None:
                self.tokens.invalidate()  # the next attempt fetches a fresh token instead of the refused one
            raise

    # ------------------------------------------------------------------ one pass
    async def poll(self, ctx: IntakeContext) -> int:
        client = await self._open()
        try:
            return await self._sync(ctx, client)
        finally:
            await self._call(self._close, client)

    async def _sync(self, ctx: IntakeContext, client: IMAPClient) -> int:
        c = self.cfg
        uidvalidity = await self._call(self._select, client)
        stored = await ctx.get_checkpoint("uidvalidity")
        last = int(await ctx.get_checkpoint("last_uid") or 0)
        if stored != uidvalidity:
            if stored is not None:
                log.warning("uidvalidity_changed_rescanning", source=self.name, old=stored, new=uidvalidity)
            # last_uid first: a crash between the two writes leaves the old UIDVALIDITY stored, so the
            # next pass rescans again instead of trusting a UID from the old numbering
            await ctx.set_checkpoint("last_uid", "0")
            await ctx.set_checkpoint("uidvalidity", uidvalidity)
            last = 0
        sizes = await self._call(self._new_messages, client, last)
        ctx.expect(len(sizes), sum(sizes.values()))
        suspect = _suspect(await ctx.get_checkpoint("suspect"), uidvalidity)
        total = 0
        # a batch fetched and not yet journaled: it is journaled while the next one comes over the wire
        # (the fetch waits on the socket in the mailbox's thread, the journal writes blobs and commits
        # in others); its after-action queues behind that fetch in the mailbox's one thread
        held: tuple[list[int], list[RawMessage], list[int]] | None = None
        for chunk in batches(sizes, c.batch, c.batch_bytes):
            if ctx.stopping.is_set():
                break
            if suspect and chunk[0] <= suspect[0] <= chunk[-1]:
                if held is not None:
                    total += await self._journal_and_ack(ctx, client, *held)
                    held = None
                # a FETCH of this batch dropped the connection last time: one UID at a time, counting
                for uid in chunk:
                    total += await self._careful(ctx, client, uid, uidvalidity, suspect)
                await ctx.set_checkpoint("suspect", "")
                suspect = None
                continue
            fetch = asyncio.ensure_future(self._call(self._fetch, client, chunk, uidvalidity))
            failed: BaseException | None = None
            if held is not None:
                try:
                    total += await self._journal_and_ack(ctx, client, *held)
                except BaseException as exc:  # raised below, once this fetch has let go of the client
                    failed = exc
                held = None
            try:
                raws, ack = await fetch
            except CONNECTION_ERRORS:
                # maybe the network, maybe a mail the server dies on (Dovecot answers an unreadable
                # mail file with BYE): the next pass takes this batch one UID at a time (the batch
                # before it failed its after-action for the same reason: it is only acknowledged then)
                await ctx.set_checkpoint("suspect", f"{uidvalidity}:{chunk[0]}:0")
                if failed is not None:  # a cancellation (stop, lease lost) or a store error came first
                    raise failed from None
                raise
            except BaseException:
                if failed is not None:
                    raise failed from None
                raise
            if failed is not None:
                raise failed
            held = (chunk, raws, ack)
        if held is not None:
            total += await self._journal_and_ack(ctx, client, *held)
        return total

    async def _journal_and_ack(
        self, ctx: IntakeContext, client: IMAPClient, uids: list[int], raws: list[RawMessage], ack: list[int]
    ) -> int:
        if raws:
            await ctx.submit_many(raws)  # StoreUnavailable propagates: nothing is acknowledged
        if ack and self.cfg.after != "none":
            await ctx.confirm_lease()  # LeaseLost (paused past the lease): another replica acts now
        await self._call(self._after, client, ack)
        await ctx.set_checkpoint("last_uid", str(uids[-1]))
        return len(raws)

    async def _careful(
        self, ctx: IntakeContext, client: IMAPClient, uid: int, uidvalidity: str, suspect: tuple[int, int]
    ) -> int:
        """Fetch one UID, counting connection drops against it; after ``MAX_STRIKES`` it is poison."""
        strikes = suspect[1] if uid == suspect[0] else 0
        if strikes >= MAX_STRIKES:
            error = f"the connection dropped {strikes} times while fetching this message"
            log.error("message_unfetchable_quarantined", source=self.name, uid=uid, error=error)
            raw = self._raw(uid, uidvalidity, b"", {"fetch_error": error})
            return await self._journal_and_ack(ctx, client, [uid], [raw], [])
        # counted before the attempt: if this FETCH takes the connection (or the process) down, it shows
        await ctx.set_checkpoint("suspect", f"{uidvalidity}:{uid}:{strikes + 1}")
        raws, ack = await self._call(self._fetch, client, [uid], uidvalidity)
        return await self._journal_and_ack(ctx, client, [uid], raws, ack)

    def _select(self, client: IMAPClient) -> str:
        info = client.select_folder(self.cfg.folder)
        return str(info[b"UIDVALIDITY"])

    def _new_messages(self, client: IMAPClient, last: int) -> dict[int, int]:
        """UID -> size of every message above ``last``; sizes bound the memory of one batch."""
        try:
            data = client.fetch(f"{last + 1}:*", ["RFC822.SIZE"])
            found = {uid: int(item.get(b"RFC822.SIZE", 0)) for uid, item in data.items()}
        except CONNECTION_ERRORS:
            raise
        except (IMAPClientError, ValueError) as exc:  # one unreadable size must not stall the folder
            log.warning("size_fetch_failed_searching", source=self.name, error=str(exc)[:200])
            found = {uid: 0 for uid in client.search(["UID", f"{last + 1}:*"])}
        # "n:*" always matches the highest UID, even when it is below n
        return {uid: size for uid, size in sorted(found.items()) if uid > last}

    def _fetch(
        self, client: IMAPClient, uids: list[int], uidvalidity: str
    ) -> tuple[list[RawMessage], list[int]]:
        """Journal entries for ``uids`` and the UIDs that may be acknowledged (fetched intact)."""
        errors: dict[int, str] = {}  # no bytes at all: journaled empty, quarantined, left on the server
        fallback: dict[int, str] = {}  # imapclient failed, plain imaplib got the bytes
        try:
            data = client.fetch(uids, ["BODY.PEEK[]"])
        except CONNECTION_ERRORS:
            raise
        except (IMAPClientError, ValueError) as exc:
            log.warning(
                "batch_fetch_failed_one_by_one", source=self.name, uids=len(uids), error=str(exc)[:200]
            )
            data = {}
            for uid in uids:
                try:
                    data.update(client.fetch([uid], ["BODY.PEEK[]"]))
                except CONNECTION_ERRORS:
                    raise
                except (IMAPClientError, ValueError) as one:
                    reason = f"{type(one).__name__}: {one}"[:500]
                    body = _raw_fetch(client, uid)
                    if body is None:
                        errors[uid] = reason
                    else:
                        data[uid], fallback[uid] = {b"BODY[]": body}, reason
        raws, ack = [], []
        for uid in uids:
            item = data.get(uid)
            if item is None and uid not in errors:
                continue  # expunged by someone else since the size fetch: nothing to journal
            body = item.get(b"BODY[]") if item is not None else None
            meta: dict[str, Any] = {}
            if body is None:
                meta["fetch_error"] = errors.get(uid, "FETCH response without BODY[]")
                log.error(
                    "message_unfetchable_quarantined", source=self.name, uid=uid, error=meta["fetch_error"]
                )
            else:
                ack.append(uid)
                if uid in fallback:
                    meta["fetch_fallback"] = fallback[uid]
                if len(body) > self.cfg.max_size:  # journaled whole; the parser reads only its headers
                    meta["oversize"] = len(body)
            raws.append(self._raw(uid, uidvalidity, bytes(body) if body is not None else b"", meta))
        return raws, ack

    def _raw(self, uid: int, uidvalidity: str, body: bytes, meta: dict[str, Any]) -> RawMessage:
        meta = {"folder": self.cfg.folder, "uid": uid, "uidvalidity": uidvalidity, **meta}
        return RawMessage(
            channel="email", source=self.name, external_id=f"{uidvalidity}:{uid}", raw=body, metadata=meta
        )

    def _after(self, client: IMAPClient, uids: list[int]) -> None:
        c = self.cfg
        if not uids or c.after == "none":
            return
        log.debug("imap_after_action", source=self.name, action=c.after, uids=len(uids))
        try:
            if c.after == "flag":
                client.add_flags(uids, [c.flag], silent=True)
            elif c.after == "move":
                if not self._folder_ready:
                    if not client.folder_exists(c.move_to):
                        client.create_folder(c.move_to)
                    self._folder_ready = True
                if client.has_capability("MOVE"):
                    client.move(uids, c.move_to)
                else:
                    client.copy(uids, c.move_to)
                    self._expunge(client, uids)
            elif c.after == "delete":
                self._expunge(client, uids)
        except CONNECTION_ERRORS:
            raise  # not acknowledged: the checkpoint stays, the next pass re-fetches and acknowledges
        except IMAPClientError as exc:  # quota, expunged elsewhere: journaled already, so move on
            log.warning(
                "after_action_failed", source=self.name, action=c.after, uids=uids, error=str(exc)[:200]
            )

    @staticmethod
    def _expunge(client: IMAPClient, uids: list[int]) -> None:
        client.delete_messages(uids, silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            # plain EXPUNGE also removes mail someone else marked \Deleted in this folder; servers
            # without UIDPLUS leave no narrower choice
            client.expunge()

    # ------------------------------------------------------------------ long-running: IDLE or polling
    async def run(self, ctx: IntakeContext) -> None:
        """Hold one connection: IDLE (or poll) until ``ctx.stopping``; reconnect when it drops."""
        lost = 0
        while not ctx.stopping.is_set():
            client = await self._open()  # cannot connect or log in: the daemon's backoff takes over
            self._synced = False
            try:
                await self._session(ctx, client)
                return
            except (*CONNECTION_ERRORS, NotReady) as exc:
                # a dropped connection is normal life for IDLE: reconnect at once the first time, then
                # back off (up to poll_interval) while connections keep dying before a sync succeeds
                lost = 1 if self._synced else lost + 1
                ctx.report(False, f"connection lost: {type(exc).__name__}: {exc}")
                log.warning("imap_connection_lost", source=self.name, error=f"{type(exc).__name__}: {exc}")
            finally:
                await self._call(self._close, client)
            await _sleep(ctx, min(self.interval, 2.0 ** (lost - 1) - 1))

    _synced = False  # a sync succeeded on the current connection

    async def _session(self, ctx: IntakeContext, client: IMAPClient) -> None:
        idle = self.cfg.idle and await self._call(client.has_capability, "IDLE")
        if self.cfg.idle and not idle:
            log.info("server_without_idle_polling", source=self.name, interval=self.interval)
        while not ctx.stopping.is_set():
            await self._sync(ctx, client)
            self._synced = True
            ctx.report(True)
            if idle:
                await self._idle(ctx, client)
            else:
                await _sleep(ctx, self.interval)

    async def _idle(self, ctx: IntakeContext, client: IMAPClient) -> None:
        """IDLE until new mail, ``idle_timeout`` or stop; DONE always follows (and proves the link)."""
        await self._call(client.idle)
        try:
            deadline = time.monotonic() + self.cfg.idle_timeout
            while not ctx.stopping.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                tick = max(0.05, min(IDLE_TICK, deadline - started))
                responses = await self._call(client.idle_check, tick)
                if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                    return
                if not responses and time.monotonic() - started < tick / 2:
                    # woke up with nothing to show: imapclient swallows EOF here, DONE finds out
                    return
        finally:
            await self._call(client.idle_done)


def _suspect(value: str | None, uidvalidity: str) -> tuple[int, int] | None:
    """(uid, strikes) from the ``suspect`` checkpoint, when it belongs to this UIDVALIDITY."""
    parts = (value or "").split(":")
    if len(parts) != 3 or parts[0] != uidvalidity:
        return None
    return int(parts[1]), int(parts[2])


def _raw_fetch(client: IMAPClient, uid: int) -> bytes | None:
    """The message's bytes through plain imaplib, for a FETCH reply imapclient could not parse.

    imapclient keeps its imaplib connection in ``_imap``; its reply handling is simpler (literals in
    order), which is enough to get the body out and keep the mail instead of only its error.
    """
    try:
        typ, data = client._imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
    except CONNECTION_ERRORS:
        raise
    except Exception:  # imaplib.error and anything odd: there are no bytes to keep
        return None
    if typ != "OK":
        return None
    for part in data:
        if isinstance(part, tuple) and b"BODY[]" in part[0].upper():
            return bytes(part[1])
    return None


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive so a peer that vanished without FIN/RST is noticed within minutes, even in IDLE."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 20)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def _drop(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


async def _sleep(ctx: IntakeContext, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.stopping.wait(), timeout=seconds)
