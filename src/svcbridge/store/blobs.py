"""Content-addressed blob store: raw messages and attachment bytes, each stored once, by sha256.

The database holds metadata only (``journal.blob_ref``, ``attachments.sha256``); the bytes live here.
The same scan sent twice, or the same file on ten tickets, is one blob.

Durability: ``put_many`` returns only when every blob is on disk: written to a temporary file in the
same file system, fsynced, renamed into place, and the directory fsynced. Callers put the blobs BEFORE
the transaction that references them commits, so a ``kill -9`` in between leaves at most an orphan
blob (``gc`` removes it later), never a row pointing to a missing blob. An existing blob is touched
(its mtime renewed) instead of written again, which tells ``gc`` it is in use again; and the writer
checks after its commit that the blob is still there (``ensure``), which closes the window of a
``gc`` racing that reuse.

A raw mail is stored as a *skeleton* (``split.py``): its base64 parts that re-encode byte for byte
are cut out and stored decoded as blobs of their own (the attachment a parser decodes from that part
has the same sha256, so it is stored once, not twice), and the raw blob keeps the rest plus a
manifest. ``join`` rebuilds the original bytes exactly; ``split`` proves that before anything is
written. The raw blob's key is the sha256 of the whole original message (the journal's
``content_hash``).

``BlobStore`` is the interface; ``LocalBlobs`` is the file-system implementation under
``<data_dir>/blobs``. Replicas on several machines need a shared one: ``[store] blobs = "s3"`` keeps
the blobs in an S3-compatible bucket (``s3blobs.S3Blobs``, the same methods; boto3 is imported only
then), or they share a directory (NFS). ``openblobs.open_blobs`` picks the store the settings name.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import structlog

from ..errors import StoreUnavailable

log = structlog.get_logger("svcbridge.store")
Chunks = bytes | memoryview | list[bytes | memoryview]
SHARD = 1  # hex digits of the key naming its directory


class BlobMissing(LookupError):
    """A row names a blob the store does not hold (deleted by hand, or a store restored without it)."""


class BlobCorrupt(BlobMissing):
    """A blob's bytes are not what its name says (damaged, or overwritten behind the store's back):
    as good as missing, so a reader quarantines the message with this reason instead of guessing."""


class BlobStoreError(StoreUnavailable):
    """The blob store could not be reached or refused a request (S3); the text names no credentials.
    A store outage like a database one: nothing is acknowledged upstream or quarantined, the work
    stays pending for the next round."""


class BlobStore(Protocol):
    where: str  # for messages: the directory, or s3://bucket/prefix at the endpoint

    def put_many(self, items: dict[str, Chunks]) -> int:
        """Store every blob durably (existing ones are touched); the number of bytes newly written."""

    def get(self, key: str) -> bytes | None: ...

    def has(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def keys(self, older_than: float = 0.0) -> Iterator[tuple[str, int]]:
        """(key, size) of every blob last written or touched more than ``older_than`` seconds ago."""

    def modified(self, key: str) -> float | None:
        """When the blob was last written or touched (epoch seconds); None when it is gone."""

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys the store does not hold (``has`` for many: S3 asks in parallel)."""

    def usage(self) -> tuple[int, int]:
        """(blobs, bytes) held."""


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class LocalBlobs:
    """Blobs as files ``<root>/<first hex digit>/<sha256>``, written atomically and fsynced.

    Sixteen directories, not 256: every directory a batch renamed into is fsynced, and with 256 a
    batch of a hundred blobs fsynced about a hundred directories (ext4 handles a million names in
    a directory with its hashed index)."""

    def __init__(self, root: Path | str, threads: int = 8) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.threads = threads
        self.where = str(self.root)
        self._made: set[str] = set()

    def path(self, key: str) -> Path:
        if not _is_key(key):
            raise ValueError(f"not a blob key: {key[:80]!r}")
        return self.root / key[:SHARD] / key

    def _dir(self, key: str) -> Path:
        d = self.root / key[:SHARD]
        if key[:SHARD] not in self._made:
            d.mkdir(parents=True, exist_ok=True)
            self._made.add(key[:SHARD])
        return d

    def _write(self, key: str, chunks: Chunks) -> int:
        final = self.path(key)
        try:
            os.utime(final)  # present: renew its mtime, so gc sees it in use again
            return 0
        except FileNotFoundError:
            pass
        self._dir(key)
        self.tmp.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        n = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            for c in chunks if isinstance(chunks, list) else [chunks]:
                view = memoryview(c)
                while view:
                    w = os.write(fd, view)
                    view, n = view[w:], n + w
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        return n

    def put_many(self, items: dict[str, Chunks]) -> int:
        if not items:
            return 0
        if len(items) == 1 or self.threads <= 1:
            written = [self._write(k, v) for k, v in items.items()]
            dirs = [self.root / k[:SHARD] for k, w in zip(items, written, strict=True) if w]
            for d in dirs:  # the rename is durable only once its directory is
                _fsync_dir(d)
            return sum(written)
        # fsync releases the GIL, and the file system groups the flushes of parallel callers into one
        # journal commit: files in parallel, then their directories in parallel (11 ms a blob one by
        # one on the shared VM, under 3 ms in batches of 200)
        with ThreadPoolExecutor(min(self.threads, len(items))) as pool:
            written = list(pool.map(lambda kv: self._write(*kv), items.items()))
            dirs = sorted({self.root / k[:SHARD] for k, w in zip(items, written, strict=True) if w})
            list(pool.map(_fsync_dir, dirs))
        return sum(written)

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, key: str) -> bool:
        return self.path(key).exists()

    def modified(self, key: str) -> float | None:
        try:
            return self.path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if not self.has(k)]

    def delete(self, key: str) -> bool:
        try:
            self.path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    def keys(self, older_than: float = 0.0) -> Iterator[tuple[str, int]]:
        limit = time.time() - older_than
        if not self.root.is_dir():
            return
        for d in sorted(self.root.iterdir()):
            if len(d.name) != SHARD or not d.is_dir():
                continue
            for f in d.iterdir():
                if not _is_key(f.name):
                    continue
                try:
                    st = f.stat()
                except FileNotFoundError:
                    continue
                if st.st_mtime <= limit:
                    yield f.name, st.st_size

    def clean_tmp(self, older_than: float = 3600.0) -> int:
        """Temporary files of writers that died before their rename; how many were removed."""
        n, limit = 0, time.time() - older_than
        for f in self.tmp.iterdir() if self.tmp.is_dir() else ():
            try:
                if f.stat().st_mtime <= limit:
                    f.unlink()
                    n += 1
            except FileNotFoundError:
                continue
        return n

    def usage(self) -> tuple[int, int]:
        """(blobs, bytes) held."""
        count = total = 0
        for _, size in self.keys():
            count, total = count + 1, total + size
        return count, total


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure(blobs: BlobStore, items: dict[str, Chunks], keys: Iterable[str]) -> None:
    """After a commit: every key it references is still there (a gc between our touch and our commit
    may have taken a reused blob); put back what is missing from the bytes still in hand."""
    try:
        missing = {k: items[k] for k in blobs.missing(k for k in keys if k in items)}
        if missing:
            blobs.put_many(missing)
    except BlobStoreError as exc:
        # the commit is done and its blobs were there a moment ago: an outage now only means the
        # rare gc race cannot be checked; raising would tell the caller nothing was written
        log.warning("blob_check_failed", error=str(exc))
