"""Odoo (execute_kw and /json/2), ERPNext and SAP Business One by contract, through one table-driven
harness against fakes built from api-contracts.md section 4 (tests/fakes/erps.py): the same stock comes
back the same way from each (warehouses summed, company suffixes and paths stripped), parts by model
and category, reservations kept once per key, and failures meaning what they mean for helpdesk sinks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.erps import KEY, PASSWORD, SECRET, FakeErpNext, FakeOdoo, FakeSapB1
from svcbridge import AuthFailed, NotReady, PermanentError, reservation_key
from svcbridge_parts import make_erp
from svcbridge_parts.settings import ErpSettings

CASES: dict[str, tuple[Any, dict[str, Any]]] = {
    "odoo-jsonrpc": (
        lambda: FakeOdoo("jsonrpc"),
        {"type": "odoo", "url": "https://odoo.test", "database": "prod", "user": "svcbridge", "api_key": KEY},
    ),
    "odoo-json2": (
        lambda: FakeOdoo("json2"),
        {"type": "odoo", "api": "json2", "url": "https://odoo.test", "database": "prod", "api_key": KEY},
    ),
    "erpnext": (
        FakeErpNext,
        {"type": "erpnext", "url": "https://erpnext.test", "api_key": f"{KEY}:{SECRET}"},
    ),
    "sapb1": (
        FakeSapB1,
        {
            "type": "sapb1",
            "url": "https://sapb1.test",
            "database": "SBODEMO",
            "user": "manager",
            "password": PASSWORD,
        },
    ),
}


@pytest.fixture(params=list(CASES))
def erp(request, tmp_path: Path) -> Any:
    make_fake, table = CASES[request.param]
    fake = make_fake()
    cfg = ErpSettings(name="erp", lead_time_days=2, **table)
    cfg.transport = fake.transport
    conn = make_erp(cfg, [fake.host], tmp_path)
    conn.fake = fake
    conn.case = request.param
    return conn


def figures(stock) -> dict[str, tuple[float, float, float]]:
    return {d.depot: (d.on_hand, d.reserved, d.available) for d in stock.depots}


async def test_stock_per_depot_is_the_same_from_every_erp(erp) -> None:
    stock = await erp.lookup("PSU-750W")
    assert stock.part == "PSU-750W" and stock.category == "psu" and stock.name == "Power supply 750 W 电源"
    assert figures(stock) == {"BJ": (2, 0, 2), "GZ": (0, 0, 0), "SH": (4, 1, 3)}
    assert stock.lead_time_days == 2 and stock.erp == "erp"
    fan = await erp.lookup("FAN-R740")
    assert fan.name.endswith("風扇") and figures(fan) == {"SH": (10, 0, 10)}
    assert await erp.lookup("NO-SUCH") is None
    await erp.close()


@pytest.mark.parametrize(
    ("model", "category", "parts"),
    [
        ("PowerEdge R740", "psu", ["PSU-750W"]),
        ("PowerEdge R740", "fan", ["FAN-R740"]),
        ("PowerEdge R940", "psu", []),
    ],
)
async def test_parts_by_model_and_category(erp, model, category, parts) -> None:
    assert await erp.find_parts(model, category) == parts
    await erp.close()


async def test_reservations_once_per_key_and_subtracted(erp) -> None:
    key = reservation_key("SB-000001", "PSU-750W")
    first = await erp.reserve(key, "PSU-750W", 2, "SH")
    assert (first.state, first.depot, first.qty) == ("reserved", "SH", 2)
    assert await erp.reserve(key, "PSU-750W", 2, "BJ") == first  # the re-run after a crash
    assert figures(await erp.lookup("PSU-750W"))["SH"] == (4, 3, 1)
    other = await erp.reserve(reservation_key("SB-000002", "PSU-750W"), "PSU-750W", 2, "SH")
    assert other.state == "waiting"  # one left: the second ticket does not count on the same parts
    assert (await erp.release(key)).state == "released"
    assert figures(await erp.lookup("PSU-750W"))["SH"] == (4, 1, 3)
    assert (await erp.consume(reservation_key("SB-000002", "PSU-750W"))).state == "consumed"
    assert figures(await erp.lookup("PSU-750W"))["SH"] == (2, 1, 1)
    with pytest.raises(PermanentError):
        await erp.reserve(reservation_key("SB-000003", "PSU-750W"), "PSU-750W", 1, "XX")
    await erp.close()


@pytest.mark.parametrize(
    ("fault", "error"),
    [("429", NotReady), ("503", NotReady), ("timeout", NotReady), ("422", PermanentError)],
)
async def test_failures_mean_what_they_mean_for_sinks(erp, fault, error) -> None:
    if erp.case == "sapb1":
        await erp.lookup("FAN-R740")  # logged in: the fault hits the item call, not the login
    erp.fake.fail_next(fault)
    with pytest.raises(error) as got:
        await erp.lookup("PSU-750W")
    if fault == "429":
        assert got.value.retry_after == 30
    assert figures(await erp.lookup("PSU-750W"))["BJ"] == (2, 0, 2)  # the next call is served
    await erp.close()


async def test_401_is_auth_failed_or_one_relogin(erp) -> None:
    await erp.lookup("FAN-R740")
    if erp.case == "sapb1":
        erp.fake.expire_sessions()  # the session timed out: log in again, once, and go on
        assert figures(await erp.lookup("FAN-R740")) == {"SH": (10, 0, 10)}
        assert erp.fake.logins == 2
        erp.fake.fail_next("401", n=3)  # refused again after the re-login: park
    else:
        erp.fake.fail_next("401")  # an API key does not get better by asking again
    with pytest.raises(AuthFailed):
        await erp.lookup("FAN-R740")
    await erp.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_wrong_credentials_are_auth_failed(case, tmp_path: Path) -> None:
    make_fake, table = CASES[case]
    fake = make_fake()
    wrong = {k: ("wrong" if k in ("api_key", "password") else v) for k, v in table.items()}
    cfg = ErpSettings(name="erp", **wrong)
    cfg.transport = fake.transport
    conn = make_erp(cfg, [fake.host], tmp_path)
    with pytest.raises(AuthFailed):
        await conn.lookup("PSU-750W")
    await conn.close()


def test_no_secret_in_the_connector_s_repr(tmp_path: Path) -> None:
    cfg = ErpSettings(name="erp", **CASES["sapb1"][1])
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg.model_dump())


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("PSU 750W", "PSU_750W"),  # a space and an underscore cleaned to the same character
        ("电源模块", "风扇模块"),  # every CJK name of one length was '____'
        ("電源", "__"),
        ("X" * 80 + "A", "X" * 80 + "B"),  # cut at 80
    ],
)
def test_reservation_keys_of_different_parts_differ(a: str, b: str) -> None:
    from svcbridge import Reservation

    ka, kb = reservation_key("SB-000001", a), reservation_key("SB-000001", b)
    assert ka != kb
    assert ka == reservation_key("SB-000001", a)  # stable across re-runs
    Reservation(key=ka, part=a, qty=1, depot="SH")  # a valid key (letters, digits, ':._/-', <= 120)
    assert reservation_key("SB-000001", "PSU-750W") == "svcbridge:SB-000001:PSU-750W"  # unchanged
    # a later generation (reserved again after the part was consumed) is another key, for every part
    kc = reservation_key("SB-000001", a, generation=1)
    assert kc not in (ka, kb, reservation_key("SB-000001", b, generation=1))
    assert kc == reservation_key("SB-000001", a, generation=1)
    Reservation(key=reservation_key("SB-999999999", a, generation=999), part=a, qty=1, depot="SH")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
@pytest.mark.parametrize(
    ("name", "model"),
    [("电源模块 900W", "华为 2288H V5"), ("電源供應器 900W", "華碩 RS520"), ("Power supply 900W", "R740")],
)
async def test_the_csv_table_reads_a_shop_s_file_in_its_encoding(
    tmp_path: Path, encoding: str, name: str, model: str
) -> None:
    """Excel and WPS on a Chinese Windows save CSV as GB18030 (ANSI) or UTF-8 with a BOM."""
    from svcbridge_parts import ErpSettings, TableErp

    path = tmp_path / "stock.csv"
    text = (
        "part,name,category,models,depot,on_hand,reserved,lead_time_days,region\r\n"
        f"PSU-900W,{name},psu,{model},SH,3,1,5,华东\r\n"
    )
    path.write_bytes(text.encode(encoding))
    erp = TableErp(ErpSettings(name="shop", type="table", path=str(path)))
    stock = await erp.lookup("PSU-900W")
    assert stock is not None and stock.name == name
    assert [(d.depot, d.available, d.region) for d in stock.depots] == [("SH", 2.0, "华东")]
    assert await erp.find_parts(model, "psu") == ["PSU-900W"]
    await erp.close()


async def test_the_csv_table_reads_a_big5_file_from_traditional_chinese_excel(tmp_path: Path) -> None:
    """Big5 bytes decode as GB18030 without an error: the part's name and region were read as other
    characters ('華東' is no region of the configuration then)."""
    from svcbridge_parts import ErpSettings, TableErp

    path = tmp_path / "stock.csv"
    text = (
        "part,name,category,models,depot,on_hand,reserved,lead_time_days,region\r\n"
        "PSU-900W,電源供應器 900W,psu,華碩 RS520,TP,3,1,5,華東\r\n"
    )
    path.write_bytes(text.encode("cp950"))
    erp = TableErp(ErpSettings(name="shop", type="table", path=str(path)))
    stock = await erp.lookup("PSU-900W")
    assert stock is not None and stock.name == "電源供應器 900W"
    assert [(d.depot, d.region) for d in stock.depots] == [("TP", "華東")]
    assert await erp.find_parts("華碩 RS520", "psu") == ["PSU-900W"]
    await erp.close()


@pytest.mark.parametrize("part", ["PSU/750W", "PSU#750W", "PSU?750W", "PSU 750W", "O'NEIL-1", "电源/750W"])
async def test_a_part_number_with_url_characters_is_looked_up_as_itself(erp, monkeypatch, part: str) -> None:
    """SAP B1 puts the code in the path (Items('...')): '/', '#', '?' cut or redirected the request
    (a '#' started a fragment, a '?' a query, a '/' another resource), so the part was 'unknown'."""
    from fakes import erps as fake_erps

    monkeypatch.setitem(fake_erps.STOCK, part, fake_erps.STOCK["PSU-750W"])
    if isinstance(erp.fake, FakeOdoo):  # its product ids were numbered when it was made
        erp.fake.ids[part] = len(erp.fake.ids) + 1
    stock = await erp.lookup(part)
    assert stock is not None and figures(stock)["SH"] == (4, 1, 3)
    await erp.close()
