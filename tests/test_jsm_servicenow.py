"""Contract specifics of the Jira Service Management and ServiceNow connectors, against their fakes.

What the shared table (``test_connectors.py``) does not look at: JSM's start/limit/isLastPage paging and
its request search defaults, transitions chosen by name from the workflow, the sha256 webhook signature
and the two deliveries Jira makes for one comment, ADF comment bodies; ServiceNow's Link-header paging
(short pages under ACLs, a next link naming another host), state codes and close codes, an ignored query
term, and the ``sys_updated_on`` cursor of ``poll_changes`` (several changes in one second, our own
journal entries, redelivered events keeping their ids).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from fakes.base import ELSEWHERE
from fakes.jsm import FakeJsm
from fakes.servicenow import FakeServiceNow
from svcbridge import (
    AuthFailed,
    Contact,
    DeliveryItem,
    NotReady,
    PermanentError,
    Priority,
    Ticket,
    TicketState,
)
from svcbridge_jsm import JsmSettings, JsmSink, to_update, webhook_route
from svcbridge_jsm.client import text_of
from svcbridge_servicenow import ServiceNowSettings, ServiceNowSink

S = TicketState


def ticket(n: int = 1, subject: str = "Printer jams", **kw: Any) -> Ticket:
    return Ticket(id=n, ref=f"SB-{n:06d}", channel="email", subject=subject, description="It jams.",
                  contact=Contact(name="Alice", email="alice@example.com"), **kw)


def create(t: Ticket) -> DeliveryItem:
    return DeliveryItem(id=t.id, kind="create", target="x", idempotency_key=f"create:{t.ref}", ticket=t)


def followup(t: Ticket, key: str, body: str, reopen: bool = False) -> DeliveryItem:
    payload = {"type": "customer_message", "body": body, "reopen": reopen}
    return DeliveryItem(id=100, kind="update", target="x", idempotency_key=key, ticket=t, payload=payload)


def jsm(fake: FakeJsm, **kw: Any) -> JsmSink:
    auth = {"email": fake.email, "api_token": fake.api_token} if "oauth_token" not in kw else {}
    cfg = JsmSettings(url=f"http://{fake.host}", service_desk_id="1", request_type_id="10",
                      webhook_secret=fake.hook_secret, transport=fake.transport, **auth, **kw)
    return JsmSink(cfg, allow=[fake.host, ELSEWHERE])


def snow(fake: FakeServiceNow, **kw: Any) -> ServiceNowSink:
    auth = {"username": fake.username, "password": fake.password} if "token" not in kw else {}
    cfg = ServiceNowSettings(url=f"http://{fake.host}", transport=fake.transport, **auth, **kw)
    return ServiceNowSink(cfg, allow=[fake.host, ELSEWHERE])


# ====================================================================== Jira Service Management
def test_jsm_settings_need_exactly_one_kind_of_auth() -> None:
    base = {"url": "https://acme.atlassian.net", "service_desk_id": "1", "request_type_id": "10"}
    with pytest.raises(ValidationError, match="either email"):
        JsmSettings(**base)
    with pytest.raises(ValidationError, match="either email"):
        JsmSettings(**base, email="a@b.example", api_token="t", oauth_token="o")
    cfg = JsmSettings(**{**base, "url": "https://acme.atlassian.net/rest/servicedeskapi/"}, oauth_token="o")
    assert cfg.api_base == "https://acme.atlassian.net/rest/servicedeskapi/"
    custom = JsmSettings(**base, oauth_token="o", state_map={"from_helpdesk": {"Waiting for vendor": "waiting_parts"},
                                                             "to_helpdesk": {"closed": "Archive"}})
    assert custom.state_map.state("WAITING FOR VENDOR") is S.WAITING_PARTS
    assert custom.state_map.state("Resolved") is S.RESOLVED  # the defaults stay
    assert custom.state_map.remote(S.CLOSED) == "Archive"


async def test_jsm_oauth_bearer_and_a_wrong_token_is_auth_failed() -> None:
    fake = FakeJsm()
    sink = jsm(fake, oauth_token=fake.oauth_token)
    rid = (await sink.deliver(create(ticket()))).links[0].value
    assert rid == "SUP-1" and fake.seen()[0].headers["Authorization"] == "Bearer jsm-oauth-token"
    other = FakeJsm()
    bad = jsm(other)
    other.api_token = "rotated"  # the token was revoked on the site
    with pytest.raises(AuthFailed, match="401"):
        await bad.deliver(create(ticket()))


async def test_jsm_create_body_and_find_through_pages_and_resolved_requests() -> None:
    fake = FakeJsm()
    fake.max_limit = 2  # the server's cap wins over the client's limit: paging must go on
    sink = jsm(fake)
    for n in range(2, 7):  # requests that merely mention SB-000001 are found by the search, not ours
        await sink.deliver(create(ticket(n, subject=f"see SB-000001 part {n}")))
    await sink.deliver(create(ticket(1, priority=Priority.P1)))
    posted = json.loads(fake.seen()[-1].content)
    assert posted == {"serviceDeskId": "1", "requestTypeId": "10",
                      "requestFieldValues": {"summary": "[SB-000001] Printer jams",
                                             "description": posted["requestFieldValues"]["description"]}}
    assert "svcbridge SB-000001 via email; from Alice, alice@example.com" in posted["requestFieldValues"]["description"]
    fake.agent_status("SUP-6", "Resolved")  # the default search (OPEN_REQUESTS) would not show it
    assert await sink.find(ticket(1)) == "SUP-6"
    search = [r for r in fake.seen() if r.url.path.endswith("/request") and r.method == "GET"][-1]
    assert search.url.params["requestStatus"] == "ALL_REQUESTS" and int(search.url.params["start"]) >= 2
    assert await sink.find(ticket(99)) is None


async def test_jsm_priority_only_when_the_request_type_has_it() -> None:
    fake = FakeJsm()
    with pytest.raises(PermanentError, match="400"):  # the fake's request type has no priority field
        await jsm(fake, send_priority=True).deliver(create(ticket(priority=Priority.P1)))
    assert json.loads(fake.seen()[-1].content)["requestFieldValues"]["priority"] == {"name": "Highest"}


async def test_jsm_followup_marker_found_on_a_later_comment_page() -> None:
    fake = FakeJsm()
    fake.max_limit = 3
    sink = jsm(fake)
    t = ticket()
    rid = (await sink.deliver(create(t))).links[0].value
    t = t.model_copy(update={"links": (await sink.deliver(create(t))).links})
    for i in range(7):
        fake.agent_comment(rid, f"agent comment {i}")
    first = await sink.deliver(followup(t, "upd:1", "Still jams."))
    again = await sink.deliver(followup(t, "upd:1", "Still jams."))
    assert "follow-up on JSM ticket SUP-1" in first.detail and "already on JSM ticket SUP-1" in again.detail
    ours = [c for c in fake.comments[rid] if "Still jams." in c["body"]]
    assert len(ours) == 1 and ours[0]["public"] is True and ours[0]["body"].startswith("[svcbridge upd:1]")


async def test_jsm_reopen_takes_the_transition_the_workflow_offers() -> None:
    fake = FakeJsm()
    sink = jsm(fake)
    t = ticket()
    t = t.model_copy(update={"links": (await sink.deliver(create(t))).links})
    fake.agent_status("SUP-1", "Resolved")
    result = await sink.deliver(followup(t, "upd:2", "It jams again.", reopen=True))
    assert result.detail.endswith("reopened")
    posted = [r for r in fake.seen() if r.method == "POST" and r.url.path.endswith("/transition")]
    assert [json.loads(r.content) for r in posted] == [{"id": "81"}]  # "Reopen", offered from Resolved
    assert fake.requests_by_key["SUP-1"]["status"] == "Waiting for support"

    fake.agent_status("SUP-1", "Waiting for customer")  # offers neither Reopen nor any progress transition
    with pytest.raises(PermanentError, match="respond to support"):
        await sink.set_state("SUP-1", S.IN_PROGRESS)
    fake.agent_status("SUP-1", "In progress")
    await sink.set_state("SUP-1", S.IN_PROGRESS)  # nothing offered by that name, but already there


async def test_jsm_webhook_signature_comment_events_and_visibility() -> None:
    fake = FakeJsm()
    sink = jsm(fake)
    t = ticket()
    t = t.model_copy(update={"links": (await sink.deliver(create(t))).links})
    await sink.deliver(followup(t, "upd:1", "Still jams."))
    fake.agent_comment("SUP-1", "Fuser replaced.", public=True)
    fake.agent_comment("SUP-1", "Part from van stock.", public=False)
    fake.agent_status("SUP-1", "Resolved")
    hooks = fake.take_hooks()
    assert len(hooks) == 7  # each comment fires twice (issue_commented + comment_created), the move once
    route = webhook_route(sink.cfg)
    assert route.path == "jsm" and route.methods == ("POST",)
    cfg = sink.cfg
    updates = [to_update(cfg, h.json()) for h in hooks]
    got = [(u.public_reply, u.internal_note, u.state) for u in updates if u is not None]
    assert got == [("Fuser replaced.", None, None), (None, "Part from van stock.", None), (None, None, S.RESOLVED)]
    assert all(u is None or u.external_ticket_id == "SUP-1" for u in updates)
    # the signature is the contract's: sha256=<hex HMAC-SHA256(secret, raw body)>
    from svcbridge import hmac_matches

    h = hooks[-1]
    assert hmac_matches(fake.hook_secret, h.body, h.headers["X-Hub-Signature"], "sha256", prefix="sha256=")
    assert not hmac_matches("other", h.body, h.headers["X-Hub-Signature"], "sha256", prefix="sha256=")
    with pytest.raises(ValueError, match="issue key"):
        to_update(cfg, {"webhookEvent": "comment_created", "comment": {"body": "x"}})


def test_jsm_adf_comment_bodies_become_text() -> None:
    adf = {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Fuser "}, {"type": "text", "text": "replaced."}]},
        {"type": "paragraph", "content": [{"type": "text", "text": "Try again."}]}]}
    assert text_of(adf).strip() == "Fuser replaced.\nTry again."
    assert text_of("plain") == "plain" and text_of(None) == ""


# ====================================================================== ServiceNow
def test_servicenow_settings_state_codes_and_base() -> None:
    with pytest.raises(ValidationError, match="either username"):
        ServiceNowSettings(url="https://acme.service-now.com")
    cfg = ServiceNowSettings(url="https://acme.service-now.com/api/now/table", token="t",
                             state_map={"from_helpdesk": {"3": "waiting_parts", "8": ""}})
    assert cfg.api_base == "https://acme.service-now.com/api/now/v2/table/"
    m = cfg.state_map
    assert [m.state(c) for c in ("1", "2", "3", "6", "7", "8")] == [
        S.ACKNOWLEDGED, S.IN_PROGRESS, S.WAITING_PARTS, S.RESOLVED, S.CLOSED, None]
    assert (m.remote(S.IN_PROGRESS), m.remote(S.RESOLVED)) == ("2", "6")
    with pytest.raises(ValidationError, match="unknown priorities"):
        ServiceNowSettings(url="https://x.example", token="t", urgency={"P9": 1})


async def test_servicenow_create_find_and_an_ignored_query_field() -> None:
    fake = FakeServiceNow()
    sink = snow(fake, caller_id="abc123")
    rid = (await sink.deliver(create(ticket(priority=Priority.P1)))).links[0].value
    row = fake.incidents[rid]
    assert (row["short_description"], row["correlation_id"], row["urgency"], row["impact"]) == (
        "[SB-000001] Printer jams", "SB-000001", "1", "1")
    assert (row["contact_type"], row["caller_id"]) == ("email", "abc123")
    assert await sink.find(ticket(1)) == rid and await sink.find(ticket(2)) is None
    # ServiceNow ignores a query term on a field it does not have: every incident comes back
    odd = snow(fake, reference_field="u_svcbridge_ref")
    assert await odd.find(ticket(1)) is None


async def test_servicenow_paging_follows_link_offsets_never_the_link_itself() -> None:
    fake = FakeServiceNow()
    sink = snow(fake, page_size=3)
    ids = [(await sink.deliver(create(ticket(n)))).links[0].value for n in range(1, 9)]
    fake.acl_hidden = {ids[1], ids[4]}  # cut out after the page: pages come back short
    before = len(fake.seen())
    got = [r["sys_id"] async for r in sink.rows("incident", "ORDERBYnumber", ["sys_id"], "all")]
    assert got == [i for i in ids if i not in fake.acl_hidden]
    offsets = [r.url.params["sysparm_offset"] for r in fake.seen()[before:]]
    assert offsets == ["0", "3", "6"]

    route = fake.route  # the instance names another host in its Link header

    def moved(request: httpx.Request) -> httpx.Response:
        resp = route(request)
        if "Link" in resp.headers:
            resp.headers["Link"] = resp.headers["Link"].replace(fake.host, ELSEWHERE)
        return resp

    fake.route = moved  # type: ignore[method-assign]
    got = [r["sys_id"] async for r in sink.rows("incident", "ORDERBYnumber", ["sys_id"], "all")]
    assert len(got) == 6 and fake.seen(ELSEWHERE) == []


async def test_servicenow_rate_limit_body_and_retry_after() -> None:
    fake = FakeServiceNow()
    fake.fail_next("429", retry_after=45)
    with pytest.raises(NotReady) as info:
        await snow(fake).deliver(create(ticket()))
    assert info.value.retry_after == 45 and "Rate limit exceeded" in str(info.value)
    assert fake.password not in str(info.value)


async def test_servicenow_followup_reopen_and_close_code() -> None:
    fake = FakeServiceNow()
    sink = snow(fake, close_code="Solved (Permanently)")
    t = ticket()
    t = t.model_copy(update={"links": (await sink.deliver(create(t))).links})
    rid = t.links[0].value
    fake.agent_state(rid, "6")
    await sink.deliver(followup(t, "upd:1", "Still jams.", reopen=True))
    again = await sink.deliver(followup(t, "upd:1", "Still jams.", reopen=False))
    assert "already on ServiceNow ticket" in again.detail
    entries = [j for j in fake.journal if j["element_id"] == rid]
    assert [(j["element"], j["value"].split("\n")[0]) for j in entries] == [("comments", "[svcbridge upd:1]")]
    assert fake.incidents[rid]["state"] == "2"
    await sink.set_state(rid, S.RESOLVED)
    assert (fake.incidents[rid]["state"], fake.incidents[rid]["close_code"]) == ("6", "Solved (Permanently)")
    internal = snow(fake, followup_field="work_notes")
    await internal.deliver(followup(t, "upd:2", "Via work notes."))
    assert fake.journal[-1]["element"] == "work_notes"


async def test_servicenow_poll_cursor_same_second_own_entries_and_stable_event_ids() -> None:
    fake = FakeServiceNow()
    sink = snow(fake)
    t = ticket()
    t = t.model_copy(update={"links": (await sink.deliver(create(t))).links})
    rid = t.links[0].value
    rid2 = (await sink.deliver(create(ticket(2)))).links[0].value
    updates, cursor = await sink.poll_changes(None)  # first run: start now, replay nothing
    assert updates == [] and cursor == fake.clock.strftime("%Y-%m-%d %H:%M:%S")

    fake.frozen = True  # everything below happens within the cursor's own second
    await sink.deliver(followup(t, "upd:1", "Still jams."))
    fake.agent_comment(rid, "Fuser replaced.")
    fake.agent_comment(rid, "Part from van stock.", work_note=True)
    fake.agent_state(rid, "6")
    other = fake.incidents[rid2]
    fake.incidents["foreign"] = other | {"sys_id": "foreign", "correlation_id": "", "number": "INC9999999"}
    updates, cursor2 = await sink.poll_changes(cursor)
    got = [(u.external_ticket_id, u.public_reply, u.internal_note, u.state) for u in updates]
    assert [g for g in got if g[0] == rid] == [(rid, "Fuser replaced.", None, None),
                                               (rid, None, "Part from van stock.", None),
                                               (rid, None, None, S.RESOLVED)]
    # SB-000002 was made in the cursor's second too: read again (its state only), never "foreign"
    assert [g for g in got if g[0] != rid] == [(rid2, None, None, S.ACKNOWLEDGED)]
    assert updates[0].actor == "servicenow:agent.smith"
    again, cursor3 = await sink.poll_changes(cursor2)  # the same second is read again: same event ids
    assert [u.external_event_id for u in again] == [u.external_event_id for u in updates]
    fake.frozen = False
    fake.agent_comment(rid, "Please confirm.")
    later, _ = await sink.poll_changes(cursor3)
    seen = {u.external_event_id for u in updates}  # what the host already applied (it dedups on these)
    assert [(u.public_reply, u.state) for u in later if u.external_event_id not in seen] == [
        ("Please confirm.", None), (None, S.RESOLVED)]  # the state under its new sys_mod_count: no change


@pytest.mark.parametrize("secret", [None, "jsm-hook-secret"])
async def test_jsm_route_is_served_only_with_a_secret(make_app: Any, secret: str | None) -> None:
    from svcbridge.web import build_web

    fake = FakeJsm()
    section = {"url": f"http://{fake.host}", "email": fake.email, "api_token": fake.api_token,
               "service_desk_id": "1", "request_type_id": "10", "transport": fake.transport}
    if secret:
        section["webhook_secret"] = secret
    app = make_app(routing={"default": ["jsm"]}, outbound_allow=[fake.host], plugins={"jsm": section})
    assert "jsm" in app.delivery.sinks
    async with httpx.AsyncClient(transport=httpx.ASGITransport(build_web(app)), base_url="http://b.test") as web:
        r = await web.post("/hooks/jsm", content=b'{"issue": {"key": "SUP-1"}}',
                           headers={"X-Atlassian-Webhook-Identifier": "1"})
    # unsigned status changes are never taken: no route without a secret, 401 without a signature
    assert r.status_code == (401 if secret else 404)
