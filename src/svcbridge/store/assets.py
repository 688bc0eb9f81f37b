"""The asset register in the store: units, their parts, exclusions and remote systems' last answers.

``AssetStore`` is the local ``svcbridge.AssetRegister`` (read-only side, what plugins get) plus the
writes the CLI (``svcbridge assets import``, ``warranty exclude``) and the host's ``AssetLookup``
(``keep_answer``) need. Every method is one short transaction; async callers use a thread.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from ..assets import UNIT_FIELDS, AssetPart, AssetRecord, normalize_serial
from ..models import utcnow
from . import schema as t
from .repo import Store

# the columns an import compares and writes (serial is the key, parts are compared as a list)
FIELDS = (*UNIT_FIELDS, "extra")


class AssetStore:
    """svcbridge's own asset register over the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ AssetRegister (read-only)
    def get(self, serial: str) -> AssetRecord | None:
        try:
            key = normalize_serial(serial)
        except ValueError:
            return None
        return self.get_many([key]).get(key)

    def get_many(self, serials: list[str]) -> dict[str, AssetRecord]:
        keys: set[str] = set()
        for s in serials:
            try:
                keys.add(normalize_serial(s))
            except ValueError:
                continue
        if not keys:
            return {}
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(t.assets).where(t.assets.c.serial.in_(sorted(keys)))).mappings().all()
            return self._records(conn, [dict(r) for r in rows])

    def by_model(self, model: str) -> list[AssetRecord]:
        with self.store.engine.connect() as conn:
            q = (
                select(t.assets)
                .where(t.assets.c.model_key == model.strip().lower())
                .order_by(t.assets.c.serial)
            )
            rows = [dict(r) for r in conn.execute(q).mappings()]
            found = self._records(conn, rows)
        return [found[r["serial"]] for r in rows]

    def exclusions(self, serial: str) -> list[dict[str, Any]]:
        try:
            key = normalize_serial(serial)
        except ValueError:
            return []
        q = (
            select(t.asset_exclusions)
            .where(t.asset_exclusions.c.serial == key)
            .order_by(t.asset_exclusions.c.id)
        )
        with self.store.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            {
                "reason": r["reason"],
                "part": r["part"],
                "actor": r["actor"],
                "ticket": r["ticket_ref"],
                "note": r["note"],
                "at": t.aware(r["at"]).isoformat(),
            }
            for r in rows
        ]

    def faults(self, category: str, since: datetime) -> list[dict[str, Any]]:
        q = (
            select(t.tickets.c.ref, t.tickets.c.asset, t.tickets.c.customer, t.tickets.c.created_at)
            .where(t.tickets.c.category == category, t.tickets.c.created_at >= since)
            .order_by(t.tickets.c.created_at, t.tickets.c.id)
        )
        with self.store.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = []
        for ref, asset, customer, at in rows:
            asset = asset or {}
            out.append(
                {
                    "ticket": ref,
                    "serial": str(asset.get("serial") or "").upper() or None,
                    "model": asset.get("model"),
                    "customer": customer,
                    "at": t.aware(at),
                }
            )
        return out

    # ------------------------------------------------------------------ listing (CLI)
    def listing(
        self, limit: int = 200, customer: str | None = None, model: str | None = None
    ) -> list[AssetRecord]:
        q = select(t.assets).order_by(t.assets.c.serial).limit(limit)
        if customer:
            q = q.where(t.assets.c.customer == customer)
        if model:
            q = q.where(t.assets.c.model_key == model.strip().lower())
        with self.store.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
            found = self._records(conn, rows)
        return [found[r["serial"]] for r in rows]

    def count(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.assets)).scalar_one())

    # ------------------------------------------------------------------ writes
    def upsert(self, record: AssetRecord, dry_run: bool = False) -> tuple[str, list[str]]:
        """Add or update one unit and replace its parts: ``("added" | "changed" | "unchanged", fields)``.

        ``fields`` names what changed. With ``dry_run`` the transaction is rolled back, so the
        answer is what an import would do."""
        values = _row(record)
        conn_cm = self.store.engine.connect() if dry_run else self.store.tx()
        with conn_cm as conn:
            old_row = (
                conn.execute(select(t.assets).where(t.assets.c.serial == record.serial)).mappings().first()
            )
            now = utcnow()
            if old_row is None:
                if not dry_run:
                    conn.execute(insert(t.assets), {**values, "created_at": now, "updated_at": now})
                    self._write_parts(conn, record)
                return "added", []
            old = self._records(conn, [dict(old_row)])[record.serial]
            changed = [f for f in FIELDS if getattr(old, f) != getattr(record, f)]
            if old.parts != record.parts:
                changed.append("parts")
            if not changed:
                return "unchanged", []
            if not dry_run:
                conn.execute(
                    update(t.assets).where(t.assets.c.serial == record.serial), {**values, "updated_at": now}
                )
                conn.execute(delete(t.asset_parts).where(t.asset_parts.c.serial == record.serial))
                self._write_parts(conn, record)
            return "changed", changed

    def add_exclusion(
        self,
        serial: str,
        reason: str,
        *,
        actor: str,
        part: str | None = None,
        note: str | None = None,
        ticket_ref: str | None = None,
    ) -> dict[str, Any]:
        """Record an exclusion on a registered unit (KeyError when the unit is not registered)."""
        key = normalize_serial(serial)
        now = utcnow()
        with self.store.tx() as conn:
            if conn.execute(select(t.assets.c.serial).where(t.assets.c.serial == key)).first() is None:
                raise KeyError(key)
            row = {"serial": key, "part": part, "reason": reason, "note": note, "actor": actor}
            conn.execute(insert(t.asset_exclusions), {**row, "ticket_ref": ticket_ref, "at": now})
        return {**row, "ticket": ticket_ref, "at": now.isoformat()}

    def last_answer(self, system: str, serial: str) -> tuple[dict[str, Any], datetime] | None:
        q = select(t.asset_answers.c.answer, t.asset_answers.c.at).where(
            t.asset_answers.c.system == system, t.asset_answers.c.serial == serial.upper()
        )
        with self.store.engine.connect() as conn:
            row = conn.execute(q).first()
        return (dict(row[0]), t.aware(row[1])) if row else None

    def keep_answer(self, system: str, serial: str, answer: dict[str, Any]) -> None:
        key = {"system": system, "serial": serial.upper()}
        with self.store.tx() as conn:
            conn.execute(
                delete(t.asset_answers).where(
                    t.asset_answers.c.system == key["system"], t.asset_answers.c.serial == key["serial"]
                )
            )
            conn.execute(insert(t.asset_answers), {**key, "answer": answer, "at": utcnow()})

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _write_parts(conn: Connection, record: AssetRecord) -> None:
        rows = [
            {
                "serial": record.serial,
                "position": i,
                "category": p.category,
                "part_number": p.part_number,
                "part_serial": p.serial,
                "installed": p.installed,
                "replaced_from": p.replaced_from,
                "paid_repair": p.paid_repair,
            }
            for i, p in enumerate(record.parts)
        ]
        if rows:
            conn.execute(insert(t.asset_parts), rows)

    @staticmethod
    def _records(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, AssetRecord]:
        if not rows:
            return {}
        serials = [r["serial"] for r in rows]
        parts: dict[str, list[AssetPart]] = {s: [] for s in serials}
        q = (
            select(t.asset_parts)
            .where(t.asset_parts.c.serial.in_(serials))
            .order_by(t.asset_parts.c.serial, t.asset_parts.c.position)
        )
        for p in conn.execute(q).mappings():
            parts[p["serial"]].append(
                AssetPart(
                    category=p["category"],
                    part_number=p["part_number"],
                    serial=p["part_serial"],
                    installed=p["installed"],
                    replaced_from=p["replaced_from"],
                    paid_repair=bool(p["paid_repair"]),
                )
            )
        return {
            r["serial"]: AssetRecord(
                serial=r["serial"],
                **{f: r[f] for f in FIELDS if r[f] is not None},
                parts=parts[r["serial"]],
            )
            for r in rows
        }


def _row(record: AssetRecord) -> dict[str, Any]:
    values = {f: getattr(record, f) for f in FIELDS}
    values["serial"] = record.serial
    values["model_key"] = record.model.strip().lower() if record.model else None
    return values
