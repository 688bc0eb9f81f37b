"""The blob store the settings name: files under ``blob_dir`` or an S3-compatible bucket.

Its own module so that ``blobs`` (the interface and the files) and ``s3blobs`` (which builds on it)
do not import each other; boto3 is imported only when S3 is configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .blobs import BlobStore, LocalBlobs

if TYPE_CHECKING:
    from ..storesettings import StoreSettings


def open_blobs(store: StoreSettings, blob_dir: Path, kind: str | None = None) -> BlobStore:
    """The blob store ``[store]`` names (or ``kind``: "local" / "s3", for moving between them)."""
    if (kind or store.blobs) == "s3":
        if store.s3 is None:
            raise ValueError("the S3 blob store needs a [store.s3] table (bucket, endpoint_url...)")
        from .s3blobs import S3Blobs

        # touched again only when it could be near gc age: at most hourly, under a quarter of the grace
        return S3Blobs(store.s3, touch_after=min(3600.0, store.blob_grace_hours * 900))
    return LocalBlobs(blob_dir)
