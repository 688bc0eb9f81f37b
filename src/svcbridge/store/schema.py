"""Table definitions (SQLAlchemy Core). Alembic migrations in ``svcbridge/migrations`` create them.

Why Core and not the ORM: every write path is a short, explicit transaction (journal insert, one
pipeline commit, one outbox transition), and the rows cross hook boundaries as pydantic models anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite would otherwise hand back naive datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


TS = UTCDateTime()


def aware(value: datetime | str) -> datetime:
    """A timestamp read past the type decorator (``func.min`` on SQLite gives text or a naive value)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

journal = Table(
    "journal",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("external_id", String(500), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", TS, nullable=False),
    Column("raw", LargeBinary, nullable=True),
    Column("blob_ref", String(500), nullable=True),
    Column("meta", JSON, nullable=False, default=dict),
    # pending -> processed | duplicate | quarantined | dropped
    Column("status", String(20), nullable=False, default="pending"),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("processed_at", TS, nullable=True),
    # blob store (store/blobs.py, migration 0012): the raw message's size, the part blobs its stored
    # form references (space-separated sha256), when retention or erasure removed the raw message
    Column("size", BigInteger, nullable=True),
    Column("blob_parts", Text, nullable=True),
    Column("purged_at", TS, nullable=True),
    UniqueConstraint("source", "external_id", name="uq_journal_source_extid"),
)
Index("ix_journal_status", journal.c.status, journal.c.id)
Index("ix_journal_hash", journal.c.content_hash)

# who erased a person's data and when (``svcbridge contacts erase``, store/erasure.py): the person
# only as a keyed hash of the address, so the trail shows a request was carried out without naming them
erasures = Table(
    "erasures",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("by", String(200), nullable=False),
    Column("subject_hash", String(64), nullable=False),
    Column("counts", JSON, nullable=False, default=dict),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ref", String(40), nullable=True, unique=True),
    Column("state", String(30), nullable=False),
    Column("channel", String(50), nullable=False),
    Column("source", String(200), nullable=True),
    Column("subject", Text, nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("contact", JSON, nullable=False, default=dict),
    # copies of the contact's addresses, indexed: "the open ticket of this customer" (SMS threading,
    # repeat-failure detection) must not scan JSON
    Column("contact_email", String(320), nullable=True),
    Column("contact_phone", String(32), nullable=True),
    Column("customer", String(300), nullable=True),
    Column("asset", JSON, nullable=False, default=dict),
    Column("priority", Integer, nullable=False, default=3),
    Column("fault_level", String(20), nullable=True),
    Column("sla_policy", String(100), nullable=True),
    Column("language", String(20), nullable=True),
    Column("deadlines", JSON, nullable=False, default=dict),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    # what classification and enrichment found (warranty, repeat failure, ...) and the fault category
    Column("labels", JSON, nullable=False, default=dict),
    Column("category", String(100), nullable=True),
)
Index("ix_tickets_state", tickets.c.state)
Index("ix_tickets_contact_email", tickets.c.contact_email)
Index("ix_tickets_contact_phone", tickets.c.contact_phone)

events = Table(
    "ticket_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=False),
    Column("type", String(50), nullable=False),
    Column("at", TS, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("data", JSON, nullable=False, default=dict),
    Column("journal_id", Id, ForeignKey("journal.id"), nullable=True),
)
Index("ix_events_ticket", events.c.ticket_id, events.c.id)

links = Table(
    "links",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=False),
    Column("system", String(100), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("value", String(1000), nullable=False),
    UniqueConstraint("system", "kind", "value", name="uq_links_value"),
)
Index("ix_links_ticket", links.c.ticket_id)
Index("ix_links_value", links.c.value)  # batch prefetch by value (overlay.Overlay)

attachments = Table(
    "attachments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=False),
    Column("journal_id", Id, ForeignKey("journal.id"), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("safe_name", String(100), nullable=False),
    Column("original_name", Text, nullable=True),
    Column("content_id", String(500), nullable=True),
    Column("data", LargeBinary, nullable=True),
)
Index("ix_attachments_ticket", attachments.c.ticket_id)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # create | update | notify
    Column("target", String(200), nullable=False),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("payload", JSON, nullable=False, default=dict),
    # pending -> done | dead | parked (auth failed; replayed after the fix)
    Column("status", String(20), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("done_at", TS, nullable=True),
    Column("claimed_by", String(100), nullable=True),
    Column("claimed_until", TS, nullable=True),
    # set in the transaction before a notice without idempotency key goes out (settler.py): after a
    # kill -9 the restart knows this one may have been sent
    Column("inflight_at", TS, nullable=True),
)
Index("ix_outbox_due", outbox.c.status, outbox.c.next_attempt_at)
Index("ix_outbox_ticket", outbox.c.ticket_id, outbox.c.id)
Index("ix_outbox_done", outbox.c.status, outbox.c.done_at)  # the limiter seed: done items in a window

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("journal_id", Id, ForeignKey("journal.id"), nullable=False),
    Column("stage", String(50), nullable=False),
    Column("plugin", String(200), nullable=True),
    Column("error", Text, nullable=False),
    Column("traceback", Text, nullable=True),
    Column("at", TS, nullable=False),
    Column("resolved", Boolean, nullable=False, default=False),
)
Index("ix_quarantine_open", quarantine.c.resolved, quarantine.c.id)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("source", String(200), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", TS, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", TS, nullable=False),
)

# Idempotent consumer for status updates from helpdesks / vendors (webhook redeliveries).
seen_updates = Table(
    "seen_updates",
    metadata,
    Column("system", String(100), primary_key=True),
    Column("event_id", String(300), primary_key=True),
    Column("at", TS, nullable=False),
)

# Named counters (ticket numbers). Allocated in their own short transaction so the number is known
# before the pipeline composes notifications; a crash leaves a gap, never a duplicate.
counters = Table(
    "counters",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Durable jobs (jobs.py): remote lookups and other slow work a plugin asks for, run after the ticket
# is committed, never inside the pipeline's batch. One row per (kind, key): asking again is a no-op.
jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(100), nullable=False),
    Column("key", String(300), nullable=False),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=True),
    Column("data", JSON, nullable=False, default=dict),
    # pending -> done | dead | parked (credentials refused; back to pending on start) | cancelled
    Column("status", String(20), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("runs", Integer, nullable=False, default=0),  # claims so far: names each run's changes
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("done_at", TS, nullable=True),
    Column("claimed_by", String(100), nullable=True),
    Column("claimed_until", TS, nullable=True),
    UniqueConstraint("kind", "key", name="uq_jobs_kind_key"),
)
Index("ix_jobs_due", jobs.c.status, jobs.c.next_attempt_at)
Index("ix_jobs_ticket", jobs.c.ticket_id)

# Durable timers (timers.py): one row per (scope, name); scheduling the same name again moves it.
# scope is a ticket's reference, or "" for timers that belong to no ticket (a monthly report).
timers = Table(
    "timers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("scope", String(100), nullable=False),
    Column("name", String(100), nullable=False),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=True),
    Column("due_at", TS, nullable=False),
    Column("data", JSON, nullable=False, default=dict),
    # pending -> fired | cancelled | dead (its handler kept failing)
    Column("status", String(20), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("runs", Integer, nullable=False, default=0),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("fired_at", TS, nullable=True),
    Column("late_s", Float, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("claimed_by", String(100), nullable=True),
    Column("claimed_until", TS, nullable=True),
    UniqueConstraint("scope", "name", name="uq_timers_scope_name"),
)
Index("ix_timers_due", timers.c.status, timers.c.next_attempt_at)
Index("ix_timers_ticket", timers.c.ticket_id)

# the console's tickets-per-hour (console/facts.py) reads the last 24 hours on every refresh
Index("ix_tickets_created", tickets.c.created_at)

# Operator console (console/): accounts, their sessions and the audit trail of every console action.
# Passwords are argon2id hashes; a session row keeps only the SHA-256 of its cookie value.
operators = Table(
    "operators",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(100), nullable=False, unique=True),
    Column("password_hash", String(300), nullable=False),
    Column("role", String(20), nullable=False, default="admin"),  # admin | readonly
    Column("tz", String(64), nullable=True),  # the operator's time zone for dates on the pages
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("operator_id", Id, ForeignKey("operators.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
)
Index("ix_console_sessions_operator", console_sessions.c.operator_id)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("target", String(300), nullable=True),
    Column("detail", JSON, nullable=False, default=dict),
)
Index("ix_audit_log_at", audit_log.c.at)

# Console login rate limit (console/throttle.py), shared by every replica: one row per attempt counted
# (per user name and per client address, in the sliding window) and one row per key with its lockout.
login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(200), nullable=False),
    Column("at", TS, nullable=False),
)
Index("ix_login_attempts_key_at", login_attempts.c.key, login_attempts.c.at)
Index("ix_login_attempts_at", login_attempts.c.at)  # the cleanup

login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("strikes", Integer, nullable=False, default=0),  # lockouts in a row: each doubles the next
    Column("locked_until", TS, nullable=True),
    Column("noted_at", TS, nullable=True),  # when the lockout was last audited (once per window)
    Column("touched_at", TS, nullable=False),
)

# SMS opt-outs (store/optouts.py, svcbridge_sms): who said STOP / 退订, read before every SMS is sent;
# in the store so every replica sees it (it was a SQLite file in one replica's data_dir)
sms_optouts = Table(
    "sms_optouts",
    metadata,
    Column("phone", String(32), primary_key=True),  # E.164
    Column("at", TS, nullable=False),  # when they said it: a START older than the STOP does not undo it
    Column("word", String(40), nullable=False),
    Column("source", String(100), nullable=False),
)

# Asset register (svcbridge.assets, store/assets.py): units by serial, the parts installed in them,
# warranty exclusions an agent applied, and remote systems' last answers per serial (vendor warranty
# lookups: the TTL cache and the stale answer used while a vendor is down).
assets = Table(
    "assets",
    metadata,
    Column("serial", String(64), primary_key=True),  # normalised: upper case, no spaces
    Column("vendor", String(100), nullable=True),
    Column("model", String(200), nullable=True),
    Column("model_key", String(200), nullable=True),  # lower-cased model, for by_model
    Column("product_line", String(100), nullable=True),
    Column("customer", String(300), nullable=True),
    Column("site", String(300), nullable=True),
    Column("region", String(100), nullable=True),
    Column("contract", String(100), nullable=True),
    Column("timezone", String(64), nullable=False, default="Asia/Shanghai"),
    Column("invoice_date", Date, nullable=True),
    Column("production_date", Date, nullable=True),
    Column("contacts", JSON, nullable=False, default=list),
    Column("extra", JSON, nullable=False, default=dict),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index("ix_assets_model_key", assets.c.model_key)
Index("ix_assets_customer", assets.c.customer)

asset_parts = Table(
    "asset_parts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("serial", String(64), ForeignKey("assets.serial"), nullable=False),
    Column("position", Integer, nullable=False),  # the order the import gave
    Column("category", String(50), nullable=False),
    Column("part_number", String(100), nullable=False, default=""),
    Column("part_serial", String(100), nullable=True),
    Column("installed", Date, nullable=True),
    Column("replaced_from", String(100), nullable=True),
    Column("paid_repair", Boolean, nullable=False, default=False),
)
Index("ix_asset_parts_serial", asset_parts.c.serial, asset_parts.c.position)

asset_exclusions = Table(
    "asset_exclusions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("serial", String(64), ForeignKey("assets.serial"), nullable=False),
    Column("part", String(50), nullable=True),  # a part category, or NULL: the whole unit
    Column("reason", String(50), nullable=False),  # misuse | unauthorised_repair | force_majeure | ...
    Column("note", Text, nullable=True),
    Column("actor", String(200), nullable=False),
    Column("ticket_ref", String(40), nullable=True),
    Column("at", TS, nullable=False),
)
Index("ix_asset_exclusions_serial", asset_exclusions.c.serial)

asset_answers = Table(
    "asset_answers",
    metadata,
    Column("system", String(100), primary_key=True),  # vendor:dell, erp, ...
    Column("serial", String(64), primary_key=True),
    Column("answer", JSON, nullable=False, default=dict),
    Column("at", TS, nullable=False),
)

# RMAs (rma.py, store/rmas.py): a faulty part on its way back to the maker, one row per RMA of a ticket.
# source_key makes opening idempotent (an agent's /rma command read twice, a CLI retried).
rmas = Table(
    "rmas",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id"), nullable=False),
    Column("vendor", String(100), nullable=False),
    Column("number", String(100), nullable=True),  # the vendor's RMA number, once known
    Column("state", String(30), nullable=False),
    Column("parts", JSON, nullable=False, default=list),
    Column("asset", JSON, nullable=False, default=dict),
    Column("fault", Text, nullable=True),
    Column("carrier", String(100), nullable=True),
    Column("tracking", String(100), nullable=True),
    Column("source", String(200), nullable=False),
    Column("source_key", String(300), nullable=True, unique=True),
    Column("data", JSON, nullable=False, default=dict),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),  # the last transition: the vendor reminder counts from it
)
Index("ix_rmas_ticket", rmas.c.ticket_id)
Index("ix_rmas_vendor_number", rmas.c.vendor, rmas.c.number)
