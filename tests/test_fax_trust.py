"""Fax-to-mail trusts only its gateways: a mail that looks like a HylaFAX / eFax notice but comes from
another sender (or, where configured, not through an authenticated path) is an ordinary mail.

Before: anyone could mail 'Subject: Fax received from "x"' with 'CallID1: <a customer's fax number>'
in the body and get a fax ticket of that customer (the directory finds the customer by the number,
and the acknowledgement went to the customer's directory address).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpdesk_helpers import drop
from svcbridge_fax import FaxSettings
from svcbridge_fax.detect import authenticated, sender_allowed

CUSTOMERS = {"directory": [{"name": "Qingdao Port Hospital", "phones": ["+8653288881234"]}]}
HYLA_BODY = "  Sender: QDPH FAX\r\n  CallID1: 0532 8888 1234\r\n  Pages: 1\r\n"


def mail(sender: str, subject: str, body: str = HYLA_BODY, extra: str = "", msgid: str = "<f1@x>") -> bytes:
    head = (
        f"From: {sender}\r\nTo: support@bridge.test\r\nSubject: {subject}\r\nMessage-ID: {msgid}\r\n{extra}"
    )
    return (head + "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body).encode()


def settings(**fax: Any) -> dict[str, Any]:
    return {
        "plugins": {"fax": {"default_region": "CN", "ocr": {"enabled": False}, **fax}, "customers": CUSTOMERS}
    }


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("faxmaster", True),  # HylaFAX on this host: FaxMaster, unqualified
        ("faxmaster@evil.example", False),  # the same local part from anywhere else
        ("FaxMaster@fax.example.com", False),
        ("alice@example.com", False),
    ],
)
def test_the_hylafax_gateway_trusts_its_own_unqualified_sender_by_default(sender: str, allowed: bool) -> None:
    cfg = FaxSettings()
    assert sender_allowed(cfg.trust_for("hylafax").senders or [], sender.lower()) is allowed


@pytest.mark.parametrize(
    ("entries", "sender", "allowed"),
    [
        (["faxmaster@fax.example.com"], "faxmaster@fax.example.com", True),
        (["faxmaster@fax.example.com"], "faxmaster@evil.example", False),
        (["@efax.com"], "message@inbound.efax.com", True),  # a domain: subdomains too
        (["efax.com"], "message@efax.com", True),
        (["@efax.com"], "message@efax.com.evil.example", False),
        (["@efax.com"], "message@notefax.com", False),
        (["*@fax.example.cn"], "gw@fax.example.cn", True),
        ([], "faxmaster", False),  # a gateway without an address trusts nobody
    ],
)
def test_allow_list_entries_are_addresses_patterns_or_domains(entries, sender, allowed) -> None:
    assert sender_allowed(entries, sender) is allowed


AR_OK = (
    "Authentication-Results: mx.bridge.test; dkim=pass header.d=efax.com; spf=pass smtp.mailfrom=efax.com\r\n"
)


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        (AR_OK, True),
        ("Authentication-Results: mx.bridge.test; dmarc=pass header.from=efax.com\r\n", True),
        ("Authentication-Results: mx.bridge.test; spf=pass smtp.mailfrom=inbound.efax.com\r\n", True),
        # another host's verdict (the sender can write any header it likes): not ours
        ("Authentication-Results: mx.evil.example; dkim=pass header.d=efax.com\r\n", False),
        ("Authentication-Results: mx.bridge.test; dkim=fail header.d=efax.com; spf=softfail\r\n", False),
        # a pass for another domain is no pass for the From domain
        ("Authentication-Results: mx.bridge.test; dkim=pass header.d=evil.example\r\n", False),
        # ours (topmost) says fail; a forged 'pass' further down is not read
        (
            "Authentication-Results: mx.bridge.test; dkim=fail header.d=efax.com\r\n"
            "Authentication-Results: mx.bridge.test; dkim=pass header.d=efax.com\r\n",
            False,
        ),
        ("", False),
        # the text of comments and quoted strings is not the verdict: our MTA quotes what the sender
        # chose there (its envelope sender, HELO), and a ';' or 'header.d=' in it is no result
        (
            "Authentication-Results: mx.bridge.test; spf=pass (domain of x@evil.example; dkim=pass "
            "header.d=efax.com ) smtp.mailfrom=evil.example\r\n",
            False,
        ),
        (
            'Authentication-Results: mx.bridge.test; spf=pass smtp.mailfrom="a; dkim=pass header.d=efax.com '
            '"@evil.example\r\n',
            False,
        ),
        (
            "Authentication-Results: mx.bridge.test; spf=pass (header.d=efax.com) smtp.mailfrom=evil.example\r\n",
            False,
        ),
        # a comment of ours does not hide a real pass
        (
            "Authentication-Results: mx.bridge.test; dkim=pass (2048-bit key; secure) header.d=efax.com\r\n",
            True,
        ),
        (
            'Authentication-Results: mx.bridge.test; spf=pass smtp.mailfrom="fax desk"@inbound.efax.com\r\n',
            True,
        ),
    ],
)
def test_an_authenticated_path_is_our_mta_s_pass_for_the_sender_s_domain(headers: str, ok: bool) -> None:
    raw = mail("eFax <message@inbound.efax.com>", "eFax message", extra=headers)
    assert authenticated(raw, "message@inbound.efax.com", ["mx.bridge.test"]) is ok


async def test_a_look_alike_hylafax_mail_from_elsewhere_is_an_ordinary_mail(make_app, tmp_path: Path) -> None:
    app = make_app(**settings())
    drop(tmp_path, "a", mail("FaxMaster <faxmaster@evil.example>", 'Fax received from "QDPH FAX"'))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.channel == "email" and t.customer is None and t.contact.phone is None
    assert t.contact.email == "faxmaster@evil.example"
    assert t.labels["fax_lookalike"]["rule"] == "hylafax"
    assert "faxmaster@evil.example" in t.labels["fax_lookalike"]["reason"]


async def test_the_real_gateway_s_mail_is_still_a_fax(make_app, tmp_path: Path) -> None:
    app = make_app(**settings())
    drop(tmp_path, "a", mail("HylaFAX Agent <FaxMaster>", 'Fax received from "QDPH FAX"'))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.channel == "fax" and t.customer == "Qingdao Port Hospital" and "fax_lookalike" not in t.labels


async def test_a_configured_gateway_address_replaces_the_default(make_app, tmp_path: Path) -> None:
    """The fax server's MTA qualifies FaxMaster: the deployment names that address; the bare one
    (any local user could send it) is then no longer trusted."""
    trust = {"hylafax": {"senders": ["faxmaster@fax.example.com"]}}
    app = make_app(**settings(trust=trust))
    drop(tmp_path, "a", mail("FaxMaster <faxmaster@fax.example.com>", 'Fax received from "QDPH FAX"'))
    drop(tmp_path, "b", mail("HylaFAX Agent <FaxMaster>", 'Fax received from "QDPH FAX"', msgid="<f2@x>"))
    await app.run_once()
    by_sender = {t.channel: t for t in app.store.list_tickets()}
    assert set(by_sender) == {"fax", "email"}
    assert by_sender["fax"].customer == "Qingdao Port Hospital"
    assert by_sender["email"].labels["fax_lookalike"]["rule"] == "hylafax"


async def test_a_user_rule_trusts_its_own_senders_and_may_require_authentication(
    make_app, tmp_path: Path
) -> None:
    rules = [{"name": "carrier", "senders": ["fax2mail@carrier.example"], "subject": "^FAX"}]
    trust = {"carrier": {"authenticated": True, "authserv_ids": ["mx.bridge.test"]}}
    app = make_app(**settings(rules=rules, trust=trust, builtin_rules=False))
    ar = "Authentication-Results: mx.bridge.test; dkim=pass header.d=carrier.example\r\n"
    body = "CallID1: 0532 8888 1234\r\n"
    drop(tmp_path, "a", mail("fax2mail@carrier.example", "FAX from 0532 8888 1234", body, extra=ar))
    drop(tmp_path, "b", mail("fax2mail@carrier.example", "FAX from 0532 8888 1234", body, msgid="<f2@x>"))
    await app.run_once()
    tickets = sorted(app.store.list_tickets(), key=lambda t: t.ref)
    assert [t.channel for t in tickets] == ["fax", "email"]
    assert "not authenticated" in tickets[1].labels["fax_lookalike"]["reason"]


async def test_a_gateway_may_be_limited_to_the_sources_it_delivers_through(make_app, tmp_path: Path) -> None:
    """HylaFAX writes into the local Maildir; the same mail arriving from the public IMAP box is not it."""
    app = make_app(**settings(trust={"hylafax": {"sources": ["imap:fax"]}}))
    drop(tmp_path, "a", mail("HylaFAX Agent <FaxMaster>", 'Fax received from "QDPH FAX"'))
    await app.run_once()
    (t,) = app.store.list_tickets()
    assert t.channel == "email" and "source maildir" in t.labels["fax_lookalike"]["reason"]


def test_trust_for_an_unknown_gateway_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no fax rule"):
        FaxSettings(trust={"hylafx": {"senders": ["x@y.example"]}})
    with pytest.raises(ValueError, match="authserv_ids"):
        FaxSettings(trust={"hylafax": {"authenticated": True}})
