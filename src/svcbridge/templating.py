"""Customer-facing texts: Jinja2 templates in en, zh-CN and zh-TW, chosen from the customer's language.

Templates live in ``templates/<language>/<name>.txt`` (first line the subject, a blank line, then the
plain-text body) and ``<name>.html`` (the same text as HTML, extending ``templates/layout.html``).

- ``.html`` templates are autoescaped: a customer's subject or an agent's reply containing ``<script>``
  arrives as text, never as markup. ``.txt`` templates are not escaped (plain text must stay readable).
- The rendered subject is one line: CR, LF and other control characters are replaced by spaces, so
  nothing a customer wrote can add a header to the mail that carries it.
- Undefined variables raise (``StrictUndefined``): a template typo fails a test instead of sending a
  notice with a hole in it.
- The language comes from the contact (the parser detects it from the mail) or the ticket; ``zh-TW``,
  ``zh-HK``, ``zh-MO`` and ``zh-Hant`` take the Traditional texts, any other ``zh`` the Simplified
  ones, everything else English.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2

LANGUAGES = ("en", "zh-CN", "zh-TW")
TRADITIONAL = re.compile(r"^zh[-_](tw|hk|mo|hant)\b", re.I)
CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def pick_language(*tags: str | None) -> str:
    """The first usable BCP 47 tag mapped to a shipped language; English when none is usable."""
    for tag in tags:
        if not tag:
            continue
        if TRADITIONAL.match(tag):
            return "zh-TW"
        if tag.lower() == "zh" or tag.lower().startswith(("zh-", "zh_")):
            return "zh-CN"
        if tag.lower() == "en" or tag.lower().startswith(("en-", "en_")):
            return "en"
    return "en"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("svcbridge", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # the templates ship inside the package: checking their mtime on every render (the default)
        # cost a stat per notification for files that only change with a new release
        auto_reload=False,
    )


def render(name: str, language: str | None, values: dict[str, Any]) -> Rendered:
    """Render notification ``name`` (acknowledgement, status_changed, agent_reply) in ``language``."""
    lang = pick_language(language)
    env = environment()
    if "subject" in values:  # a webhook ticket's subject may hold line breaks; the subject line may not
        values = {**values, "subject": CONTROL.sub(" ", str(values["subject"])).strip()}
    head, _, body = env.get_template(f"{lang}/{name}.txt").render(values, lang=lang).partition("\n")
    subject = CONTROL.sub(" ", head).strip()
    html = env.get_template(f"{lang}/{name}.html").render(values, lang=lang, title=subject)
    return Rendered(subject=subject, text=body.lstrip("\n").rstrip() + "\n", html=html)
