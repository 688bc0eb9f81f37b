"""Vendor warranty lookups (issue 14 item 5): Dell, Lenovo, HP Inc and Cisco through one table-driven harness
against fakes built from the contract (tests/fakes/vendors.py): the auth flow and token reuse, 401 -> one token
refresh, refused credentials, 429 / over-QPS, an outage -> the stale last known answer (marked stale, a re-check
queued) or a retry when there is none, the circuit breaker, the TTL cache, never a silent "out"."""

from __future__ import annotations

import asyncio
import time
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.vendors import CLIENT_ID, CLIENT_SECRET, LENOVO_KEY, VendorFake
from svcbridge import AuthFailed, Job, NotReady, Ticket, WorkQueue, utcnow
from svcbridge.assetlookup import HostAssets
from svcbridge.plugins import make_plugin_manager
from svcbridge.store import db
from svcbridge.store.repo import Store
from svcbridge_warranty import ops
from svcbridge_warranty.settings import WarrantySettings

VENDORS = ["dell", "lenovo", "hp", "cisco"]
SERIAL = {"dell": "7XK2M9P", "lenovo": "PF3ABCD1", "hp": "CND1234XYZ", "cisco": "FOC2231X0AB"}
FAR = (utcnow() + timedelta(days=800)).date().isoformat()
PAST = (utcnow() - timedelta(days=400)).date().isoformat()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TEST_VENDOR_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("TEST_LENOVO_KEY", LENOVO_KEY)
    fake = VendorFake()
    vendors = {}
    for v in VENDORS:
        token = {
            "dell": "auth/oauth/v2/token",
            "hp": "oauth/v1/token",
            "cisco": "oauth2/default/v1/token",
        }.get(v)
        vendors[v] = {
            "base_url": f"http://vendors.test/{v}",
            "client_id": CLIENT_ID,
            "client_secret_env": "TEST_LENOVO_KEY" if v == "lenovo" else "TEST_VENDOR_SECRET",
            "breaker_threshold": 2,
            "breaker_cooldown": 3600,
            "ttl": 3600,
        } | ({"token_url": f"http://vendors.test/{v}/{token}"} if token else {})
    cfg = WarrantySettings.model_validate(
        {"vendors": vendors, "alerts": {"sales": {"to": "sales@bridge.test"}}}
    )
    engine = db.make_engine(f"sqlite:///{tmp_path}/s.db")
    db.upgrade(engine)
    assets = HostAssets.build(make_plugin_manager(entrypoints=False), Store(engine), inline=False)
    host = types.SimpleNamespace(
        settings=types.SimpleNamespace(outbound_allow=["vendors.test"]),
        assets=assets,
        plugin_config=lambda s: cfg,
    )
    ops.configure(host, cfg)  # type: ignore[arg-type]
    for client in ops._state["clients"].values():
        client.transport = httpx.ASGITransport(app=fake.app)
    yield types.SimpleNamespace(fake=fake, assets=assets, cfg=cfg)
    ops.configure(None, None)


def run(vendor: str, serial: str | None = None, labels: dict | None = None, data: dict | None = None) -> Any:
    ticket = Ticket(id=1, ref="SB-000001", channel="email", labels=labels or {})
    ticket.asset.serial = serial or SERIAL[vendor]
    job = Job(
        id=1,
        kind=ops.vendor_kind(vendor),
        key="k1",
        data={"vendor": vendor, "serial": serial or SERIAL[vendor], **(data or {})},
        ticket=ticket,
    )
    work = WorkQueue("SB-000001", 1)
    change = asyncio.run(ops.vendor_job(job, work))
    return change, work


def api_calls(fake: VendorFake, vendor: str) -> int:
    return sum(1 for v, what in fake.calls if v == vendor and what != "token")


@pytest.mark.parametrize("vendor", VENDORS)
def test_in_warranty_answer_and_token_reused(world: Any, vendor: str) -> None:
    world.fake.units[vendor][SERIAL[vendor]] = [
        ("2024-01-10", "2025-01-10", "base"),
        ("2024-01-10", FAR, "care"),
    ]
    change, _ = run(vendor)
    answer = change.labels["vendor_warranty"]
    assert (answer["status"], answer["end"], answer["start"]) == ("in", FAR, "2024-01-10")
    assert answer["source"] == f"vendor:{vendor}" and not answer.get("stale")
    assert f"{vendor} warranty for {SERIAL[vendor]}: in" in change.note
    assert "paid_service" not in change.labels
    # the answer is kept: within its TTL the next job asks nobody
    calls = api_calls(world.fake, vendor)
    again, _ = run(vendor)
    assert again.labels["vendor_warranty"]["status"] == "in" and api_calls(world.fake, vendor) == calls
    # a re-check asks again, with the same token (client credentials fetched once)
    run(vendor, data={"recheck": 1})
    assert api_calls(world.fake, vendor) == calls + 1
    if vendor != "lenovo":
        assert world.fake.tokens_issued[vendor] == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_out_of_warranty_flags_paid_service_only_when_local_rules_could_not(world: Any, vendor: str) -> None:
    world.fake.units[vendor][SERIAL[vendor]] = [("2020-01-01", PAST, "base")]
    change, _ = run(vendor, labels={"warranty": {"status": "unknown"}})
    assert change.labels["vendor_warranty"]["status"] == "out"
    assert change.labels["paid_service"]["source"] == f"vendor:{vendor}"
    assert [n.to for n in change.notifications] == ["sales@bridge.test"]
    assert "out of warranty" in change.notifications[0].body
    # the local rules said "in": the vendor's word is recorded, the local answer stands
    local, _ = run(vendor, labels={"warranty": {"status": "in"}}, data={"recheck": 1})
    assert "paid_service" not in local.labels and local.notifications == []


@pytest.mark.parametrize("vendor", VENDORS)
def test_unknown_serial_is_unknown_never_out(world: Any, vendor: str) -> None:
    change, _ = run(vendor, serial="ZZZ9999")
    assert change.labels["vendor_warranty"]["status"] == "unknown"
    assert "paid_service" not in change.labels


@pytest.mark.parametrize("vendor", ["dell", "hp", "cisco"])
def test_401_renews_the_token_once(world: Any, vendor: str) -> None:
    world.fake.units[vendor][SERIAL[vendor]] = [("2024-01-10", FAR, "base")]
    run(vendor)
    world.fake.mode[vendor] = "revoke"
    change, _ = run(vendor, data={"recheck": 1})
    assert change.labels["vendor_warranty"]["status"] == "in"
    assert world.fake.tokens_issued[vendor] == 2


@pytest.mark.parametrize("vendor", VENDORS)
def test_refused_credentials_are_auth_failed(
    world: Any, vendor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.fake.mode[vendor] = "badcreds"
    if vendor == "lenovo":
        monkeypatch.setenv("TEST_LENOVO_KEY", "wrong")
    with pytest.raises(AuthFailed):
        run(vendor)


@pytest.mark.parametrize(("vendor", "retry_after"), [("dell", 7), ("lenovo", 7), ("hp", 7), ("cisco", 60)])
def test_rate_limited_is_not_ready_with_retry_after(world: Any, vendor: str, retry_after: float) -> None:
    world.fake.mode[vendor] = "429"
    with pytest.raises(NotReady) as exc:
        run(vendor)
    assert exc.value.retry_after == retry_after


@pytest.mark.parametrize("vendor", VENDORS)
def test_outage_without_a_known_answer_retries_and_opens_the_breaker(world: Any, vendor: str) -> None:
    world.fake.mode[vendor] = "down"
    for _ in range(2):
        with pytest.raises(NotReady):
            run(vendor)
    asked = api_calls(world.fake, vendor)
    with pytest.raises(NotReady, match="circuit open"):  # the breaker is open: the vendor is spared
        run(vendor)
    assert api_calls(world.fake, vendor) == asked


@pytest.mark.parametrize("vendor", VENDORS)
def test_outage_gives_the_stale_answer_marked_and_one_recheck(world: Any, vendor: str) -> None:
    world.fake.units[vendor][SERIAL[vendor]] = [("2024-01-10", FAR, "base")]
    run(vendor)
    world.cfg.vendors[vendor].ttl = 0.001  # the kept answer is old now: a new job asks the vendor
    world.fake.mode[vendor] = "down"
    change, work = run(vendor)
    answer = change.labels["vendor_warranty"]
    assert answer["stale"] is True and answer["status"] == "in" and "as_of" in answer
    assert "STALE" in change.note
    assert [(j.kind, j.key, j.data["recheck"]) for j in work.jobs] == [
        (ops.vendor_kind(vendor), "k1:recheck", 1)
    ]
    # the re-check while the vendor is still down: retried with backoff, no second stale note, no new job
    with pytest.raises(NotReady):
        run(vendor, data={"recheck": 1})
    # the vendor is back: the re-check gives the fresh answer
    world.fake.mode[vendor] = "ok"
    world.fake.units[vendor][SERIAL[vendor]] = [("2020-01-10", PAST, "base")]
    ops._state["breakers"][vendor].success()
    fresh, more = run(vendor, data={"recheck": 1})
    assert fresh.labels["vendor_warranty"]["status"] == "out" and not fresh.labels["vendor_warranty"].get(
        "stale"
    )
    assert more.jobs == []


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.ConnectError])
def test_timeouts_and_refused_connections_are_an_outage(world: Any, error: type[Exception]) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("injected", request=request)

    ops._state["clients"]["dell"].transport = httpx.MockTransport(fail)
    with pytest.raises(NotReady, match="dell"):
        run("dell")
    assert ops._state["breakers"]["dell"].failures == 1


def test_secrets_never_in_the_answer_or_calls(world: Any) -> None:
    world.fake.units["dell"][SERIAL["dell"]] = [("2024-01-10", FAR, "base")]
    change, _ = run("dell")
    text = repr(change.model_dump()) + repr(ops._state["clients"]["dell"].calls)
    assert CLIENT_SECRET not in text and LENOVO_KEY not in text


def test_hp_is_asked_with_the_product_number(world: Any) -> None:
    world.fake.units["hp"]["CND1234XYZ"] = [("2024-01-10", FAR, "base")]
    run("hp", data={"part_number": "2Y2X1UT#ABA"})
    assert ("hp", "queries CND1234XYZ pn=2Y2X1UT#ABA") in world.fake.calls


@pytest.mark.parametrize("vendor", VENDORS)
def test_lookups_of_one_vendor_side_by_side(world: Any, vendor: str) -> None:
    """The runner runs up to 8 jobs at once: each has its own HTTP client, the token is shared."""
    serials = [f"{SERIAL[vendor][:-1]}{i}" for i in range(6)]
    for s in serials:
        world.fake.units[vendor][s] = [("2024-01-10", FAR, "base")]

    async def all_at_once() -> list[Any]:
        jobs = [
            Job(
                id=i,
                kind=ops.vendor_kind(vendor),
                key=f"k{i}",
                data={"vendor": vendor, "serial": s},
                ticket=Ticket(id=i, ref=f"SB-{i:06d}", channel="email"),
            )
            for i, s in enumerate(serials, start=1)
        ]
        return await asyncio.gather(*(ops.vendor_job(j, WorkQueue(j.ticket.ref, j.id)) for j in jobs))

    changes = asyncio.run(all_at_once())
    assert [c.labels["vendor_warranty"]["serial"] for c in changes] == serials
    assert {c.labels["vendor_warranty"]["status"] for c in changes} == {"in"}


@pytest.mark.parametrize("vendor", VENDORS)
def test_breaker_half_opens_after_the_cooldown_though_jobs_were_refused_meanwhile(
    world: Any, vendor: str
) -> None:
    """A job refused by the open breaker is no new failure of the vendor: counting it moved the
    cool-down on with every retry, and while jobs kept coming the vendor was never tried again."""
    breaker = ops._state["breakers"][vendor]
    breaker.cooldown = 0.6
    world.fake.mode[vendor] = "down"
    for _ in range(2):
        with pytest.raises(NotReady):
            run(vendor)
    assert breaker.open
    time.sleep(0.35)
    with pytest.raises(NotReady, match="circuit open"):
        run(vendor)
    time.sleep(0.35)  # the cool-down since the breaker opened is over: one trial goes to the vendor
    world.fake.mode[vendor] = "ok"
    world.fake.units[vendor][SERIAL[vendor]] = [("2024-01-10", FAR, "base")]
    change, _ = run(vendor)
    assert change.labels["vendor_warranty"]["status"] == "in" and not breaker.open


@pytest.mark.parametrize("vendor", VENDORS)
def test_half_open_breaker_lets_one_trial_through(world: Any, vendor: str) -> None:
    """After the cool-down ONE lookup tries the vendor; the others running at the same time are refused
    until that trial ends (8 jobs at once must not all hit a vendor that is probably still down)."""
    breaker = ops._state["breakers"][vendor]
    breaker.cooldown = 0.2
    world.fake.mode[vendor] = "down"
    for _ in range(2):
        with pytest.raises(NotReady):
            run(vendor)
    time.sleep(0.3)
    asked: list[str] = []

    async def slow_outage(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        asked.append(request.url.path)
        await asyncio.sleep(0.2)  # the trial is held: the other jobs run meanwhile
        return httpx.Response(503, json={"error": "down"})

    ops._state["clients"][vendor].transport = httpx.MockTransport(slow_outage)

    async def six_at_once() -> list[Any]:
        jobs = [
            Job(
                id=i,
                kind=ops.vendor_kind(vendor),
                key=f"k{i}",
                data={"vendor": vendor, "serial": SERIAL[vendor]},
                ticket=Ticket(id=i, ref=f"SB-{i:06d}", channel="email"),
            )
            for i in range(1, 7)
        ]
        calls = (ops.vendor_job(j, WorkQueue(j.ticket.ref, j.id)) for j in jobs)
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(six_at_once())
    assert all(isinstance(r, NotReady) for r in results)
    assert len(asked) == 1
    assert breaker.open  # the failed trial opened it again


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        ("7", 7, 7),
        ("2.5", 2.5, 2.5),  # not digits only: was read as "none given" (60 s)
        ("HTTP-DATE+30", 25, 31),  # RFC 9110: Retry-After may be an HTTP date
        ("HTTP-DATE-30", 0, 0),  # a date in the past: now
        ("soon", 60, 60),  # unreadable: the default
    ],
)
def test_retry_after_seconds_or_http_date(world: Any, header: str, low: float, high: float) -> None:
    from email.utils import format_datetime

    if header.startswith("HTTP-DATE"):
        header = format_datetime(utcnow() + timedelta(seconds=int(header[9:])), usegmt=True)

    def limited(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(429, headers={"Retry-After": header}, json={"error": "slow down"})

    ops._state["clients"]["dell"].transport = httpx.MockTransport(limited)
    with pytest.raises(NotReady) as exc:
        run("dell")
    assert exc.value.retry_after is not None and low <= exc.value.retry_after <= high


@pytest.mark.parametrize("stale", [False, True])
def test_a_kept_answer_is_judged_on_today_not_on_the_day_it_was_asked(world: Any, stale: bool) -> None:
    """The kept answer said "in" the day it was asked; its end date has passed since: a cached or stale
    answer must say "out" now (the end date is the last covered day), not repeat the old status."""
    yesterday = (utcnow() - timedelta(days=1)).date()
    kept = {
        "vendor": "dell",
        "serial": SERIAL["dell"],
        "status": "in",
        "start": "2023-01-01",
        "end": yesterday.isoformat(),
        "coverage": [],
        "source": "vendor:dell",
    }
    world.assets.keep_answer("vendor:dell", SERIAL["dell"], kept)
    if stale:
        world.cfg.vendors["dell"].ttl = 0.001
        world.fake.mode["dell"] = "down"
        time.sleep(0.01)
    change, _ = run("dell")
    answer = change.labels["vendor_warranty"]
    assert bool(answer.get("stale")) is stale
    assert answer["status"] == "out" and answer["end"] == yesterday.isoformat()


@pytest.mark.parametrize("vendor", ["dell", "hp", "cisco"])
def test_forbidden_api_call_is_a_credentials_problem_not_a_lost_lookup(world: Any, vendor: str) -> None:
    """Cisco answers an inactive app with 403 "developer inactive" (api-contracts 3.4): the key must be
    fixed, the lookups park and raise the alert (AuthFailed); a PermanentError dropped them for good."""

    def forbidden(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        return httpx.Response(
            403, json={"ErrorResponse": {"APIError": {"ErrorDescription": "developer inactive"}}}
        )

    ops._state["clients"][vendor].transport = httpx.MockTransport(forbidden)
    with pytest.raises(AuthFailed, match="403"):
        run(vendor)


def test_vendor_answer_is_judged_on_the_contracts_calendar_day(world: Any) -> None:
    """The unit's contract is in Pago Pago (UTC-11); the daemon's default zone is Kiritimati (UTC+14):
    their calendar days always differ. The vendor's last covered day is today in Pago Pago: "in" there,
    whatever day it already is in the default zone."""
    from svcbridge_warranty.rules import today_in

    world.cfg.default_timezone = "Pacific/Kiritimati"
    last = today_in("Pacific/Pago_Pago", utcnow())
    world.fake.units["dell"][SERIAL["dell"]] = [("2023-01-01", last.isoformat(), "base")]
    change, _ = run("dell", labels={"warranty": {"status": "unknown", "timezone": "Pacific/Pago_Pago"}})
    answer = change.labels["vendor_warranty"]
    assert (answer["status"], answer["end"]) == ("in", last.isoformat())
    assert "paid_service" not in change.labels
