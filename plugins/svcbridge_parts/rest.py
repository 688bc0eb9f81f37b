"""Odoo, ERPNext / Frappe and SAP Business One: stock per warehouse over their HTTP APIs.

Per ../shared/reference/api-contracts.md section 4 (what each call and field is):

- **Odoo** (``api = "jsonrpc"``): ``POST /jsonrpc`` ``common.authenticate(db, user, key, {})`` -> uid,
  then ``object.execute_kw(db, uid, key, model, method, [args], {kwargs})``; (``api = "json2"``, 19+):
  ``POST /json/2/{model}/{method}`` with ``Authorization: Bearer`` and ``X-Odoo-Database``, named args.
  A part is ``product.product`` by ``default_code``; stock per warehouse from ``stock.quant`` of
  internal locations (``quantity``, ``reserved_quantity``), the warehouse being the location's first
  path segment (``SH/Stock`` -> ``SH``); by model: category name and the description.
- **ERPNext**: ``Authorization: token key:secret``; ``GET /api/resource/Item`` and ``/api/resource/Bin``
  with JSON ``filters`` / ``fields``; replies ``{"data": [...]}``; warehouse names carry the company
  suffix (``SH - BSC``): the depot is the part before `` - ``; category = ``item_group``.
- **SAP Business One** Service Layer: ``POST /b1s/v1/Login`` ``{CompanyDB, UserName, Password}`` sets
  the ``B1SESSION`` / ``ROUTEID`` cookies (the client keeps them); on 401 the session expired: log in
  again and retry once. ``GET /b1s/v1/Items('{code}')`` -> ``ItemWarehouseInfoCollection``
  ``{WarehouseCode, InStock, Committed, Ordered}``; by model: the user fields ``U_Category`` and
  ``U_Models`` (SAP B1 has no model relation; the shop adds these two fields to its items).

None of the three has a reservation call in the contract, so reservations are svcbridge's own, kept
per key in a ledger (``table.Ledger``, SQLite under the data dir) and subtracted from what the ERP
says is available: two tickets never count on the same part, a re-run finds its key.

Errors as for sinks: 429 / 5xx / timeouts -> ``NotReady``; 401 / 403 -> ``AuthFailed`` (after one
re-login where a session exists); 404 of an item -> unknown part; other 4xx (422, 417) -> ``PermanentError``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import create_engine

from svcbridge import (
    AuthFailed,
    DepotStock,
    PartStock,
    PermanentError,
    Reservation,
    http_request,
    make_client,
)

from .settings import ErpSettings
from .table import Ledger

Row = tuple[str, float, float]  # depot, on hand, reserved (by the ERP itself)


class HttpErp:
    """What the three share: the client, stock with svcbridge's own reservations, the ledger."""

    kind = ""

    def __init__(self, cfg: ErpSettings, allow: list[str], ledger_url: str) -> None:
        self.cfg, self.name, self.allow = cfg, cfg.name, allow
        self.client: httpx.AsyncClient | None = None
        self.ledger = Ledger(create_engine(ledger_url), cfg.name)

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = make_client(
                self.cfg.url,
                timeout=self.cfg.timeout,
                transport=self.cfg.transport,
                allow=self.allow,
                headers=self.headers(),
            )
        return self.client

    def headers(self) -> dict[str, str]:
        return {}

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return await http_request(
            self._client(), method, path, f"{self.kind} {method} {path.split('?')[0]}", **kw
        )

    # -- per ERP
    async def item(self, part: str) -> tuple[str, str | None, list[Row]] | None:
        raise NotImplementedError

    async def find_parts(self, model: str, category: str) -> list[str]:
        raise NotImplementedError

    # -- shared
    async def lookup(self, part: str) -> PartStock | None:
        found = await self.item(part)
        if found is None:
            return None
        name, category, rows = found
        held = await asyncio.to_thread(self.ledger.held, part)
        depots = []
        for depot, on_hand, reserved in rows:
            on_hand -= held.get((depot, "consumed"), 0.0)  # consumed here, not yet booked in the ERP
            reserved += held.get((depot, "reserved"), 0.0)
            depots.append(
                DepotStock(
                    depot=depot, on_hand=on_hand, reserved=reserved, available=max(0.0, on_hand - reserved)
                )
            )
        return PartStock(
            part=part,
            name=name,
            category=category,
            depots=depots,
            erp=self.name,
            lead_time_days=self.cfg.lead_time_days,
        )

    async def reserve(self, key: str, part: str, qty: float, depot: str) -> Reservation:
        found = await asyncio.to_thread(self.ledger.get, key)
        if found is not None and found.state != "released":
            return found
        stock = await self.lookup(part)
        here = next((d for d in stock.depots if d.depot == depot), None) if stock else None
        if here is None:
            raise PermanentError(f"{self.kind}: no part {part!r} at depot {depot!r}")
        return await asyncio.to_thread(self.ledger.reserve, key, part, qty, depot, here.available)

    async def release(self, key: str) -> Reservation | None:
        return await asyncio.to_thread(self.ledger.settle, key, "released")

    async def consume(self, key: str) -> Reservation | None:
        return await asyncio.to_thread(self.ledger.settle, key, "consumed")


class OdooErp(HttpErp):
    kind = "odoo"

    def __init__(self, cfg: ErpSettings, allow: list[str], ledger_url: str) -> None:
        super().__init__(cfg, allow, ledger_url)
        self.uid: int | None = None

    def headers(self) -> dict[str, str]:
        if self.cfg.api != "json2":
            return {}
        head = {"Authorization": "Bearer " + self.cfg.api_key.get_secret_value()}
        return head | ({"X-Odoo-Database": self.cfg.database} if self.cfg.database else {})

    async def _rpc(self, service: str, method: str, args: list[Any]) -> Any:
        body = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
        }
        data = (await self.send("POST", "/jsonrpc", json=body)).json()
        err = data.get("error")
        if err:
            name = str((err.get("data") or {}).get("name") or err.get("message") or "")
            if "AccessDenied" in name or "Session" in name:
                raise AuthFailed(f"odoo {method}: {name}")
            raise PermanentError(
                f"odoo {method}: {name}: {str((err.get('data') or {}).get('message'))[:200]}"
            )
        return data.get("result")

    async def call(self, model: str, method: str, **kwargs: Any) -> Any:
        if self.cfg.api == "json2":
            return (await self.send("POST", f"/json/2/{model}/{method}", json=kwargs)).json()
        key = self.cfg.api_key.get_secret_value() or self.cfg.password.get_secret_value()
        if self.uid is None:
            uid = await self._rpc("common", "authenticate", [self.cfg.database, self.cfg.user, key, {}])
            if not uid:
                raise AuthFailed("odoo: authenticate refused")
            self.uid = int(uid)
        args = [self.cfg.database, self.uid, key, model, method, [kwargs.pop("domain", [])], kwargs]
        return await self._rpc("object", "execute_kw", args)

    async def item(self, part: str) -> tuple[str, str | None, list[Row]] | None:
        found = await self.call(
            "product.product",
            "search_read",
            domain=[["default_code", "=", part]],
            fields=["id", "name", "default_code", "categ_id"],
            limit=1,
        )
        if not found:
            return None
        prod = found[0]
        quants = await self.call(
            "stock.quant",
            "search_read",
            domain=[["product_id", "=", prod["id"]], ["location_id.usage", "=", "internal"]],
            fields=["location_id", "quantity", "reserved_quantity"],
        )
        by: dict[str, list[float]] = {}
        for q in quants:
            loc = q["location_id"][1] if isinstance(q["location_id"], list) else str(q["location_id"])
            depot = loc.split("/")[0].strip()
            acc = by.setdefault(depot, [0.0, 0.0])
            acc[0] += float(q.get("quantity") or 0)
            acc[1] += float(q.get("reserved_quantity") or 0)
        categ = prod.get("categ_id")
        category = categ[1].split("/")[-1].strip() if isinstance(categ, list) else None
        return str(prod.get("name") or ""), category, [(d, v[0], v[1]) for d, v in sorted(by.items())]

    async def find_parts(self, model: str, category: str) -> list[str]:
        domain = [["categ_id.name", "=ilike", category], ["description", "ilike", model]]
        found = await self.call(
            "product.product", "search_read", domain=domain, fields=["default_code"], limit=50
        )
        return sorted(r["default_code"] for r in found if r.get("default_code"))


class ErpNextErp(HttpErp):
    kind = "erpnext"

    def headers(self) -> dict[str, str]:
        return {"Authorization": "token " + self.cfg.api_key.get_secret_value()}

    async def _list(self, doctype: str, filters: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        start, page = 0, 100
        # the default page is small and a server may cap it below what was asked: page until one
        # comes back empty, never trust a short page to be the last
        while True:
            params = {
                "filters": json.dumps(filters),
                "fields": json.dumps(fields),
                "limit_start": str(start),
                "limit_page_length": str(page),
            }
            got = (await self.send("GET", f"/api/resource/{doctype}", params=params)).json().get("data") or []
            out += got
            if not got or len(out) > 10_000:
                return out
            start += len(got)

    async def item(self, part: str) -> tuple[str, str | None, list[Row]] | None:
        items = await self._list(
            "Item", [["item_code", "=", part]], ["item_code", "item_name", "item_group", "disabled"]
        )
        if not items or items[0].get("disabled"):
            return None
        bins = await self._list(
            "Bin", [["item_code", "=", part]], ["warehouse", "actual_qty", "reserved_qty"]
        )
        rows = [
            (
                str(b["warehouse"]).split(" - ")[0].strip(),
                float(b.get("actual_qty") or 0),
                float(b.get("reserved_qty") or 0),
            )
            for b in bins
        ]
        return str(items[0].get("item_name") or ""), items[0].get("item_group"), sorted(rows)

    async def find_parts(self, model: str, category: str) -> list[str]:
        items = await self._list(
            "Item", [["item_group", "=", category], ["description", "like", f"%{model}%"]], ["item_code"]
        )
        return sorted(i["item_code"] for i in items)


class SapB1Erp(HttpErp):
    kind = "sapb1"

    async def _login(self) -> None:
        body = {
            "CompanyDB": self.cfg.database,
            "UserName": self.cfg.user,
            "Password": self.cfg.password.get_secret_value(),
        }
        await self.send("POST", "/b1s/v1/Login", json=body)  # sets B1SESSION and ROUTEID in the client

    async def get(self, path: str, **kw: Any) -> httpx.Response | None:
        """GET with the session; one re-login on 401; ``None`` for a 404 (no such item)."""
        if not self._client().cookies.get("B1SESSION"):
            await self._login()
        for attempt in (1, 2):
            try:
                return await self.send("GET", path, **kw)
            except AuthFailed:
                if attempt == 2:
                    raise
                self._client().cookies.clear()
                await self._login()
            except PermanentError as exc:
                if "HTTP 404" in str(exc):
                    return None
                raise
        return None

    async def item(self, part: str) -> tuple[str, str | None, list[Row]] | None:
        # an OData string literal ('' for '), percent-encoded as a path segment: a '#', '?' or '/' in
        # a part number would otherwise end the path or name another resource
        code = quote(part.replace("'", "''"), safe="'")
        resp = await self.get(
            f"/b1s/v1/Items('{code}')",
            params={"$select": "ItemCode,ItemName,U_Category,ItemWarehouseInfoCollection"},
        )
        if resp is None:
            return None
        data = resp.json()
        rows = [
            (str(w["WarehouseCode"]), float(w.get("InStock") or 0), float(w.get("Committed") or 0))
            for w in data.get("ItemWarehouseInfoCollection") or []
        ]
        return str(data.get("ItemName") or ""), data.get("U_Category"), sorted(rows)

    async def find_parts(self, model: str, category: str) -> list[str]:
        cat, mod = category.replace("'", ""), model.replace("'", "")  # no quote may end the OData literal
        q = f"U_Category eq '{cat}' and contains(U_Models,'{mod}')"
        out: list[str] = []
        path: str | None = "/b1s/v1/Items"
        params: dict[str, str] | None = {"$filter": q, "$select": "ItemCode"}
        while path:  # paging follows odata.nextLink
            resp = await self.get(path, params=params)
            if resp is None:
                break
            data = resp.json()
            out += [i["ItemCode"] for i in data.get("value") or []]
            nxt = data.get("odata.nextLink") or data.get("@odata.nextLink")
            path, params = ("/b1s/v1/" + nxt.lstrip("/")) if nxt else None, None
        return sorted(out)


REST_ERPS: dict[str, type[HttpErp]] = {"odoo": OdooErp, "erpnext": ErpNextErp, "sapb1": SapB1Erp}
