"""RMA by e-mail, for vendors without an API (most domestic makers and service stations).

Request: when an RMA is opened for a vendor listed in ``[plugins.rma.mail.vendors]`` (vendor -> its RMA
mailbox), the request goes to that mailbox from ``subject`` / ``body`` templates (``{ref}``, ``{rma}``,
``{vendor}``, ``{serial}``, ``{model}``, ``{parts}``, ``{fault}``, ``{customer}``) through the outbox
(``RmaBook.send``: once per RMA, whatever re-runs), as a mail of the ticket: its subject carries the
ticket's ``[SB-...]`` tag, so the vendor's answer threads onto the ticket like any reply.

Replies: a follow-up mail on a ticket that has open RMAs of a mail vendor (from that vendor's domain, or
naming one of the ticket's RMA numbers), or a new mail from a vendor mailbox naming a known RMA number
(``thread_message`` puts it on that RMA's ticket), asks for the job ``rma.mail_reply`` keyed by the
Message-ID. The job reads the RMA number (``number_patterns``) and the status words (``rules``, regex ->
state, first match wins, zh-CN / zh-TW / en by default) and moves the RMA with the Message-ID as the
event key; a reply it cannot read stays on the ticket as the message it is, and a note asks an agent to
set the RMA by hand.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from svcbridge import Job, Notification, Rma, RmaState, Ticket, TicketChange

DEFAULT_RULES: list[tuple[str, str]] = [
    (r"(?i)\breject(ed)?\b|拒绝|拒絕|不予受理|不在保", "rejected"),
    (r"(?i)\bcancel(l?ed)?\b|已取消", "cancelled"),
    (
        r"(?i)replacement (has been )?(shipped|dispatched)|备件已发|備件已發|新件已发"
        r"|已发出|已發出|已发货|已發貨",
        "replacement_shipped",
    ),
    (r"(?i)\b(received|arrived)\b|已收到|已签收|已簽收", "received_by_vendor"),
    (r"(?i)\bapproved\b|已批准|已受理|同意", "approved"),
    (r"(?i)\bclosed\b|已结案|已結案|已关闭|已關閉", "closed"),
]
# an RMA number has a digit ("RMA request" in our own quoted subject is no number)
DEFAULT_NUMBERS = [
    r"(?i)\bRMA\s*(?:no\.?|number|#|编号|編號|号|號)?\s*[:：#]?\s*((?=[A-Z0-9-]*\d)[A-Z0-9][A-Z0-9-]{3,29})\b",
    r"(?:返修单号|返修單號|退货单号|退貨單號)\s*[:：]?\s*([A-Za-z0-9-]{4,30})",
]

# mail providers anyone has an address at: a vendor (a service station) whose RMA mailbox is there is
# only that address, or every customer at QQ / 163 / Gmail would be "the vendor" (their words move RMAs)
PUBLIC_DOMAINS = frozenset(
    [
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "139.com",
        "189.cn",
        "sina.com",
        "sina.cn",
        "sohu.com",
        "aliyun.com",
        "tom.com",
        "21cn.com",
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "yahoo.com",
        "yahoo.com.tw",
        "yahoo.com.hk",
        "icloud.com",
        "me.com",
        "hinet.net",
        "msa.hinet.net",
        "proton.me",
        "protonmail.com",
    ]
)

SUBJECT = "RMA request {rma}: {vendor} {model} {serial} - {parts}"
BODY = """RMA request / 返修申请

Our reference / 我方单号: {ref} (RMA {rma})
Unit / 设备: {vendor} {model}, serial / 序列号 {serial}
Customer / 客户: {customer}
Faulty parts / 故障部件:
{parts_lines}
Fault / 故障现象: {fault}

Please reply to this mail with your RMA number. 请直接回复本邮件并告知 RMA 编号。
"""


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pattern: str
    state: RmaState

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        re.compile(v)
        return v


class MailSettings(BaseModel):
    """``[plugins.rma.mail]``."""

    model_config = ConfigDict(extra="forbid")
    vendors: dict[str, str] = Field(default_factory=dict, description="VENDOR -> its RMA mailbox")
    subject: str = SUBJECT
    body: str = BODY
    rules: list[Rule] = Field(
        default_factory=lambda: [Rule(pattern=p, state=RmaState(s)) for p, s in DEFAULT_RULES]
    )
    number_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_NUMBERS))

    @field_validator("vendors")
    @classmethod
    def _upper(cls, v: dict[str, str]) -> dict[str, str]:
        return {k.upper(): addr.strip().lower() for k, addr in v.items()}

    def vendor_of(self, address: str | None) -> str | None:
        """The vendor whose RMA mailbox (or its domain) ``address`` is."""
        addr = (address or "").strip().lower()
        for vendor, box in self.vendors.items():
            domain = box.rpartition("@")[2]
            if addr == box or (domain not in PUBLIC_DOMAINS and addr.rpartition("@")[2] == domain):
                return vendor
        return None


def _safe(text: Any) -> str:
    """Customer or agent text in a plain-text mail: one line, no control characters."""
    # C0/C1 controls and U+2028/2029: every break str.splitlines() knows (mail headers refuse them all)
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+", " ", str(text or "-"))[:500]


def request_mail(cfg: MailSettings, rma: Rma, ticket: Ticket) -> Notification | None:
    box = cfg.vendors.get(rma.vendor)
    if not box:
        return None
    parts = ", ".join(p.part + (f" ({p.serial})" if p.serial else "") for p in rma.parts)
    lines = "\n".join(f"- {p.part}  serial {p.serial or '-'}  x{p.qty}" for p in rma.parts)
    values = {
        "ref": ticket.ref,
        "rma": rma.id,
        "vendor": rma.vendor,
        "serial": _safe(rma.asset.get("serial")),
        "model": _safe(rma.asset.get("model")),
        "parts": _safe(parts),
        "parts_lines": lines,
        "fault": _safe(rma.fault),
        "customer": _safe(ticket.customer),
    }
    return Notification(
        channel="email",
        template="rma_request",
        to=box,
        automatic=False,
        subject=cfg.subject.format(**values)[:200],
        body=cfg.body.format(**values),
    )


def read_reply(
    cfg: MailSettings, text: str, ours: Collection[str] = ()
) -> tuple[str | None, RmaState | None]:
    """The RMA number and the state a vendor's reply names (either may be missing). ``ours``: our own
    RMA ids, which a reply quoting our request carries ("(RMA 1234)") and which are no vendor number."""
    number = None
    for pat in cfg.number_patterns:
        number = next((m.group(1) for m in re.finditer(pat, text) if m.group(1) not in ours), None)
        if number:
            break
    state = next((r.state for r in cfg.rules if re.search(r.pattern, text)), None)
    if state is None and number:
        state = RmaState.APPROVED  # a number given is the vendor's acceptance
    return number, state


def apply_reply(cfg: MailSettings, book: Any, job: Job) -> TicketChange | None:
    """Move the RMA a vendor's reply talks about; unreadable: a note for the agents."""
    ticket = job.ticket
    assert ticket is not None
    text = str(job.data.get("text") or "")
    vendor = job.data.get("vendor")
    mine = book.by_ticket(ticket.ref)
    number, state = read_reply(cfg, text, {str(r.id) for r in mine})
    open_ = [r for r in mine if not r.state.is_final and (not vendor or r.vendor == vendor)]
    rma = next((r for r in open_ if number and r.number == number), None)
    if rma is None and len(open_) == 1:
        # the ticket's one open RMA, unless the reply names a number that is another RMA's (another
        # ticket's: the vendor mixed them up, or a quoted mail) or not this one's: an agent decides
        sole, elsewhere = open_[0], book.find(open_[0].vendor, number) if number else None
        if number and ((sole.number and sole.number != number) or (elsewhere and elsewhere.id != sole.id)):
            return TicketChange(
                note=f"Vendor reply names RMA number {_safe(number)}, which is not RMA {sole.id} of this "
                "ticket: read it on the ticket and set the RMA by hand (svcbridge rma set ID STATE)."
            )
        rma = sole
    if rma is None or state is None:
        why = "which RMA" if rma is None else "what it says"
        return TicketChange(
            note=f"Vendor reply not understood ({why}): read it on the ticket and set the RMA by hand "
            f"(svcbridge rma set ID STATE, or /rma ID STATE)."
        )
    try:  # the move writes its own event and note; the same mail read again is a no-op (its key)
        book.move(
            rma.id,
            state,
            source=f"mail:{rma.vendor}",
            number=number if not rma.number else None,
            key=str(job.data.get("message_id") or job.key),
            note="from the vendor's mail",
        )
    except ValueError as exc:
        return TicketChange(note=f"Vendor reply for RMA {rma.id} not applied: {exc}")
    return None
