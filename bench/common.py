"""Helpers shared by the benchmarks: timing, RSS, result output, an isolated App."""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def daemon_env() -> dict[str, str]:
    """The environment a benchmarked svcbridge process runs in: this one without SVCBRIDGE_* settings
    and without PYTHONDONTWRITEBYTECODE, with the project's modules compiled once (``compileall``).

    A deployed svcbridge (a wheel) starts from compiled modules; a development shell that sets
    PYTHONDONTWRITEBYTECODE made every benchmarked start compile ~150 of the project's modules again
    (0.25-0.3 s a start, more than a tenth of a short run), a cost no deployment has."""
    global _compiled
    if not _compiled:
        import compileall

        root = Path(__file__).resolve().parent.parent
        for sub in ("src", "plugins"):
            compileall.compile_dir(str(root / sub), quiet=1)
        _compiled = True
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SVCBRIDGE_") and k != "PYTHONDONTWRITEBYTECODE"
    }


_compiled = False


def maildir_config(cfg: Path, root: Path, extra: str = "") -> Path:
    """A quiet one-shot svcbridge reading a Maildir under ``root`` (var, maildir, outgoing there),
    automatic-mail limits out of the way; ``extra``: more TOML at the end. Written to ``cfg``."""
    cfg.write_text(f"""data_dir = "{root}/var"
[http]
enabled = false
[log]
level = "error"
[outbox]
auto_limits = {{ 10 = 100000 }}
[plugins.email]
from_address = "support@bench.test"
[plugins.email.maildir]
path = "{root}/maildir"
settle = 0
[plugins.email.outbound]
spool_dir = "{root}/outgoing"
{extra}""")
    return cfg


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0


def report(name: str, rows: list[tuple[str, Any]], result: dict[str, Any]) -> dict[str, Any]:
    """Print a table and the JSON line; store the JSON in bench/results/<name>.json."""
    table = Table("metric", "value", title=f"bench: {name}")
    for k, v in rows:
        table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
    console.print(table)
    result = {
        "bench": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **result,
    }
    line = json.dumps(result, sort_keys=True)
    print(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(line + "\n")
    return result


def build_app(tmp: Path, pm: Any = None, **overrides: Any) -> Any:
    """An App on a private SQLite under tmp, HTTP off, logging quiet."""
    from svcbridge import log as logmod
    from svcbridge.app import App
    from svcbridge.settings import load_settings

    logmod.configure("json", "error", stream=open(os.devnull, "w"))  # noqa: SIM115
    data: dict[str, Any] = {
        "data_dir": str(tmp / "var"),
        "http": {"enabled": False},
        "plugins": {
            "email": {
                "from_address": "support@bench.test",
                "outbound": {"transport": "spool", "spool_dir": str(tmp / "outgoing")},
            }
        },
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    os.chdir(tmp)
    return App.build(load_settings(None, **data), pm=pm)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


Bench = Callable[[Any], dict[str, Any]]
