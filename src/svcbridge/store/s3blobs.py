"""Blobs in an S3-compatible bucket (``[store] blobs = "s3"``): replicas on several machines share them.

The same five methods as ``LocalBlobs`` (``blobs.BlobStore``), one object per blob named
``<prefix><sha256>``. boto3 is imported here only, and this module only when the store is S3, so a
local-only deployment never loads it.

Durability: S3 acknowledges a PUT (200) only once the object is stored durably, and ``put_many``
returns only when every PUT has been acknowledged; callers put before the commit that names the
blobs, exactly as with files. Each PUT carries ``Content-MD5`` and ``x-amz-checksum-sha256`` of the
body, so the server refuses bytes damaged on the way (BadDigest) instead of storing them.

Writes: a blob under 1 MiB is PUT with ``If-None-Match: *`` (one request for a new blob; the server
answers 412 when it is there); a larger one is looked for with HEAD first, so megabytes are not
uploaded only to be refused.

The process remembers the blobs it wrote or saw younger than ``touch_after`` (up to 50,000): the
pipeline puts every attachment twice (cut out of the raw mail at journal time, then as the ticket's
file), and the second put costs no request. ``has`` (the check after each commit, ``blobs.ensure``)
always asks the server, and forgets a blob it finds gone, so a blob deleted behind our back
(an erasure, another replica's gc) is put again for real.

Touch: an existing blob is not stored again; ``gc`` must see it in use again all the same, and S3's
only clock is ``LastModified``. An existing blob older than ``touch_after`` is therefore copied onto
itself with its metadata replaced (a server-side copy: no bytes travel, ``LastModified`` becomes now),
which is what ``keys(older_than)`` and ``modified`` read. A blob touched within ``touch_after`` (an
hour at most, and under a quarter of the gc grace) is left alone: it cannot be a gc candidate.
Copying in place makes a new version on a versioned bucket: expire noncurrent versions there.

Integrity: every object records the sha256 of its bytes (metadata ``sha256``). ``get`` hashes what
it receives: a blob's bytes must hash to its key, except a raw mail's stored skeleton (``split.py``,
starting ``SBB1``), which is named by the original mail's hash and must hash to its recorded one.
Anything else raises ``BlobCorrupt`` naming the key and the bucket.

Errors: botocore retries 5xx, throttling and connection errors (``standard`` mode, ``max_attempts``);
what still fails raises ``BlobStoreError`` with the operation, the key and the server's error code,
never the credentials (the secret is also registered with the log's redaction).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .. import log as logmod
from .blobs import BlobCorrupt, BlobStoreError, Chunks, _is_key
from .split import MAGIC

if TYPE_CHECKING:
    from ..storesettings import S3Settings

_MISSING = {"404", "NoSuchKey", "NotFound"}
HEAD_FIRST = 1 << 20  # bytes: a blob this large is looked for (HEAD) before it is uploaded
RECENT_MAX = 50_000  # keys this process knows to be fresh (a few MB)


class S3Blobs:
    """Blobs as objects ``<prefix><sha256>`` of one bucket."""

    def __init__(self, cfg: S3Settings, *, touch_after: float = 3600.0, page_size: int = 1000) -> None:
        import boto3  # lazily: only S3 deployments pay for it
        from botocore.config import Config

        self.bucket = cfg.bucket
        self.prefix = cfg.prefix
        self.threads = cfg.threads
        self.touch_after = touch_after
        self.page_size = page_size
        where = cfg.endpoint_url or f"AWS {cfg.region}"
        self.where = f"s3://{cfg.bucket}/{cfg.prefix} at {where}"
        # key -> when it was last written or touched, as far as this process saw: the pipeline puts an
        # attachment twice (cut out of the raw mail at journal time, then as the ticket's file), and
        # the second put needs no request while the blob is younger than touch_after
        self._recent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        secret = cfg.secret_access_key.get_secret_value() if cfg.secret_access_key else None
        if secret:
            logmod.add_secrets([secret])
        config = Config(
            region_name=cfg.region,
            # total_max_attempts counts the first try (botocore's max_attempts would not)
            retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
            s3={"addressing_style": cfg.addressing_style},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            max_pool_connections=max(10, cfg.threads + 2),
            # we send our own checksums; botocore's default CRC32 trailer is refused by some servers
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # a session of our own: boto3's default session is shared module state
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=cfg.endpoint_url,
            aws_access_key_id=cfg.access_key_id,
            aws_secret_access_key=secret,
            verify=str(cfg.ca_bundle) if cfg.ca_bundle else cfg.verify_tls,
            config=config,
        )

    def __repr__(self) -> str:
        return f"S3Blobs({self.where})"

    def name(self, key: str) -> str:
        if not _is_key(key):
            raise ValueError(f"not a blob key: {key[:80]!r}")
        return self.prefix + key

    def _fail(self, op: str, key: str, exc: Exception) -> BlobStoreError:
        code = _code(exc)
        message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message")
        detail = f"{code} {message or ''}".strip() if code else f"{type(exc).__name__}: {exc}"
        return BlobStoreError(logmod.redact(f"S3 {op} of blob {key[:64]} in {self.where} failed: {detail}"))

    def _head(self, key: str) -> dict[str, Any] | None:
        name = self.name(key)  # a bad key is the caller's ValueError, not a store failure
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=name)
            return head
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._fail("HEAD", key, exc) from None

    def _touch(self, key: str, head: dict[str, Any]) -> bool:
        """Renew LastModified by copying the object onto itself; False when it vanished meanwhile."""
        meta = dict(head.get("Metadata") or {})
        meta["touched"] = str(int(time.time()))
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.name(key),
                CopySource={"Bucket": self.bucket, "Key": self.name(key)},
                MetadataDirective="REPLACE",
                Metadata=meta,
                ContentType="application/octet-stream",
            )
            return True
        except Exception as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._fail("touch (copy in place)", key, exc) from None

    def _remember(self, key: str, when: float) -> None:
        with self._lock:
            self._recent[key] = when
            self._recent.move_to_end(key)
            if len(self._recent) > RECENT_MAX:
                self._recent.popitem(last=False)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._recent.pop(key, None)

    def _fresh(self, key: str) -> bool:
        with self._lock:
            when = self._recent.get(key)
        return when is not None and time.time() - when < self.touch_after

    def _existing(self, key: str, head: dict[str, Any] | None = None) -> bool:
        """The blob is there (touched when it could be near gc age); False when it is not."""
        head = head or self._head(key)
        if head is None:
            return False
        modified = head["LastModified"].timestamp()
        if time.time() - modified < self.touch_after:
            self._remember(key, modified)
            return True
        now = time.time()
        if self._touch(key, head):
            self._remember(key, now)
            return True
        return False

    def _put(self, key: str, chunks: Chunks) -> int:
        if self._fresh(key):
            return 0  # written or touched by us within touch_after: no gc can take it for its age
        now = time.time()
        size = sum(len(c) for c in chunks) if isinstance(chunks, list) else len(chunks)
        if size >= HEAD_FIRST and self._existing(key):
            return 0  # a large blob is not uploaded only to hear that it is there
        data = b"".join(chunks) if isinstance(chunks, list) else bytes(chunks)
        sha = hashlib.sha256(data)
        try:
            # If-None-Match: one request for a new blob instead of HEAD + PUT; a server that ignores
            # the header overwrites the same bytes, which renews LastModified: a touch as well
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.name(key),
                Body=data,
                IfNoneMatch="*",
                ContentType="application/octet-stream",
                ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
                ChecksumSHA256=base64.b64encode(sha.digest()).decode(),
                Metadata={"sha256": sha.hexdigest()},
            )
        except Exception as exc:
            if _code(exc) in ("PreconditionFailed", "412") and self._existing(key):
                return 0
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return self._put(key, chunks)  # deleted (gc) or written concurrently meanwhile: again
            raise self._fail("PUT", key, exc) from None
        self._remember(key, now)
        return len(data)

    def put_many(self, items: dict[str, Chunks]) -> int:
        if not items:
            return 0
        if len(items) == 1 or self.threads <= 1:
            return sum(self._put(k, v) for k, v in items.items())
        # one request a blob: network-bound, so a few in flight at once (the client is thread-safe)
        with ThreadPoolExecutor(min(self.threads, len(items))) as pool:
            return sum(pool.map(lambda kv: self._put(*kv), items.items()))

    def get(self, key: str) -> bytes | None:
        name = self.name(key)
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=name)
            data: bytes = resp["Body"].read()
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._fail("GET", key, exc) from None
        digest = hashlib.sha256(data).hexdigest()
        recorded = (resp.get("Metadata") or {}).get("sha256")
        if digest != key and not (data.startswith(MAGIC) and recorded == digest):
            self._forget(key)
            raise BlobCorrupt(
                f"blob {key} in {self.where} is corrupt: its {len(data)} bytes hash to {digest}"
                + (f" (recorded {recorded})" if recorded and recorded != key else "")
            )
        return data

    def missing(self, keys: Iterable[str]) -> list[str]:
        # after every batch commit (blobs.ensure): a HEAD a blob, in parallel rather than in a row
        keys = list(keys)
        if len(keys) <= 1 or self.threads <= 1:
            return [k for k in keys if not self.has(k)]
        with ThreadPoolExecutor(min(self.threads, len(keys))) as pool:
            return [k for k, there in zip(keys, pool.map(self.has, keys), strict=True) if not there]

    def has(self, key: str) -> bool:
        if self._head(key) is not None:
            return True
        self._forget(key)  # deleted behind us (an erasure, another replica's gc): put it for real
        return False

    def modified(self, key: str) -> float | None:
        """When the blob was last written or touched (epoch seconds); None when it is gone."""
        head = self._head(key)
        return None if head is None else float(head["LastModified"].timestamp())

    def delete(self, key: str) -> bool:
        # DELETE answers 204 whether the object existed or not: HEAD first, callers count removals
        self._forget(key)
        if self._head(key) is None:
            return False
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.name(key))
        except Exception as exc:
            raise self._fail("DELETE", key, exc) from None
        return True

    def keys(self, older_than: float = 0.0) -> Iterator[tuple[str, int]]:
        limit = time.time() - older_than
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(self.prefix) :]
                    if _is_key(name) and obj["LastModified"].timestamp() <= limit:
                        yield name, int(obj["Size"])
        except Exception as exc:
            raise self._fail("LIST", self.prefix or "(all)", exc) from None

    def usage(self) -> tuple[int, int]:
        """(blobs, bytes) held."""
        count = total = 0
        for _, size in self.keys():
            count, total = count + 1, total + size
        return count, total


def _code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (e.g. NoSuchKey, 404, SlowDown); None otherwise."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = (resp.get("Error") or {}).get("Code")
        status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code or status:
            return str(code or status)
    return None
