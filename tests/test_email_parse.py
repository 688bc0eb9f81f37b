"""The mail parser on the seeded hard cases (tests/corpus.py): exact subjects, bodies, attachment bytes."""

from __future__ import annotations

import pytest

from corpus import Case, bounce, hard_cases, reply_by_references
from svcbridge_email import msgid
from svcbridge_email.decode import decode_bytes
from svcbridge_email.parse import parse_email
from svcbridge_email.quoting import trim_reply

CASES = [*hard_cases(), bounce("<sent-1@bridge.test>", postfix_style=True),
         bounce("<sent-1@bridge.test>", postfix_style=False), reply_by_references("<orig@example.com>")]


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_hard_case(case: Case) -> None:
    d = parse_email(case.raw)
    assert d.subject == case.subject
    if case.body is not None:
        assert d.body_text.strip() == case.body
    for piece in case.body_contains:
        assert piece in d.body_text
    got = [(a.original_name, a.data) for a in d.attachments]
    for name, data in case.attachments:
        assert (name, data) in got, f"attachment {name!r} missing or altered"
    assert d.automated is case.automated
    if case.replies_to:
        assert case.replies_to in [r.value for r in d.thread_refs]
    if case.msgid:
        assert [ln.value for ln in d.links if ln.kind == "message_id"] == [case.msgid]
    for a in d.attachments:  # a generated storage name, never the customer's
        assert a.safe_name.startswith("att-") and "/" not in a.safe_name and ".." not in a.safe_name


def test_html_is_sanitised() -> None:
    d = parse_email(next(c for c in CASES if c.kind == "html_only").raw)
    assert "<script" not in d.body_html and "onerror" not in d.body_html and "<b>E-502</b>" in d.body_html


def test_deeply_nested_html_is_flattened_and_its_text_kept() -> None:
    """Catalogue G50: 50,000 nested elements (11 s of nh3 before) are cut to a bounded depth first."""
    from svcbridge_email.parse import MAX_HTML_DEPTH, TAG, VOID_TAGS

    head = b"From: a@b.example\r\nSubject: deep\r\nMessage-ID: <d@x>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
    body = b"<div>" * 50_000 + b"".join(b'<a href="https://x.example/%d">L%d</a> ' % (i, i) for i in range(10_000))
    d = parse_email(head + body + b"</div>" * 50_000)
    depth = deepest = 0
    for m in TAG.finditer(d.body_html or ""):
        if m.group(2).lower() in VOID_TAGS:
            continue
        depth += -1 if m.group(1) else 1
        deepest = max(deepest, depth)
    assert 0 < deepest <= MAX_HTML_DEPTH
    assert "L0" in d.body_text and "L9999" in d.body_text  # the words survive, only nesting goes


def test_ordinary_html_is_not_flattened() -> None:
    from svcbridge_email.parse import flatten_deep_html

    table = "<table><tr><td><p>Fan <b>E-502</b><br>since Monday</p></td></tr></table>" * 50
    assert flatten_deep_html(table) == table
    assert flatten_deep_html("<p>" + "<b>" * 3 + "x" + "</b>" * 3 + "</p>", 2) == "<p><b>x</b></p>"


def test_language_from_text() -> None:
    by_kind = {c.kind: parse_email(c.raw) for c in CASES}
    assert by_kind["gbk_as_gb2312"].language == "zh-CN"
    assert by_kind["big5"].language == "zh-TW"
    assert by_kind["unknown_8bit"].language == "en"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Alice <alice@example.org>", "alice@example.org"),
        ('"Bob" <bob@example.org>', "bob@example.org"),
        ("alice@example.org)<bob@example.org>", None),  # CVE-2023-27043-style: no guessing
        ("=?utf-8?q?alice=40example.org?= <bob@evil.test>", "bob@evil.test"),
        ("a@x.org, b@y.org", None),
        ("not an address", None),
    ],
)
def test_strict_sender(header: str, expected: str | None) -> None:
    raw = f"From: {header}\r\nSubject: s\r\nMessage-ID: <s@x>\r\n\r\nbody\r\n".encode()
    assert parse_email(raw).contact.email == expected


def test_subject_newlines_never_survive() -> None:
    raw = b"From: a@example.com\r\nSubject: =?utf-8?q?hi=0D=0ABcc=3A_victim=40x.org?=\r\n\r\nbody\r\n"
    d = parse_email(raw)
    assert "\r" not in d.subject and "\n" not in d.subject and d.subject.startswith("hi")


def test_loop_headers() -> None:
    def parsed(extra: str, frm: str = "a@example.com"):
        return parse_email(f"From: {frm}\r\nSubject: s\r\n{extra}\r\nbody\r\n".encode())

    assert parsed("X-Loop: bridge.test\r\n").automated
    assert parsed("Precedence: bulk\r\n").automated
    assert parsed("Auto-Submitted: auto-generated\r\n").automated
    assert not parsed("Auto-Submitted: no\r\n").automated
    d = parsed("X-Auto-Response-Suppress: All\r\n")
    assert d.suppress_autoreply and not d.automated  # no auto-reply, but a real message
    assert parsed("", frm="support@bridge.test").automated is False
    assert parse_email(b"From: support@bridge.test\r\nSubject: s\r\n\r\nx\r\n",
                       our_addresses={"support@bridge.test"}).automated


def test_big_body_is_cut_with_a_notice_and_attachment_bytes_are_exact() -> None:
    big = b"A" * (20 * 1024 * 1024)
    import base64

    raw = (b"From: a@example.com\r\nSubject: big\r\nMessage-ID: <big@x>\r\n"
           b'Content-Type: multipart/mixed; boundary="Z"\r\n\r\n--Z\r\nContent-Type: text/plain\r\n\r\n'
           + b"x" * 1_600_000 + b"\r\n--Z\r\nContent-Type: application/zip; name=\"dump.zip\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(big) + b"--Z--\r\n")
    d = parse_email(raw)
    assert len(d.body_text) < 1_600_000 and "body cut at 1500000 characters" in d.body_text
    (att,) = d.attachments
    assert att.size == len(big) and att.data == big and att.original_name == "dump.zip"


@pytest.mark.parametrize(
    ("text", "new"),
    [
        ("Still broken.\n\nOn Mon, 2 Nov 2026 at 10:00, Support <s@x> wrote:\n> old", "Still broken."),
        ("好的，谢谢\n\n-----原始邮件-----\n发件人: support", "好的，谢谢"),
        ("Works now\n-- \nAlice, ACME IT", "Works now"),
        ("Fixed\n\nFrom: Support\nSent: Monday\n", "Fixed"),
        ("> only quoted\n> text", "> only quoted\n> text"),
    ],
)
def test_trim_reply(text: str, new: str) -> None:
    assert trim_reply(text) == new


def test_mislabelled_utf8_and_undecodable_bytes_never_raise() -> None:
    assert decode_bytes("维修".encode(), "gb2312") == "维修"
    assert isinstance(decode_bytes(bytes(range(256)), "x-nonsense"), str)


# ---------------------------------------------------------------------------------------------------
# Message ids, read strictly (issue 12 item 5): a folded Message-ID carrying a header is never a link
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ids", "bad"),
    [
        ("<x@y>", ["<x@y>"], []),
        ("  <x@y>  ", ["<x@y>"], []),
        ("x@y", [], []),  # brackets missing: not an id (the caller reports the rest)
        ("<a b@c>", [], ["<a b@c>"]),  # a space inside
        ("<a\tb@c>", [], ["<a\tb@c>"]),
        ("<x@y\r\n Bcc: a@b>", [], ["<x@y\r\n Bcc: a@b>"]),  # CR/LF inside
        ("<a\x00b@c>", [], ["<a\x00b@c>"]),  # NUL
        ("<a\x7fb@c>", [], ["<a\x7fb@c>"]),  # DEL
        ("<é@x>", [], ["<é@x>"]),  # raw 8-bit (compat32 surrogates or decoded): not printable ASCII
        ("<a\udce9@x>", [], ["<a\udce9@x>"]),
        ("<>", [], ["<>"]),
        ("<x@y", [], ["<x@y"]),  # never closed
        ("<a<b@c>", ["<b@c>"], ["<a"]),  # reopened before it closed
        ("x@y>", [], [">"]),
        ("<" + "a" * 247 + "@x>", [], ["<" + "a" * 247 + "@x>"]),  # 251 characters
        ("<" + "a" * 246 + "@x>", ["<" + "a" * 246 + "@x>"], []),  # 250: the longest kept
        ("<a@b> (comment <c@d>) <e@f>", ["<a@b>", "<e@f>"], []),  # comments are skipped whole
        ("<a@b> (nested (deeper <c@d>) \\) still) <e@f>", ["<a@b>", "<e@f>"], []),
        ("<a@b> (never closed <c@d>", ["<a@b>"], []),
        ('Your message of "Mon, 1 Jan" <a@b>', ["<a@b>"], []),  # obsolete In-Reply-To phrase
        ("<a@b>,<c@d>\r\n\t<a@b>", ["<a@b>", "<c@d>"], []),  # commas, folding, a repeat
        ("<a(1)@b>", ["<a(1)@b>"], []),
    ],
)
def test_message_ids_are_read_strictly(value: str, ids: list[str], bad: list[str]) -> None:
    got = msgid.split(value)
    assert (got.ids, got.bad) == (ids, bad)
    assert all(msgid.valid(m) for m in got.ids)


def test_many_message_ids_keep_the_first_and_the_latest_in_bounded_time() -> None:
    import time

    value = " ".join(f"<{i}@x>" for i in range(300_000))  # 3 MB
    start = time.monotonic()
    got = msgid.split(value)
    assert time.monotonic() - start < 1.0
    assert len(got.ids) == msgid.MAX_IDS
    assert got.ids[0] == "<0@x>" and got.ids[-1] == "<299999@x>"
    assert got.ids[1:] == [f"<{i}@x>" for i in range(300_000 - msgid.MAX_IDS + 1, 300_000)]
    # a hostile run of brackets or parentheses is linear too, and what is kept of it is bounded
    for junk in ("<" * 1_000_000, "(" * 1_000_000, ">" * 1_000_000, "<" + "a" * 1_000_000 + ">"):
        start = time.monotonic()
        got = msgid.split(junk)
        assert time.monotonic() - start < 1.0
        assert got.ids == [] and len(got.bad) <= 11 and all(len(b) <= 300 for b in got.bad)


def test_references_of_thousands_of_ids_parse_quickly() -> None:
    # every id was compared with every kept link (quadratic): 5,000 ids took 27 s, 1 MB of them hours
    import time

    refs = " ".join(f"<{i}@x>" for i in range(20_000))
    raw = f"From: a@example.com\r\nSubject: s\r\nMessage-ID: <m@x>\r\nReferences: {refs}\r\n\r\nb\r\n".encode()
    start = time.monotonic()
    d = parse_email(raw)
    assert time.monotonic() - start < 2.0
    assert len(d.thread_refs) == msgid.MAX_IDS and d.thread_refs[-1].value == "<19999@x>"


def mail(head: str) -> bytes:
    return f"From: Alice <alice@example.com>\r\nTo: support@bridge.test\r\nSubject: s\r\n{head}\r\nbody\r\n".encode()


def test_a_folded_message_id_carrying_a_header_is_dropped_and_reported() -> None:
    d = parse_email(mail("Message-ID: x@y\r\n Bcc: a@b\r\n"))
    assert d.links == [] and d.thread_refs == []
    assert d.labels["_bad_message_ids"] == ["x@y Bcc: a@b"]
    d = parse_email(mail("Message-ID: <x@y>\r\n Bcc: a@b\r\n"))
    assert [ln.value for ln in d.links] == ["<x@y>"]
    assert d.labels["_bad_message_ids"] == ["Bcc: a@b"]  # what rode along is reported
    d = parse_email(mail("Message-ID: <x@y\r\n Bcc: a@b>\r\nIn-Reply-To: <p@q>\r\nReferences: <r@s> <bad\x00@t>\r\n"))
    assert d.links == [] and [ln.value for ln in d.thread_refs] == ["<p@q>", "<r@s>"]
    assert d.labels["_bad_message_ids"] == ["<x@y\\r\\n Bcc: a@b>", "<bad\\x00@t>"]  # escaped for display


def test_in_reply_to_phrases_are_not_reported_but_a_lone_bare_id_is() -> None:
    d = parse_email(mail('Message-ID: <m@x>\r\nIn-Reply-To: Your message of "Mon" <p@q>\r\n'))
    assert [ln.value for ln in d.thread_refs] == ["<p@q>"] and "_bad_message_ids" not in d.labels
    d = parse_email(mail("Message-ID: <m@x>\r\nIn-Reply-To: p@q\r\n"))
    assert d.thread_refs == [] and d.labels["_bad_message_ids"] == ["p@q"]


def stored_ids(ticket) -> list[str]:
    return [ln.value for ln in ticket.links if ln.kind == "message_id"]


async def test_folded_message_id_end_to_end_the_ack_goes_out_without_bcc_and_the_ticket_still_threads(
    make_app, tmp_path
) -> None:
    import email as stdlib_email

    from svcbridge import StatusUpdate, TicketState

    app = make_app()
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1").write_bytes(mail("Message-ID: x@y\r\n Bcc: victim@evil.example\r\n"))
    (new / "2").write_bytes(mail("Message-ID: <ok@example.com>\r\n Bcc: victim@evil.example\r\n")
                            .replace(b"Subject: s", b"Subject: second"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created", "created"]
    assert app.delivery.outbox.list("dead") == []
    sent = [stdlib_email.message_from_bytes(p.read_bytes()) for p in sorted((tmp_path / "outgoing").glob("*.eml"))]
    assert len(sent) == 2  # both acknowledgements went out
    for m in sent:
        assert m["Bcc"] is None and "victim" not in m.as_string()
    t1, t2 = app.store.get_ticket("SB-000001"), app.store.get_ticket("SB-000002")
    assert stored_ids(t1) == [] and t1.labels["bad_message_ids"] == ["x@y Bcc: victim@evil.example"]
    assert stored_ids(t2) == ["<ok@example.com>"] and t2.labels["bad_message_ids"] == ["Bcc: victim@evil.example"]
    by_ticket = {m["X-Svcbridge-Ticket"]: m for m in sent}
    assert by_ticket["SB-000001"]["In-Reply-To"] is None  # nothing valid to thread the ack onto
    assert by_ticket["SB-000002"]["In-Reply-To"] == "<ok@example.com>"

    # a ticket with no valid Message-ID still threads: the customer's reply to the acknowledgement
    ack = by_ticket["SB-000001"]["Message-ID"]
    (new / "3").write_bytes(mail(f"Message-ID: y@z\r\n Cc: a@b\r\nIn-Reply-To: {ack}\r\n").replace(b"Subject: s", b"Subject: Re: s"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["followup"]
    t1 = app.store.get_ticket("SB-000001")
    changed = [e for e in t1.events if e.type == "ticket_updated"]
    assert changed and changed[-1].data["changes"]["labels"]["bad_message_ids"]["to"] == ["y@z Cc: a@b"]

    # and every later notice of that ticket goes out
    await app.pipeline.apply_status_update(
        StatusUpdate(ticket_ref="SB-000001", system="local", state=TicketState.RESOLVED, external_event_id="e1"))
    await app.run_once()
    assert app.delivery.outbox.list("dead") == []
    assert len(list((tmp_path / "outgoing").glob("*.eml"))) == 3


async def test_a_bad_id_stored_before_strict_parsing_never_breaks_a_notice(make_app, tmp_path) -> None:
    import email as stdlib_email

    from svcbridge import ExternalLink, StatusUpdate, TicketState

    app = make_app()
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1").write_bytes(mail("Message-ID: <m1@example.com>\r\n"))
    await app.run_once()
    t = app.store.get_ticket("SB-000001")
    with app.store.engine.begin() as conn:  # what the old parser stored for the folded header
        app.store.add_link(conn, t.id, ExternalLink(system="email", kind="message_id", value="<x@y\r\n Bcc: a@b>"))
        app.store.add_link(conn, t.id, ExternalLink(system="email", kind="message_id", value="x@y"))
    await app.pipeline.apply_status_update(
        StatusUpdate(ticket_ref="SB-000001", system="local", state=TicketState.RESOLVED, external_event_id="e1"))
    await app.run_once()
    assert app.delivery.outbox.list("dead") == []
    notices = [stdlib_email.message_from_bytes(p.read_bytes()) for p in sorted((tmp_path / "outgoing").glob("*.eml"))]
    assert len(notices) == 2
    assert notices[-1]["In-Reply-To"] == "<m1@example.com>" and notices[-1]["References"] == "<m1@example.com>"
    assert notices[-1]["Bcc"] is None
