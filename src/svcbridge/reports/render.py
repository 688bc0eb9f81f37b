"""A report dict as a terminal table, CSV, JSON or one self-contained HTML page with SVG charts.

Everything in a report that came from outside (customer names, categories, models, comments) is
escaped for HTML and stays text in CSV (a cell starting with ``= + - @`` gets a leading ``'`` so a
spreadsheet never runs it as a formula). The HTML has no script and loads nothing: the charts are
matplotlib's SVG inline, its text as ``<text>`` (escaped by matplotlib) so Chinese labels render
with the viewer's fonts.
"""

from __future__ import annotations

import csv
import html
import io
import json
from typing import Any

from .charts import bar_chart, histogram

__all__ = ["render", "rows"]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def rows(data: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The report flattened to (section, key, measure, value) rows: what table and CSV show."""
    out: list[tuple[str, str, str, str]] = []
    skip = {"report", "month", "customer", "tz"}
    for section, value in data.items():
        if section in skip:
            continue
        if isinstance(value, dict):
            for key, inner in value.items():
                if isinstance(inner, dict):
                    out += [(section, key, m, _fmt(v)) for m, v in inner.items()]
                elif key != "values":
                    out.append((section, key, "", _fmt(inner)))
        elif isinstance(value, list):
            for i, item in enumerate(value, 1):
                if isinstance(item, dict):
                    out += [(section, str(i), m, _fmt(v)) for m, v in item.items()]
                else:
                    out.append((section, str(i), "", _fmt(item)))
        else:
            out.append((section, "", "", _fmt(value)))
    return out


def _csv_safe(v: str) -> str:
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") and v != "-" else v


def render(data: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["section", "key", "measure", "value"])
        for r in rows(data):
            w.writerow([_csv_safe(x) for x in r])
        return buf.getvalue()
    if fmt == "html":
        return html_page(data)
    return table(data)


def table(data: dict[str, Any]) -> str:
    head = f"{data['report']} report {data['month']}" + (
        f" for {data['customer']}" if data.get("customer") else ""
    )
    lines = [head, "=" * len(head)]
    width = max((len(f"{s} {k}") for s, k, _, _ in rows(data)), default=10)
    for s, k, m, v in rows(data):
        label = f"{s} {k}".strip()
        lines.append(f"{label:<{width}}  {m:<16} {v}")
    return "\n".join(lines)


def _e(v: Any) -> str:
    return html.escape(_fmt(v), quote=True)


def _table_html(title: str, section: dict[str, Any]) -> str:
    if not section:
        return f"<h3>{_e(title)}</h3><p>none</p>"
    measures: list[str] = []
    for v in section.values():
        if isinstance(v, dict):
            measures += [m for m in v if m not in measures]
    head = "".join(f"<th>{_e(m)}</th>" for m in measures) or "<th>count</th>"
    body = ""
    for k, v in section.items():
        cells = (
            "".join(f"<td>{_e(v.get(m))}</td>" for m in measures)
            if isinstance(v, dict)
            else f"<td>{_e(v)}</td>"
        )
        body += f"<tr><th>{_e(k)}</th>{cells}</tr>"
    return f"<h3>{_e(title)}</h3><table><tr><th></th>{head}</tr>{body}</table>"


def _list_html(title: str, items: list[dict[str, Any]]) -> str:
    if not items:
        return f"<h3>{_e(title)}</h3><p>none</p>"
    cols = list(items[0])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(it.get(c))}</td>" for c in cols) + "</tr>" for it in items)
    return f"<h3>{_e(title)}</h3><table><tr>{head}</tr>{body}</table>"


STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.big{font-size:2em;font-weight:bold}
.ok{color:#1a7f37}.bad{color:#c62828}figure{margin:0 0 1.5em}"""


def html_page(data: dict[str, Any]) -> str:
    title = f"{data['report']} report {data['month']}" + (
        f" - {data['customer']}" if data.get("customer") else ""
    )
    parts = [
        f"<h1>{_e(title)}</h1><p>{_e(data['tickets'])} tickets received this month ({_e(data['tz'])}).</p>"
    ]
    kind = data["report"]
    if kind == "sla":
        tl = data["timeliness"]
        cls = "ok" if tl["meets_promise"] else "bad"
        parts.append(
            f"<p>Service-timeliness rate: <span class='big {cls}' id='timeliness'>{_e(tl['rate'])} %</span> "
            f"({_e(tl['tickets_timely'])} of {_e(tl['tickets_counted'])} tickets), "
            f"promise {_e(tl['promise'])} %</p>"
        )
        rates = {k: v["rate"] for k, v in data["by_target"].items() if v["rate"] is not None}
        parts.append(bar_chart("SLA compliance per target (%)", rates, line=tl["promise"], limit=100))
        for name in ("by_target", "by_priority", "by_region", "by_customer"):
            parts.append(_table_html(name.replace("_", " "), data[name]))
        parts.append(histogram("Response time (minutes)", data["response_minutes"]["values"]))
        parts.append(
            histogram("On-site arrival (minutes of business time)", data["onsite_minutes"]["values"])
        )
        parts.append(_list_html("breaches", data["breaches"]))
    elif kind == "faults":
        parts.append(bar_chart("Faults by category", data["by_category"]))
        for name in ("by_category", "by_model", "by_part", "by_fault_level", "by_priority"):
            parts.append(_table_html(name.replace("_", " "), data[name]))
        parts.append(_list_html("repeat failures", data["repeat_failures"]))
    else:
        parts.append(
            f"<p>Average score: <span class='big' id='average'>{_e(data['average'])}</span> from "
            f"{_e(data['replies'])} replies to {_e(data['surveys_sent'])} surveys; first-contact resolution "
            f"{_e(data['fcr_rate'])} %</p>"
        )
        parts.append(bar_chart("Scores", data["distribution"]))
        parts.append(_list_html("comments", data["comments"]))
        parts.append(_table_html("follow-up calls", data["followup_calls"]))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' "
        "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )
