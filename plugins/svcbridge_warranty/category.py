"""Fault category by keyword rules (Chinese in both scripts, and English); the helpdesk's word wins.

``[plugins.assets.categories]`` maps a category to keywords, matched as case-insensitive substrings
of the subject and body. The category with the most distinct keywords found wins; a tie goes to the
one listed first. An agent's override (``#category display`` or ``/category display`` in an internal
note, recorded as a
``category_override`` event and label) is never replaced by a later message's keywords.
"""

from __future__ import annotations

import re

_COMMAND = re.compile(r"^\s*[/#]category\s+(?P<name>[a-z0-9_-]{1,50})\s*$", re.IGNORECASE | re.MULTILINE)
_QUOTED = re.compile(r"^\s*(?:>|\|).*$", re.MULTILINE)  # quoted earlier mail: not this message's words


def categorize(subject: str, body: str, rules: dict[str, list[str]]) -> tuple[str | None, list[str]]:
    """``(category, keywords found)``, or ``(None, [])`` when no rule matches."""
    text = f"{subject}\n{_QUOTED.sub('', body or '')}".lower()
    best: tuple[int, str | None, list[str]] = (0, None, [])
    for name, words in rules.items():
        hits = [w for w in words if w and w in text]
        if len(hits) > best[0]:
            best = (len(hits), name, hits)
    return best[1], best[2]


def override_command(note: str | None, known: dict[str, list[str]]) -> str | None:
    """The category an agent's ``#category NAME`` line names (a configured one), else ``None``."""
    m = _COMMAND.search(note or "")
    if m and m["name"].lower() in known:
        return m["name"].lower()
    return None
