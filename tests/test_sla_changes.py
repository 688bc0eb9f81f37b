"""TicketChange's SLA fields in the core: deadlines and policy applied with a diff, the plugin's own
events and its notices written with the change, a re-run of the same origin sending nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime

from svcbridge import Notification, Ticket, TicketChange, TicketEvent
from svcbridge.changes import apply, column_values, record

D1 = datetime(2026, 3, 9, 2, 55, tzinfo=UTC)
D2 = datetime(2026, 3, 11, 6, 55, tzinfo=UTC)


def test_apply_replaces_the_deadline_set_and_reports_the_diff() -> None:
    t = Ticket(id=1, ref="SB-000001", channel="email", deadlines={"solution_by": D1, "onsite_by": D2})
    diff = apply(t, TicketChange(deadlines={"onsite_by": D2}, sla_policy="p1-province"))
    assert t.deadlines == {"onsite_by": D2} and t.sla_policy == "p1-province"
    assert diff["deadlines"] == {
        "from": {"onsite_by": D2.isoformat(), "solution_by": D1.isoformat()},
        "to": {"onsite_by": D2.isoformat()},
    }
    assert diff["sla_policy"] == {"from": None, "to": "p1-province"}
    assert apply(t, TicketChange(deadlines={"onsite_by": D2})) == {}  # the same set: nothing
    assert apply(t, TicketChange()) == {} and t.deadlines == {"onsite_by": D2}  # None leaves them
    assert apply(t, TicketChange(deadlines={}))["deadlines"]["to"] == {}  # {} clears them
    assert column_values(t)["deadlines"] == {}


def test_record_writes_events_and_notices_once_per_origin(make_app) -> None:
    app = make_app()
    s = app.store
    tid = s.allocate_ticket_id()
    t = Ticket(id=tid, ref=s.ref_for(tid), channel="email", deadlines={"solution_by": D1})
    with s.tx() as conn:
        s.insert_ticket(conn, t, "test")
    note = Notification(
        channel="email", template="sla_escalation", to="lead@bridge.test", subject="x", body="y"
    )
    change = TicketChange(
        deadlines={"onsite_by": D2},
        events=[TicketEvent(type="sla_breached", actor="sla", data={"target": "solution"})],
        notifications=[note],
    )
    for _ in range(2):  # the same firing recorded again (a retried timer): one notice
        with s.tx() as conn:
            record(
                conn, s, s.get_ticket(tid, conn=conn, full=False), change, plugin="sla", origin="timer:7:1"
            )
    got = s.get_ticket(tid)
    assert got.deadlines == {"onsite_by": D2}
    assert [e.type for e in got.events].count("sla_breached") == 2  # events are the caller's to dedupe
    rows = [r for r in app.delivery.outbox.list() if r["target"] == "notify:email"]
    assert len(rows) == 1 and rows[0]["payload"]["notification"]["to"] == "lead@bridge.test"


async def test_servicenow_due_date_follows_the_earliest_deadline() -> None:
    from fakes.servicenow import FakeServiceNow
    from svcbridge import DeliveryItem
    from svcbridge.changes import change_rows
    from test_jsm_servicenow import create, snow, ticket

    fake = FakeServiceNow()
    sink = snow(fake)
    t = ticket(1, deadlines={"solution_by": D1, "onsite_by": D2})
    created = await sink.deliver(create(t))
    rid = created.links[0].value
    assert fake.incidents[rid]["due_date"] == "2026-03-09 02:55:00"  # the earliest, in UTC
    t.links = list(created.links)  # the incident's sys_id, as the store records it
    for new, want in (({"onsite_by": D2}, "2026-03-11 06:55:00"), ({}, "")):
        diff = apply(t, TicketChange(deadlines=new))
        _, rows = change_rows(t, diff, None, plugin="sla", origin=f"t{len(new)}", sinks=["servicenow"])
        (_, key, payload) = rows[0]
        item = DeliveryItem(
            id=2, kind="update", target="servicenow", idempotency_key=key, ticket=t, payload=payload
        )
        res = await sink.deliver(item)
        assert "due" in res.detail
        assert fake.incidents[rid]["due_date"] == want


async def test_jsm_due_field_follows_the_earliest_deadline_when_configured() -> None:
    from fakes.jsm import FakeJsm
    from svcbridge import DeliveryItem
    from svcbridge.changes import change_rows
    from test_jsm_servicenow import create, jsm, ticket

    async def move(sink, t, new, origin):
        diff = apply(t, TicketChange(deadlines=new))
        _, rows = change_rows(t, diff, None, plugin="sla", origin=origin, sinks=["jsm"])
        (_, key, payload) = rows[0]
        item = DeliveryItem(id=2, kind="update", target="jsm", idempotency_key=key, ticket=t, payload=payload)
        return await sink.deliver(item)

    fake = FakeJsm()
    for field, want in (("duedate", "2026-03-11"), ("customfield_10050", "2026-03-11T06:55:00.000+0000")):
        sink = jsm(fake, due_field=field)
        t = ticket(1 if field == "duedate" else 2, deadlines={"solution_by": D1, "onsite_by": D2})
        created = await sink.deliver(create(t))
        t.links = list(created.links)
        key = created.links[0].value
        await move(sink, t, {"onsite_by": D2}, f"{field}:1")
        assert fake.requests_by_key[key]["fields"][field] == want
        await move(sink, t, {}, f"{field}:2")
        assert fake.requests_by_key[key]["fields"][field] is None  # nothing open: cleared
    # without due_field nothing is sent (the request type may not have the field)
    t = ticket(3, deadlines={"solution_by": D1})
    sink = jsm(fake)
    created = await sink.deliver(create(t))
    t.links = list(created.links)
    await move(sink, t, {}, "none")
    assert "fields" not in fake.requests_by_key[created.links[0].value]


async def test_glpi_time_to_resolve_in_its_time_zone_when_configured() -> None:
    from fakes.glpi import FakeGlpi
    from svcbridge import Contact, DeliveryItem
    from svcbridge.changes import change_rows
    from test_glpi import sink_for

    fake = FakeGlpi()
    sink = sink_for(fake, due_field="time_to_resolve", due_timezone="Asia/Shanghai")
    t = Ticket(id=1, ref="SB-000001", channel="email", subject="x", contact=Contact(email="a@example.com"),
               deadlines={"solution_by": D1, "onsite_by": D2})  # fmt: skip
    created = await sink.deliver(
        DeliveryItem(id=1, kind="create", target="glpi", idempotency_key="c", ticket=t)
    )
    t.links = list(created.links)
    tid = int(created.links[0].value)
    assert fake.tickets[tid]["time_to_resolve"] == "2026-03-09 10:55:00"  # 02:55 UTC in GLPI's zone
    for new, want, origin in (({"onsite_by": D2}, "2026-03-11 14:55:00", "a"), ({}, "NULL", "b")):
        diff = apply(t, TicketChange(deadlines=new))
        _, rows = change_rows(t, diff, None, plugin="sla", origin=origin, sinks=["glpi"])
        (_, key, payload) = rows[0]
        await sink.deliver(
            DeliveryItem(id=2, kind="update", target="glpi", idempotency_key=key, ticket=t, payload=payload)
        )
        assert fake.tickets[tid]["time_to_resolve"] == want
    await sink.aclose()
    plain = sink_for(FakeGlpi())  # not configured: GLPI's own SLA owns the field
    assert "due" in plain.fields and plain.cfg.due_field is None
    import pytest

    with pytest.raises(ValueError, match="unknown time zone"):
        sink_for(FakeGlpi(), due_field="time_to_resolve", due_timezone="Mars/Olympus")
