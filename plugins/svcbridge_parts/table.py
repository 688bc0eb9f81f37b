"""The small shop's ERP: a CSV file or an SQL table of stock, reservations in a table beside it.

``path`` is either a CSV file (UTF-8 with or without a BOM, or GB18030; a header row) or an
SQLAlchemy URL (``sqlite:///stock.db``, ``postgresql+psycopg://...``) whose ``parts_stock``
table has the same columns:

    part, name, category, models, depot, on_hand, reserved, lead_time_days, region

one row per part and depot (``models``: the models it fits, separated by ``;``). Reservations are
rows of ``parts_reservations`` (key primary key, part, depot, qty, state) in the same database (for a
CSV: a SQLite file ``<csv>.reservations.sqlite`` beside it, so the shop's file is never rewritten).
The key is the primary key: a second ``reserve`` with the same key finds the first row, and the insert
and the stock it sets aside are one transaction, so a crash never makes two.

Figures: on hand = the row's ``on_hand`` - parts consumed through svcbridge; reserved = the row's
``reserved`` + open reservations.
"""

from __future__ import annotations

import asyncio
import csv
import io
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, create_engine, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from svcbridge import (
    DepotStock,
    NotReady,
    PartStock,
    PermanentError,
    Reservation,
    UndecodableText,
    decode_legacy,
)

from .settings import ErpSettings

_meta = MetaData()
stock_t = Table(
    "parts_stock",
    _meta,
    Column("part", String(100), nullable=False),
    Column("name", String(300)),
    Column("category", String(50)),
    Column("models", String(1000)),
    Column("depot", String(100), nullable=False),
    Column("on_hand", Float),
    Column("reserved", Float),
    Column("lead_time_days", Float),
    Column("region", String(100)),
)
res_t = Table(
    "parts_reservations",
    _meta,
    Column("key", String(120), primary_key=True),
    Column("part", String(100), nullable=False),
    Column("depot", String(100), nullable=False),
    Column("qty", Float, nullable=False),
    Column("state", String(20), nullable=False),
)


class TableErp:
    """A ``svcbridge.PartsErp`` over a CSV file or an SQL table."""

    def __init__(self, cfg: ErpSettings) -> None:
        self.cfg, self.name = cfg, cfg.name
        self.csv: Path | None = None if "://" in cfg.path else Path(cfg.path)
        url = f"sqlite:///{self.csv}.reservations.sqlite" if self.csv else cfg.path
        self.engine: Engine = create_engine(url)
        self._ready = False
        self.ledger = Ledger(self.engine, cfg.name)

    def _setup(self) -> None:
        if not self._ready:
            if self.csv is None:
                _meta.create_all(self.engine, tables=[stock_t])
            self._ready = True

    def _rows(self, part: str | None = None) -> list[dict[str, Any]]:
        if self.csv is not None:
            try:
                raw = self.csv.read_bytes()
            except OSError as exc:
                raise NotReady(f"parts table {self.csv.name}: {exc.strerror}") from None
            rows = [dict(r) for r in csv.DictReader(io.StringIO(_decode(raw, self.csv.name), newline=""))]
        else:
            with self.engine.connect() as conn:
                q = select(stock_t) if part is None else select(stock_t).where(stock_t.c.part == part)
                rows = [dict(r._mapping) for r in conn.execute(q)]
        return [r for r in rows if part is None or (r.get("part") or "").strip() == part]

    def _sync(self, fn: Any, *args: Any) -> Any:
        try:
            self._setup()
            return fn(*args)
        except OperationalError as exc:  # locked, unreachable: try again later
            raise NotReady(f"parts table: {type(exc.orig).__name__}") from None

    async def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ lookups
    def _lookup(self, part: str) -> PartStock | None:
        rows = self._rows(part)
        if not rows:
            return None
        held = self.ledger.held(part)
        depots = []
        for r in rows:
            code = str(r["depot"]).strip()
            on_hand = _num(r.get("on_hand")) - held.get((code, "consumed"), 0.0)
            reserved = _num(r.get("reserved")) + held.get((code, "reserved"), 0.0)
            depots.append(
                DepotStock(
                    depot=code,
                    on_hand=on_hand,
                    reserved=reserved,
                    available=max(0.0, on_hand - reserved),
                    region=(r.get("region") or None),
                )
            )
        first = rows[0]
        lead = first.get("lead_time_days")
        return PartStock(
            part=part,
            name=str(first.get("name") or ""),
            category=(first.get("category") or None),
            depots=depots,
            erp=self.name,
            lead_time_days=_num(lead) if lead not in (None, "") else self.cfg.lead_time_days,
        )

    async def lookup(self, part: str) -> PartStock | None:
        return await asyncio.to_thread(self._sync, self._lookup, part)

    def _find(self, model: str, category: str) -> list[str]:
        model = model.strip().lower()
        out = {
            str(r["part"]).strip()
            for r in self._rows()
            if (r.get("category") or "").strip().lower() == category.lower()
            and model in [m.strip().lower() for m in str(r.get("models") or "").split(";")]
        }
        return sorted(out)

    async def find_parts(self, model: str, category: str) -> list[str]:
        return await asyncio.to_thread(self._sync, self._find, model, category)

    # ------------------------------------------------------------------ reservations
    def _reserve(self, key: str, part: str, qty: float, depot: str) -> Reservation:
        found = self.ledger.get(key)
        if found is not None and found.state != "released":
            return found
        stock = self._lookup(part)
        here = next((d for d in stock.depots if d.depot == depot), None) if stock else None
        if here is None:
            raise PermanentError(f"parts table: no part {part!r} at depot {depot!r}")
        return self.ledger.reserve(key, part, qty, depot, here.available)

    async def reserve(self, key: str, part: str, qty: float, depot: str) -> Reservation:
        return await asyncio.to_thread(self._sync, self._reserve, key, part, qty, depot)

    async def release(self, key: str) -> Reservation | None:
        return await asyncio.to_thread(self._sync, self.ledger.settle, key, "released")

    async def consume(self, key: str) -> Reservation | None:
        return await asyncio.to_thread(self._sync, self.ledger.settle, key, "consumed")


class Ledger:
    """Reservations kept by svcbridge in ``parts_reservations``, one row per key (the primary key).

    The table ERP's own; also the soft reservations of an ERP whose API has no reservation call in
    svcbridge's contract (Odoo, ERPNext, SAP B1 here): their availability is read from the ERP and
    what svcbridge set aside is subtracted, so two tickets never count on the same part.
    """

    def __init__(self, engine: Engine, erp: str) -> None:
        self.engine, self.erp = engine, erp
        self._lock = threading.Lock()  # SQLite: one writer; keeps check-then-insert atomic in-process
        self._ready = False

    def _ensure(self) -> None:
        if not self._ready:  # on first use, never at start-up: a database that is down must not fail it
            _meta.create_all(self.engine, tables=[res_t])
            self._ready = True

    def held(self, part: str) -> dict[tuple[str, str], float]:
        """Quantity per (depot, state) of this part's reservations."""
        self._ensure()
        with self.engine.connect() as conn:
            own = conn.execute(
                select(res_t.c.depot, res_t.c.state, func.sum(res_t.c.qty))
                .where(res_t.c.part == part)
                .group_by(res_t.c.depot, res_t.c.state)
            ).all()
        return {(d, s): float(q or 0) for d, s, q in own}

    def _get(self, conn: Any, key: str) -> Reservation | None:
        row = conn.execute(select(res_t).where(res_t.c.key == key)).first()
        if row is None:
            return None
        m = row._mapping
        return Reservation(
            key=key,
            part=m["part"],
            depot=m["depot"],
            qty=m["qty"],
            state=m["state"],
            erp=self.erp,
            external_id=key,
        )

    def get(self, key: str) -> Reservation | None:
        self._ensure()
        with self.engine.connect() as conn:
            return self._get(conn, key)

    def reserve(self, key: str, part: str, qty: float, depot: str, available: float) -> Reservation:
        """The reservation under ``key``: the existing one, or a new one (``waiting`` when
        ``available`` does not cover ``qty``); the key is the primary key, so never two."""
        self._ensure()
        with self._lock, self.engine.begin() as conn:
            found = self._get(conn, key)
            if found is not None and found.state != "released":
                return found
            state = "reserved" if available >= qty else "waiting"
            try:
                if found is not None:
                    conn.execute(
                        res_t.update().where(res_t.c.key == key).values(state=state, qty=qty, depot=depot)
                    )
                else:
                    conn.execute(res_t.insert().values(key=key, part=part, depot=depot, qty=qty, state=state))
            except IntegrityError:  # another process made it between our read and insert: theirs stands
                pass
        got = self.get(key)
        assert got is not None
        return got

    def settle(self, key: str, state: str) -> Reservation | None:
        self._ensure()
        with self._lock, self.engine.begin() as conn:
            found = self._get(conn, key)
            if found is None or found.state in ("released", "consumed"):
                return found
            conn.execute(res_t.update().where(res_t.c.key == key).values(state=state))
            return found.model_copy(update={"state": state})


def _decode(raw: bytes, name: str) -> str:
    """UTF-8 (with or without a BOM), else GB18030 or Big5, whichever reads as plausible text: what
    Excel / WPS on a Chinese Windows save as 'CSV' (the ANSI code page); a file that is none of them is
    refused with its name, not read as noise."""
    try:
        return decode_legacy(raw)[0]
    except UndecodableText as exc:
        raise PermanentError(f"parts table {name}: {exc}") from None


def _num(value: Any) -> float:
    try:
        return float(str(value).strip() or 0)
    except ValueError:
        return 0.0
