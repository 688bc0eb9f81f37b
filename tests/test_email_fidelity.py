"""Issue 13 mail fidelity, items 1-6: table-driven cases with exact subject, sender, body and attachment bytes."""

from __future__ import annotations

import email as stdlib_email
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
