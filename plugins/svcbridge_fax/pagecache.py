"""Text of fax pages already read, so a job that runs again after a crash does not OCR them twice.

A ``kill -9`` between Tesseract's answer and the job's record makes the job run again (its effects
are recorded once, by the job runner). The pages it had read are kept here as one small JSON file per
page, keyed by the document's SHA-256, the page's number in it and the languages, written atomically
(temp file + rename) as each page is read; the second run reads them back instead of calling
Tesseract. Files older than ``ttl`` (2 days) are removed when a job starts: a cache, never a record,
and customer text should not outlive its use here (an erasure of the ticket does not reach it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path


class PageCache:
    def __init__(self, directory: Path, ttl: float = 2 * 86400) -> None:
        self.directory, self.ttl = directory, ttl

    def _path(self, doc_sha: str, index: int, languages: list[str]) -> Path:
        langs = hashlib.sha256("+".join(languages).encode()).hexdigest()[:8]
        return self.directory / f"{doc_sha}-{index}-{langs}.json"

    def get(self, doc_sha: str, index: int, languages: list[str]) -> tuple[str, float | None] | None:
        try:
            found = json.loads(self._path(doc_sha, index, languages).read_text("utf-8"))
            return str(found["text"]), found.get("confidence")
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(
        self, doc_sha: str, index: int, languages: list[str], text: str, confidence: float | None
    ) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._path(doc_sha, index, languages)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"text": text, "confidence": confidence}, ensure_ascii=False), "utf-8")
            tmp.replace(path)
        except OSError:  # a full disk costs a second OCR after a crash, never the job
            pass

    def prune(self) -> None:
        cutoff = time.time() - self.ttl
        try:
            entries = list(self.directory.iterdir())
        except OSError:
            return
        for p in entries:
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                continue
