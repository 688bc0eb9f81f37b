"""The mail parser on the seeded hard cases (tests/corpus.py): exact subjects, bodies, attachment bytes."""

from __future__ import annotations

import pytest

from corpus import Case, bounce, hard_cases, reply_by_references
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
