"""HTML as plain text: an agent's reply from a helpdesk, and the body of an HTML-only mail.

One implementation for both (``svcbridge.html_to_text``, exported through ``connector``).
"""

from __future__ import annotations

import re
from html import unescape

# One implementation for every HTML -> text need: an agent's reply from a helpdesk, and the body of an
# HTML-only mail (svcbridge_email.parse, after nh3). Regular expressions rather than html.parser: a mail
# body may be 1.5 MB, and html.parser's Python call per tag made such a body take 1.6 s. Every pattern
# stays linear: possessive quantifiers, and an unclosed comment or script runs to the end just once.
_HIDDEN = re.compile(r"(?is)<!--.*?(?:-->|\Z)|<(script|style|head)\b[^<>]*+>.*?(?:</\1\s*>|\Z)")
_TAG = re.compile(r"""</?([a-zA-Z][a-zA-Z0-9:-]*+)(?:[^<>"']++|"[^"]*+"|'[^']*+')*+>|<[!?][^<>]*+>""")
_PARA, _LINE = "\x01", "\x00"  # where a block starts or ends; control characters no HTML text keeps
# a run of block edges and the white space between and after them (it starts at an edge: a pattern
# starting with white space would be retried at every space of a long run of them, quadratic)
_BREAKS = re.compile(r"([\x00\x01](?:\s*+[\x00\x01])*+)\s*+")
_BLOCKS = {
    **dict.fromkeys(("p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul", "ol", "dl"), _PARA),
    **dict.fromkeys(("table", "hr"), _PARA),
    **dict.fromkeys(("div", "li", "tr", "dt", "dd", "caption", "section", "article", "header"), _LINE),
    **dict.fromkeys(("footer", "aside", "nav", "main", "address", "figure", "figcaption", "form"), _LINE),
    **dict.fromkeys(("fieldset", "center", "title"), _LINE),
    "br": "\n",  # a line break of its own, kept even beside a block's edge
    "td": " ",  # cells of a row side by side
    "th": " ",
}


def _tag(m: re.Match[str]) -> str:
    return _BLOCKS.get((m.group(1) or "").lower(), "")


def html_to_text(markup: str) -> str:
    """Text of HTML (an agent's reply, an HTML-only mail): tags, comments, scripts and styles gone,
    entities decoded, one line per block and an empty line around paragraphs, lists, quotes and tables;
    at most one empty line in a row. Text without markup is only stripped (its own spacing is kept)."""
    if "<" not in markup and "&" not in markup:
        return markup.strip()
    text = markup.replace(_PARA, "").replace(_LINE, "")
    text = unescape(_TAG.sub(_tag, _HIDDEN.sub("", text)))
    # a run of block edges (with the white space around it) is one break: an empty line if a paragraph
    # is among them, else a line break; so <div>a<br></div><div>b</div> is two lines, not three
    pieces = _BREAKS.split(text)  # text, run, text, run, ..., text
    out = [pieces[0].rstrip()]
    for run, piece in zip(pieces[1::2], pieces[2::2], strict=True):
        out += ["\n\n" if _PARA in run else "\n", piece.rstrip()]
    lines = [" ".join(line.split()) for line in "".join(out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
