"""The spare-parts jobs: look a ticket's part up and reserve it; release or consume it later.

``parts.lookup`` runs after the ticket is committed (asked for by ``enrich_ticket``). It works out the
part numbers (named in the ticket's labels, or the categories the customer's text names for the unit's
model: ``[plugins.parts.models]``, the unit's parts in the asset register, else the ERP's
``find_parts``), reads the stock per depot, orders the depots by the customer's region and reserves
the quantity at the first depot that has it, under the key ``svcbridge:<ref>:<part>``. The answer is
the ticket's ``parts`` label and a note for the agents (``TicketChange``). A crash after the ERP made
the reservation and before the host recorded the job re-runs it: the connector finds the reservation
by its key, so there is exactly one. A part reserved again after its reservation was consumed (a
reopened ticket) gets the key's next generation (``...:r1``, ``_generation``): the consumed key would
only answer 'consumed'.

``parts.settle`` releases (ticket cancelled, part not used) or consumes (ticket resolved) every
reservation still open in the label; asked for by ``status_updated``, by the CLI, by an agent. A ticket
reopened after a cancelling state gets what that state released reserved again (same key).
"""

from __future__ import annotations

import re
from typing import Any

from svcbridge import (
    Job,
    NotReady,
    PartsErp,
    PartStock,
    PermanentError,
    Reservation,
    Ticket,
    TicketChange,
    order_depots,
    reservation_key,
)

from .settings import PartsSettings

MAX_PARTS = 5  # a ticket naming more components than this is for a human, not for five reservations


class PartsJobs:
    """The handlers of both job kinds; ``host`` is set at ``startup`` (it holds the ERPs)."""

    def __init__(self, cfg: PartsSettings) -> None:
        self.cfg = cfg
        self.host: Any = None

    def erp(self, name: str | None = None) -> PartsErp:
        name = name or self.cfg.default_erp
        erps = getattr(self.host, "erps", None) or {}
        if name not in erps:  # not started yet, or its plugin failed: wait, do not give up
            raise NotReady(f"ERP {name!r} is not registered")
        return erps[name]

    # ------------------------------------------------------------------ lookup + reserve
    async def lookup(self, job: Job) -> TicketChange | None:
        ticket = job.ticket
        if ticket is None:
            raise PermanentError("parts.lookup: the job belongs to no ticket")
        if ticket.state.is_closed:  # closed before the job ran: nothing to set aside
            return None
        erp = self.erp(job.data.get("erp"))
        unit = await self._unit(ticket)
        parts = await self.part_numbers(erp, ticket, job.data, unit)
        if not parts:
            return TicketChange(
                labels={"parts": {"erp": erp.name, "items": [], "unresolved": True}},
                note=_no_parts(ticket, job.data),
            )
        region = ticket.labels.get("region") or getattr(unit, "region", None) or job.data.get("region")
        wanted = job.data.get("reserve")  # True: an agent's command (the CLI), their decision
        withheld = None
        if wanted is None:
            wanted = self.cfg.reserve
            # any mail naming a model and a part reserved one: spam could empty the depots
            withheld = None if not wanted or self.cfg.reserve_unknown else self._unknown(ticket, unit)
            wanted = wanted and withheld is None
        items = []
        for part in parts[:MAX_PARTS]:
            stock = await erp.lookup(part)
            if stock is None:
                items.append({"part": part, "known": False})
                continue
            stock.depots = order_depots(stock.depots, region, self.cfg.regions)
            qty = float(job.data.get("qty") or self.cfg.quantity)
            gen = _generation(ticket, stock.part)
            res = None
            if wanted:
                res = await self.reserve(erp, ticket.ref, stock, qty, job.data.get("depot"), gen)
            if res is not None:  # the figures as they stand with our reservation (a re-run saw it already)
                stock = await erp.lookup(part) or stock
                stock.depots = order_depots(stock.depots, region, self.cfg.regions)
            items.append(_item(stock, res, gen))
        label: dict[str, Any] = {"erp": erp.name, "region": region, "items": items}
        if withheld:
            label["not_reserved"] = withheld
        # a later lookup (the CLI, an agent's command) adds its parts to the ticket's, never drops one
        earlier = [
            i for i in (ticket.labels.get("parts") or {}).get("items") or [] if i.get("part") not in parts
        ]
        merged = {**label, "items": earlier + items}
        labels: dict[str, Any] = {"parts": merged}
        if withheld:
            labels["parts_not_reserved"] = withheld
        elif "parts_not_reserved" in ticket.labels and any(i.get("reservation") for i in items):
            labels["parts_not_reserved"] = None  # reserved by hand since: the reason no longer holds
        return TicketChange(labels=labels, note=render(label))

    def _unknown(self, ticket: Ticket, unit: Any) -> str | None:
        """Why this ticket may not set a part aside, or None when it may: its unit is in the asset
        register (``unit``: found by serial), or its customer is one the customer directory lists (a
        customer name the message brought itself, a webhook's field, is only the sender's word)."""
        if unit is not None:
            return None
        settings = getattr(self.host, "settings", None)
        directory = settings.plugin_config("customers") if settings is not None else None
        # the directory asked about the sender (address, domain, phone), not about the ticket's customer
        # name: a message can name any customer of the directory itself
        match = getattr(directory, "match", None)
        if match is not None and match(ticket.contact.email, ticket.contact.phone) is not None:
            return None
        serial = (
            f"serial {ticket.asset.serial} not in the asset register" if ticket.asset.serial else "no serial"
        )
        return f"unknown sender and unit ({serial}, no customer of the directory)"

    async def part_numbers(
        self, erp: PartsErp, ticket: Ticket, data: dict[str, Any], unit: Any = None
    ) -> list[str]:
        """Named parts; else per category: the configured table for the model, the part fitted in
        the unit (asset register), or the first the ERP says fits the model."""
        found = [str(p) for p in data.get("parts") or []]
        model = ticket.asset.model or data.get("model") or ""
        if unit is not None and not model:
            model = unit.model or ""
        for cat in data.get("categories") or []:
            table = {k.lower(): v for k, v in self.cfg.models.get(model, {}).items()}
            if table.get(cat):
                found += table[cat]
                continue
            fitted = [
                p.part_number for p in getattr(unit, "parts", []) if p.category == cat and p.part_number
            ]
            if fitted:
                found += fitted
            elif model:
                found += (await erp.find_parts(model, cat))[:1]  # the first that fits; agents pick others
        return list(dict.fromkeys(found))

    async def _unit(self, ticket: Ticket) -> Any:
        assets = getattr(self.host, "assets", None)
        if assets is None or not ticket.asset.serial:
            return None
        try:
            return await assets.get(ticket.asset.serial)
        except (ValueError, LookupError):
            return None

    async def reserve(
        self, erp: PartsErp, ref: str, stock: PartStock, qty: float, depot: str | None = None, gen: int = 0
    ) -> Reservation | None:
        key = reservation_key(ref, stock.part, gen)
        if depot:  # asked for by name (CLI): that depot or nothing
            return await erp.reserve(key, stock.part, qty, depot.upper())
        # the nearest depot that has it; none has: back-order at the nearest (the ERP waits for stock).
        # A re-run after a crash may see less stock (its own reservation): the key finds that one.
        depot = next((d.depot for d in stock.depots if d.available >= qty), None)
        if depot is None and stock.depots:
            depot = stock.depots[0].depot
        if depot is None:
            return None
        return await erp.reserve(key, stock.part, qty, depot)

    # ------------------------------------------------------------------ release / consume
    async def settle(self, job: Job) -> TicketChange | None:
        ticket = job.ticket
        if ticket is None:
            raise PermanentError("parts.settle: the job belongs to no ticket")
        action = job.data.get("action")
        by_state = action == "state"
        if by_state:  # from status_updated: what the new state means under this configuration
            state = job.data.get("state")
            if state in self.cfg.consume_states:
                action = "consume"
            elif state in self.cfg.cancel_states and not job.data.get("resolved"):
                action = "release"
            elif not ticket.state.is_closed:  # reopened: what closing released is set aside again
                action = "restore"
            else:
                return None
        if action not in ("release", "consume", "restore"):
            raise PermanentError(f"parts.settle: unknown action {action!r}")
        label = dict(ticket.labels.get("parts") or {})
        items = [dict(i) for i in label.get("items") or []]
        only = job.data.get("part")
        changed = []
        for item in items:
            res = item.get("reservation")
            if action == "restore":  # only what a state change released, never a part 'not used'
                if not res or res.get("state") != "released" or not res.get("released_by_state"):
                    continue
            elif not res or res.get("state") not in ("reserved", "waiting"):
                continue
            if only and item.get("part") != only:
                continue
            erp = self.erp(res.get("erp") or label.get("erp"))
            if action == "restore":  # the same key: the ERP makes it live again, once
                again = await erp.reserve(res["key"], item["part"], float(res["qty"]), res["depot"])
                res = {**res, **again.model_dump(), "released_by_state": False}
            else:
                done = await (erp.release(res["key"]) if action == "release" else erp.consume(res["key"]))
                res = dict(res, state=done.state if done else "released")
                res["released_by_state"] = by_state and res["state"] == "released"
            item["reservation"] = res
            changed.append(f"{item['part']} x{res.get('qty', 1):g} @ {res.get('depot', '')}: {res['state']}")
        if not changed:
            return None
        label["items"] = items
        word = {"release": "released", "consume": "consumed", "restore": "reserved again"}[action]
        why = job.data.get("reason") or ""
        note = f"Spare parts {word}{' (' + why + ')' if why else ''}:\n" + "\n".join(
            "- " + c for c in changed
        )
        return TicketChange(labels={"parts": label}, note=note)


def _generation(ticket: Ticket, part: str) -> int:
    """Which reservation of ``part`` this is for the ticket: the recorded one's generation, one more
    when that was consumed (its key answers 'consumed' for ever). Read from the ticket's label, which
    the job's outcome updates in the same transaction as it is recorded: a re-run after a crash before
    that record computes the same generation, so the same key, and finds what the ERP made."""
    for item in (ticket.labels.get("parts") or {}).get("items") or []:
        if item.get("part") == part:
            gen = int(item.get("generation") or 0)
            consumed = (item.get("reservation") or {}).get("state") == "consumed"
            return gen + 1 if consumed else gen
    return 0


def _item(stock: PartStock, res: Reservation | None, generation: int = 0) -> dict[str, Any]:
    return {
        "part": stock.part,
        "generation": generation,
        "name": stock.name,
        "category": stock.category,
        "lead_time_days": stock.lead_time_days,
        "depots": [d.model_dump(exclude_none=True) for d in stock.depots],
        "reservation": res.model_dump() if res else None,
    }


def render(label: dict[str, Any]) -> str:
    """The agents' note: stock per depot (customer's region first) and the reservation. Plain text."""
    lines = [
        f"Spare parts (ERP {label['erp']}"
        + (f", region {label['region']}" if label.get("region") else "")
        + "):"
    ]
    for item in label["items"]:
        if not item.get("known", True):
            lines.append(f"- {item['part']}: not known to the ERP")
            continue
        lines.append(f"- {item['part']} {_one_line(item.get('name') or '')}".rstrip())
        for d in item["depots"]:
            figures = f"{d['on_hand']:g} on hand, {d['reserved']:g} reserved"
            lines.append(f"    {d['depot']}: {d['available']:g} available ({figures})")
        if item.get("lead_time_days") is not None:
            lines.append(f"    lead time: {item['lead_time_days']:g} days")
        res = item.get("reservation")
        if res:
            lines.append(f"    reserved {res['qty']:g} at {res['depot']} ({res['state']}, key {res['key']})")
        elif label.get("not_reserved"):
            lines.append(f"    no reservation: {label['not_reserved']}")
        else:
            lines.append("    no reservation: no depot has it")
    if label.get("not_reserved"):
        lines.append("An agent reserves with 'svcbridge parts reserve <ref> <part>'.")
    return "\n".join(lines)


def _no_parts(ticket: Ticket, data: dict[str, Any]) -> str:
    cats = ", ".join(data.get("categories") or []) or "-"
    return (
        f"Spare parts: no part number found for model {ticket.asset.model or 'unknown'} "
        f"and {cats}; look it up with 'svcbridge parts lookup --model'."
    )


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text)[:200]
