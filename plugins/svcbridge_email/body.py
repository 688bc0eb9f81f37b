"""The right body (issue 13 item 4): which text parts make the ticket's text, in order.

Inside each ``multipart/alternative`` one part is chosen: the plain text when it carries the text,
else the HTML rendered to text (an empty or stub plain part, "view this mail in HTML" and the like,
no longer hides the HTML). Text and HTML parts outside an alternative (several inline parts of a
``multipart/mixed``, an HTML part in a mixed mail) are all rendered, in order.
"""

from __future__ import annotations

import re
from email.message import Message

import nh3

from svcbridge import html_to_text

STUB = re.compile(
    r"(html|view (this|the) (e-?mail|message) in|web ?browser|does not support|cannot display|不支持|无法显示"
    r"|無法顯示|HTML形式|表示できません|просмотр|in (ihrem|einem) browser)",
    re.I,
)
MAX_STUB = 300  # characters: a longer plain part is the customer's text whatever it says


def alternative_groups(msg: Message) -> dict[int, int]:
    """id(leaf part) -> id(closest multipart/alternative above it), for the leaves inside one."""
    groups: dict[int, int] = {}

    def visit(part: Message, group: int | None) -> None:
        if part.get_content_maintype() == "message" or not part.is_multipart():
            if group is not None:
                groups[id(part)] = group
            return
        here = id(part) if part.get_content_type() == "multipart/alternative" else group
        for sub in part.get_payload():
            if isinstance(sub, Message):
                visit(sub, here)

    visit(msg, None)
    return groups


def is_stub(text: str) -> bool:
    """An empty plain part, or a short one that only points at the HTML version."""
    body = text.strip()
    return not body or (len(body) <= MAX_STUB and bool(STUB.search(body)))


def rendered(html: str, clean: bool = True) -> str:
    from .parse import flatten_deep_html  # nh3 is quadratic in nesting depth (parse.py)

    return html_to_text(nh3.clean(flatten_deep_html(html)) if clean else html)


def compose(pieces: list[tuple[str, str, int | None]]) -> str:
    """The body text from (content type, text, alternative group) pieces in document order."""
    chosen: dict[int, tuple[str, str]] = {}
    for _ctype, _text, group in pieces:
        if group is None or group in chosen:
            continue
        options = [(c, t) for c, t, g in pieces if g == group]
        plains = [(c, t) for c, t in options if c == "text/plain" and not is_stub(t)]
        htmls = [(c, t) for c, t in options if c == "text/html" and rendered(t).strip()]
        chosen[group] = (plains or htmls or options)[0]
    out: list[str] = []
    done: set[int] = set()
    for ctype, text, group in pieces:
        if group is not None:
            if group in done:
                continue
            done.add(group)
            ctype, text = chosen[group]
        piece = text.strip("\r\n") if ctype == "text/plain" else rendered(text)
        if piece.strip():
            out.append(piece)
    return "\n\n".join(out)
