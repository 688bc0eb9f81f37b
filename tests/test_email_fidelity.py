"""Issue 13 mail fidelity, items 1-6: table-driven cases with exact subject, sender, body and attachment bytes."""

from __future__ import annotations

import email as stdlib_email
from base64 import b64encode
from email.header import decode_header, make_header

import pytest

from svcbridge_email.parse import parse_email

# (id, charset declared on the body or None, subject, display name, attachment file name)
RAW_HEADERS = [
    ("gbk", "gbk", "打印机故障", "张三", "故障报告.txt"),
    ("gbk-undeclared", None, "打印机卡纸，无法打印", "王小明", "照片.jpg"),
    ("gb18030", "gb18030", "打印机故障 㐀", "张三", "报告.txt"),
    ("big5", "big5", "印表機故障", "陳大文", "報告.txt"),
    ("big5-undeclared", None, "印表機無法列印，請協助", "陳大文", "報告.txt"),
    ("shift_jis", "shift_jis", "プリンター故障", "山田太郎", "報告書.txt"),
    ("koi8-r", "koi8-r", "Принтер сломан", "Иван Петров", "отчёт.txt"),
    ("cp1251", "windows-1251", "Принтер сломан", "Иван Петров", "отчёт.txt"),
    ("latin-1", "iso-8859-1", "Drucker kaputt, Größe", "Jürgen Müller", "Bericht_Größe.txt"),
    ("cp1252", "windows-1252", "Imprimante \u2013 panne “urgente”", "Zoë Dupré", "rapport\u2013été.txt"),
    ("cp1252-undeclared", None, "Drucker kaputt, Größe", "Jürgen Müller", "Bericht.txt"),
]
PY_CODEC = {"gbk": "gb18030", "big5": "big5hkscs", "shift_jis": "cp932", "koi8-r": "koi8_r",
            "windows-1251": "cp1251", "iso-8859-1": "latin_1", "windows-1252": "cp1252"}


def raw_header_mail(cs: str | None, subject: str, name: str, fname: str, codec: str) -> bytes:
    label = f"; charset={cs}" if cs else ""
    return (
        b"From: " + name.encode(codec) + b" <customer@example.com>\r\nTo: support@bridge.test\r\n"
        b"Subject: " + subject.encode(codec) + b"\r\nMessage-ID: <raw8@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
        b"Content-Type: text/plain" + label.encode() + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        + subject.encode(codec) + b"\r\n--BB\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=\"" + fname.encode(codec) + b"\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--BB--\r\n"
    )


def codec_of(kind: str, cs: str | None) -> str:
    if cs:
        return PY_CODEC.get(cs, cs)
    return {"gbk": "gb18030", "big5": "big5hkscs", "shift_jis": "cp932"}.get(kind.split("-")[0], "cp1252")


@pytest.mark.parametrize(("kind", "cs", "subject", "name", "fname"), RAW_HEADERS, ids=[c[0] for c in RAW_HEADERS])
def test_raw_8bit_subject_sender_and_file_name(kind: str, cs: str | None, subject: str, name: str, fname: str) -> None:
    d = parse_email(raw_header_mail(cs, subject, name, fname, codec_of(kind, cs)))
    assert d.subject == subject
    assert (d.contact.name, d.contact.email) == (name, "customer@example.com")
    assert d.body_text.strip() == subject
    assert [(a.original_name, a.data) for a in d.attachments] == [(fname, b"\x00\x01\x02\x03")]


def test_raw_8bit_and_encoded_words_in_one_subject() -> None:
    raw = ("Subject: 回复: =?utf-8?b?5omT5Y2w5py6?= 故障\r\nFrom: a@example.com\r\n"
           "Content-Type: text/plain; charset=gbk\r\n\r\nx\r\n").encode("gbk")
    assert parse_email(raw).subject == "回复: 打印机 故障"


async def test_the_acknowledgement_carries_the_raw_8bit_subject(make_app, tmp_path) -> None:
    app = make_app()
    new = tmp_path / "maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1").write_bytes(raw_header_mail("gbk", "打印机故障", "张三", "报告.txt", "gb18030"))
    res = await app.run_once()
    assert [o.status for o in res["outcomes"]] == ["created"]
    t = app.store.get_ticket("SB-000001")
    assert t.subject == "打印机故障" and t.contact.name == "张三"
    sent = [stdlib_email.message_from_bytes(p.read_bytes()) for p in (tmp_path / "outgoing").glob("*.eml")]
    assert len(sent) == 1
    body = next(p for p in sent[0].walk() if p.get_content_type() == "text/plain").get_payload(decode=True)
    assert "打印机故障" in body.decode(sent[0].get_content_charset() or "utf-8")
    assert "customer@example.com" in str(make_header(decode_header(sent[0]["To"])))


# item 6: (headers, expected contact name, expected contact e-mail)
SENDERS = [
    ("From: =?utf-8?Q?agent?=@example.com", None, None),
    ("From: Agent <=?utf-8?Q?agent?=@example.com>", None, None),
    ("From: =?utf-8?Q?agent?=@example.com\r\nReply-To: =?gbk?b?1cXI/Q==?= <zhang@example.cn>", "张三", "zhang@example.cn"),
    ("From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@example.de>\r\nReply-To: =?utf-8?B?YWdlbnQ=?=@example.de",
     "Jürgen Müller", "j@example.de"),
    ("From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@example.de>\r\nReply-To: service@example.de",
     "Jürgen Müller", "service@example.de"),
    ("From: =?iso-2022-jp?b?GyRCOzNFRBsoQg==?= <yamada@example.jp>\r\nReply-To: <desk@example.jp>",
     "山田", "desk@example.jp"),
    ("From: =?koi8-r?b?6dfBzg==?= <ivan@example.ru>\r\nReply-To: =?koi8-r?b?8MXU0s/X?= <petrov@example.ru>",
     "Петров", "petrov@example.ru"),
]


@pytest.mark.parametrize(("headers", "name", "addr"), SENDERS)
def test_sender_encoded_word_addresses_and_reply_to_names(headers: str, name: str | None, addr: str | None) -> None:
    d = parse_email(f"{headers}\r\nSubject: s\r\n\r\nbody\r\n".encode())
    assert (d.contact.name, d.contact.email) == (name, addr)


def jis(text: str) -> bytes:
    return text.encode("iso2022_jp")


# item 5: (id, Content-Type charset parameter or None, body bytes, expected body text)
CHARSETS = [
    ("iso-2022-jp-nec-circled", "iso-2022-jp",
     jis("プリンター") + b"\x1b$B\x2d\x21\x2d\x22\x1b(B" + jis("が故障しました"), "プリンター①②が故障しました"),
    ("iso-2022-jp-ibm-ext", "iso-2022-jp", jis("担当：") + b"\x1b$B\x7c\x62\x1b(B" + jis("橋さん"), "担当：髙橋さん"),
    ("iso-2022-jp-halfwidth-kana", "iso-2022-jp", jis("件名 ") + b"\x1b(I123\x1b(B" + jis(" です"), "件名 ｱｲｳ です"),
    ("iso-2022-jp-undeclared-nec", None, jis("番号") + b"\x1b$B\x2d\x23\x1b(B", "番号③"),
    ("shift_jis-nec", "shift_jis", "プリンター①番が動きません。".encode("cp932"), "プリンター①番が動きません。"),
    ("shift_jis-undeclared", None, "プリンターが動きません。至急対応をお願いします。".encode("cp932"),
     "プリンターが動きません。至急対応をお願いします。"),
    ("koi8-r-undeclared", None, "Принтер не печатает, бумага застряла. Пожалуйста, помогите.".encode("koi8_r"),
     "Принтер не печатает, бумага застряла. Пожалуйста, помогите."),
    ("koi8-r-labelled-utf-8", "utf-8", "Принтер не печатает, бумага застряла. Помогите.".encode("koi8_r"),
     "Принтер не печатает, бумага застряла. Помогите."),
    ("cp1251-undeclared", None, "Принтер не печатает, бумага застряла. Пожалуйста, помогите.".encode("cp1251"),
     "Принтер не печатает, бумага застряла. Пожалуйста, помогите."),
    ("cp1251-labelled-us-ascii", "us-ascii", "Здравствуйте! Принтер сломался, нужна помощь.".encode("cp1251"),
     "Здравствуйте! Принтер сломался, нужна помощь."),
    ("gbk-undeclared-short", None, "打印机故障".encode("gbk"), "打印机故障"),
    ("gbk-undeclared", None, "打印机卡纸了，请尽快派人来维修。谢谢\uff01".encode("gbk"), "打印机卡纸了，请尽快派人来维修。谢谢\uff01"),
    ("big5-undeclared", None, "印表機卡紙了，請盡快派人來維修。謝謝\uff01".encode("big5"), "印表機卡紙了，請盡快派人來維修。謝謝\uff01"),
    ("latin-1-declared-kept", "iso-8859-1", "Grüße, Jürgen".encode("latin-1"), "Grüße, Jürgen"),
    ("cp1252-undeclared", None, "Der Drucker kostet 120 € \u2013 bitte „schnell“ reparieren. Grüße".encode("cp1252"),
     "Der Drucker kostet 120 € \u2013 bitte „schnell“ reparieren. Grüße"),
]


@pytest.mark.parametrize(("kind", "cs", "body", "text"), CHARSETS, ids=[c[0] for c in CHARSETS])
def test_more_charsets(kind: str, cs: str | None, body: bytes, text: str) -> None:
    ctype = b"Content-Type: text/plain" + (f"; charset={cs}".encode() if cs else b"")
    raw = b"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n" + ctype + b"\r\n\r\n" + body + b"\r\n"
    assert parse_email(raw).body_text.strip() == text


def test_shift_jis_raw_header_without_any_label() -> None:
    subject, name = "プリンターが動きません", "山田太郎"
    d = parse_email(raw_header_mail(None, subject, name, "報告書.txt", "cp932"))
    assert (d.subject, d.contact.name, d.body_text.strip()) == (subject, name, subject)
    assert d.attachments[0].original_name == "報告書.txt"


# item 2: forwarded mails, attached items, delivery reports, uuencode
def inner_mail(subject_header: bytes, body: bytes, charset: str) -> bytes:
    return (b"From: orig@example.org\nTo: someone@example.com\nSubject: " + subject_header
            + b"\nMessage-ID: <inner-1@example.org>\nMIME-Version: 1.0\nContent-Type: text/plain; charset="
            + charset.encode() + b"\nContent-Transfer-Encoding: 8bit\n\n" + body + b"\n")


def outer_mail(outer_text: bytes, charset: str, inner: bytes, disposition: bytes = b"inline") -> bytes:
    return (b"From: customer@example.com\nSubject: Fwd\nMessage-ID: <outer-1@example.com>\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain; charset="
            + charset.encode() + b"\nContent-Transfer-Encoding: 8bit\n\n" + outer_text + b"\n--XX\n"
            b"Content-Type: message/rfc822\nContent-Disposition: " + disposition + b"\n\n" + inner + b"\n--XX--\n")


FORWARDS = [
    ("gbk", "请看下面转发的邮件".encode("gbk"), "gbk", b"=?gbk?b?" + b64encode("打印机故障".encode("gbk")) + b"?=",
     "打印机卡纸".encode("gbk"), "请看下面转发的邮件", "打印机故障.eml"),
    ("big5-raw-subject", "請看轉寄的郵件".encode("big5"), "big5", "印表機故障".encode("big5"),
     "印表機卡紙".encode("big5"), "請看轉寄的郵件", "印表機故障.eml"),
    ("iso-2022-jp", jis("転送します"), "iso-2022-jp", b"=?ISO-2022-JP?B?" + b64encode(jis("故障")) + b"?=", jis("故障です"),
     "転送します", "故障.eml"),
    ("koi8-r", "Пересылаю письмо".encode("koi8_r"), "koi8-r", "Принтер".encode("koi8_r"),
     "Сломан".encode("koi8_r"), "Пересылаю письмо", "Принтер.eml"),
    ("latin-1-attachment", "Siehe Anhang, Grüße".encode("latin-1"), "iso-8859-1",
     b"=?iso-8859-1?q?Drucker_f=FCr_K=F6ln?=", "Grüße".encode("latin-1"), "Siehe Anhang, Grüße",
     "Drucker für Köln.eml"),
]


@pytest.mark.parametrize(("kind", "outer", "cs", "subj", "inner_body", "body", "name"), FORWARDS,
                         ids=[f[0] for f in FORWARDS])
def test_forwarded_mail_is_an_eml_attachment_and_the_body_stays_clean(
    kind: str, outer: bytes, cs: str, subj: bytes, inner_body: bytes, body: str, name: str
) -> None:
    inner = inner_mail(subj, inner_body, cs)
    disp = b"attachment" if kind.endswith("attachment") else b"inline"
    d = parse_email(outer_mail(outer, cs, inner, disp))
    assert d.subject == "Fwd" and d.contact.email == "customer@example.com"
    assert d.body_text.strip() == body
    assert [(a.original_name, a.content_type, a.data) for a in d.attachments] == [(name, "message/rfc822", inner)]


def test_delivery_report_parts_are_txt_attachments() -> None:
    status = (b"Reporting-MTA: dns; mx.example.ru\n\nFinal-Recipient: rfc822; ivan@example.ru\nAction: failed\n"
              b"Status: 5.1.1\n")
    headers = (b"From: support@bridge.test\nTo: ivan@example.ru\nSubject: =?koi8-r?b?8NLJztTF0g==?=\n"
               b"Message-ID: <n1@bridge.test>\n")
    raw = (b"From: MAILER-DAEMON@example.ru\nSubject: Undelivered Mail\nMIME-Version: 1.0\n"
           b"Content-Type: multipart/report; report-type=delivery-status; boundary=R\n\n--R\n"
           b"Content-Type: text/plain\n\nYour message could not be delivered.\n--R\n"
           b"Content-Type: message/delivery-status\n\n" + status + b"--R\nContent-Type: text/rfc822-headers\n\n"
           + headers + b"--R--\n")
    d = parse_email(raw)
    assert d.body_text.strip() == "Your message could not be delivered."
    got = {a.original_name: (a.content_type, a.data) for a in d.attachments}
    assert got["Принтер.txt"] == ("text/rfc822-headers", headers[:-1])  # the last newline is the boundary's
    ctype, data = got["delivery-status.txt"]
    assert ctype == "message/delivery-status"
    assert b"Status: 5.1.1" in data and b"Reporting-MTA: dns; mx.example.ru" in data
    assert "<n1@bridge.test>" in [r.value for r in d.thread_refs]


UUENCODED = [
    ("ja", "見積書を送ります。", "よろしくお願いします。", "見積.txt", "見積金額 120,000円".encode("cp932")),
    ("zh", "附件是照片", "谢谢", "photo.jpg", bytes(range(256)) * 3),
    ("de", "Anbei der Bericht.", "Grüße", "Bericht.pdf", b"%PDF-1.4\n" + bytes(range(200))),
]


@pytest.mark.parametrize(("kind", "before", "after", "name", "data"), UUENCODED, ids=[u[0] for u in UUENCODED])
def test_uuencoded_blocks_become_attachments(kind: str, before: str, after: str, name: str, data: bytes) -> None:
    import binascii

    lines = "".join(binascii.b2a_uu(data[i : i + 45]).decode() for i in range(0, len(data), 45))
    text = f"{before}\nbegin 644 {name}\n{lines}`\nend\n{after}\n"
    raw = b"From: a@example.com\nSubject: s\nContent-Type: text/plain; charset=utf-8\n\n" + text.encode()
    d = parse_email(raw)
    assert d.body_text.strip() == f"{before}\n{after}"
    assert [(a.original_name, a.data) for a in d.attachments] == [(name, data)]


# item 3: broken header blocks: (id, raw mail, subject, sender, body, warning fragments)
def b64(text: str, cs: str) -> str:
    return f"=?{cs}?b?{b64encode(text.encode(cs)).decode()}?="


BROKEN = [
    ("gt-from-first-line", (">From zhang@example.cn Thu Dec  3 10:00:00 2026\nFrom: " + b64("张三", "gbk")
     + " <zhang@example.cn>\nSubject: " + b64("打印机故障", "gbk") + "\nContent-Type: text/plain; charset=gbk\n\n")
     .encode() + "打印机卡纸".encode("gbk") + b"\n", "打印机故障", ("张三", "zhang@example.cn"), "打印机卡纸",
     ["header line skipped: >From zhang@example.cn"]),
    ("line-without-colon", ("From: " + b64("山田太郎", "iso-2022-jp") + " <yamada@example.jp>\nX-Mailer Foo 1.0\n"
     "Subject: " + b64("プリンター故障", "iso-2022-jp") + "\nMIME-Version: 1.0\n"
     "Content-Type: text/plain; charset=iso-2022-jp\n\n").encode() + jis("動きません") + b"\n",
     "プリンター故障", ("山田太郎", "yamada@example.jp"), "動きません", ["header line skipped: X-Mailer Foo 1.0"]),
    ("subject-wrapped-without-indent", ("From: " + b64("Иван", "koi8-r") + " <ivan@example.ru>\nSubject: "
     + b64("Принтер", "koi8-r") + "\n" + b64("сломан", "koi8-r") + "\nContent-Type: text/plain; charset=koi8-r\n"
     "Content-Transfer-Encoding: base64\n\n" + b64encode("Помогите".encode("koi8_r")).decode() + "\n").encode(),
     "Принтерсломан", ("Иван", "ivan@example.ru"), "Помогите", ["joined to the field before"]),
    ("junk-first-line-base64-body", ("garbage line\r\nFrom: =?iso-8859-1?q?J=FCrgen?= <j@example.de>\r\n"
     "Subject: =?iso-8859-1?q?Drucker_f=FCr_K=F6ln?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
     "Content-Transfer-Encoding: base64\r\n\r\n" + b64encode("Grüße aus Köln".encode("latin-1")).decode()
     + "\r\n").encode(), "Drucker für Köln", ("Jürgen", "j@example.de"), "Grüße aus Köln",
     ["header line skipped: garbage line"]),
    ("no-blank-line-before-body", b"From: Anne <anne@example.fr>\nSubject: Imprimante\nBonjour,\nelle ne marche pas\n",
     "Imprimante", ("Anne", "anne@example.fr"), "Bonjour,\nelle ne marche pas", ["no blank line"]),
]


@pytest.mark.parametrize(("kind", "raw", "subject", "who", "body", "warnings"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_header_blocks_are_read_with_a_warning(
    kind: str, raw: bytes, subject: str, who: tuple[str, str], body: str, warnings: list[str]
) -> None:
    d = parse_email(raw)
    assert d.subject == subject
    assert (d.contact.name, d.contact.email) == who
    assert d.body_text.strip() == body
    got = d.labels["parse_warnings"]
    assert isinstance(got, list) and len(got) == len(warnings)
    for w, g in zip(warnings, got, strict=True):
        assert w in g


def test_a_sound_header_block_has_no_warning() -> None:
    assert "parse_warnings" not in parse_email(raw_header_mail("gbk", "打印机故障", "张三", "a.txt", "gb18030")).labels


# item 4: the right body
def multipart(subtype: str, *parts: tuple[str, str, bytes]) -> bytes:
    out = b"From: a@example.com\nSubject: s\nMIME-Version: 1.0\nContent-Type: multipart/" + subtype.encode() + b"; boundary=P\n\n"
    for ctype, cs, data in parts:
        out += b"--P\nContent-Type: " + ctype.encode() + b"; charset=" + cs.encode() + b"\n\n" + data + b"\n"
    return out + b"--P--\n"


def alternative(plain: bytes, cs: str, html: bytes) -> bytes:
    return multipart("alternative", ("text/plain", cs, plain), ("text/html", cs, html))


BODIES = [
    ("empty-plain-zh", alternative(b"", "gbk", "<p>打印机<b>卡纸</b></p>".encode("gbk")), "打印机卡纸", "<b>卡纸</b>"),
    ("whitespace-plain-ja", alternative(b"  \n\n", "iso-2022-jp", b"<div>" + jis("動きません") + b"</div>"),
     "動きません", "<div>"),
    ("stub-plain-en", alternative(b"To view this message in HTML, use a mail client that supports it.", "utf-8",
                                  b"<p>The printer jams on <i>every</i> page</p>"),
     "The printer jams on every page", "<i>every</i>"),
    ("stub-plain-zh", alternative("您的邮件客户端不支持HTML格式".encode("gb18030"), "gb18030",
                                  "<p>复印机无法启动</p>".encode("gb18030")), "复印机无法启动", "<p>"),
    ("real-plain-kept-ru", alternative("Принтер сломан".encode("koi8_r"), "koi8-r",
                                       "<p>Принтер <b>сломан</b></p>".encode("koi8_r")), "Принтер сломан", "<b>"),
    ("html-in-mixed-de", multipart("mixed", ("text/html", "iso-8859-1", "<p>Drucker defekt, Grüße</p>".encode("latin-1"))),
     "Drucker defekt, Grüße", "<p>"),
    ("several-inline-parts-in-order", multipart(
        "mixed", ("text/plain", "utf-8", "第一部分".encode()), ("text/html", "big5", "<p>第二部分</p>".encode("big5")),
        ("text/plain", "shift_jis", "第三部分".encode("cp932"))), "第一部分\n\n第二部分\n\n第三部分", "<p>"),
]


@pytest.mark.parametrize(("kind", "raw", "body", "html_piece"), BODIES, ids=[b[0] for b in BODIES])
def test_the_right_body(kind: str, raw: bytes, body: str, html_piece: str) -> None:
    d = parse_email(raw)
    assert d.body_text.strip() == body
    assert d.body_html is not None and html_piece in d.body_html and "<script" not in d.body_html
