"""The notice written as bytes (``fastreply``) reads exactly like the one the stdlib builds.

Both versions of many generated notices are parsed with ``email.message_from_bytes(policy=default)``
and compared header by header and body by body: subjects in Chinese, emoji, long ASCII without
spaces, runs of spaces, long bodies in every encoding; references to fold. Out-of-the-ordinary notices
(display names, non-ASCII addresses, CR/LF or look-alike encoded words in the subject) must take the
stdlib path, with its behaviour (a subject with a line break is refused there, as before).
"""

from __future__ import annotations

import email
import email.policy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from svcbridge import DeliveryItem, ExternalLink, Ticket
from svcbridge_email import fastreply
from svcbridge_email.outbound import build_reply, reply

FROM, DOMAIN = "support@bridge.test", "bridge.test"


def item(
    subject: str = "printer broken", body: str = "Received.", html: str | None = None, **kw: Any
) -> DeliveryItem:
    links = [ExternalLink(system="email", kind="message_id", value=v) for v in kw.pop("ids", [])]
    ticket = Ticket(id=7, ref="SB-000007", channel="email", subject="s", links=links)
    note = {"to": kw.pop("to", "alice@example.com"), "subject": subject, "body": body, "body_html": html}
    note["template"] = kw.pop("template", "acknowledgement")
    return DeliveryItem(
        id=3,
        kind="notify",
        target="notify:email",
        idempotency_key="SB-000007:ack",
        ticket=ticket,
        payload={"notification": note},
    )


def parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def same(fast: bytes, slow: bytes, subject: str | None = None) -> None:
    a, b = parsed(fast), parsed(slow)
    assert not a.defects and not b.defects
    names = sorted(b.keys())  # the MIME headers' order differs; every other header keeps its place
    assert sorted(a.keys()) == names
    assert [k for k in a.keys() if not k.startswith(("Content-", "MIME-"))] == [
        k for k in b.keys() if not k.startswith(("Content-", "MIME-"))
    ]
    for k in names:
        if k == "Date" or (k == "Content-Type" and a.is_multipart()):
            continue  # each path reads the clock; boundaries are random (the type is compared below)
        if k == "Subject" and subject is not None:
            # the subject as given, exactly: the stdlib's folder drops a space between two encoded
            # words now and then ('𐀀 ¡' read back as '𐀀¡'); ours keeps it
            assert str(a[k]).strip() == subject.strip()
            continue
        assert str(a[k]).strip() == str(b[k]).strip(), k
    assert a.get_content_type() == b.get_content_type()
    for kind in ("plain", "html"):
        pa, pb = a.get_body((kind,)), b.get_body((kind,))
        assert (pa is None) == (pb is None)
        if pa is not None and pb is not None:
            assert pa.get_content() == pb.get_content()
            assert pa["Content-Transfer-Encoding"] == pb["Content-Transfer-Encoding"]
            assert pa.get_content_charset() == pb.get_content_charset() == "utf-8"
    for line in fast.split(b"\r\n"):
        assert len(line) <= 998 and b"\n" not in line and b"\r" not in line
    assert fast.split(b"\r\n\r\n", 1)[0].isascii()  # the header block; 8bit bodies as the stdlib sends


def both(it: DeliveryItem) -> tuple[bytes, bytes]:
    data, _named, msg = reply(it, FROM, DOMAIN)
    assert msg is None, "expected the fast path"
    slow = build_reply(it, FROM, DOMAIN).as_bytes(policy=email.policy.default.clone(linesep="\r\n"))
    return data, slow


CASES = [
    {},
    {"subject": "打印机坏了，序列号 CN0123456"},
    {"subject": "印表機故障 🖨️ urgent!!", "html": "<p>已收到 <b>您的</b> 請求</p>"},
    {"subject": "x" * 300},
    {"subject": "word " * 60},
    {"subject": "a  b   c    d" + " " * 5},
    {"body": "line\n" * 3 + "y" * 200, "html": "<p>" + "z" * 500 + "</p>"},
    {"body": "您好，\n\n我们已收到您的请求。\n" * 30},
    {"body": "mostly ascii with one é\n" * 20},
    {"body": ""},
    {"ids": [f"<id{i}.{'q' * 30}@mail.example.com>" for i in range(12)], "template": "reply"},
    {"to": "o'brien+tag@sub.example.co.uk"},
]


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_fast_notice_reads_as_the_stdlib_one(case: dict[str, Any]) -> None:
    same(*both(item(**case)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=200),
    body=st.text(
        st.characters(
            blacklist_categories=("Cs",), blacklist_characters="\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
        ),
        max_size=600,
    ),
    html=st.none() | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=300),
)
def test_generated_notices_read_the_same(subject: str, body: str, html: str | None) -> None:
    it = item(subject, body, html)
    try:
        data, _named, msg = reply(it, FROM, DOMAIN)
    except ValueError:  # the stdlib refuses it (e.g. a line separator in the subject)
        with pytest.raises(ValueError):
            build_reply(it, FROM, DOMAIN)
        return
    if msg is None:
        slow = build_reply(it, FROM, DOMAIN).as_bytes(policy=email.policy.default.clone(linesep="\r\n"))
        given = subject or "s"  # an empty notice subject: the ticket's
        same(data, slow, subject=given if "[SB-000007]" in given else f"[SB-000007] {given}")


@pytest.mark.parametrize(
    "case",
    [
        {"to": "Alice <alice@example.com>"},
        {"to": "用户@例子.公司"},
        {"subject": "=?utf-8?q?looks_encoded?="},
        {"subject": "tab\there"},
    ],
)
def test_out_of_the_ordinary_takes_the_stdlib_path(case: dict[str, Any]) -> None:
    data, named, msg = reply(item(**case), FROM, DOMAIN)
    assert msg is not None
    assert parsed(data)["Message-ID"] == named["Message-ID"]


def test_a_line_break_in_the_subject_is_refused_as_before() -> None:
    with pytest.raises(ValueError):
        reply(item("evil\r\nBcc: victim@example.com"), FROM, DOMAIN)
    with pytest.raises(fastreply.Unusual):
        fastreply.subject_header("evil\nBcc: x@example.com")


def test_boundary_is_fresh_and_not_in_the_parts() -> None:
    a, _ = both(item(html="<p>x</p>"))
    b, _ = both(item(html="<p>x</p>"))
    ba, bb = parsed(a).get_boundary(), parsed(b).get_boundary()
    assert ba and bb and ba != bb


def test_the_ticket_tag_stays_plain_ascii_in_a_chinese_subject() -> None:
    data, _ = both(item("打印机坏了 printer 坏了"))
    line = next(x for x in data.split(b"\r\n") if x.startswith(b"Subject:"))
    assert line.startswith(b"Subject: [SB-000007] =?utf-8?")  # filters and people grep the raw tag
    assert parsed(data)["Subject"] == "[SB-000007] 打印机坏了 printer 坏了"

