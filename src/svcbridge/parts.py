"""Spare parts from the ERP: the contract an ERP connector follows, and the answers it gives.

An ERP connector (``PartsErp``, registered through the ``register_erps`` hook) answers four questions
for the after-sales layer, whatever the ERP (Tryton, Odoo, ERPNext, SAP Business One, a CSV file):

- ``lookup(part)``: the part's stock per warehouse / depot (on hand, reserved, available) and its
  lead time (``PartStock``); ``None`` when the ERP does not know the part number;
- ``find_parts(model, category)``: the part numbers of one category (``psu``, ``fan``) that fit a
  model, for a ticket that names a unit and a failed component but no part number;
- ``reserve(key, part, qty, depot)``: one reservation for a ticket. **Idempotent on ``key``**: the
  host calls it again after a crash between the ERP's commit and its own record, and the connector
  must then return the reservation it made (found by the key it stored in the ERP), never a second;
- ``release(key)`` / ``consume(key)``: the ticket was cancelled or the part not used (stock back),
  or the part was fitted (stock leaves the depot); both idempotent, ``None`` when nothing has that key.

Failures are raised as for sinks (``svcbridge.errors``): ``NotReady`` (429, 5xx, a network error: the
job retries), ``AuthFailed`` (after one re-login: the job kind parks with an alert), ``PermanentError``
(422, an unknown depot: the job is dead-lettered). Remote calls happen only in durable jobs, never in
the pipeline, so an ERP outage never holds up intake.

``order_depots`` puts the depots of the customer's region first (``regions`` maps a region to depot
codes, nearest first), then the rest by available quantity. Plain models and a Protocol only.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["DepotStock", "PartStock", "PartsErp", "Reservation", "order_depots", "reservation_key"]

_KEY = re.compile(r"^[A-Za-z0-9:._/-]{1,120}$")


class DepotStock(BaseModel):
    """One warehouse / depot's figures for a part (``available`` = on hand - reserved, never < 0)."""

    model_config = ConfigDict(extra="forbid")
    depot: str = Field(min_length=1, max_length=100, description="the ERP's warehouse code")
    name: str = Field(default="", max_length=200)
    on_hand: float = 0.0
    reserved: float = 0.0
    available: float = 0.0
    region: str | None = Field(default=None, max_length=100)


class PartStock(BaseModel):
    """A part as the ERP knows it, with its stock per depot (``depots`` ordered by ``order_depots``)."""

    model_config = ConfigDict(extra="forbid")
    part: str = Field(min_length=1, max_length=100)
    name: str = Field(default="", max_length=300)
    category: str | None = Field(default=None, max_length=50)
    depots: list[DepotStock] = Field(default_factory=list)
    lead_time_days: float | None = Field(default=None, ge=0, description="replenishment lead time")
    erp: str = ""

    @property
    def available(self) -> float:
        return sum(d.available for d in self.depots)


class Reservation(BaseModel):
    """A reservation the ERP holds for a ticket, named by the idempotency key the host gave it."""

    model_config = ConfigDict(extra="forbid")
    key: str
    part: str
    qty: float = Field(gt=0)
    depot: str
    state: Literal["reserved", "waiting", "released", "consumed"] = "reserved"
    external_id: str = Field(default="", description="the ERP's id (a shipment, a reservation row)")
    erp: str = ""

    @field_validator("key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not _KEY.match(v):
            raise ValueError(f"reservation key {v!r}: 1-120 of letters, digits, ':._/-'")
        return v


@runtime_checkable
class PartsErp(Protocol):
    """An ERP that answers for spare parts (see the module docstring for each method's contract)."""

    name: str

    async def lookup(self, part: str) -> PartStock | None: ...

    async def find_parts(self, model: str, category: str) -> list[str]: ...

    async def reserve(self, key: str, part: str, qty: float, depot: str) -> Reservation: ...

    async def release(self, key: str) -> Reservation | None: ...

    async def consume(self, key: str) -> Reservation | None: ...


def reservation_key(ticket_ref: str, part: str, generation: int = 0) -> str:
    """The idempotency key of a ticket's reservation of a part: the same after any crash or retry.

    A part number that is not plain ASCII (``PSU 750W``, ``电源模块``) or longer than 80 gets a digest
    of the whole number: cleaning alone made ``PSU 750W`` and ``PSU_750W`` (and every CJK name of one
    length) the same key, so a ticket's second part was answered with the first one's reservation.

    ``generation`` counts the reservations of that part for the ticket: a consumed reservation stays
    consumed under its key (the ERP answers 'consumed' to a reserve of it), so a ticket reopened after
    its part was fitted reserves the next generation (``...:r1``). The caller derives it from what it
    recorded (the ticket's label), so a re-run after a crash asks for the same key again."""
    clean = re.sub(r"[^A-Za-z0-9._/-]", "_", part)[:80]
    if clean != part:
        clean = clean[:60] + "." + hashlib.sha256(part.encode()).hexdigest()[:16]
    # generation 0 keeps the key every earlier reservation was made under; ':' never occurs in clean
    return f"svcbridge:{ticket_ref}:{clean}" + (f":r{generation}" if generation else "")


def order_depots(
    depots: list[DepotStock], region: str | None, regions: dict[str, list[str]] | None = None
) -> list[DepotStock]:
    """The customer's region's depots first, nearest first as configured; then the others by
    available quantity (most first), then code, so the order never depends on the ERP's."""
    near = [d.upper() for d in (regions or {}).get((region or "").lower(), [])]

    def rank(d: DepotStock) -> tuple[int, float, str]:
        code = d.depot.upper()
        if code in near:
            return (near.index(code), 0.0, code)
        if region and d.region and d.region.lower() == region.lower():
            return (len(near), -d.available, code)
        return (len(near) + 1, -d.available, code)

    return sorted(depots, key=rank)
