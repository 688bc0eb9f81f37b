"""Spare parts from the ERP: stock per depot on the ticket, a reservation, released or consumed later.

Configured in ``[plugins.parts]`` (``settings.py``) with one ``[[plugins.parts.erps]]`` table per ERP:
``tryton`` (JSON-RPC, ``tryton.py``), ``table`` (a CSV file or an SQL table, ``table.py``), ``odoo``,
``erpnext`` and ``sapb1`` (``rest.py``). Each is registered through ``register_erps`` and kept by the
host (``Host.erps``); other plugins may register more ERPs the same way.

Flow (never a remote call in the pipeline):

- ``enrich_ticket``: a new ticket about a known unit (model or serial on the draft: the asset register)
  whose text names a failed component (``categories``: "power supply", "电源", "電源" -> ``psu``), or
  whose labels carry ``part_numbers``, asks for the durable job
  ``parts.lookup`` (``job.py``) with the categories, the model and the region;
- the job reads stock per depot, reserves at the nearest depot that has the part and returns the
  ``parts`` label and a note: stored on the ticket, sent to its helpdesks as an internal note. It
  reserves only for a known unit (asset register) or a customer of the directory; a stranger's ticket
  gets the stock noted and the label ``parts_not_reserved`` (``reserve_unknown`` to reserve anyway);
- ``status_updated``: the ticket reaches a ``consume_states`` state (resolved): ``parts.settle``
  consumes the reservations; a ``cancel_states`` state (closed) without having been resolved: it
  releases them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from svcbridge import JobKind, StatusUpdate, Ticket, TicketDraft, WorkQueue, hookimpl

from .job import PartsJobs, render
from .settings import ErpSettings, PartsSettings
from .table import TableErp
from .tryton import TrytonErp

__all__ = ["ErpSettings", "PartsJobs", "PartsSettings", "TableErp", "TrytonErp", "make_erp", "render"]

_jobs: dict[int, PartsJobs] = {}  # id(settings) -> the handlers of that App (tests build several)


def make_erp(cfg: ErpSettings, allow: list[str], data_dir: Path) -> Any:
    """The connector for one ``[[plugins.parts.erps]]`` table."""
    if cfg.type == "tryton":
        return TrytonErp(cfg, allow)
    if cfg.type == "table":
        return TableErp(cfg)
    from .rest import REST_ERPS  # only loaded when configured

    ledger = cfg.path or f"sqlite:///{data_dir / f'parts-{cfg.name}.sqlite'}"
    if "://" not in ledger:
        ledger = f"sqlite:///{ledger}"
    return REST_ERPS[cfg.type](cfg, allow, ledger)


@hookimpl
def register_settings(register: Any) -> None:
    register("parts", PartsSettings)


@hookimpl
def register_erps(register: Any, settings: Any) -> None:
    cfg: PartsSettings | None = settings.plugin_config("parts")
    for erp in cfg.erps if cfg else []:
        register(make_erp(erp, list(settings.outbound_allow), Path(settings.data_dir)))


@hookimpl
def register_job_kinds(register: Any, settings: Any) -> None:
    cfg: PartsSettings | None = settings.plugin_config("parts")
    if cfg is None:
        return
    jobs = _jobs[id(settings)] = PartsJobs(cfg)
    # an ERP outage retries for hours (backoff up to 30 min), a refused reservation is dead at once
    register(
        JobKind(
            "parts.lookup", jobs.lookup, timeout=120, max_attempts=20, backoff_initial=10, backoff_max=1800
        )
    )
    register(
        JobKind(
            "parts.settle", jobs.settle, timeout=120, max_attempts=20, backoff_initial=10, backoff_max=1800
        )
    )


@hookimpl
def startup(app: Any) -> None:
    jobs = _jobs.get(id(app.settings))
    if jobs is not None:
        jobs.host = app


@hookimpl
async def shutdown(app: Any) -> None:
    for erp in (getattr(app, "erps", None) or {}).values():
        close = getattr(erp, "close", None)
        if close is not None:
            await close()


def categories(cfg: PartsSettings, text: str) -> list[str]:
    """The part categories the customer's text names (case-insensitive words or CJK phrases)."""
    low = text.lower()
    return [cat for cat, words in cfg.categories.items() if any(w and w in low for w in words)]


@hookimpl
def enrich_ticket(draft: TicketDraft, ticket: Ticket | None, settings: Any, jobs: WorkQueue) -> None:
    cfg: PartsSettings | None = settings.plugin_config("parts")
    if cfg is None or not cfg.erps or ticket is not None or draft.automated:
        return  # follow-ups keep the first lookup; an agent asks again with the CLI
    cats = categories(cfg, f"{draft.subject}\n{draft.body_text}")
    parts = [str(p) for p in draft.labels.get("part_numbers") or []][:5]
    if not parts and not (cats and (draft.asset.model or draft.asset.serial)):
        return  # "disk full" from someone whose unit nobody knows is no spare-parts case
    data = {
        "categories": cats,
        "parts": parts,
        "model": draft.asset.model,
        "region": draft.labels.get("region"),
    }
    jobs.enqueue("parts.lookup", data)


@hookimpl
def status_updated(ticket: Ticket, update: StatusUpdate, jobs: WorkQueue) -> None:
    """A state change of a ticket with parts: the settle job decides (its App's consume/cancel states)."""
    if update.state is None or not ticket.labels.get("parts"):
        return
    state = update.state.value
    resolved = any(
        e.type == "status_changed" and (e.data or {}).get("to") == "resolved" for e in ticket.events
    )
    data = {"action": "state", "state": state, "resolved": resolved, "reason": f"ticket {state}"}
    jobs.enqueue("parts.settle", data, key=f"state:{ticket.ref}:{state}:{update.at.isoformat()}")


__version__ = "0.1.0"
