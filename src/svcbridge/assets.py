"""The asset register as plugins see it: units by serial, their parts, and how the host answers for them.

A unit (``AssetRecord``) is what a serial number stands for: customer, site, region, vendor, model,
product line, contract (with its time zone: warranty dates are calendar dates there), invoice and
production dates, and the parts installed in it (``AssetPart``). svcbridge keeps a local register in
its store (``svcbridge assets import``); an ERP or CMDB plugin may answer instead through the
``asset_lookup`` hook.

Plugins never reach the store. The host hands them an ``AssetLookup`` (the ``assets`` argument of
``classify_ticket`` / ``enrich_ticket``, and ``Host.assets`` for jobs and timers), one object that
asks the ``asset_lookup`` hook first and falls back to the local register; its ``register`` is the
local register, read-only (``AssetRegister``). Everything here is a plain model or a Protocol, so this
module imports nothing of the host.
"""

from __future__ import annotations

import re
from datetime import UTC as _UTC
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .models import Asset

__all__ = [
    "EXCLUSION_REASONS",
    "AssetLookup",
    "AssetPart",
    "AssetRecord",
    "AssetRegister",
    "normalize_serial",
]

# why the warranty does not apply, as an agent records it (``svcbridge assets exclude``, the helpdesk)
EXCLUSION_REASONS = ("misuse", "unauthorised_repair", "modification", "force_majeure", "consumable")

_SERIAL = re.compile(r"^[A-Z0-9][A-Z0-9-]{2,63}$")


def normalize_serial(value: str) -> str:
    """The register's key for a serial: upper case, no spaces; ValueError for anything else.

    Serials are compared case-insensitively (``sn 7xk2m9p`` in a mail is the register's ``7XK2M9P``).
    """
    serial = re.sub(r"\s+", "", str(value or "")).upper()
    if not _SERIAL.match(serial):
        raise ValueError(f"not a serial number: {value!r} (3-64 letters, digits, '-')")
    return serial


class AssetPart(BaseModel):
    """A part installed in a unit: its category decides its warranty term (``main``, ``chassis``...).

    ``replaced_from`` names the part it replaced (part number or serial): a replacement carries a new
    or the remaining period (warranty rules). ``paid_repair`` marks a part fitted in a paid repair.
    """

    model_config = ConfigDict(extra="forbid")
    category: str = Field(min_length=1, max_length=50)
    part_number: str = Field(default="", max_length=100)
    serial: str | None = Field(default=None, max_length=100)
    installed: date | None = None
    replaced_from: str | None = Field(default=None, max_length=100)
    paid_repair: bool = False

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        v = v.strip().lower()
        if not re.fullmatch(r"[a-z0-9_-]{1,50}", v):
            raise ValueError(f"part category {v!r}: lowercase letters, digits, '_-'")
        return v


# a unit's own columns (not serial, parts, source, extra): what an import reads and the store compares
UNIT_FIELDS = (
    "vendor",
    "model",
    "product_line",
    "customer",
    "site",
    "region",
    "contract",
    "timezone",
    "invoice_date",
    "production_date",
    "contacts",
)


class AssetRecord(BaseModel):
    """One unit of the register (or of an ERP's answer); ``source`` says who answered."""

    model_config = ConfigDict(extra="forbid")
    serial: str
    vendor: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=200)
    product_line: str | None = Field(default=None, max_length=100)
    customer: str | None = Field(default=None, max_length=300)
    site: str | None = Field(default=None, max_length=300)
    region: str | None = Field(default=None, max_length=100)
    contract: str | None = Field(default=None, max_length=100)
    timezone: str = Field(default="Asia/Shanghai", max_length=64, description="the contract's time zone")
    invoice_date: date | None = None
    production_date: date | None = None
    contacts: list[str] = Field(default_factory=list, description="e-mail addresses / E.164 phones")
    parts: list[AssetPart] = Field(default_factory=list)
    source: str = Field(default="register", description="register | erp | cmdb | vendor:<name>")
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("serial")
    @classmethod
    def _serial(cls, v: str) -> str:
        return normalize_serial(v)

    def as_asset(self) -> Asset:
        """The ticket's ``Asset`` for this unit (dates as midnight UTC of the calendar day)."""

        def at(d: date | None) -> datetime | None:
            return datetime(d.year, d.month, d.day, tzinfo=_UTC) if d else None

        return Asset(
            vendor=self.vendor,
            model=self.model,
            serial=self.serial,
            product_line=self.product_line,
            site=self.site,
            contract=self.contract,
            purchase_date=at(self.invoice_date),
            production_date=at(self.production_date),
        )


@runtime_checkable
class AssetRegister(Protocol):
    """svcbridge's own register, read-only (what the ``asset_lookup`` hook is given as ``register``).

    Each method is one short query; call them from a job or from an ``async def`` hook freely (the
    register is local, no remote system is involved).
    """

    def get(self, serial: str) -> AssetRecord | None:
        """The unit with that serial (any case), or ``None``."""
        ...

    def get_many(self, serials: list[str]) -> dict[str, AssetRecord]:
        """The known units among ``serials``, by normalised serial (unknown and invalid ones left out)."""
        ...

    def by_model(self, model: str) -> list[AssetRecord]:
        """Every unit of that model (case-insensitive), ordered by serial."""
        ...

    def exclusions(self, serial: str) -> list[dict[str, Any]]:
        """Warranty exclusions applied to the unit: ``{reason, part, actor, ticket, at, note}`` each."""
        ...

    def faults(self, category: str, since: datetime) -> list[dict[str, Any]]:
        """Tickets of that fault category created since ``since`` (aware), oldest first:
        ``{ticket, serial, model, customer, at}`` each (repeat-failure and batch-defect rules)."""
        ...


@runtime_checkable
class AssetLookup(Protocol):
    """The host's answer for a serial: the ``asset_lookup`` hook first, then the local register.

    The instance given to ``classify_ticket`` / ``enrich_ticket`` asks the hook with ``inline=True``
    (implementations answer only from what they hold locally); ``Host.assets`` asks with
    ``inline=False`` (a job, where a remote call is fine).
    """

    register: AssetRegister

    async def get(self, serial: str) -> AssetRecord | None:
        """The unit, from the first plugin that answers, else from the local register; ``None`` if
        nobody knows it or the serial is not valid."""
        ...

    def last_answer(self, system: str, serial: str) -> tuple[dict[str, Any], datetime] | None:
        """The answer a remote system (``vendor:dell``) last gave for the serial and when: a
        vendor lookup's TTL cache, and the stale answer used while that vendor is down. Sync (call
        it from a job)."""
        ...

    def keep_answer(self, system: str, serial: str, answer: dict[str, Any]) -> None:
        """Store a remote system's answer for the serial (plain JSON), replacing the last one."""
        ...
