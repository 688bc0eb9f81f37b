"""The Tryton connector against a real Tryton (trytond + trytond-stock, SQLite, loopback): stock per depot,
parts by model and category, reservations idempotent on their key, release and consume, re-login, outage.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from svcbridge import AuthFailed, NotReady, PermanentError, order_depots, reservation_key
from svcbridge_parts.settings import ErpSettings
from svcbridge_parts.tryton import TrytonErp
from tryton_server import TrytonServer, running_tryton

pytestmark = pytest.mark.realserver


@pytest.fixture(scope="session")
def tryton() -> Iterator[TrytonServer]:
    with running_tryton() as server:
        yield server


@pytest.fixture
def erp(tryton: TrytonServer) -> TrytonErp:
    """A connector; the stock is the seed's as long as no test before left a reservation (fresh_erp)."""
    return TrytonErp(
        ErpSettings(**tryton.plugin_config(name="tryton", lead_time_days=3)), allow=["127.0.0.1"]
    )


@pytest.fixture
def fresh_erp(tryton: TrytonServer, erp: TrytonErp) -> Iterator[TrytonErp]:
    """For a test that reserves: the seeded database before it and after it (a restart, about 2 s)."""
    tryton.reset()
    yield erp
    tryton.reset()


def by_depot(stock) -> dict[str, tuple[float, float, float]]:
    return {d.depot: (d.on_hand, d.reserved, d.available) for d in stock.depots}


async def test_lookup_stock_per_depot(erp: TrytonErp) -> None:
    stock = await erp.lookup("PSU-750W")
    assert stock is not None
    assert stock.category == "psu" and "750" in stock.name and stock.lead_time_days == 3
    assert by_depot(stock) == {"SH": (4, 0, 4), "BJ": (2, 0, 2), "GZ": (0, 0, 0)}  # WH skipped
    assert await erp.lookup("NO-SUCH-PART") is None
    await erp.close()


@pytest.mark.parametrize(
    ("region", "regions", "order"),
    [
        ("north", {"north": ["BJ", "SH"], "east": ["SH"]}, ["BJ", "SH", "GZ"]),
        ("east", {"north": ["BJ"], "east": ["SH"]}, ["SH", "BJ", "GZ"]),
        ("south", {"south": ["GZ"]}, ["GZ", "SH", "BJ"]),  # nearest first even when it has none
        (None, {}, ["SH", "BJ", "GZ"]),  # no region: most available first
        ("华东", {"华东": ["GZ", "BJ"]}, ["GZ", "BJ", "SH"]),
    ],
)
async def test_depots_ordered_by_region(erp: TrytonErp, region, regions, order) -> None:
    stock = await erp.lookup("PSU-750W")
    assert [d.depot for d in order_depots(stock.depots, region, regions)] == order
    await erp.close()


@pytest.mark.parametrize(
    ("model", "category", "parts"),
    [
        ("PowerEdge R740", "psu", ["PSU-750W"]),
        ("PowerEdge R940", "psu", ["PSU-1100W"]),
        ("PowerEdge R740", "disk", ["DISK-1.2T"]),
        ("PowerEdge R940", "fan", []),
        ("Unknown 9000", "psu", []),
    ],
)
async def test_find_parts_by_model_and_category(erp: TrytonErp, model, category, parts) -> None:
    assert await erp.find_parts(model, category) == parts
    await erp.close()


async def test_reserve_is_idempotent_then_release(fresh_erp: TrytonErp, tryton: TrytonServer) -> None:
    erp = fresh_erp
    key = reservation_key("SB-000001", "PSU-750W")
    first = await erp.reserve(key, "PSU-750W", 1, "SH")
    again = await erp.reserve(key, "PSU-750W", 1, "BJ")  # a re-run that chose another depot
    assert first == again and first.state == "reserved" and first.depot == "SH" and first.qty == 1
    assert [r["state"] for r in tryton.reservations()] == ["assigned"]
    assert by_depot(await erp.lookup("PSU-750W"))["SH"] == (4, 1, 3)
    released = await erp.release(key)
    assert released is not None and released.state == "released"
    assert await erp.release(key) == released  # twice: the same answer, nothing more
    assert by_depot(await erp.lookup("PSU-750W"))["SH"] == (4, 0, 4)
    assert await erp.consume(key) is None  # a released reservation is never consumed
    assert await erp.release("svcbridge:SB-000404:PSU-750W") is None
    await erp.close()


async def test_consume_takes_the_part_out_of_the_depot(fresh_erp: TrytonErp, tryton: TrytonServer) -> None:
    erp = fresh_erp
    key = reservation_key("SB-000002", "PSU-750W")
    await erp.reserve(key, "PSU-750W", 2, "BJ")
    done = await erp.consume(key)
    assert done is not None and done.state == "consumed" and done.qty == 2
    assert await erp.consume(key) == done
    assert by_depot(await erp.lookup("PSU-750W"))["BJ"] == (0, 0, 0)
    assert [r["state"] for r in tryton.reservations()] == ["done"]
    await erp.close()


async def test_a_consumed_key_stays_consumed_and_the_next_generation_reserves_anew(
    fresh_erp: TrytonErp, tryton: TrytonServer
) -> None:
    """Tryton keeps a done shipment under its reference: reserving that key again answers 'consumed'
    (nothing set aside). A reopened ticket's new reservation is the key's next generation: a shipment
    of its own, found again by a re-run."""
    erp = fresh_erp
    first = reservation_key("SB-000005", "PSU-750W")
    await erp.reserve(first, "PSU-750W", 1, "SH")
    await erp.consume(first)
    assert (await erp.reserve(first, "PSU-750W", 1, "SH")).state == "consumed"
    second = reservation_key("SB-000005", "PSU-750W", generation=1)
    assert second != first
    res = await erp.reserve(second, "PSU-750W", 1, "SH")
    assert (res.key, res.state, res.depot) == (second, "reserved", "SH")
    assert await erp.reserve(second, "PSU-750W", 1, "BJ") == res  # the re-run after a kill -9
    assert sorted((r["reference"], r["state"]) for r in tryton.reservations()) == [
        (first, "done"),
        (second, "assigned"),
    ]
    assert by_depot(await erp.lookup("PSU-750W"))["SH"] == (3, 1, 2)
    await erp.close()


async def test_no_stock_is_a_waiting_reservation(fresh_erp: TrytonErp) -> None:
    erp = fresh_erp
    res = await erp.reserve(reservation_key("SB-000003", "PSU-750W"), "PSU-750W", 1, "GZ")
    assert res.state == "waiting" and res.depot == "GZ"
    await erp.close()


@pytest.mark.parametrize(("part", "depot"), [("PSU-750W", "XX"), ("NOPE", "SH")])
async def test_unknown_part_or_depot_is_permanent(erp: TrytonErp, part, depot) -> None:
    with pytest.raises(PermanentError):
        await erp.reserve(reservation_key("SB-000004", part), part, 1, depot)
    await erp.close()


async def test_expired_session_logs_in_again(erp: TrytonErp) -> None:
    assert await erp.lookup("FAN-R740") is not None
    erp.auth = "YWRtaW46MTpleHBpcmVk"  # admin:1:expired
    stock = await erp.lookup("FAN-R740")
    assert stock is not None and by_depot(stock)["SH"] == (10, 0, 10)
    await erp.close()


async def test_wrong_password_is_auth_failed(tryton: TrytonServer) -> None:
    cfg = {**tryton.plugin_config(name="tryton"), "password": "wrong"}
    cfg.pop("password_file")
    cfg = ErpSettings(**cfg)
    erp = TrytonErp(cfg, allow=["127.0.0.1"])
    with pytest.raises(AuthFailed):
        await erp.lookup("PSU-750W")
    await erp.close()


async def test_outage_is_not_ready(tryton: TrytonServer) -> None:
    erp = TrytonErp(ErpSettings(**tryton.plugin_config(name="tryton")), allow=["127.0.0.1"])
    tryton.stop()
    try:
        with pytest.raises(NotReady):
            await erp.lookup("PSU-750W")
    finally:
        tryton.start()
    assert await erp.lookup("PSU-750W") is not None  # back: the same connector answers
    await erp.close()


async def test_loopback_is_refused_without_allow(tryton: TrytonServer) -> None:
    erp = TrytonErp(ErpSettings(**tryton.plugin_config(name="tryton")))
    with pytest.raises(Exception, match=r"(?i)not allowed|refus|private|loopback"):
        await erp.lookup("PSU-750W")
    await erp.close()


async def test_two_concurrent_reservations_of_one_key_leave_one(
    fresh_erp: TrytonErp, tryton: TrytonServer
) -> None:
    """The CLI's 'parts reserve' and the daemon's lookup job may reserve one ticket's part at once: both
    found no shipment with the key and both created one (Tryton has no unique reference): two parts set
    aside. Whoever sees two keeps the oldest and cancels the rest, so both answer the same one."""
    import asyncio

    other = TrytonErp(ErpSettings(**tryton.plugin_config(name="tryton")), allow=["127.0.0.1"])
    key = reservation_key("SB-000042", "PSU-750W")
    a, b = await asyncio.gather(
        fresh_erp.reserve(key, "PSU-750W", 1, "SH"), other.reserve(key, "PSU-750W", 1, "SH")
    )
    live = [r for r in tryton.reservations() if r["reference"] == key and r["state"] != "cancelled"]
    assert len(live) == 1
    assert a.external_id == b.external_id == f"stock.shipment.internal,{live[0]['id']}"
    assert by_depot(await fresh_erp.lookup("PSU-750W"))["SH"] == (4, 1, 3)
    await fresh_erp.close()
    await other.close()
