"""Cisco's RMA status API through CiscoRmaSource against a fake built from api-contracts.md 3.4: the
lifecycle read by number and applied once (a note per change to the helpdesk), the token cached and
renewed once on 401, over-QPS a wait, bad credentials a stop, unknown words and numbers ignored.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr

from conftest import eml
from fakes.cisco_rma import CLIENT_ID, CLIENT_SECRET, FakeCiscoRma
from helpdesk_helpers import Recorder, drop, recorder_plugin
from svcbridge import AuthFailed, NotReady, RmaPart, RmaState
from svcbridge.plugins import make_plugin_manager
from svcbridge_rma import CiscoRmaSource

HOST = "apix.cisco.test"


async def setup(make_app, tmp_path, secret: str = CLIENT_SECRET, **rma):
    fake, desk = FakeCiscoRma(), Recorder()
    pm = make_plugin_manager(extra=(recorder_plugin(desk),))
    cisco = {
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "base_url": f"https://{HOST}",
        "token_url": f"https://{HOST}/oauth2/default/v1/token",
        "interval": 60,
    }
    app = make_app(
        pm=pm, routing={"default": ["desk"]}, outbound_allow=[HOST], plugins={"rma": {"cisco": cisco, **rma}}
    )
    app.settings.plugin_config("rma").cisco.transport = fake.transport
    (source,) = [s for s in app.sources.values() if isinstance(s, CiscoRmaSource)]
    source.api.cfg.transport = fake.transport
    drop(tmp_path, "a", eml(subject="Catalyst 9300 电源故障"))
    await app.run_once()  # startup: the source finds the host's RMAs
    (t,) = app.store.list_tickets()
    rma = app.rmas.open(
        t.ref,
        "cisco",
        [RmaPart(part="PWR-C1-715WAC", serial="LIT2233")],
        source="cli",
        remind_after=timedelta(days=7),
    )
    app.rmas.move(rma.id, RmaState.APPROVED, source="cli", number="88001234")
    from svcbridge_rma import _host

    _host["app"] = app
    return app, fake, desk, source, rma.id


def notes(desk: Recorder) -> list[str]:
    return [i.payload.get("note") or "" for i in desk.items if i.kind == "update" and i.payload.get("note")]


async def test_the_lifecycle_comes_from_cisco_once(make_app, tmp_path) -> None:
    app, fake, desk, source, rid = await setup(make_app, tmp_path)
    ctx = app.context(source.name)
    steps = [
        ({"status": "Booked"}, RmaState.APPROVED),  # what we know already: nothing new
        ({"status": "Shipped", "carrier": "DHL", "trackingNumber": "1Z999"}, RmaState.REPLACEMENT_SHIPPED),
        ({"status": "Shipped", "carrier": "DHL", "trackingNumber": "1Z999"}, RmaState.REPLACEMENT_SHIPPED),
        ({"status": "Awaiting Return"}, RmaState.REPLACEMENT_SHIPPED),  # behind us: ours stands
        ({"status": "Defective Received"}, RmaState.REPLACEMENT_SHIPPED),  # behind too
        ({"status": "Delivered", "carrier": "DHL", "trackingNumber": "1Z999"}, RmaState.REPLACEMENT_RECEIVED),
        ({"status": "Zzz unknown"}, RmaState.REPLACEMENT_RECEIVED),
        ({"status": "Closed", "carrier": "DHL", "trackingNumber": "1Z999"}, RmaState.CLOSED),
    ]
    for rec, want in steps:
        fake.rmas["88001234"] = rec
        assert await source.poll(ctx) == 0
        await app.delivery.drain()
        assert app.rmas.get(rid).state == want, rec
    rma = app.rmas.get(rid)
    assert (rma.carrier, rma.tracking) == ("DHL", "1Z999")
    cisco_notes = [n for n in notes(desk) if "vendor:cisco" in n]
    assert [n.split("\n")[1].split(" (")[0] for n in cisco_notes] == [
        "approved -> replacement_shipped",
        "replacement_shipped -> replacement_received",
        "replacement_received -> closed",
    ]
    assert fake.issued == 1  # the token was reused
    ticket = app.store.get_ticket(rma.ticket_ref)
    trail = [e.data["to"] for e in ticket.events if e.type == "rma"]
    assert trail == ["requested", "approved", "replacement_shipped", "replacement_received", "closed"]
    assert app.work.timers.list()[0]["status"] == "cancelled"  # closed: no reminder
    await source.api.close()


async def test_a_revoked_token_is_renewed_once(make_app, tmp_path) -> None:
    app, fake, _desk, source, rid = await setup(make_app, tmp_path)
    ctx = app.context(source.name)
    fake.rmas["88001234"] = {"status": "Received"}
    await source.poll(ctx)
    fake.revoke()
    fake.rmas["88001234"] = {"status": "Shipped", "trackingNumber": "SF1"}
    await source.poll(ctx)
    assert app.rmas.get(rid).state == RmaState.REPLACEMENT_SHIPPED and fake.issued == 2
    await source.api.close()


async def test_over_qps_is_a_wait_and_bad_credentials_a_stop(make_app, tmp_path) -> None:
    app, fake, _desk, source, rid = await setup(make_app, tmp_path)
    ctx = app.context(source.name)
    fake.rmas["88001234"] = {"status": "Received"}
    fake.over_qps = 1
    with pytest.raises(NotReady):
        await source.poll(ctx)
    await source.poll(ctx)
    assert app.rmas.get(rid).state == RmaState.RECEIVED_BY_VENDOR
    source.api.cfg = source.api.cfg.model_copy(update={"client_secret": SecretStr("wrong")})
    source.api.token = None
    with pytest.raises(AuthFailed):
        await source.poll(ctx)
    await source.api.close()


@pytest.mark.parametrize("number", ["8800 1234", "../x", "R" * 40])
async def test_bad_or_unknown_numbers_are_skipped(make_app, tmp_path, number) -> None:
    app, fake, _desk, source, rid = await setup(make_app, tmp_path)
    ctx = app.context(source.name)
    other = app.rmas.open(app.rmas.get(rid).ticket_ref, "cisco", [RmaPart(part="FAN")], source="cli")
    with app.store.tx() as conn:  # a number typed by hand, straight into the row
        from svcbridge.store import schema as t

        conn.execute(t.rmas.update().where(t.rmas.c.id == other.id).values(number=number))
    fake.rmas["88001234"] = {"status": "Received"}
    await source.poll(ctx)  # the bad one is skipped, the good one read
    assert app.rmas.get(rid).state == RmaState.RECEIVED_BY_VENDOR
    assert app.rmas.get(other.id).state == RmaState.REQUESTED
    assert not any(" " in r.url.path or ".." in r.url.path for r in fake.requests)
    await source.api.close()


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("zh-CN", "已由厂商发出。DHL 1Z999"),
        ("zh-TW", "已由廠商寄出。DHL 1Z999"),
        ("en", "has shipped. DHL 1Z999"),
    ],
)
async def test_the_customer_hears_of_the_replacement_once(make_app, tmp_path, language, text) -> None:
    app, fake, _desk, source, rid = await setup(
        make_app, tmp_path, customer={"states": ["replacement_shipped"], "default_language": language}
    )
    ctx = app.context(source.name)
    ref = app.rmas.get(rid).ticket_ref
    with app.store.tx() as conn:  # the ticket's language decides (the mail's own was detected as zh-CN)
        app.store.update_ticket(conn, app.store.id_for_ref(ref), language=language)
    fake.rmas["88001234"] = {"status": "Received"}
    await source.poll(ctx)
    for _ in range(2):
        fake.rmas["88001234"] = {"status": "Shipped", "carrier": "DHL", "trackingNumber": "1Z999"}
        await source.poll(ctx)
    rows = [
        r
        for r in app.delivery.outbox.list()
        if r["kind"] == "notify" and r["payload"]["notification"]["template"] == "rma_replacement_shipped"
    ]
    assert len(rows) == 1
    note = rows[0]["payload"]["notification"]
    assert note["to"] == "alice@example.com" and text in note["body"]
    await source.api.close()


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_a_network_error_on_the_status_call_is_a_wait(make_app, tmp_path, error) -> None:
    """The status GET bypassed http_request: a refused connection or a timeout escaped as a raw httpx
    error (no NotReady, the source's health never said why) instead of a wait like a 5xx."""
    app, fake, _desk, source, rid = await setup(make_app, tmp_path)
    ctx = app.context(source.name)
    fake.rmas["88001234"] = {"status": "Received"}
    await source.poll(ctx)  # a token is cached: the next failure is the status call's

    def broken(request: httpx.Request) -> httpx.Response:
        if "/rma_numbers/" in request.url.path:
            raise error("down", request=request)
        return fake.transport.handle_request(request)  # pragma: no cover - the token is cached

    await source.api.close()
    source.api.cfg = source.api.cfg.model_copy(update={"transport": httpx.MockTransport(broken)})
    with pytest.raises(NotReady):
        await source.poll(ctx)
    assert app.rmas.get(rid).state == RmaState.RECEIVED_BY_VENDOR
    await source.api.close()


async def test_open_rmas_past_the_first_200_are_read(make_app, tmp_path) -> None:
    """The poll read book.list(vendor='CISCO'): the first 200 by id, closed ones included, so once a
    shop had 200 Cisco RMAs no new one was ever read from Cisco."""
    app, fake, _desk, source, rid = await setup(make_app, tmp_path)
    ctx = app.context(source.name)
    ref = app.rmas.get(rid).ticket_ref
    for _ in range(200):  # earlier RMAs (closed, or waiting for their number)
        app.rmas.open(ref, "cisco", [RmaPart(part="PWR-C1-715WAC")])
    late = app.rmas.open(ref, "cisco", [RmaPart(part="PWR-C1-715WAC")])
    app.rmas.move(late.id, RmaState.APPROVED, source="cli", number="88009999")
    fake.rmas["88009999"] = {"status": "Shipped", "carrier": "DHL", "trackingNumber": "1Z1"}
    await source.poll(ctx)
    assert app.rmas.get(late.id).state == RmaState.REPLACEMENT_SHIPPED
    await source.api.close()
