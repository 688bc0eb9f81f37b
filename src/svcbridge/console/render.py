"""Jinja2 rendering for the console: autoescaped templates, dates in the operator's time zone, and the
security headers every console response carries (CSP without inline script, no framing, no sniffing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from .. import log as logmod
from . import i18n

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secure(response: Response) -> Response:
    for k, v in HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def zone(name: str | None, default: str) -> ZoneInfo:
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def fmt_dt(value: Any, tz: ZoneInfo) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def fmt_dur(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    sign = "-" if s < 0 else ""
    s = abs(s)
    if s < 120:
        return f"{sign}{s} s"
    if s < 7200:
        return f"{sign}{s // 60} min"
    if s < 172800:
        return f"{sign}{s // 3600} h {s % 3600 // 60} min"
    return f"{sign}{s // 86400} d {s % 86400 // 3600} h"


ENV = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["dur"] = fmt_dur


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> Response:
    lang = i18n.pick(request.headers.get("accept-language"))
    who = ctx.get("who")
    tz = zone(getattr(who, "tz", None), request.app.state.console.settings.console.timezone)
    base = {
        "request": request,
        "lang": lang,
        "_": i18n.translator(lang),
        "tz": tz,
        "dt": lambda v: fmt_dt(v, tz),
        "refresh": request.app.state.console.settings.console.refresh_seconds,
    }
    # exception texts (a plugin's failure, a source's error, an alert) may carry a configured secret a
    # library put into its message: masked like in the log, whatever page shows them
    html = logmod.redact(ENV.get_template(name).render(**base, **ctx))
    return secure(HTMLResponse(html, status_code=status))
