"""GLPI specifics the connector table (test_connectors.py) does not cover: the session life cycle
(expired session renewed once, App-Token refused = auth failure, Basic login, killSession), ``range``
paging of follow-ups and searches, settings validation and webhook bodies that say nothing."""

from __future__ import annotations

from typing import Any

import pytest

from fakes.glpi import FakeGlpi
from svcbridge import AuthFailed, Contact, DeliveryItem, Ticket, TicketState
from svcbridge_glpi import GlpiSettings, GlpiSink, to_update


def sink_for(fake: FakeGlpi, **cfg: Any) -> GlpiSink:
    base: dict[str, Any] = {"url": f"http://{fake.host}", "transport": fake.transport}
    base.update(cfg if "login" in cfg or "user_token" in cfg else {"user_token": fake.user_token, **cfg})
    base.setdefault("app_token", fake.app_token)
    return GlpiSink(GlpiSettings(**base), allow=[fake.host])


def ticket(ref: str = "SB-000001") -> Ticket:
    return Ticket(id=1, ref=ref, channel="email", subject="Printer jams", description="It jams.",
                  contact=Contact(email="alice@example.com"))


def item(kind: str = "create", ref: str = "SB-000001", **payload: Any) -> DeliveryItem:
    return DeliveryItem(id=1, kind=kind, target="glpi", idempotency_key=f"{ref}:{kind}:glpi", ticket=ticket(ref),
                        payload=payload)


def inits(fake: FakeGlpi) -> int:
    return sum(1 for r in fake.seen() if r.url.path.endswith("/initSession"))


async def test_an_expired_session_is_renewed_once_and_the_call_repeated() -> None:
    fake = FakeGlpi()
    sink = sink_for(fake)
    await sink.deliver(item())
    assert inits(fake) == 1
    fake.expire_sessions()
    await sink.deliver(item("update", body="Still jams.", type="customer_message"))
    assert inits(fake) == 2
    [t] = fake.view()
    assert sum("Still jams." in m.text for m in t.messages) == 1
    await sink.aclose()
    assert len(fake.killed) == 1 and fake.sessions == set()


async def test_a_session_refused_right_after_renewal_is_an_auth_failure() -> None:
    fake = FakeGlpi()
    sink = sink_for(fake)
    await sink.deliver(item())
    fake.expire_sessions()
    fake.user_token = "rotated"  # the token was revoked: the renewal is refused, no loop of renewals
    with pytest.raises(AuthFailed, match="initSession"):
        await sink.deliver(item("create", ref="SB-000002"))
    assert inits(fake) == 2


@pytest.mark.parametrize("app_token", [None, "wrong-app-token"])
async def test_an_app_token_glpi_refuses_is_an_auth_failure(app_token: str | None) -> None:
    fake = FakeGlpi()
    sink = sink_for(fake, app_token=app_token)
    with pytest.raises(AuthFailed, match="APP_TOKEN"):
        await sink.deliver(item())
    assert fake.tickets == {}


async def test_basic_login_instead_of_a_user_token() -> None:
    fake = FakeGlpi()
    login, pw = fake.login
    await sink_for(fake, login=login, password=pw).deliver(item())
    assert len(fake.tickets) == 1
    with pytest.raises(AuthFailed):
        await sink_for(fake, login=login, password="nope").deliver(item(ref="SB-000002"))


async def test_markers_and_references_are_found_beyond_the_first_page() -> None:
    fake = FakeGlpi()
    sink = sink_for(fake)
    for n in range(130):  # other tickets whose names also match a "contains" search
        fake.tickets[1000 + n] = {"id": 1000 + n, "name": f"about [SB-000001] #{n}", "content": "x", "status": 1}
    result = await sink.deliver(item())
    rid = result.links[0].value
    assert await sink.find(ticket()) == "1000"  # the oldest match, seen only by paging the search
    fake.tickets = {int(rid): fake.tickets[int(rid)]}
    for n in range(120):
        fake.agent_followup(int(rid), f"agent note {n}")
    await sink.deliver(item("update", body="Still jams.", type="customer_message"))
    await sink.deliver(item("update", body="Still jams.", type="customer_message"))  # the marker is on page 2
    assert sum("Still jams." in m.text for m in fake.view()[0].messages) == 1
    ranges = [r.url.params.get("range") for r in fake.seen() if r.url.path.endswith("/ITILFollowup")]
    assert "100-199" in ranges


async def test_a_customer_reply_reopens_a_solved_ticket() -> None:
    fake = FakeGlpi()
    sink = sink_for(fake)
    rid = int((await sink.deliver(item())).links[0].value)
    fake.agent_status(rid, 5)
    await sink.deliver(item("update", body="Not fixed.", type="customer_message", reopen=True))
    assert fake.tickets[rid]["status"] == 2


def test_settings_need_one_way_to_log_in_and_numeric_statuses() -> None:
    with pytest.raises(ValueError, match="user_token"):
        GlpiSettings(url="https://glpi.example.com")
    with pytest.raises(ValueError, match="not both"):
        GlpiSettings(url="https://glpi.example.com", user_token="t", login="x", password="y")
    with pytest.raises(ValueError, match=r"1\.\.6"):
        GlpiSettings(url="https://glpi.example.com", user_token="t", state_map={"to_helpdesk": {"resolved": "solved"}})
    with pytest.raises(ValueError, match="set by svcbridge"):
        GlpiSettings(url="https://glpi.example.com", user_token="t", fields={"status": 2})
    s = GlpiSettings(url="https://glpi.example.com/api/", user_token="t", state_map={"from_helpdesk": {"3": "on_site"}})
    assert s.api_base == "https://glpi.example.com/api/"
    assert s.state_map.state(3) is TicketState.ON_SITE and s.state_map.state("5") is TicketState.RESOLVED


def test_webhook_bodies_that_say_nothing_are_ignored() -> None:
    cfg = GlpiSettings(url="https://glpi.example.com", user_token="t")
    assert to_update(cfg, {"event": "delete", "item": {"id": 4, "status": 6}}) is None
    assert to_update(cfg, {"event": "new", "item": {"itemtype": "Ticket", "items_id": 4,
                                                    "content": "<p>[svcbridge SB-000001:j2:glpi]<br>hi</p>"}}) is None
    upd = to_update(cfg, {"event": "new", "item": {"itemtype": "Ticket", "items_id": 4, "is_private": 1,
                                                   "content": "&lt;p&gt;Part &amp; labour&lt;/p&gt;"}})
    assert upd is not None and upd.internal_note == "Part & labour" and upd.public_reply is None


@pytest.mark.parametrize("good, want", [(4, "4"), ("17", "17"), ("0042", "42")])
def test_webhook_ids_are_read_as_glpi_sends_them(good: Any, want: str) -> None:
    cfg = GlpiSettings(url="https://glpi.example.com", user_token="t")
    upd = to_update(cfg, {"item": {"id": good, "status": 5}})
    assert upd is not None and upd.external_ticket_id == want
    upd = to_update(cfg, {"item": {"itemtype": "Ticket", "items_id": good, "content": "hi"}})
    assert upd is not None and upd.external_ticket_id == want


@pytest.mark.parametrize("bad", [float("inf"), 1e300, 1.7, True, "\uff11\uff12", "\u00b2", "-1", "", 0, 2**70, None, [4], "1" * 40])
def test_webhook_ids_glpi_never_sends_are_refused(bad: Any) -> None:
    # int() took 1e999 to an OverflowError (a 500), 1.7 to ticket 1 and True to ticket 1
    cfg = GlpiSettings(url="https://glpi.example.com", user_token="t")
    with pytest.raises(ValueError, match="not a GLPI id"):
        to_update(cfg, {"item": {"id": bad, "status": 5}})
    with pytest.raises(ValueError, match="not a GLPI id"):
        to_update(cfg, {"item": {"itemtype": "Ticket", "items_id": bad, "content": "hi"}})
