"""``[store]`` settings: where blobs live and how long each kind of stored data is kept.

Kept beside ``settings.py`` (which only names the section) so storage options grow here.
Retention is in days; 0 or unset keeps that kind for ever. Nothing undelivered or quarantined is ever
removed by retention (``store/retention.py``), whatever the numbers say.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


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


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blob_dir: Path | None = Field(
        default=None,
        description="content-addressed blobs (raw messages, attachments); default <data_dir>/blobs. "
        "Replicas on several hosts need it on shared storage",
    )
    blob_grace_hours: float = Field(
        default=24.0, gt=0, description="an unreferenced blob is removed by gc only after this many hours"
    )
    source_lease_ttl: float = Field(
        default=10.0,
        ge=2.0,
        description="seconds a replica's lease on a source (mailbox, status poller) lasts unrenewed: "
        "how long the others wait for a replica that died on another host (replicas.py)",
    )
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
