"""A seeded generator of hard mail, with the exact result each message must give.

``hard_cases()`` returns one ``Case`` per kind of trouble real desks meet: GBK labelled gb2312, Big5,
8-bit GBK / Big5 without a charset, unknown-8bit, ISO-2022-JP without a parameter, RFC 2047 and RFC 2231
names, TNEF, DSNs with and without Auto-Submitted, auto-replies, missing Message-ID or Date, Windows
paths in 8-bit UTF-8, TIFF faxes, HTML with script, replies threaded by References only.
``generate(n, seed)`` mixes them (with fresh Message-IDs, plus plain mail and redeliveries) into N
messages for the pipeline tests and the intake benchmark. Deterministic for a given seed.
"""

from __future__ import annotations

import base64
import random
import struct
from dataclasses import dataclass, field

TIFF = b"II*\x00\x08\x00\x00\x00" + bytes(range(256)) * 8  # little-endian TIFF header + data
GBK_TEXT = "您好，我们的打印机卡纸了，序列号 SN-2024-0815，型号 镕铖 LaserJet。㐀"
BIG5_TEXT = "您好，我們的伺服器昨天當機了，請儘快派工程師到場。序號 TW-9981"
WIN_PATH = "日志在 C:\\Users\\张三\\AppData\\Local\\Temp\\err.log 和 \\\\fileserver\\share\\报告.docx"


@dataclass
class Case:
    kind: str
    raw: bytes
    subject: str
    body: str | None = None  # exact text, when the case defines it
    body_contains: list[str] = field(default_factory=list)
    attachments: list[tuple[str | None, bytes]] = field(default_factory=list)  # (original name, bytes)
    automated: bool = False
    msgid: str | None = None
    replies_to: str | None = None  # Message-ID this one must thread onto


def _hdr(subject_raw: str, msgid: str | None, frm: str = "Customer <cust@example.com>", extra: str = "",
         date: bool = True) -> bytes:
    h = f"From: {frm}\r\nTo: support@bridge.test\r\nSubject: {subject_raw}\r\n"
    if date:
        h += "Date: Mon, 02 Nov 2026 09:30:00 +0800\r\n"
    if msgid:
        h += f"Message-ID: {msgid}\r\n"
    return (h + extra + "MIME-Version: 1.0\r\n").encode()


def _b64_word(text: str, charset: str) -> str:
    codec = {"gb2312": "gb18030", "big5": "big5"}.get(charset, charset)
    return f"=?{charset}?B?{base64.b64encode(text.encode(codec)).decode()}?="


def tnef_stream(files: list[tuple[str, bytes]]) -> bytes:
    """A minimal TNEF (winmail.dat) stream holding the given files, as Outlook writes them."""

    def attr(level: int, attr_id: int, data: bytes) -> bytes:
        return (struct.pack("<BII", level, attr_id, len(data)) + data
                + struct.pack("<H", sum(data) & 0xFFFF))

    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += attr(1, 0x00089006, struct.pack("<I", 0x00010000))  # attTnefVersion
    for name, data in files:
        out += attr(2, 0x00069002, b"\x01\x00\x00\x00" + b"\xff" * 10)  # attAttachRendData
        out += attr(2, 0x00018010, name.encode("latin-1") + b"\x00")  # attAttachTitle
        out += attr(2, 0x0006800F, data)  # attAttachData
    return out


def hard_cases(tag: str = "h") -> list[Case]:
    c: list[Case] = []

    def mid(k: str) -> str:
        return f"<{tag}-{k}@example.com>"

    # GBK text (characters outside GB2312) labelled gb2312, in subject and 8-bit body
    subj = "打印机卡纸 镕"
    c.append(Case("gbk_as_gb2312", _hdr(_b64_word(subj, "gb2312"), mid("gbk"))
                  + b"Content-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  + GBK_TEXT.encode("gb18030") + b"\r\n", subj, body=GBK_TEXT, msgid=mid("gbk")))
    c.append(Case("big5", _hdr(_b64_word("伺服器當機", "big5"), mid("big5"))
                  + b"Content-Type: text/plain; charset=big5\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  + BIG5_TEXT.encode("big5") + b"\r\n", "伺服器當機", body=BIG5_TEXT, msgid=mid("big5")))
    c.append(Case("gbk_no_charset", _hdr("no charset gbk", mid("gbk0"))
                  + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  + GBK_TEXT.encode("gb18030") + b"\r\n", "no charset gbk", body=GBK_TEXT, msgid=mid("gbk0")))
    c.append(Case("big5_no_charset", _hdr("no charset big5", mid("big50"))
                  + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  + BIG5_TEXT.encode("big5") + b"\r\n", "no charset big5", body=BIG5_TEXT, msgid=mid("big50")))
    latin = "Grüße aus Köln, der Drucker ist kaputt."
    c.append(Case("unknown_8bit", _hdr("unknown 8bit", mid("u8"))
                  + b"Content-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  + latin.encode("latin-1") + b"\r\n", "unknown 8bit", body=latin, msgid=mid("u8")))
    jp = "プリンターが故障しました。"
    c.append(Case("iso2022jp_no_param", _hdr("jis", mid("jis"))
                  + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                  + jp.encode("iso2022_jp") + b"\r\n", "jis", body=jp, msgid=mid("jis")))
    c.append(Case("windows_paths_utf8", _hdr("paths", mid("path"))
                  + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                  + WIN_PATH.encode() + b"\r\n", "paths", body=WIN_PATH, msgid=mid("path")))
    pdf = b"%PDF-1.4\n" + bytes(random.Random(7).randrange(256) for _ in range(3000))
    name = "维修报告 2026.pdf"
    encoded = "utf-8''" + "".join(f"%{b:02X}" for b in name.encode())
    c.append(Case("rfc2231_name", _hdr("report attached", mid("2231"))
                  + b'Content-Type: multipart/mixed; boundary="B1"\r\n\r\n--B1\r\n'
                  + b"Content-Type: text/plain; charset=utf-8\r\n\r\nsee attachment\r\n--B1\r\n"
                  + f"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*={encoded}\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n".encode()
                  + base64.encodebytes(pdf).replace(b"\n", b"\r\n") + b"--B1--\r\n",
                  "report attached", body="see attachment", attachments=[(name, pdf)], msgid=mid("2231")))
    c.append(Case("tiff_fax", _hdr("Fax received from \"0755-1234\"", mid("fax"))
                  + b'Content-Type: multipart/mixed; boundary="F"\r\n\r\n--F\r\n'
                  + b"Content-Type: text/plain\r\n\r\nPages: 1\r\nCommID: 000000123\r\n--F\r\n"
                  + b'Content-Type: image/tiff; name="fax000000123.tif"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                  + base64.encodebytes(TIFF).replace(b"\n", b"\r\n") + b"--F--\r\n",
                  'Fax received from "0755-1234"', body_contains=["CommID: 000000123"],
                  attachments=[("fax000000123.tif", TIFF)], msgid=mid("fax")))
    inner = [("part-list.xlsx", b"PK\x03\x04 fake xlsx " * 20), ("photo.jpg", b"\xff\xd8\xff\xe0" + b"j" * 500)]
    c.append(Case("tnef", _hdr("winmail", mid("tnef"))
                  + b'Content-Type: multipart/mixed; boundary="T"\r\n\r\n--T\r\n'
                  + b"Content-Type: text/plain\r\n\r\nparts list inside\r\n--T\r\n"
                  + b'Content-Type: application/ms-tnef; name="winmail.dat"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
                  + base64.encodebytes(tnef_stream(inner)).replace(b"\n", b"\r\n") + b"--T--\r\n",
                  "winmail", body="parts list inside", attachments=list(inner), msgid=mid("tnef")))
    html = "<p>Screen shows <b>E-502</b></p><script>alert(1)</script><img src=x onerror=alert(2)>"
    c.append(Case("html_only", _hdr("html only", mid("html"))
                  + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode() + b"\r\n",
                  "html only", body="Screen shows E-502", msgid=mid("html")))
    c.append(Case("no_msgid_no_date", _hdr("no ids at all", None, date=False)
                  + b"Content-Type: text/plain; charset=utf-8\r\n\r\nplease call me back\r\n",
                  "no ids at all", body="please call me back"))
    c.append(Case("auto_reply", _hdr("Out of office", mid("ooo"), extra="Auto-Submitted: auto-replied\r\n")
                  + b"Content-Type: text/plain\r\n\r\nI am away until Monday.\r\n", "Out of office",
                  body="I am away until Monday.", automated=True, msgid=mid("ooo")))
    return c


def bounce(original_msgid: str, postfix_style: bool, tag: str = "b") -> Case:
    """A DSN for a message we sent; Postfix's carries no Auto-Submitted, only MAILER-DAEMON and <>."""
    auto = "" if postfix_style else "Auto-Submitted: auto-replied\r\n"
    raw = (_hdr("Undelivered Mail Returned to Sender", f"<{tag}-dsn@mx.example.com>",
                frm="MAIL-DAEMON <MAILER-DAEMON@mx.example.com>",
                extra=f"Return-Path: <>\r\n{auto}")
           + b'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n--R\r\n'
           + b"Content-Type: text/plain\r\n\r\nThe mail system: host said 550 user unknown\r\n--R\r\n"
           + b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n"
           + b"Final-Recipient: rfc822; gone@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n--R\r\n"
           + b"Content-Type: text/rfc822-headers\r\n\r\n"
           + f"From: support@bridge.test\r\nTo: gone@example.com\r\nMessage-ID: {original_msgid}\r\n"
             "Subject: [SB-000001] We received your request\r\n".encode()
           + b"--R--\r\n")
    return Case("dsn_postfix" if postfix_style else "dsn", raw, "Undelivered Mail Returned to Sender",
                body_contains=["550 user unknown"], automated=True, replies_to=original_msgid)


def reply_by_references(original_msgid: str, tag: str = "r") -> Case:
    raw = (_hdr("Re: your ticket", f"<{tag}-reply@example.com>", extra=f"References: {original_msgid}\r\n")
           + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
           + b"The fault is back.\r\n\r\nOn Mon, 2 Nov 2026 support wrote:\r\n> We received your request\r\n")
    return Case("reply_references", raw, "Re: your ticket", replies_to=original_msgid,
                body_contains=["The fault is back."], msgid=f"<{tag}-reply@example.com>")


def generate(n: int, seed: int = 1) -> list[Case]:
    """N messages: the hard cases with fresh ids mixed into plain mail, plus redeliveries (extra Received)."""
    rng = random.Random(seed)
    out: list[Case] = []
    i = 0
    while len(out) < n:
        roll = rng.random()
        if roll < 0.3:
            case = rng.choice(hard_cases(f"g{i}"))
        elif roll < 0.35 and out:
            prev = rng.choice(out)
            case = Case("redelivery", b"Received: from relay.example.com by mx; Mon, 2 Nov 2026 10:00:00 +0800\r\n"
                        + prev.raw, prev.subject, automated=prev.automated, msgid=prev.msgid)
        else:
            words = rng.sample(["printer", "server", "disk", "fan", "error", "E-502", "jam", "noise", "slow"], 3)
            subj = f"{' '.join(words)} #{i}"
            body = f"Serial SN{rng.randrange(10**6):06d}: {' '.join(words)}.\r\n" * rng.randint(1, 20)
            case = Case("plain", _hdr(subj, f"<g{i}-plain@example.com>")
                        + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode(), subj,
                        msgid=f"<g{i}-plain@example.com>")
        out.append(case)
        i += 1
    return out
