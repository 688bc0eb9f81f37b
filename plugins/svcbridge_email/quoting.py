"""Trim quoted history and signatures from a reply, so a follow-up shows only what is new.

Cuts at the first reply header of the common clients (Gmail/Apple "On ... wrote:", Outlook's
"-----Original Message-----" or a "From:" block, Chinese Outlook/Foxmail "发件人:" / "寄件者:",
"在 ... 写道："), at the signature separator "-- ", and drops trailing ">" quoted lines. When trimming
would leave nothing, the full text is kept.
"""

from __future__ import annotations

import re

CUT = re.compile(
    r"^(?:"
    r"On .{3,300}wrote:\s*$"
    r"|-{2,}\s*Original Message\s*-{2,}"
    r"|-{2,}\s*原始邮件\s*-{2,}"
    r"|-{2,}\s*原始郵件\s*-{2,}"
    r"|(?:From|发件人|寄件者|發件人)\s*[:：].{1,300}$"
    r"|在\s?.{3,200}写道[:：]\s*$"
    r"|于\s?.{3,200}写道[:：]\s*$"
    r"|-- $"
    r")",
    re.MULTILINE,
)


def trim_reply(text: str) -> str:
    """The new part of a reply (without quoted history and signature)."""
    m = CUT.search(text)
    head = text[: m.start()] if m else text
    lines = head.rstrip().split("\n")
    while lines and (lines[-1].startswith(">") or not lines[-1].strip()):
        lines.pop()
    trimmed = "\n".join(ln for ln in lines if not ln.startswith(">")).strip()
    return trimmed or text.strip()
