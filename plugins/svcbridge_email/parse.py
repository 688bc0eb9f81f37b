"""Raw mail bytes to a ``TicketDraft``: shared by Maildir, IMAP and ``svcbridge ingest``.

Bytes are never pre-decoded: headers are decoded word by word (RFC 2047, RFC 2231) and bodies part by
part through ``decode.py``. HTML is sanitised with nh3 and rendered to text when there is no plain
part. Every non-body part is kept as an attachment under a generated name (the original name is only
metadata). Automated mail (RFC 3834 Auto-Submitted, X-Loop, Precedence, DSNs, MAILER-DAEMON, empty
Return-Path) is marked so nothing ever answers it.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses
from typing import Any

import nh3

from svcbridge import Attachment, Contact, ExternalLink, ParseError, TicketDraft

from . import headerblock, msgid, tnef
from .body import alternative_groups, compose
from .decode import DEFAULT_CANDIDATES, decode_bytes
from .enclosed import headers_part, leaves, message_part, uudecode
from .headers import HeaderDecoder, raw_all, raw_first
from .quoting import trim_reply

MAX_BODY = 1_500_000
MAX_SUBJECT = 1000  # characters, as the generic webhook allows
# parts read of one mail: each undeclared 8-bit part costs a charset detection (about 3 ms), and a
# 256 KB mail of 6,000 one-byte parts took 20 s; real mail has a few dozen
MAX_PARTS = 500
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")  # no line break in any sense
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
NOT_IN_ADDRESS = re.compile(r"[\s\x00-\x1f\x7f\ud800-\udfff]")  # NUL, CR/LF, a lone surrogate: no address
AUTOMATED_SENDERS = re.compile(r"^(mailer-daemon|postmaster|noreply|no-reply|do-not-reply|donotreply)@", re.I)
ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bq]\?", re.I)
TRAD_HINT = set("們這個來為會說對時麼樣還發經過點當頭實問題機體種電腦聯絡處請謝")


def decode_header_value(value: Any, candidates: tuple[str, ...] = DEFAULT_CANDIDATES) -> str:
    """Decode an RFC 2047 header (raw 8-bit headers too) into one clean line of text."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    out = []
    try:
        parts = decode_header(value)
    except Exception:
        parts = [(value, None)]
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset, candidates))
        else:
            out.append(_surrogates(chunk, candidates))
    text = "".join(out)
    # no CR/LF or control characters survive into a subject or name (header injection on replies),
    # and no lone surrogate (no store takes one)
    return UNSAFE.sub(" ", text).strip()


def _surrogates(text: str, candidates: tuple[str, ...]) -> str:
    """compat32 smuggles raw 8-bit header bytes as surrogateescape; decode them properly."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return decode_bytes(text.encode("ascii", "surrogateescape"), None, candidates)


def sender(msg: Message, candidates: tuple[str, ...]) -> Contact:
    """The customer from Reply-To or From; ambiguous or malformed addresses give no e-mail.

    Addresses are parsed on the raw header, before encoded words are decoded, so an encoded display
    name such as ``=?utf-8?q?alice=40example.org?=`` stays a name and never becomes an address.
    """
    dec = HeaderDecoder(msg, candidates)
    for header in ("Reply-To", "From"):
        raw = [dec.unescape(v) for v in raw_all(msg, header)]
        if not raw:
            continue
        pairs = [(n, a) for n, a in getaddresses(raw) if a]
        # CVE-2023-27043 style tricks yield several or broken addresses: refuse to guess
        if len(pairs) != 1 or pairs[0][1].count("@") != 1 or NOT_IN_ADDRESS.search(pairs[0][1]):
            continue
        name, addr = pairs[0]
        if addr not in "\n".join(raw):
            # assembled from pieces, never written as such: getaddresses reads "a@b.example (=?utf-8?Q?)?=)"
            # as the address "a@b.example?=" (found by fuzzing)
            continue
        if ENCODED_WORD.search(addr):  # =?utf-8?Q?agent?=@example.com names no mailbox: refused, never stored
            continue
        if header == "Reply-To" and not name.strip():
            # the reply address is the customer's, the name is on From
            froms = getaddresses([dec.unescape(v) for v in raw_all(msg, "From")])
            name = next((n for n, _a in froms if n), "")
        try:
            return Contact(name=dec.text(name) or None, email=addr)
        except ValueError:
            continue
    return Contact()


def is_automated(msg: Message, our_addresses: set[str]) -> tuple[bool, str]:
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    if auto and auto != "no":
        return True, f"Auto-Submitted: {auto}"
    if msg.get("X-Loop"):
        return True, "X-Loop"
    if str(msg.get("Precedence", "")).strip().lower() in ("bulk", "list", "junk", "auto_reply"):
        return True, "Precedence"
    if msg.get_content_type() == "multipart/report":
        return True, "delivery/disposition report"
    if msg.get("List-Id") or msg.get("List-Unsubscribe"):
        return True, "mailing list"
    rp = msg.get("Return-Path")
    if rp is not None and str(rp).strip() in ("<>", ""):
        return True, "empty Return-Path"
    frm = " ".join(str(v) for v in (msg.get_all("From") or []))
    for _n, addr in getaddresses([frm]):
        if AUTOMATED_SENDERS.match(addr) or addr.lower() in our_addresses:
            return True, f"sender {addr}"
    return False, ""


def _filename(part: Message, candidates: tuple[str, ...], dec: HeaderDecoder | None = None) -> str | None:
    dec = dec or HeaderDecoder(part, candidates)
    raw = [(h, raw_first(part, h)) for h in ("Content-Disposition", "Content-Type")]
    if any(v and any("\udc80" <= ch <= "\udcff" for ch in v) for _h, v in raw):
        # a raw 8-bit name: decode the header bytes first, then read its parameters from clean text
        clean = Message()
        for h, v in raw:
            if v:
                clean[h] = dec.unescape(v, part.get_content_charset())
        part = clean
    try:
        name = part.get_filename()  # handles RFC 2231 (name*=, continuations)
        if name is None:
            name = part.get_param("name")
            if isinstance(name, tuple):
                name = email.utils.collapse_rfc2231_value(name)
    except UnicodeError:  # an RFC 2231 charset that fails even with "replace" (idna, undefined): as UTF-8
        found = part.get_param("filename", header="content-disposition") or part.get_param("name")
        value = found[2] if isinstance(found, tuple) else found
        raw8 = value.encode("latin-1", "replace") if isinstance(value, str) else b""
        name = raw8.decode("utf-8", "replace") or None
    return dec.text(name) if name else None


# nh3 (html5ever) takes time quadratic in nesting depth: 20,000 nested <div> cost 1.3 s, 50,000 about
# 11 s, a cheap denial of service for one mail. No real message nests deeper than a few dozen levels.
MAX_HTML_DEPTH = 100
VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track"}
    | {"wbr"}
)
TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9:-]*)\b[^>]*?(/?)>")


def flatten_deep_html(markup: str, max_depth: int = MAX_HTML_DEPTH) -> str:
    """Drop the element tags nested deeper than `max_depth` (their text stays) before sanitising."""
    if markup.count("<") <= max_depth:
        return markup
    out: list[str] = []
    stack: list[tuple[str, bool]] = []  # (tag, kept)
    pos = 0
    for m in TAG.finditer(markup):
        closing, name, selfclosing = m.group(1), m.group(2).lower(), m.group(3)
        out.append(markup[pos : m.start()])
        pos = m.end()
        if name in VOID_TAGS or selfclosing:
            out.append(m.group(0))
        elif not closing:
            kept = len(stack) < max_depth
            stack.append((name, kept))
            if kept:
                out.append(m.group(0))
        else:
            # close up to the matching open tag; a stray closing tag is kept only if nothing was dropped
            idx = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] == name), None)
            if idx is None:
                out.append(m.group(0))
                continue
            kept = stack[idx][1]
            del stack[idx:]
            if kept:
                out.append(m.group(0))
    out.append(markup[pos:])
    return "".join(out)


def walk(msg: Message, candidates: tuple[str, ...]) -> tuple[str, str | None, list[Attachment], list[str]]:
    """Return (plain text, sanitised html, attachments, Message-IDs of enclosed/reported messages)."""
    plain: list[str] = []
    htmls: list[str] = []
    atts: list[Attachment] = []
    enclosed: list[str] = []
    dec = HeaderDecoder(msg, candidates)
    pieces: list[tuple[str, str, int | None]] = []  # the body's text parts in order (body.py)
    groups = alternative_groups(msg)
    for n, part in enumerate(leaves(msg)):  # a message/* part is kept whole, never opened into the body
        if n >= MAX_PARTS:
            break
        ctype = part.get_content_type()
        disp = (part.get_content_disposition() or "").lower()
        fname = _filename(part, candidates, dec)
        if part.get_content_maintype() == "message" and part is not msg:
            att, ids = message_part(part, fname, candidates)
            atts.append(att)
            enclosed += ids
            continue
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:
            raw = part.get_payload()
            data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
        if ctype in ("text/plain", "text/html") and disp != "attachment" and not fname:
            text = decode_bytes(data, part.get_content_charset(), candidates)
            if ctype == "text/plain":
                text, uu = uudecode(text)
                atts += uu
            (plain if ctype == "text/plain" else htmls).append(text)
            pieces.append((ctype, text, groups.get(id(part))))
        elif ctype in ("message/delivery-status", "text/rfc822-headers"):
            plain_report = decode_bytes(data, part.get_content_charset(), candidates)
            att, ids = headers_part(data, fname, candidates)
            atts.append(att)
            enclosed += ids
            if not plain:
                plain.append(plain_report)
        elif tnef.is_tnef(ctype, fname) and (inner := tnef.unpack(data)) is not None:
            atts.extend(inner)
        else:
            atts.append(Attachment.from_bytes(data, original_name=fname, content_type=ctype))
    body_html = nh3.clean(flatten_deep_html("\n".join(htmls))) if htmls else None
    text = compose(pieces) or "\n\n".join(p.strip("\r\n") for p in plain)
    return text.replace("\r\n", "\n"), body_html, atts, enclosed


def thread_ids(msg: Message, reported: list[str]) -> tuple[list[ExternalLink], list[ExternalLink], list[str]]:
    """(the Message-ID link, In-Reply-To / References links, the dropped pieces for a label).

    Ids are read strictly (``msgid.py``): only the first valid ``Message-ID`` is a link; a mail without
    one still threads by In-Reply-To, References and the subject tag. A bounce or DSN also threads onto
    the message it reports (`reported`: the enclosed ids; it is automated and never answered).
    """
    bad: list[str] = []
    own = msgid.split(msg.get("Message-ID"))
    bad += own.bad
    if own.rest:  # one id and nothing else belongs here: an id without brackets, a smuggled header
        bad.append(own.rest)
    mine = own.ids[:1]
    refs: list[str] = []
    for header in ("In-Reply-To", "References"):
        found = msgid.split(msg.get(header))
        bad += found.bad
        if found.rest and not found.ids:  # an obsolete phrase beside an id is fine; no id at all is not
            bad.append(found.rest)
        refs += found.ids
    refs += reported[: msgid.MAX_IDS]
    refs = [m for m in dict.fromkeys(refs) if m not in mine]  # in order, each once
    links = [ExternalLink(system="email", kind="message_id", value=m) for m in mine]
    return (
        links,
        [ExternalLink(system="email", kind="message_id", value=m) for m in refs],
        [msgid.shown(b) for b in bad[:10]],
    )


def guess_language(text: str, charsets: list[str]) -> str | None:
    if not CJK.search(text):
        return "en" if text.strip() else None
    if any(c.startswith("big5") for c in charsets) or sum(ch in TRAD_HINT for ch in text) >= 2:
        return "zh-TW"
    return "zh-CN"


# CPython's email.utils.decode_params sorts a parameter's RFC 2231 pieces by number, and a `name*=` beside
# a `name*0=` (None beside 0) raises TypeError in message_from_bytes (a multipart boundary), get_param,
# get_filename or get_charsets. Such a mail is read again with every unnumbered `name*=` as `name*0*=`.
_MIME_PARAMS = re.compile(
    rb"(?i)(?:^|(?<=[\r\n]))content-(?:type|disposition):[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*"
)
_UNNUMBERED = re.compile(rb"(;\s*[!#$%&'+.^_`{|}~0-9A-Za-z-]+)\*=")


def message(raw: bytes) -> Message:
    """The compat32 message of `raw`, read so that no parameter makes the stdlib raise later."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in msg.walk():
            part.get_params()
            part.get_params(header="content-disposition")
        return msg
    except TypeError:
        fixed = _MIME_PARAMS.sub(lambda m: _UNNUMBERED.sub(rb"\1*0*=", m.group()), raw)
        return email.message_from_bytes(fixed, policy=email.policy.compat32)


def parse_email(
    raw: bytes, *, our_addresses: set[str] | None = None, candidates: tuple[str, ...] = DEFAULT_CANDIDATES
) -> TicketDraft:
    """Parse raw RFC 5322 bytes into a draft (never raises on odd charsets; ParseError on non-mail)."""
    raw, repairs = headerblock.repair(raw)
    msg = message(raw)
    if not msg.keys() and not msg.get_payload():
        raise ParseError("no headers and no body: not an e-mail message")
    # cut: a 50,000-character non-ASCII subject took the stdlib 3 s to fold into the acknowledgement
    subject = HeaderDecoder(msg, candidates).text(raw_first(msg, "Subject"))[:MAX_SUBJECT]
    text, body_html, atts, enclosed = walk(msg, candidates)
    automated, why = is_automated(msg, our_addresses or set())
    # the reason quotes a header: one storable line (a NUL in it is refused by PostgreSQL's JSON)
    labels: dict[str, object] = {"automated_reason": UNSAFE.sub(" ", why)[:200]} if automated else {}
    parts = sum(1 for _ in leaves(msg))
    if parts > MAX_PARTS:  # the rest stay in the journal
        labels["parts_skipped"] = parts - MAX_PARTS
    if repairs:  # a broken header block was read anyway (headerblock.py): say what was repaired
        labels["parse_warnings"] = repairs[:10]
    if len(text) > MAX_BODY:
        # like Zammad's 1,500,000-character cut; the whole mail stays in the journal
        labels["body_truncated_from"] = len(text)
        text = (
            text[:MAX_BODY] + f"\n\n[svcbridge: body cut at {MAX_BODY} characters; the original mail is kept]"
        )
    links, refs, bad = thread_ids(msg, enclosed if automated else [])
    if bad:
        # "_": moved to the kept label `bad_message_ids` by classify_ticket, so a follow-up records it too
        labels["_bad_message_ids"] = bad
    charsets = [c for c in msg.get_charsets() if c]
    contact = sender(msg, candidates)
    lang = guess_language(subject + "\n" + text, charsets)
    if contact.email:
        contact.language = lang
    suppress = "all" in str(msg.get("X-Auto-Response-Suppress", "")).lower()
    return TicketDraft(
        channel="email",
        subject=subject,
        body_text=text,
        body_html=body_html,
        contact=contact,
        language=lang,
        attachments=atts,
        links=links,
        thread_refs=refs,
        automated=automated,
        suppress_autoreply=suppress,
        labels=labels | {"reply_text": trim_reply(text)},
    )
