"""``[store]`` settings: where blobs live and how long each kind of stored data is kept.

Kept beside ``settings.py`` (which only names the section) so storage options grow here.
Retention is in days; 0 or unset keeps that kind for ever. Nothing undelivered or quarantined is ever
removed by retention (``store/retention.py``), whatever the numbers say.

``blobs = "s3"`` keeps the blobs in an S3-compatible bucket (``[store.s3]``, ``store/s3blobs.py``).
Its secret key is never read from the TOML file: ``secret_access_key_file`` or the environment
(``SVCBRIDGE_STORE__S3__SECRET_ACCESS_KEY``); a clear value in the file is refused at start.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

# the raw TOML of the load in progress (settings.load_settings sets it): a validator here tells a
# secret written in the file from one given by the environment; kept here, settings.py imports us
RAW_TOML: ContextVar[dict[str, Any] | None] = ContextVar("svcbridge_toml", default=None)


class RetentionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    raw_days: float | None = Field(
        default=None,
        ge=0,
        description="raw messages of tickets that are closed and fully delivered, this many days after "
        "the ticket's last change (the parsed ticket, its trail and files stay)",
    )
    attachments_days: float | None = Field(
        default=None, ge=0, description="attachment bytes of closed, fully delivered tickets (metadata stays)"
    )
    duplicates_days: float | None = Field(
        default=None, ge=0, description="journal rows of duplicates (their raw message too)"
    )
    outbox_days: float | None = Field(
        default=None, ge=0, description="delivered (done) outbox rows; pending, dead and parked ones stay"
    )
    events_days: float | None = Field(
        default=None,
        ge=0,
        description="bookkeeping trail entries (delivered, notified, received_again) of closed tickets",
    )
    every_hours: float = Field(default=6.0, gt=0, description="how often the daemon runs retention")


class S3Settings(BaseModel):
    """An S3-compatible bucket for the blobs (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage...)."""

    model_config = ConfigDict(extra="forbid")
    endpoint_url: str | None = Field(
        default=None,
        description="e.g. https://s3.example.net:9000; unset: AWS S3 of `region`. Trusted operator "
        "configuration: not subject to the outbound HTTP guard (loopback and private hosts are allowed)",
    )
    bucket: str = Field(min_length=3, max_length=63, description="an existing bucket")
    region: str = "us-east-1"
    prefix: str = Field(default="", description="key prefix inside the bucket, e.g. 'svcbridge/blobs/'")
    access_key_id: str | None = Field(
        default=None, description="unset with no secret either: boto's own chain (AWS_* env, instance role)"
    )
    secret_access_key: SecretStr | None = Field(
        default=None,
        description="only from $SVCBRIDGE_STORE__S3__SECRET_ACCESS_KEY or secret_access_key_file, "
        "never in the TOML",
    )
    secret_access_key_file: Path | None = Field(default=None, description="file holding the secret key")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="'path' for most self-hosted servers (bucket in the path, not the host)"
    )
    verify_tls: bool = Field(default=True, description="check the endpoint's certificate")
    ca_bundle: Path | None = Field(default=None, description="CA file for a private endpoint's certificate")
    threads: int = Field(default=8, ge=1, le=64, description="requests in flight at once for one batch")
    max_attempts: int = Field(
        default=5, ge=1, description="tries of a request on 5xx, throttling and connection errors (botocore)"
    )
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _secret_not_in_file(cls, data: Any) -> Any:
        raw = ((RAW_TOML.get() or {}).get("store") or {}).get("s3") or {}
        if isinstance(raw, dict) and "secret_access_key" in raw:
            raise ValueError(
                "secret_access_key must not be written in the config file: use secret_access_key_file "
                "or the environment variable SVCBRIDGE_STORE__S3__SECRET_ACCESS_KEY"
            )
        return data

    @model_validator(mode="after")
    def _read_secret_file(self) -> S3Settings:
        if self.secret_access_key_file is not None:
            try:
                value = self.secret_access_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"secret_access_key_file: cannot read it: {exc.strerror}") from None
            self.secret_access_key = SecretStr(value)
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and the secret key, or neither (boto's own chain)")
        return self


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blobs: Literal["local", "s3"] = Field(
        default="local", description="where blobs live: files under blob_dir, or the bucket of [store.s3]"
    )
    s3: S3Settings | None = None
    blob_dir: Path | None = Field(
        default=None,
        description="content-addressed blobs (raw messages, attachments); default <data_dir>/blobs. "
        "Replicas on several hosts need it on shared storage, or blobs = \"s3\"",
    )
    blob_grace_hours: float = Field(
        default=24.0, gt=0, description="an unreferenced blob is removed by gc only after this many hours"
    )
    source_lease_ttl: float = Field(
        # 7 s: a replica that died on another host is noticed when its lease runs out, at the next
        # heartbeat of another (a third of this later): 9.3 s at most, within issue 19's 10 s
        default=7.0,
        ge=2.0,
        description="seconds a replica's lease on a source (mailbox, status poller) lasts unrenewed: "
        "how long the others wait for a replica that died on another host (replicas.py)",
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    @model_validator(mode="after")
    def _s3_configured(self) -> StoreSettings:
        if self.blobs == "s3" and self.s3 is None:
            raise ValueError('blobs = "s3" needs a [store.s3] table (bucket, endpoint_url...)')
        return self
