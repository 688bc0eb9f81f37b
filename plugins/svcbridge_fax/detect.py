"""Fax-to-mail detection: which mails are faxes, and whose fax number sent them.

A fax server (HylaFAX's ``faxrcvd``) or a fax service (eFax, RingCentral, a carrier's fax2mail) mails
each received fax as an ordinary message. A ``FaxRule`` says how to recognise such mail: the sender
address (an exact address, or a pattern such as ``faxmaster*``), a subject pattern, and the type of
the attachment that carries the pages. Every condition a rule gives must hold; the first rule that
matches wins. The fax number comes, in order of trust, from the caller ID of the line (HylaFAX's
``CallID1``), the transmitting station id (``Sender:``, the TSI the remote machine announces, also in
HylaFAX's subject) or a number in the subject of a service's mail; it is normalised to E.164 with
``phonenumbers`` (``default_region`` for national numbers such as ``0532 8888 1234``).

A rule recognises how a gateway's mail *looks*; who may send it is ``GatewayTrust`` (``[plugins.fax.
trust.<rule>]``): the allow-list of sender addresses / domains (default: the rule's own ``senders``;
for the built-in rules the services' own addresses, and for HylaFAX only the unqualified
``FaxMaster`` of this host), optionally the journal sources the gateway delivers through and an
authenticated path (``Authentication-Results`` of our own MTA: DKIM, SPF or DMARC pass for the From
domain). A mail that looks like a fax but fails that is a look-alike: an ordinary mail, labelled,
never a fax with a caller id that names a customer.

Nothing here reads files or the network: it works on the header block and the parsed draft.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, field_validator

from svcbridge import Attachment

# HylaFAX: 'Subject: Fax received from "<TSI>"' (etc/templates/en/faxrcvd-success.txt)
HYLAFAX_SUBJECT = r'^Fax received from "(?P<tsi>[^"]*)"'
# common fax-to-mail services' subjects; each names the number in the group "number"
SERVICE_SUBJECTS = (
    ("efax", r'^eFax message from "(?P<number>[^"]+)"'),
    ("ringcentral", r"^New Fax Message (?:from|From) (?P<number>[+\d][\d ()./-]{4,})"),
    (
        "fax2mail",
        r"^(?:Fax|FAX|Telefax|传真|傳真)\s*(?:from|von|来自|來自)[:：]?\s*(?P<number>[+\d][\d ()./-]{4,})",
    ),
)
FAX_TYPES = ("image/tiff", "application/pdf", "image/tif", "application/postscript")
_KV = re.compile(r"^\s*(Sender|Pages|CallID1|CallID2|CommID|Received|Quality)\s*:\s*(.*?)\s*$", re.M)


class FaxRule(BaseModel):
    """One ``[[plugins.fax.rules]]`` entry; conditions left out are not checked (at least one is given)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=60)
    senders: list[str] = Field(
        default_factory=list, description="sender addresses or shell patterns (faxmaster*, *@fax.example)"
    )
    subject: str | None = Field(default=None, description="regular expression searched in the subject")
    attachment_types: list[str] = Field(
        default_factory=list, description="MIME types of which one attachment must be (image/tiff...)"
    )

    @field_validator("subject")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"subject is not a regular expression: {exc}") from None
        return v

    @field_validator("senders", "attachment_types")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [s.strip().lower() for s in v if s.strip()]

    def model_post_init(self, _ctx: Any) -> None:
        if not (self.senders or self.subject or self.attachment_types):
            raise ValueError(f"fax rule {self.name!r} has no condition: it would take every mail")

    def matches(self, sender: str, subject: str, attachments: list[Attachment]) -> bool:
        if self.senders and not any(_sender_matches(p, sender) for p in self.senders):
            return False
        if self.subject is not None and not re.search(self.subject, subject):
            return False
        return not self.attachment_types or any(
            a.content_type.lower() in self.attachment_types for a in attachments
        )


def _sender_matches(pattern: str, sender: str) -> bool:
    local = sender.partition("@")[0]
    # 'faxmaster' matches HylaFAX's bare "<FaxMaster>" as well as faxmaster@host (sendmail may qualify it)
    bare = "@" not in pattern and fnmatch.fnmatchcase(local, pattern)
    return fnmatch.fnmatchcase(sender, pattern) or bare


BUILTIN_RULES = [
    FaxRule(name="hylafax", subject=HYLAFAX_SUBJECT),
    *[FaxRule(name=n, subject=p, attachment_types=list(FAX_TYPES)) for n, p in SERVICE_SUBJECTS],
]


@dataclass
class FaxInfo:
    """What a fax mail says about the fax: who sent it and what the server recorded."""

    rule: str
    number: str | None = None  # E.164
    tsi: str | None = None  # the station id the sending machine announced (free text)
    caller_id: str | None = None
    pages: int | None = None
    comm_id: str | None = None
    received: str | None = None
    raw_numbers: list[str] = field(default_factory=list)

    def label(self) -> dict[str, Any]:
        out = {
            "rule": self.rule,
            "from": self.number,
            "tsi": self.tsi,
            "caller_id": self.caller_id,
            "pages": self.pages,
            "comm_id": self.comm_id,
            "received": self.received,
        }
        return {k: v for k, v in out.items() if v not in (None, "")}


def header_sender(raw: bytes) -> str:
    """The From address of a mail's header block, lower-cased ('' when there is none)."""
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536])
        found = getaddresses([str(msg.get("From", ""))])
    except Exception:  # a header the stdlib cannot read is no fax server's mail
        return ""
    return found[0][1].strip().lower() if found else ""


class GatewayTrust(BaseModel):
    """``[plugins.fax.trust.<rule>]``: who may send the faxes of the gateway a rule recognises."""

    model_config = ConfigDict(extra="forbid")
    senders: list[str] | None = Field(
        default=None,
        description="From addresses (exact or shell patterns), domains (@fax.example or fax.example: "
        "subdomains too) or a bare local part (an unqualified local sender only); default: the rule's "
        "senders (built-in rules: the service's addresses)",
    )
    sources: list[str] = Field(
        default_factory=list, description="journal sources the gateway's mail arrives through (empty: any)"
    )
    authenticated: bool = Field(
        default=False, description="require our MTA's Authentication-Results pass for the From domain"
    )
    authserv_ids: list[str] = Field(
        default_factory=list, description="authserv-ids of our own MTAs (the A-R headers they add)"
    )

    @field_validator("senders")
    @classmethod
    def _lower(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [s.strip().lower() for s in v if s.strip()]

    def model_post_init(self, _ctx: Any) -> None:
        if self.authenticated and not self.authserv_ids:
            raise ValueError("authenticated = true needs authserv_ids (the authserv-id of our MTA)")


# the built-in rules' senders: HylaFAX's faxrcvd mails as FaxMaster (FROMADDR) through the local MTA;
# a qualified FaxMaster@host is configured (any mail server's user can call itself faxmaster)
BUILTIN_TRUST = {
    "hylafax": ["faxmaster"],
    "efax": ["@efax.com"],
    "ringcentral": ["@ringcentral.com"],
    "fax2mail": [],  # a carrier's fax2mail has no one address: configured, or nothing is trusted
}


def sender_allowed(entries: list[str], sender: str) -> bool:
    """Is ``sender`` (lower-case) on the allow-list ``entries``?"""
    local, at, domain = sender.rpartition("@") if "@" in sender else (sender, "", "")
    for entry in entries:
        if entry.startswith("@") or ("@" not in entry and "." in entry):
            want = entry.lstrip("@")
            if at and (domain == want or domain.endswith("." + want)):
                return True
        elif "@" not in entry:  # a bare local part: only what the local system sends unqualified
            if not at and fnmatch.fnmatchcase(local, entry):
                return True
        elif fnmatch.fnmatchcase(sender, entry):
            return True
    return False


def _plain(header: str) -> str:
    """The header without its comments, each quoted string emptied (``""``): our MTA writes into them
    what the sender chose (an envelope sender like ``"a; dkim=pass header.d=efax.com"@evil``, a HELO
    name), so a ``;`` or a ``header.d=`` there is neither a result nor a property (RFC 5322 3.2.2-3.2.4)."""
    out: list[str] = []
    depth, quoted, escaped = 0, False, False
    for ch in header:
        if escaped:
            escaped = False
        elif ch == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            if ch == '"':
                quoted = False
                out.append('"')
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
        elif depth:
            continue
        elif ch == '"':
            quoted = True
            out.append('"')
        else:
            out.append(ch)
    return "".join(out)


_RESINFO = re.compile(r"^\s*(?P<method>[a-z0-9-]+)\s*=\s*(?P<result>[a-z]+)(?P<props>.*)$", re.I | re.S)
_PROP = re.compile(r"\b(header\.d|header\.i|header\.from|smtp\.mailfrom)\s*=\s*([^\s;]+)", re.I)


def authenticated(raw: bytes, sender: str, authserv_ids: list[str]) -> bool:
    """Did our MTA (an ``authserv_ids`` host) record a DKIM, SPF or DMARC pass aligned with the From
    domain? Only the topmost Authentication-Results of ours is read: the MTA adds its own on top, and
    a header further down may be the sender's forgery (RFC 8601 section 5)."""
    domain = sender.rpartition("@")[2] if "@" in sender else ""
    if not domain:
        return False
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536])
        headers = [str(h) for h in msg.get_all("Authentication-Results") or []]
    except Exception:
        return False
    ours = {a.lower() for a in authserv_ids}
    for header in headers:
        head, _, rest = " ".join(_plain(header).split()).partition(";")
        if head.strip().split(" ")[0].lower() not in ours:
            continue
        for resinfo in rest.split(";"):
            m = _RESINFO.match(resinfo)
            if m is None or m.group("result").lower() != "pass":
                continue
            if m.group("method").lower() not in ("dkim", "spf", "dmarc"):
                continue
            for _key, value in _PROP.findall(m.group("props")):
                d = value.rpartition("@")[2].lower().strip('<>"')
                if d and (domain == d or domain.endswith("." + d) or d.endswith("." + domain)):
                    return True
        return False  # ours said no pass: nothing below it counts
    return False


def distrust(trust: GatewayTrust, raw: bytes, sender: str, source: str) -> str | None:
    """Why a mail that looks like this gateway's is not taken as its fax; None when it is."""
    if not sender_allowed(trust.senders or [], sender):
        return f"sender {sender or '(none)'} is not on the gateway's allow-list"
    if trust.sources and source not in trust.sources:
        return f"came through source {source}, not {', '.join(trust.sources)}"
    if trust.authenticated and not authenticated(raw, sender, trust.authserv_ids):
        return "not authenticated: no DKIM, SPF or DMARC pass of our MTA for the sender's domain"
    return None


def e164(text: str | None, region: str | None, valid: bool = False) -> str | None:
    """``text`` as an E.164 number, or None (a TSI like 'ACME FAX' or 'anonymous' is no number);
    ``valid``: a number of an assigned range only (for free text, where digits may be anything)."""
    if not text:
        return None
    digits = re.sub(r"[^\d+]", "", text)
    if len(digits.lstrip("+")) < 5:
        return None
    try:
        num = phonenumbers.parse(text, None if digits.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(num) or (valid and not phonenumbers.is_valid_number(num)):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def detect(
    rules: list[FaxRule],
    sender: str,
    subject: str,
    body: str,
    attachments: list[Attachment],
    region: str | None,
) -> FaxInfo | None:
    """The fax this mail carries, or None when no rule says it is one."""
    rule = next((r for r in rules if r.matches(sender, subject, attachments)), None)
    if rule is None:
        return None
    info = FaxInfo(rule=rule.name)
    kv: dict[str, str] = {}
    for key, value in _KV.findall(body):
        kv.setdefault(key, value)
    m = re.search(HYLAFAX_SUBJECT, subject)
    info.tsi = (kv.get("Sender") or (m.group("tsi") if m else "")).strip() or None
    info.caller_id = kv.get("CallID1", "").strip("= ") or None
    info.comm_id = kv.get("CommID", "").split(" ", 1)[0] or None
    info.received = kv.get("Received") or None
    pages = kv.get("Pages", "")
    info.pages = int(pages) if pages.isdigit() else None
    candidates = [info.caller_id, info.tsi]
    for _name, pattern in SERVICE_SUBJECTS:
        sm = re.search(pattern, subject)
        if sm:
            candidates.append(sm.group("number"))
    info.raw_numbers = [c for c in candidates if c]
    # the station id (TSI) is whatever the remote machine was set up to say ("HP LASERJET 00000"):
    # only a valid number counts, or a junk one became the customer's phone
    info.number = next((n for n in (e164(c, region, valid=c is info.tsi) for c in candidates) if n), None)
    return info
