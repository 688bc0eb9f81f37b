"""Which sink receives which new ticket: ``[[routing.rules]]`` by mailbox (the source name), customer,
channel and priority, first match wins, else ``default`` -- delivered to two real connectors (Zammad and
GLPI against their contract fakes) next to the built-in ``local`` store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import eml
from fakes.glpi import FakeGlpi
from fakes.zammad import FakeZammad
from svcbridge import Priority, hookimpl
from svcbridge.plugins import make_plugin_manager


class Classifier:
    """Stands in for a customer-lookup plugin: sets customer and priority from the subject."""

    __name__ = "test_classifier"

    @hookimpl
    def classify_ticket(self, draft: Any, ticket: Any) -> None:
        if "ACME" in draft.subject:
            draft.customer = "ACME"
        if "URGENT" in draft.subject:
            draft.priority = Priority.P1


async def test_rules_route_by_mailbox_customer_and_priority(make_app: Any, tmp_path: Path) -> None:
    zammad, glpi = FakeZammad(), FakeGlpi()
    app = make_app(
        pm=make_plugin_manager(extra=(Classifier(),)),
        outbound_allow=[zammad.host, glpi.host],
        routing={
            "default": ["local"],
            "rules": [
                {"customer": "ACME", "sinks": ["zammad"]},  # the key account has its own desk
                {"source": "maildir", "max_priority": 1, "sinks": ["glpi", "local"]},  # P1 from this mailbox
                {"channel": "sms", "sinks": ["glpi"]},
            ],
        },
        plugins={
            "zammad": {"url": f"http://{zammad.host}", "token": zammad.token, "transport": zammad.transport},
            "glpi": {"url": f"http://{glpi.host}", "user_token": glpi.user_token, "app_token": glpi.app_token,
                     "transport": glpi.transport},
        },
    )
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    mails = {
        "a": eml(subject="ACME: URGENT scanner down", msgid="<a@x>"),  # customer rule comes first
        "b": eml(subject="URGENT: line stopped", msgid="<b@x>"),
        "c": eml(subject="Toner low", msgid="<c@x>"),
    }
    for name, data in mails.items():
        (new / name).write_bytes(data)
    await app.poll_sources_once()
    await app.pipeline.drain()
    await app.delivery.drain()

    targets: dict[str, set[str]] = {}
    for r in app.delivery.outbox.list():
        if r["kind"] == "create":
            targets.setdefault(app.store.ref_for(r["ticket_id"]), set()).add(r["target"])
        assert r["status"] == "done", r
    subjects = {t.ref: t.subject for t in app.store.list_tickets(None, 10)}
    by_subject = {subjects[ref]: sinks for ref, sinks in targets.items()}
    assert by_subject == {
        "ACME: URGENT scanner down": {"zammad"},
        "URGENT: line stopped": {"glpi", "local"},
        "Toner low": {"local"},
    }
    assert [t.title for t in zammad.view()] == [f"[{ref}] ACME: URGENT scanner down" for ref, s in subjects.items()
                                                if s.startswith("ACME")]
    assert [t.title.split("] ", 1)[1] for t in glpi.view()] == ["URGENT: line stopped"]
    urgent = app.store.get_ticket(next(ref for ref, s in subjects.items() if s == "URGENT: line stopped"))
    assert app.pipeline.route(urgent, "maildir") == ["glpi", "local"]
    assert app.pipeline.route(urgent, "imap:sales") == ["local"]  # the same P1 from another mailbox
