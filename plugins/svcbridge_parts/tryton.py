"""Tryton over JSON-RPC: stock per warehouse, and reservations as internal shipments.

Tryton (``trytond`` + ``trytond-stock``) answers at ``POST {url}/{database}/rpc/``. Login is
``common.db.login`` -> ``[user_id, session]``; every later call carries
``Authorization: Session base64(user:user_id:session)``. An expired session answers 401/403: the
connector logs in again once and repeats the call; a second refusal is ``AuthFailed``.

Figures per depot: ``stock.location`` of type ``warehouse`` read with ``context.product`` gives
``quantity`` (on hand, done moves) and, with ``stock_assign``, the quantity not yet assigned to
outgoing moves; the difference is what is reserved.

A reservation is an internal shipment from the depot's storage zone to the consumption location
(``consume_location``, default Tryton's Lost and Found) whose ``reference`` is the idempotency key,
waited and assigned (``assign_try``: the stock is set aside). ``reserve`` first searches a live
shipment with that reference, so a re-run after a crash continues the one it made instead of creating
a second. ``release`` cancels it (stock back), ``consume`` does it (the part left the depot).
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from svcbridge import (
    AuthFailed,
    DepotStock,
    NotReady,
    PartStock,
    PermanentError,
    Reservation,
    http_request,
    make_client,
)

from .settings import ErpSettings

_STATE = {
    "draft": "waiting",
    "request": "waiting",
    "waiting": "waiting",
    "assigned": "reserved",
    "packed": "reserved",
    "shipped": "reserved",
    "done": "consumed",
    "cancelled": "released",
}


class TrytonErp:
    """A ``svcbridge.PartsErp`` speaking Tryton's JSON-RPC."""

    def __init__(self, cfg: ErpSettings, allow: list[str] | None = None) -> None:
        self.cfg, self.name = cfg, cfg.name
        self.client: httpx.AsyncClient | None = None
        self.allow = list(allow or [])
        self.auth = ""
        self._ids: dict[str, Any] = {}

    # ------------------------------------------------------------------ transport
    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = make_client(
                self.cfg.url.rstrip("/"),
                timeout=self.cfg.timeout,
                transport=self.cfg.transport,
                allow=self.allow,
            )
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def _post(self, method: str, params: list[Any]) -> Any:
        headers = {"Authorization": "Session " + self.auth} if self.auth else {}
        resp = await http_request(
            self._client(),
            "POST",
            f"/{self.cfg.database}/rpc/",
            f"tryton {method.split('.')[-1]}",
            json={"id": 1, "method": method, "params": params},
            headers=headers,
        )
        data = resp.json()
        err = data.get("error") if isinstance(data, dict) else None
        if err:
            kind = str(err[0]) if isinstance(err, list) and err else str(err)
            if kind.startswith(("403", "401")) or "Unauthorized" in kind:
                raise AuthFailed(f"tryton {method}: {kind}")
            if kind in ("ConcurrencyException", "TooManyRequests") or kind.startswith("503"):
                raise NotReady(f"tryton {method}: {kind}")
            # a UserError / UserWarning / AccessError: the ERP refused the data; retrying will not help
            raise PermanentError(
                f"tryton {method}: {kind}: {str(err[1:] if isinstance(err, list) else '')[:300]}"
            )
        return data.get("result")

    async def _login(self) -> None:
        self.auth = ""
        res = await self._post(
            "common.db.login", [self.cfg.user, {"password": self.cfg.password.get_secret_value()}, "en"]
        )
        if not res:
            raise AuthFailed("tryton login refused")
        self.auth = base64.b64encode(f"{self.cfg.user}:{res[0]}:{res[1]}".encode()).decode()

    async def call(self, model: str, method: str, *args: Any, context: dict[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*args, context)``; one re-login when the session ran out."""
        if not self.auth:
            await self._login()
        params = [*args, context or {}]
        try:
            return await self._post(f"model.{model}.{method}", params)
        except AuthFailed:
            await self._login()
            return await self._post(f"model.{model}.{method}", params)

    async def search_read(
        self, model: str, domain: list[Any], fields: list[str], **ctx: Any
    ) -> list[dict[str, Any]]:
        return await self.call(model, "search_read", domain, 0, None, None, fields, context=ctx)

    # ------------------------------------------------------------------ lookups
    async def _product(self, part: str) -> dict[str, Any] | None:
        found = await self.search_read(
            "product.product", [["code", "=", part]], ["id", "code", "rec_name", "template", "default_uom"]
        )
        return found[0] if found else None

    async def _company(self) -> int:
        if "company" not in self._ids:
            found = await self.search_read("company.company", [], ["id"])
            if not found:
                raise PermanentError("tryton: no company configured")
            self._ids["company"] = found[0]["id"]
        return int(self._ids["company"])

    async def lookup(self, part: str) -> PartStock | None:
        product = await self._product(part)
        if product is None:
            return None
        fields = ["id", "code", "name", "quantity"]
        on_hand = await self.search_read(
            "stock.location", [["type", "=", "warehouse"]], fields, product=product["id"]
        )
        free = await self.search_read(
            "stock.location",
            [["type", "=", "warehouse"]],
            ["id", "quantity"],
            product=product["id"],
            stock_assign=True,
        )
        free_by = {r["id"]: float(r["quantity"] or 0) for r in free}
        depots = []
        for r in on_hand:
            if not r.get("code") or r["code"] in self.cfg.skip_depots:
                continue
            qty, avail = float(r["quantity"] or 0), max(0.0, free_by.get(r["id"], 0.0))
            depots.append(
                DepotStock(
                    depot=r["code"],
                    name=r.get("name") or "",
                    on_hand=qty,
                    reserved=max(0.0, qty - avail),
                    available=avail,
                )
            )
        cats = await self.search_read("product.template", [["id", "=", product["template"]]], ["categories"])
        category = None
        if cats and cats[0].get("categories"):
            names = await self.search_read(
                "product.category", [["id", "in", cats[0]["categories"]]], ["name"]
            )
            category = names[0]["name"] if names else None
        return PartStock(
            part=product["code"],
            name=str(product.get("rec_name") or ""),
            category=category,
            depots=depots,
            lead_time_days=self.cfg.lead_time_days,
            erp=self.name,
        )

    async def find_parts(self, model: str, category: str) -> list[str]:
        """Products of the category whose description names the model (``Fits: PowerEdge R740``)."""
        domain = [["template.categories.name", "=", category], ["description", "ilike", f"%{model}%"]]
        found = await self.search_read("product.product", domain, ["code"])
        return sorted(r["code"] for r in found if r.get("code"))

    # ------------------------------------------------------------------ reservations
    async def _shipment(self, key: str, dedupe: bool = False) -> dict[str, Any] | None:
        """The live shipment of ``key`` (else the last cancelled one). Tryton has no unique reference,
        so two reservations of one key at once (the CLI and the daemon) can both create one: with
        ``dedupe`` the oldest stays and the others are cancelled, so every racer ends on the same one."""
        found = await self.search_read(
            "stock.shipment.internal", [["reference", "=", key]], ["id", "state", "moves", "from_location"]
        )
        live = sorted((r for r in found if r["state"] != "cancelled"), key=lambda r: r["id"])
        if dedupe and len(live) > 1:
            extra = [r["id"] for r in live[1:] if r["state"] != "done"]
            if extra:
                await self.call(
                    "stock.shipment.internal", "cancel", extra, context={"company": await self._company()}
                )
            live = live[:1]
        if live:
            return live[0]
        return max(found, key=lambda r: r["id"]) if found else None

    async def _reservation(self, key: str, ship: dict[str, Any]) -> Reservation:
        moves = await self.search_read(
            "stock.move",
            [["shipment", "=", f"stock.shipment.internal,{ship['id']}"]],
            ["product", "quantity"],
        )
        qty = sum(float(m["quantity"]) for m in moves) or 1.0
        part = ""
        if moves:
            prods = await self.search_read("product.product", [["id", "=", moves[0]["product"]]], ["code"])
            part = prods[0]["code"] if prods else ""
        wh = await self.search_read(
            "stock.location",
            [["type", "=", "warehouse"], ["storage_location", "=", ship["from_location"]]],
            ["code"],
        )
        depot = wh[0]["code"] if wh else ""
        return Reservation(
            key=key,
            part=part,
            qty=qty,
            depot=depot,
            state=_STATE.get(ship["state"], "waiting"),
            external_id=f"stock.shipment.internal,{ship['id']}",
            erp=self.name,
        )

    async def reserve(self, key: str, part: str, qty: float, depot: str) -> Reservation:
        company = await self._company()
        ctx = {"company": company}
        ship = await self._shipment(key)
        if ship is None or ship["state"] == "cancelled":
            product = await self._product(part)
            if product is None:
                raise PermanentError(f"tryton: unknown part {part!r}")
            wh = await self.search_read(
                "stock.location",
                [["type", "=", "warehouse"], ["code", "=", depot]],
                ["id", "storage_location"],
            )
            if not wh:
                raise PermanentError(f"tryton: unknown depot {depot!r}")
            dest = await self._consume_location()
            src = wh[0]["storage_location"]
            move = {
                "product": product["id"],
                "quantity": float(qty),
                "unit": product["default_uom"],
                "from_location": src,
                "to_location": dest,
                "company": company,
            }
            # one RPC call, one Tryton transaction: the shipment exists with its key, or not at all
            await self.call(
                "stock.shipment.internal",
                "create",
                [
                    {
                        "reference": key,
                        "from_location": src,
                        "to_location": dest,
                        "company": company,
                        "moves": [["create", [move]]],
                    }
                ],
                context=ctx,
            )
            ship = await self._shipment(key, dedupe=True)
            if ship is None:
                raise NotReady(f"tryton: shipment {key} not found after create")
        if ship["state"] == "draft":
            await self.call("stock.shipment.internal", "wait", [ship["id"]], context=ctx)
        if ship["state"] in ("draft", "waiting"):
            await self.call("stock.shipment.internal", "assign_try", [ship["id"]], context=ctx)
        # a racer that created its shipment after ours looked may have left one: the oldest stands
        ship = await self._shipment(key, dedupe=True) or ship
        return await self._reservation(key, ship)

    async def _consume_location(self) -> int:
        if "dest" not in self._ids:
            code = self.cfg.consume_location
            domain = [["code", "=", code]] if code else [["type", "=", "lost_found"]]
            found = await self.search_read("stock.location", domain, ["id"])
            if not found:
                raise PermanentError(f"tryton: no location {code or 'lost_found'} for consumed parts")
            self._ids["dest"] = found[0]["id"]
        return int(self._ids["dest"])

    async def release(self, key: str) -> Reservation | None:
        ship = await self._shipment(key)
        if ship is None:
            return None
        if ship["state"] not in ("cancelled", "done"):
            await self.call(
                "stock.shipment.internal", "cancel", [ship["id"]], context={"company": await self._company()}
            )
            ship = await self._shipment(key) or ship
        return await self._reservation(key, ship)

    async def consume(self, key: str) -> Reservation | None:
        ship = await self._shipment(key)
        if ship is None or ship["state"] == "cancelled":
            return None
        ctx = {"company": await self._company()}
        if ship["state"] in ("draft", "waiting"):
            await self.call("stock.shipment.internal", "assign_try", [ship["id"]], context=ctx)
            ship = await self._shipment(key) or ship
        if ship["state"] == "assigned":
            await self.call("stock.shipment.internal", "do", [ship["id"]], context=ctx)
            ship = await self._shipment(key) or ship
        return await self._reservation(key, ship)
