"""Fake ERPs for spare parts, following ../shared/reference/api-contracts.md section 4.

Three ``FakeService`` subclasses over the same stock (``STOCK``: part -> name, category, models,
{depot: (on hand, reserved)}), each speaking its own API and error bodies:

- ``FakeOdoo(api)``: ``POST /jsonrpc`` (``common.authenticate`` -> uid, ``object.execute_kw`` on
  ``product.product`` / ``stock.quant`` ``search_read``; errors as JSON-RPC ``error`` with
  ``data.name`` ``odoo.exceptions.AccessDenied``) or ``POST /json/2/{model}/{method}`` with a Bearer key
  (401 ``"Invalid apikey"``, errors as a JSON string);
- ``FakeErpNext``: ``GET /api/resource/Item|Bin`` with ``filters`` / ``fields`` / ``limit_start`` /
  ``limit_page_length`` and ``Authorization: token key:secret``; ``{"data": [...]}``; errors carry
  ``exc_type`` and ``_server_messages``;
- ``FakeSapB1``: ``POST /b1s/v1/Login`` sets ``B1SESSION`` + ``ROUTEID``; ``GET /b1s/v1/Items('X')``
  (404 for an unknown item) and ``/b1s/v1/Items?$filter`` paged with ``odata.nextLink``;
  ``expire_sessions()`` makes the current sessions answer 401 (a fresh login works); errors
  ``{"error": {"code", "message": {"lang", "value"}}}``.

``fail_next("429" | "503" | "401" | "422" | "timeout")`` from the base class injects faults.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import unquote

import httpx

from .base import FakeService, read_json

KEY, SECRET, PASSWORD = "svcb-key", "svcb-secret", "b1-pass"
STOCK: dict[str, tuple[str, str, str, dict[str, tuple[float, float]]]] = {
    "PSU-750W": (
        "Power supply 750 W 电源",
        "psu",
        "PowerEdge R740;PowerEdge R750",
        {"SH": (4, 1), "BJ": (2, 0), "GZ": (0, 0)},
    ),
    "FAN-R740": ("System fan R740 風扇", "fan", "PowerEdge R740", {"SH": (10, 0)}),
}


def stock_rows(part: str) -> dict[str, tuple[float, float]]:
    return STOCK[part][3]


class FakeOdoo(FakeService):
    host = "odoo.test"

    def __init__(self, api: str = "jsonrpc") -> None:
        super().__init__()
        self.api = api
        self.ids = {p: n + 1 for n, p in enumerate(STOCK)}

    def error_body(self, status: int, detail: str) -> Any:
        return detail  # Odoo 19 JSON-2: a JSON string

    def _products(self, domain: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        out = []
        for part, (name, cat, models, _) in STOCK.items():
            ok = True
            for field, op, value in domain:
                if field == "default_code":
                    ok &= part == value
                elif field == "categ_id.name":
                    ok &= cat.lower() == str(value).lower()
                elif field == "description":
                    ok &= str(value).lower() in models.lower()
            if ok:
                row = {
                    "id": self.ids[part],
                    "name": name,
                    "default_code": part,
                    "categ_id": [7, f"All / Spares / {cat}"],
                }
                out.append({k: row[k] for k in ["id", *fields] if k in row})
        return out

    def _quants(self, domain: list[Any]) -> list[dict[str, Any]]:
        pid = next(v for f, _, v in domain if f == "product_id")
        part = next(p for p, i in self.ids.items() if i == pid)
        rows = []
        for n, (depot, (qty, res)) in enumerate(stock_rows(part).items()):
            # two quants per warehouse (bins), to prove the connector sums per warehouse
            rows.append(
                {
                    "id": 2 * n,
                    "location_id": [10 + n, f"{depot}/Stock"],
                    "quantity": qty - 1 if qty else 0,
                    "reserved_quantity": res,
                }
            )
            rows.append(
                {
                    "id": 2 * n + 1,
                    "location_id": [20 + n, f"{depot}/Stock/Shelf 2"],
                    "quantity": 1 if qty else 0,
                    "reserved_quantity": 0,
                }
            )
        return rows

    def _search_read(self, model: str, kw: dict[str, Any]) -> Any:
        if model == "product.product":
            return self._products(kw.get("domain") or [], kw.get("fields") or [])
        if model == "stock.quant":
            return self._quants(kw.get("domain") or [])
        return None

    def route(self, request: httpx.Request) -> httpx.Response:
        body = read_json(request) or {}
        if self.api == "json2":
            m = re.fullmatch(r"/json/2/([a-z._]+)/([a-z_]+)", request.url.path)
            if not m:
                return self.error(404, "not found")
            if request.headers.get("Authorization") != f"Bearer {KEY}":
                return self.error(401, "Invalid apikey")
            if m.group(2) != "search_read":
                return self.error(422, f"unknown method {m.group(2)}")
            return httpx.Response(200, json=self._search_read(m.group(1), body))
        if request.url.path != "/jsonrpc":
            return self.error(404, "not found")
        p = body.get("params") or {}
        if p.get("service") == "common" and p.get("method") == "authenticate":
            _db, _user, key, _ = p["args"]
            return httpx.Response(
                200, json={"jsonrpc": "2.0", "id": body.get("id"), "result": 2 if key == KEY else False}
            )
        _db, uid, key, model, method, args, kw = p["args"]
        if key != KEY or uid != 2:
            err = {
                "code": 200,
                "message": "Odoo Server Error",
                "data": {"name": "odoo.exceptions.AccessDenied", "message": "Access Denied"},
            }
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body.get("id"), "error": err})
        if method != "search_read":
            err = {
                "code": 200,
                "message": "Odoo Server Error",
                "data": {"name": "builtins.AttributeError", "message": method},
            }
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body.get("id"), "error": err})
        return httpx.Response(
            200,
            json={
                "jsonrpc": "2.0",
                "id": body.get("id"),
                "result": self._search_read(model, {**kw, "domain": args[0]}),
            },
        )


class FakeErpNext(FakeService):
    host = "erpnext.test"
    PAGE_MAX = 2  # a small default page, as ERPNext's: the connector must page

    def error_body(self, status: int, detail: str) -> Any:
        return {
            "exc_type": "ValidationError" if status == 417 else "PermissionError",
            "_server_messages": json.dumps([json.dumps({"message": detail})]),
        }

    def route(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"token {KEY}:{SECRET}":
            return self.error(401, "Not permitted")
        m = re.fullmatch(r"/api/resource/(Item|Bin)", request.url.path)
        if not m or request.method != "GET":
            return self.error(404, "not found")
        q = request.url.params
        filters = json.loads(q.get("filters", "[]"))
        start, size = (
            int(q.get("limit_start", "0")),
            min(int(q.get("limit_page_length", "20")), self.PAGE_MAX),
        )
        rows: list[dict[str, Any]] = []
        for part, (name, cat, models, depots) in STOCK.items():
            item = {
                "item_code": part,
                "item_name": name,
                "item_group": cat,
                "disabled": 0,
                "description": models,
            }
            if not all(_match(item, f) for f in filters):
                continue
            if m.group(1) == "Item":
                rows.append(item)
            else:
                rows += [
                    {
                        "item_code": part,
                        "warehouse": f"{d} - BSC",
                        "actual_qty": on,
                        "reserved_qty": res,
                        "ordered_qty": 0,
                        "projected_qty": on - res,
                    }
                    for d, (on, res) in depots.items()
                ]
        fields = json.loads(q.get("fields", "[]"))
        page = [{k: r[k] for k in fields if k in r} for r in rows[start : start + size]]
        return httpx.Response(200, json={"data": page})


def _match(item: dict[str, Any], f: list[Any]) -> bool:
    field, op, value = f
    have = str(item.get(field, ""))
    if op == "=":
        return have == value
    if op == "like":
        return value.strip("%").lower() in have.lower()
    raise ValueError(op)


class FakeSapB1(FakeService):
    host = "sapb1.test"

    def __init__(self) -> None:
        super().__init__()
        self.sessions: set[str] = set()
        self.logins = 0

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def error_body(self, status: int, detail: str) -> Any:
        return {"error": {"code": -status, "message": {"lang": "en-us", "value": detail}}}

    def route(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        if path == "/b1s/v1/Login" and request.method == "POST":
            body = read_json(request) or {}
            if (body.get("CompanyDB"), body.get("UserName"), body.get("Password")) != (
                "SBODEMO",
                "manager",
                PASSWORD,
            ):
                return self.error(401, "Fail to get DB Credentials")
            sid = secrets.token_hex(8)
            self.sessions.add(sid)
            self.logins += 1
            cookies = [
                ("set-cookie", f"B1SESSION={sid}; path=/b1s/v1; HttpOnly"),
                ("set-cookie", "ROUTEID=.node1; path=/b1s"),
            ]
            return httpx.Response(
                200, json={"SessionId": sid, "Version": "1000190", "SessionTimeout": 30}, headers=cookies
            )
        sent = dict(p.strip().split("=", 1) for p in request.headers.get("cookie", "").split(";") if "=" in p)
        if sent.get("B1SESSION") not in self.sessions or "ROUTEID" not in sent:
            return self.error(401, "Invalid session or session already timeout.")
        m = re.fullmatch(r"/b1s/v1/Items\('(.+)'\)", path)
        if m:
            part = m.group(1).replace("''", "'")
            if part not in STOCK:
                return self.error(404, "No matching records found (ODBC -2028)")
            name, cat, _models, depots = STOCK[part]
            wh = [
                {"WarehouseCode": d, "InStock": on, "Committed": res, "Ordered": 0}
                for d, (on, res) in depots.items()
            ]
            return httpx.Response(
                200,
                json={
                    "ItemCode": part,
                    "ItemName": name,
                    "U_Category": cat,
                    "ItemWarehouseInfoCollection": wh,
                },
            )
        if path == "/b1s/v1/Items":
            flt = request.url.params.get("$filter", "")
            fm = re.fullmatch(r"U_Category eq '([^']*)' and contains\(U_Models,'([^']*)'\)", flt)
            if not fm:
                return self.error(400, "invalid filter")
            codes = [
                p for p, (_n, c, models, _d) in STOCK.items() if c == fm.group(1) and fm.group(2) in models
            ]
            skip = int(request.url.params.get("$skip", "0"))
            page = codes[skip : skip + 1]  # one a page: the connector must follow nextLink
            data: dict[str, Any] = {"value": [{"ItemCode": c} for c in page]}
            if skip + 1 < len(codes):
                data["odata.nextLink"] = f"Items?$filter={flt}&$select=ItemCode&$skip={skip + 1}"
            return httpx.Response(200, json=data)
        return self.error(404, "not found")
