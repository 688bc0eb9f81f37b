"""The raw bytes of messages this process has just journaled, kept for the pipeline that reads them next.

Intake journals a batch (the raw mail split into a skeleton and decoded parts, blobs written) and the
pipeline then loads the same entries back: it read every blob again and joined the skeleton, and hashed
the bytes once more in the event loop's thread, about a fifth of the CPU of ingesting attachment-heavy
mail (issue 19). The bytes are still in this process at the time, so the journal keeps them here, by
content hash, until the pipeline takes them (each once) or the bound pushes them out; a reader that
finds nothing here loads from the store as before (another process journaled it, or it was pushed out).

Bounded by bytes (oldest out first), so memory does not grow with the backlog. Only entries whose
stored row still holds the message (``raw`` or ``blob_ref``, same size) are taken: an entry purged or
erased meanwhile is read from the store, never from here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_BYTES = 48 * 1024 * 1024


class RecentRaws:
    def __init__(self, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # intake threads put, the pipeline's loader takes

    def put(self, content_hash: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:  # a single huge mail would push everything else out
            return
        with self._lock:
            old = self._items.pop(content_hash, None)
            if old is not None:
                self._size -= len(old)
            self._items[content_hash] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _key, gone = self._items.popitem(last=False)
                self._size -= len(gone)

    def take(self, content_hash: str, size: int | None) -> bytes | None:
        """The bytes journaled under this hash (once), if still here and of the stored size."""
        with self._lock:
            data = self._items.get(content_hash)
            if data is None or size is None or len(data) != size:
                return None
            del self._items[content_hash]
            self._size -= len(data)
            return data

    def __len__(self) -> int:
        return len(self._items)
