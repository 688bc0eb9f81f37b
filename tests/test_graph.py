"""Microsoft Graph mail source (plugins/svcbridge_email/graph.py) against the fake in tests/fake_graph.py:
delta rounds paged by nextLink and resumed from the stored deltaLink, MIME through the shared parser,
journal before the after-action, 410 resync without duplicates, 429 Retry-After, token refresh / refusal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import eml
from corpus import hard_cases
from fake_graph import BASE, FakeGraph
from fake_idp import FakeIdp, at, oauth_cfg
from svcbridge import AuthFailed, NotReady, StoreUnavailable
from svcbridge_email import GraphSettings
from svcbridge_email.graph import GraphSource
from svcbridge_email.oauth import TokenProvider

NAME = "graph:support"
ALLOW = ["graph.example.com", "login.example.com"]


def graph_cfg(tmp_path: Path, **over: Any) -> dict[str, Any]:
    oauth = oauth_cfg(tmp_path, flow="client_credentials").model_dump(mode="json", exclude={"scope"})
    oauth["client_secret"] = "client-secret-value"
    return {"name": NAME, "user": "support@contoso.example", "base_url": BASE, "oauth2": oauth,
            "page_size": 2, **over}  # fmt: skip


def build(make_app: Any, tmp_path: Path, graph: FakeGraph, idp: FakeIdp | None = None, **over: Any) -> Any:
    """An App whose Graph source talks to ``graph`` (and the fake token endpoint) through MockTransport.

    Every test mail comes from its own customer, but several tests send more acknowledgements than the
    default per-recipient cap allows in one window when senders repeat: the cap is lifted here."""
    app = make_app(outbound_allow=ALLOW, outbox={"auto_limits": {10: 100}},
                   plugins={"email": {"graph": [graph_cfg(tmp_path, **over)]}})  # fmt: skip
    cfg = app.sources[NAME].cfg  # the validated settings, as the daemon built them
    idp = idp or FakeIdp()
    tokens = TokenProvider(cfg.oauth2, transport=httpx.MockTransport(idp), allow=ALLOW)
    app.sources[NAME] = GraphSource(cfg, tokens, transport=httpx.MockTransport(graph), allow=ALLOW)
    return app


def mail(i: int) -> bytes:
    return eml(subject=f"Graph mail {i}", msgid=f"<g{i}@example.com>", sender=f"C{i} <c{i}@example.com>")


async def test_delta_rounds_page_resume_and_fetch_only_what_is_new(make_app, tmp_path: Path) -> None:
    graph = FakeGraph()
    for i in range(5):
        graph.deliver(mail(i))
    app = build(make_app, tmp_path, graph)
    res = await app.run_once()
    assert app.store.count_tickets() == 5 and len(res["outcomes"]) == 5
    assert sorted(t.subject for t in app.store.list_tickets()) == [f"Graph mail {i}" for i in range(5)]
    deltas = [p for m, p in graph.requests if p.endswith("/messages/delta")]
    assert len(deltas) == 3  # five messages, two per page
    assert graph.states and all(not i.is_read for i in graph.items.values())  # after = "none"
    ctx = app.context(NAME)
    link = await ctx.get_checkpoint("delta_link")
    assert link and "$deltatoken=" in link and not await ctx.get_checkpoint("next_link")

    graph.requests.clear()
    assert (await app.run_once())["outcomes"] == []  # nothing new: one delta request, no MIME fetch
    assert graph.requests == [("GET", "/v1.0/users/support@contoso.example/mailFolders/inbox/messages/delta")]
    new = graph.deliver(mail(9))
    graph.requests.clear()
    await app.run_once()
    assert app.store.count_tickets() == 6
    assert [p for _m, p in graph.requests if p.endswith("$value")] == [
        f"/v1.0/users/support@contoso.example/messages/{new}/$value"
    ]


async def test_mime_goes_through_the_same_parser(make_app, tmp_path: Path) -> None:
    graph = FakeGraph()
    cases = [c for c in hard_cases() if c.kind in ("gbk_as_gb2312", "big5", "tiff_fax", "tnef")]
    for c in cases:
        graph.deliver(c.raw)
    app = build(make_app, tmp_path, graph)
    await app.run_once()
    by_subject = {t.subject: t for t in app.store.list_tickets()}
    assert set(by_subject) == {c.subject for c in cases}
    for c in cases:
        t = app.store.get_ticket(by_subject[c.subject].ref)
        if c.body is not None:
            assert t.description.strip() == c.body
        stored = {(a.original_name, app.store.attachment_data(t.id, a.safe_name)) for a in t.attachments}
        assert set(c.attachments) <= stored


@pytest.mark.parametrize("after", ["read", "move", "delete"])
async def test_after_action_only_after_journaling(make_app, tmp_path: Path, after: str) -> None:
    graph = FakeGraph()
    ids = [graph.deliver(mail(i)) for i in range(3)]
    app = build(make_app, tmp_path, graph, after=after, move_to="archive")
    src, ctx = app.sources[NAME], app.context(NAME)

    async def refuse(raws: list[Any]) -> Any:
        raise StoreUnavailable("database is locked")

    ctx.submit_many = refuse  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await src.poll(ctx)
    # nothing acknowledged and no checkpoint: the mail stays exactly as it was
    assert [(i.folder, i.is_read) for i in graph.items.values()] == [("inbox", False)] * 3
    assert await ctx.get_checkpoint("delta_link") is None and await ctx.get_checkpoint("next_link") is None

    await app.run_once()
    assert app.store.count_tickets() == 3
    if after == "read":
        assert all(graph.items[i].is_read and graph.items[i].folder == "inbox" for i in ids)
    elif after == "move":
        assert all(graph.items[i].folder == "archive" for i in ids)
    else:
        assert graph.items == {}
    # our own read / move / delete does not come back as new mail in the next round
    graph.requests.clear()
    assert (await app.run_once())["outcomes"] == []
    assert not [p for _m, p in graph.requests if p.endswith("$value")]


async def test_crash_mid_round_resumes_from_the_next_link_without_duplicates(make_app, tmp_path: Path) -> None:
    graph = FakeGraph()
    for i in range(5):
        graph.deliver(mail(i))
    app = build(make_app, tmp_path, graph)
    src, ctx = app.sources[NAME], app.context(NAME)
    calls = {"n": 0}
    real = ctx.submit_many

    async def second_page_fails(raws: list[Any]) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise StoreUnavailable("disk full")
        return await real(raws)

    ctx.submit_many = second_page_fails  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await src.poll(ctx)
    assert "$skiptoken=" in (await ctx.get_checkpoint("next_link") or "")
    await app.run_once()
    assert app.store.count_tickets() == 5
    assert sorted(t.subject for t in app.store.list_tickets()) == [f"Graph mail {i}" for i in range(5)]


async def test_expired_delta_link_resyncs_without_second_tickets(make_app, tmp_path: Path) -> None:
    graph = FakeGraph()
    for i in range(3):
        graph.deliver(mail(i))
    app = build(make_app, tmp_path, graph)
    await app.run_once()
    graph.expire_tokens()
    graph.deliver(mail(7))
    res = await app.run_once()
    assert app.store.count_tickets() == 4
    assert [o.status for o in res["outcomes"]] == ["created"]  # the three old ones are journal duplicates
    assert ("GET", "/v1.0/users/support@contoso.example/mailFolders/inbox/messages/delta") in graph.requests


async def test_throttling_waits_retry_after_or_backs_off(make_app, tmp_path: Path) -> None:
    graph = FakeGraph()
    graph.deliver(mail(1))
    graph.throttle = ["1"]
    app = build(make_app, tmp_path, graph, max_wait=5)
    start = time.monotonic()
    await app.run_once()
    assert time.monotonic() - start >= 1.0 and app.store.count_tickets() == 1

    graph.deliver(mail(2))
    graph.throttle = ["120"]  # longer than max_wait: the source gives up this pass and says how long
    src, ctx = app.sources[NAME], app.context(NAME)
    with pytest.raises(NotReady) as err:
        await src.poll(ctx)
    assert err.value.retry_after == 120.0
    await app.run_once()
    assert app.store.count_tickets() == 2


async def test_expired_token_is_renewed_once_and_refusal_is_auth_failed(make_app, tmp_path: Path) -> None:
    graph = FakeGraph(tokens={at(2)})  # the first token the IdP issues is already stale for Graph
    graph.deliver(mail(1))
    idp = FakeIdp()
    app = build(make_app, tmp_path, graph, idp=idp)
    await app.run_once()
    assert app.store.count_tickets() == 1 and len(idp.calls) == 2
    assert idp.calls[0]["scope"] == "https://graph.microsoft.com/.default"
    assert idp.calls[0]["grant_type"] == "client_credentials"

    graph.revoked = True
    src, ctx = app.sources[NAME], app.context(NAME)
    with pytest.raises(AuthFailed) as err:
        await src.poll(ctx)
    assert "InvalidAuthenticationToken" in str(err.value)
    assert "t0ken" not in str(err.value) and "secret" not in str(err.value)


async def test_removed_rows_and_a_vanished_message_do_not_stop_the_round(make_app, tmp_path: Path) -> None:
    graph = FakeGraph()
    gone = graph.deliver(mail(1))
    graph.deliver(mail(2))
    app = build(make_app, tmp_path, graph)
    real = graph.__call__

    def vanish_before_fetch(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(f"{gone}/$value") and gone in graph.items:
            graph.items.pop(gone)  # deleted in Outlook between the delta page and the fetch
        return real(request)

    app.sources[NAME].transport = httpx.MockTransport(vanish_before_fetch)
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "quarantined"]
    (q,) = app.store.quarantine_list()
    assert "could not be fetched" in q["error"] and "HTTP 404" in q["error"]


def test_settings_refuse_plain_http_and_default_the_scope(tmp_path: Path) -> None:
    cfg = GraphSettings(**graph_cfg(tmp_path))
    assert cfg.oauth2.scope == "https://graph.microsoft.com/.default"
    with pytest.raises(ValueError, match="https"):
        GraphSettings(**graph_cfg(tmp_path, base_url="http://graph.example.com/v1.0"))
    GraphSettings(**graph_cfg(tmp_path, base_url="http://127.0.0.1:8080/v1.0"))
