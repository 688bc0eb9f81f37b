"""The customer directory (``[plugins.customers]``): who a message comes from, and what follows from it.

Through the real pipeline: a mail from a customer's domain (or subdomain) gets the customer's name,
company, region label, notice language and priority floor, and a ``[routing]`` rule on that customer
sends it to its own sink; a stranger's mail is left alone. Overlapping entries and bad numbers are
configuration errors reported with their TOML path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import eml
from svcbridge import Contact, Priority, TicketDraft
from svcbridge.settings import load_settings
from svcbridge_customers import CustomerDirectory

DIRECTORY = {
    "directory": [
        {
            "name": "ACME Hospital",
            "domains": ["acme-hospital.example"],
            "emails": ["it.partner@freemail.example"],
            "phones": ["+86 755 1234 5678"],
            "region": "shenzhen",
            "language": "zh-CN",
            "priority": "P2",
            "labels": {"contract": "gold-24x7"},
        },
        {"name": "Small Shop", "domains": ["shop.example"], "company": "Small Shop Ltd."},
    ]
}


async def test_directory_sets_customer_and_routing_follows(make_app: Any, tmp_path: Path) -> None:
    app = make_app(
        plugins={"customers": DIRECTORY},
        routing={"default": ["local"], "rules": [{"customer": "ACME Hospital", "sinks": ["local"]}]},
    )
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "a").write_bytes(eml(subject="CT scanner down", msgid="<a@x>", sender="Dr Li <li@radiology.acme-hospital.example>"))
    (new / "b").write_bytes(eml(subject="Till broken", msgid="<b@x>", sender="Bo <bo@shop.example>"))
    (new / "c").write_bytes(eml(subject="Hello", msgid="<c@x>", sender="Eve <eve@elsewhere.example>"))
    (new / "d").write_bytes(eml(subject="Printer", msgid="<d@x>", sender="<IT.Partner@freemail.example>"))
    await app.run_once()
    by_subject = {t.subject: app.store.get_ticket(t.ref) for t in app.store.list_tickets(None, 10)}

    acme = by_subject["CT scanner down"]
    assert acme.customer == "ACME Hospital"
    assert acme.contact.company == "ACME Hospital"
    assert acme.priority == Priority.P2  # the floor lifted the default P3
    assert acme.language == "en"  # the mail's own language wins over the customer's default
    assert by_subject["Printer"].customer == "ACME Hospital"  # exact address, whatever its case

    shop = by_subject["Till broken"]
    assert (shop.customer, shop.contact.company, shop.priority) == ("Small Shop", "Small Shop Ltd.", Priority.P3)

    stranger = by_subject["Hello"]
    assert (stranger.customer, stranger.contact.company, stranger.priority) == (None, None, Priority.P3)
    assert app.pipeline.route(acme, "maildir") == ["local"]


def test_match_order_labels_and_floor_never_downgrades() -> None:
    from svcbridge_customers import classify_ticket, normalize_draft

    class S:
        def __init__(self, cfg: Any) -> None:
            self.cfg = cfg

        def plugin_config(self, section: str) -> Any:
            return self.cfg if section == "customers" else None

    settings = S(CustomerDirectory(**DIRECTORY))
    sms = TicketDraft(channel="sms", contact=Contact(phone="+8675512345678"), priority=Priority.P1)
    normalize_draft(sms, settings)
    classify_ticket(sms, settings)
    assert sms.customer == "ACME Hospital"
    assert sms.labels == {"region": "shenzhen", "contract": "gold-24x7"}
    assert sms.priority == Priority.P1  # a P1 stays P1: the floor only raises
    assert sms.language == "zh-CN"  # an SMS says nothing of its language: the customer's default

    told = TicketDraft(channel="email", contact=Contact(email="x@shop.example", company="Own Name", language="en"))
    normalize_draft(told, settings)
    assert (told.customer, told.contact.company) == ("Small Shop", "Own Name")  # the sender's own word wins

    none = TicketDraft(channel="email", contact=Contact(email="x@notshop.example"))
    normalize_draft(none, settings)
    assert none.customer is None and none.labels == {}


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        ([{"name": "A", "domains": ["x.example"]}, {"name": "B", "domains": ["X.example"]}], "listed for 'A' and 'B'"),
        ([{"name": "A", "phones": ["0755 1234 5678"]}], "not an international number"),
        ([{"name": "A", "domains": ["@"]}], "not a domain"),
        ([{"name": "A", "priority": "P9"}], "Input should be"),
    ],
)
def test_bad_directory_is_a_config_error_with_its_path(entries: list[dict[str, Any]], error: str, tmp_path: Path) -> None:
    from svcbridge.plugins import make_plugin_manager

    settings = load_settings(None, data_dir=tmp_path, plugins={"customers": {"directory": entries}})
    pm = make_plugin_manager()
    models: dict[str, Any] = {}
    pm.hook.register_settings(register=lambda section, model: models.setdefault(section, model))
    errors = settings.validate_plugins(models)
    assert errors, "the bad entry must be refused"
    assert any(path.startswith("plugins.customers") and error in msg for path, msg in errors), errors
    with pytest.raises(ValueError):
        CustomerDirectory(directory=entries)
