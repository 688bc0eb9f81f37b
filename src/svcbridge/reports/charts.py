"""Charts for the HTML reports: matplotlib (Agg, no display) drawn straight to inline SVG.

``svg.fonttype = none`` keeps labels as SVG ``<text>`` (escaped by matplotlib), so a Chinese category
name is drawn by the viewer's fonts instead of missing glyphs, and the page stays small. matplotlib
is imported on first use: the daemon never pays for it.
"""

from __future__ import annotations

import html
import io
from typing import Any

__all__ = ["bar_chart", "histogram"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"
    # CJK families after DejaVu: matplotlib falls back per glyph (3.6+), so a Chinese label is measured
    # with real glyph widths (no "Glyph missing" warning, no clipped axis) and the SVG names them too;
    # families not installed are left out
    # (a list in font.family, not font.sans-serif: fallback applies to the families named there)
    from matplotlib import font_manager

    have = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in ("Noto Sans CJK SC", "Noto Sans CJK TC", "WenQuanYi Zen Hei") if f in have]
    plt.rcParams["font.family"] = ["DejaVu Sans", *cjk]
    plt.rcParams["svg.hashsalt"] = "svcbridge"  # the same data gives the same file
    return plt


def _svg(fig: Any, title: str) -> str:
    buf = io.StringIO()
    # no RDF metadata block (a date makes every file differ, its namespaces are URLs)
    meta = {"Date": None, "Creator": None, "Format": None, "Type": None}
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata=meta)
    _plt().close(fig)
    text = buf.getvalue()
    svg = text[text.index("<svg") :]  # no XML prolog / DOCTYPE inside the HTML page
    return f"<figure><figcaption>{html.escape(title)}</figcaption>{svg}</figure>"


def bar_chart(
    title: str, values: dict[str, float | int], line: float | None = None, limit: float | None = None
) -> str:
    """Bars per key; ``line`` draws a target (the 95 % promise)."""
    if not values:
        return f"<figure><figcaption>{html.escape(title)}</figcaption><p>no data</p></figure>"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3))
    keys = list(values)
    nums = [float(values[k]) for k in keys]
    colors = [
        "#c62828" if line is not None and v < line else "#1a7f37" if line is not None else "#1565c0"
        for v in nums
    ]
    ax.bar(range(len(keys)), nums, color=colors)
    # parse_math off: a category like "cost $5 to $10" is text, not TeX (a bad one raised)
    ax.set_xticks(range(len(keys)), [str(k)[:30] for k in keys], rotation=20, ha="right", parse_math=False)
    if line is not None:
        ax.axhline(line, color="#555", linestyle="--", linewidth=1)
        ax.text(len(keys) - 0.5, line, f"{line:g}", va="bottom", ha="right", fontsize=8)
    if limit is not None:
        ax.set_ylim(0, limit * 1.05)
    ax.set_title(title, fontsize=10)
    return _svg(fig, title)


def histogram(title: str, values: list[float], bins: int = 12) -> str:
    if not values:
        return f"<figure><figcaption>{html.escape(title)}</figcaption><p>no data</p></figure>"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.hist(values, bins=min(bins, max(1, len(set(values)))), color="#1565c0")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("tickets")
    return _svg(fig, title)
