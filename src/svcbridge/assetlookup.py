"""The host's ``AssetLookup``: the ``asset_lookup`` hook first, then svcbridge's own register.

One object, built in one place (``HostAssets.build``), given to the classify and enrich hooks
(``inline=True``: a plugin answers from what it holds locally, and a failing plugin never stops
intake) and to plugins as ``Host.assets`` for their jobs and timers (``inline=False``: a remote call
is fine, and a failure propagates so the job is retried).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog

from .assets import AssetRecord, normalize_serial
from .plugins import HookFailed, PluginManager
from .store.assets import AssetStore
from .store.repo import Store

log = structlog.get_logger("svcbridge.assets")


class HostAssets:
    """``svcbridge.AssetLookup`` over the plugin manager and the store's register."""

    def __init__(self, pm: PluginManager, register: AssetStore, *, inline: bool, budget: float | None = None):
        self.pm = pm
        self.register = register
        self.inline = inline
        self.budget = budget

    @classmethod
    def build(
        cls, pm: PluginManager, store: Store, *, inline: bool, budget: float | None = None
    ) -> HostAssets:
        return cls(pm, AssetStore(store), inline=inline, budget=budget)

    async def get(self, serial: str) -> AssetRecord | None:
        try:
            key = normalize_serial(serial)
        except ValueError:
            return None
        try:
            found = await self.pm.call_each(
                "asset_lookup",
                firstresult=True,
                budget=self.budget,
                serial=key,
                register=self.register,
                inline=self.inline,
            )
        except HookFailed as exc:
            if not self.inline:
                raise exc.exc from exc  # a job: retried with backoff, the failure visible on the job row
            log.warning("asset_lookup_failed", plugin=exc.plugin, error=str(exc.exc)[:300])
            found = None
        if found is not None:
            if not isinstance(found, AssetRecord):
                log.warning("asset_lookup_bad_answer", type=type(found).__name__)
            else:
                return found
        return await asyncio.to_thread(self.register.get, key)

    def last_answer(self, system: str, serial: str) -> tuple[dict[str, Any], datetime] | None:
        return self.register.last_answer(system, serial)

    def keep_answer(self, system: str, serial: str, answer: dict[str, Any]) -> None:
        self.register.keep_answer(system, serial, answer)
