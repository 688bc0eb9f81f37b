"""A private Tryton ERP for the tests: the real ``trytond`` + ``trytond-stock`` from PyPI on SQLite.

``running_tryton()`` starts one server for a session on a free loopback port with a private data dir
and yields a ``TrytonServer``. Creating the database (``trytond-admin --all -u stock``) takes ~15 s,
so it is done once per trytond version into a cached template (``/tmp/svcbridge-tryton-template-*``),
seeded over JSON-RPC with a company, three depots (warehouses SH, BJ, GZ besides Tryton's own WH),
spare-part products in categories and their stock; every session copies that SQLite file.
``reset()`` puts the pristine copy back (server restart, ~2 s) for a test that counts reservations.

Under CI=true a Tryton that cannot be installed or started fails the tests instead of skipping them
(``server_setup.running``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from conftest import free_port
from server_setup import running

BIN = Path(sys.executable).parent
DB = "erp"
PASSWORD = "admin"  # the admin password of a throw-away loopback test database

# the seed: depots (code, name), products (code, name, category, models it fits), stock per depot
DEPOTS = [("SH", "Shanghai depot 上海备件库"), ("BJ", "Beijing depot 北京备件库"), ("GZ", "Guangzhou depot")]
PRODUCTS = [
    ("PSU-750W", "Power supply 750 W 电源", "psu", "PowerEdge R740, PowerEdge R750"),
    ("PSU-1100W", "Power supply 1100 W", "psu", "PowerEdge R940"),
    ("FAN-R740", "System fan R740 风扇", "fan", "PowerEdge R740"),
    ("DISK-1.2T", "1.2 TB SAS disk", "disk", "PowerEdge R740, PowerEdge R940"),
]
STOCK = {
    ("PSU-750W", "SH"): 4,
    ("PSU-750W", "BJ"): 2,
    ("PSU-750W", "GZ"): 0,
    ("FAN-R740", "SH"): 10,
    ("PSU-1100W", "GZ"): 1,
    ("DISK-1.2T", "BJ"): 6,
}


class Rpc:
    """A minimal synchronous JSON-RPC client for seeding and for assertions (the connector has its own)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=60)
        self.auth = ""

    def call(self, method: str, *params: Any) -> Any:
        headers = {"Authorization": "Session " + self.auth} if self.auth else {}
        body = {"id": 1, "method": method, "params": _enc(list(params))}
        reply = self.http.post(self.url, json=body, headers=headers)
        reply.raise_for_status()
        data = reply.json()
        if data.get("error"):
            raise RuntimeError(f"{method}: {data['error']}")
        return data["result"]

    def login(self) -> Rpc:
        uid, session = self.call("common.db.login", "admin", {"password": PASSWORD}, "en")[:2]
        self.auth = base64.b64encode(f"admin:{uid}:{session}".encode()).decode()
        return self

    def model(self, model: str, method: str, *args: Any, context: dict[str, Any] | None = None) -> Any:
        return self.call(f"model.{model}.{method}", *args, context or {})

    def search_read(
        self, model: str, domain: list[Any], fields: list[str], **ctx: Any
    ) -> list[dict[str, Any]]:
        return self.call(f"model.{model}.search_read", domain, 0, None, None, fields, ctx)  # type: ignore[no-any-return]


def _enc(value: Any) -> Any:
    """Tryton's JSON encoding of a Decimal (its JSONEncoder's ``__class__`` objects)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, list):
        return [_enc(v) for v in value]
    if isinstance(value, dict):
        return {k: _enc(v) for k, v in value.items()}
    return value


@dataclass
class TrytonServer:
    state: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/{DB}/rpc/"

    def rpc(self) -> Rpc:
        return Rpc(self.rpc_url).login()

    def plugin_config(self, **extra: Any) -> dict[str, Any]:
        """The ``[plugins.parts]`` ERP table for this server (password from a file, as in production)."""
        secret = self.state / "erp-password"
        secret.write_text(PASSWORD)
        return {
            "type": "tryton",
            "url": self.url,
            "database": DB,
            "user": "admin",
            "password_file": str(secret),
            **extra,
        }

    def start(self) -> None:
        log = open(self.state / "server.log", "ab")  # the child keeps it open
        self.proc = subprocess.Popen(
            [str(BIN / "trytond"), "-c", str(self.state / "trytond.conf"), "-d", DB],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(self.state),
        )
        _wait(self.rpc_url, self.proc, self.state / "server.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def reset(self) -> None:
        """Back to the seeded template (stock, no reservations)."""
        self.stop()
        _install(template(), self.state)
        self.start()

    def reservations(self, key_prefix: str = "svcbridge:") -> list[dict[str, Any]]:
        """Tryton's internal shipments svcbridge made (its reservations), whatever their state."""
        return self.rpc().search_read(
            "stock.shipment.internal",
            [["reference", "like", key_prefix + "%"]],
            ["id", "reference", "state", "moves"],
        )


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYTON")}
    env["TRYTONPASSFILE"] = str(state / "pass")
    return env


def _config(state: Path, port: int) -> None:
    (state / "db").mkdir(parents=True, exist_ok=True)
    (state / "pass").write_text(PASSWORD + "\n")
    (state / "trytond.conf").write_text(
        f"[database]\nuri = sqlite://\npath = {state / 'db'}\n[web]\nlisten = 127.0.0.1:{port}\n"
    )


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"trytond exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url, json={"id": 0, "method": "common.server.version", "params": []}, timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"trytond did not answer within {timeout} s: {log.read_text()[-2000:]}")


def _checkpoint(db: Path) -> None:
    """Tryton runs SQLite in WAL mode: fold the log into the file before it is copied."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _install(tpl: Path, state: Path) -> None:
    """The template as this server's database (a stale WAL of the previous copy would be replayed)."""
    for suffix in ("-wal", "-shm"):
        (state / "db" / f"{DB}.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copyfile(tpl, state / "db" / f"{DB}.sqlite")


def _version() -> str:
    out = subprocess.run([str(BIN / "trytond"), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().split()[-1]


def template() -> Path:
    """The seeded database file, created once per trytond version (a lock for parallel sessions)."""
    if not (BIN / "trytond-admin").exists():
        raise RuntimeError("trytond is not installed (pip install -e '.[dev]')")
    base = Path(tempfile.gettempdir()) / f"svcbridge-tryton-template-{_version()}-v2"
    done = base / f"{DB}.sqlite"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return done
        work = Path(tempfile.mkdtemp(prefix="svcbridge-tryton-build-"))
        try:
            port = free_port()
            _config(work, port)
            (work / "db" / f"{DB}.sqlite").touch()
            subprocess.run(
                [
                    str(BIN / "trytond-admin"),
                    "-c",
                    str(work / "trytond.conf"),
                    "-d",
                    DB,
                    "--all",
                    "-u",
                    "stock",
                    "--activate-dependencies",
                    "--email",
                    "admin@example.com",
                ],
                env=_env(work),
                capture_output=True,
                check=True,
                timeout=600,
                stdin=subprocess.DEVNULL,
            )
            server = TrytonServer(work, port)
            server.start()
            try:
                seed(server.rpc())
            finally:
                server.stop()
            _checkpoint(work / "db" / f"{DB}.sqlite")
            shutil.copyfile(work / "db" / f"{DB}.sqlite", base / "building.sqlite")
            os.replace(base / "building.sqlite", done)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"trytond-admin failed: {exc.stderr.decode()[-2000:]}") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return done


def seed(rpc: Rpc) -> None:
    """Company, depots, products with categories, and stock per depot, as an ERP would hold them."""
    cur = rpc.model("currency.currency", "create", [{"name": "Yuan Renminbi", "code": "CNY", "symbol": "¥"}])[
        0
    ]
    party = rpc.model("party.party", "create", [{"name": "Bridge Service Co."}])[0]
    company = rpc.model("company.company", "create", [{"party": party, "currency": cur}])[0]
    rpc.model("res.user", "write", [1], {"companies": [["add", [company]]], "company": company})
    rpc.login()  # the session's context now carries the company
    ctx = {"company": company}
    unit = rpc.search_read("product.uom", [["symbol", "=", "u"]], ["id"])[0]["id"]
    cats = {}
    for cat in sorted({p[2] for p in PRODUCTS}):
        cats[cat] = rpc.model("product.category", "create", [{"name": cat}])[0]
    products = {}
    for code, name, cat, fits in PRODUCTS:
        tpl = rpc.model(
            "product.template",
            "create",
            [
                {
                    "name": name,
                    "type": "goods",
                    "default_uom": unit,
                    "code": code,
                    "list_price": Decimal("100"),
                    "categories": [["add", [cats[cat]]]],
                    "products": [["create", [{"description": "Fits: " + fits}]]],
                }
            ],
            context=ctx,
        )[0]
        products[code] = rpc.search_read("product.product", [["template", "=", tpl]], ["id"])[0]["id"]
    lost = rpc.search_read("stock.location", [["type", "=", "lost_found"]], ["id"])[0]["id"]
    storage = {}
    for code, name in DEPOTS:
        zones = rpc.model(
            "stock.location",
            "create",
            [{"name": f"{code} {z}", "code": f"{code}-{z}", "type": "storage"} for z in ("IN", "OUT", "STO")],
        )
        rpc.model(
            "stock.location",
            "create",
            [
                {
                    "name": name,
                    "code": code,
                    "type": "warehouse",
                    "input_location": zones[0],
                    "output_location": zones[1],
                    "storage_location": zones[2],
                }
            ],
        )
        storage[code] = zones[2]
    moves = [
        {
            "product": products[p],
            "quantity": float(q),
            "from_location": lost,
            "to_location": storage[d],
            "unit": unit,
            "company": company,
        }
        for (p, d), q in STOCK.items()
        if q
    ]
    ids = rpc.model("stock.move", "create", moves, context=ctx)
    rpc.model("stock.move", "do", ids, context=ctx)


def start_tryton() -> TrytonServer:
    tpl = template()
    state = Path(tempfile.mkdtemp(prefix="svcbridge-tryton-"))
    server = TrytonServer(state, free_port())
    _config(state, server.port)
    _install(tpl, state)
    server.start()
    return server


def running_tryton() -> contextlib.AbstractContextManager[TrytonServer]:
    return running(start_tryton, "Tryton (trytond + trytond-stock)")
