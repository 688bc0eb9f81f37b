"""Customer-facing texts: Jinja2 templates in en, zh-CN and zh-TW, chosen from the customer's language.

Templates live in ``templates/<language>/<name>.txt`` (first line the subject, a blank line, then the
plain-text body) and ``<name>.html`` (the same text as HTML, extending ``templates/layout.html``).

- ``.html`` templates are autoescaped: a customer's subject or an agent's reply containing ``<script>``
  arrives as text, never as markup. ``.txt`` templates are not escaped (plain text must stay readable).
- The rendered subject is one line: CR, LF and other control characters are replaced by spaces, so
  nothing a customer wrote can add a header to the mail that carries it.
- Undefined variables raise (``StrictUndefined``): a template typo fails a test instead of sending a
  notice with a hole in it.
- Operators replace any shipped file by putting one with the same relative path into
  ``[notifications] templates_dir`` (e.g. ``en/acknowledgement.txt``); what is not there comes from the
  package. The directory is checked when the settings load (``check_templates``): every template in it
  must compile and render with sample values, so a typo is a configuration error at start, not a
  quarantined customer message later.
- The language comes from the contact (the parser detects it from the mail) or the ticket; ``zh-TW``,
  ``zh-HK``, ``zh-MO`` and ``zh-Hant`` take the Traditional texts, any other ``zh`` the Simplified
  ones, everything else English.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
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


NAMES = ("acknowledgement", "status_changed", "agent_reply")
SAMPLE = {
    "ref": "SB-1",
    "subject": "Printer jams",
    "state": "resolved",
    "body": "Done.",
    "channel": "email",
    "mail": True,  # the notice is a mail: the "reply to this mail" footer shows
}


class _Environment(jinja2.Environment):
    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._by_name: dict[str, jinja2.Template] = {}

    def make_globals(self, d: Any) -> dict[str, Any]:
        """A plain dict where Jinja2 builds a ChainMap over the environment's globals: every render
        copies a template's globals and every ``{% from .. import %}`` compares their keys, which
        through a ChainMap is Python-level iteration (about a third of an acknowledgement's
        rendering). The ChainMap only matters when the environment's globals change after a
        template is loaded, and nothing here changes them after ``environment()`` built it."""
        return {**self.globals, **(d or {})}

    def get_template(self, name: Any, parent: str | None = None, globals: Any = None) -> jinja2.Template:
        """Templates by name from a plain dict: a notification asks five times (its text and HTML, the
        footer import in each, the layout), and Jinja2's own cache costs a weak reference and a lock
        each time. Templates are never reloaded anyway (``auto_reload=False``)."""
        if not isinstance(name, str) or globals is not None:
            return super().get_template(name, parent, globals)
        if parent is not None:
            name = self.join_path(name, parent)
        found = self._by_name.get(name)
        if found is None:
            found = self._by_name[name] = super().get_template(name)
        return found


@lru_cache(maxsize=4)
def environment(templates_dir: str | None = None) -> jinja2.Environment:
    shipped = jinja2.PackageLoader("svcbridge", "templates")
    loader: jinja2.BaseLoader = shipped
    if templates_dir:  # the operator's files first, file by file; the rest from the package
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(templates_dir), shipped])
    return _Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # the templates ship inside the package: checking their mtime on every render (the default)
        # cost a stat per notification for files that only change with a new release
        auto_reload=False,
    )


def render(
    name: str, language: str | None, values: dict[str, Any], templates_dir: str | None = None
) -> Rendered:
    """Render notification ``name`` (acknowledgement, status_changed, agent_reply) in ``language``."""
    lang = pick_language(language)
    env = environment(templates_dir)
    if "subject" in values:  # a webhook ticket's subject may hold line breaks; the subject line may not
        values = {**values, "subject": CONTROL.sub(" ", str(values["subject"])).strip()}
    head, _, body = env.get_template(f"{lang}/{name}.txt").render(values, lang=lang).partition("\n")
    subject = CONTROL.sub(" ", head).strip()
    text = body.lstrip("\n").rstrip() + "\n"
    if templates_dir and _own_text_only(templates_dir, f"{lang}/{name}"):
        # the operator rewrote the text but not the HTML: both parts must say the same thing, so the
        # HTML part is their text in the shared frame rather than the shipped wording
        html = env.get_template("layout.html").render(lang=lang, title=subject, text=text)
    else:
        html = env.get_template(f"{lang}/{name}.html").render(values, lang=lang, title=subject)
    return Rendered(subject=subject, text=text, html=html)


@lru_cache(maxsize=64)
def _own_text_only(templates_dir: str, stem: str) -> bool:
    own = Path(templates_dir)
    return (own / f"{stem}.txt").is_file() and not (own / f"{stem}.html").is_file()


def check_templates(templates_dir: str) -> list[str]:
    """Render every notification in every language with sample values; the errors, as text."""
    errors = []
    environment.cache_clear()  # a fresh look at the directory (check-config after an edit)
    _own_text_only.cache_clear()
    for lang in LANGUAGES:
        for name in NAMES:
            for state in ("resolved", "waiting_parts"):
                try:
                    render(name, lang, {**SAMPLE, "state": state}, templates_dir)
                except jinja2.TemplateError as exc:
                    where = getattr(exc, "filename", None) or f"{lang}/{name}"
                    line = f":{exc.lineno}" if isinstance(exc, jinja2.TemplateSyntaxError) else ""
                    errors.append(f"{where}{line}: {exc.message or type(exc).__name__}")
    return sorted(set(errors))
