"""``[plugins.parts]``: which ERPs answer for spare parts, how a ticket names a part, depots per region.

One ``[[plugins.parts.erps]]`` table per ERP connector (``type`` = ``tryton``, ``table``, ``odoo``,
``erpnext``, ``sapb1``); ``erp`` names the one the enrichment job and the CLI use by default. Secrets
(``password``, ``api_key``) come from ``<name>_file`` or the environment, never from the TOML itself.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from svcbridge import PluginSettings

# what a customer writes for a failed component, in English and Chinese (simplified and traditional)
DEFAULT_CATEGORIES: dict[str, list[str]] = {
    "psu": ["power supply", "psu", "power unit", "电源", "電源", "供电模块", "供電模組"],
    "fan": ["fan", "风扇", "風扇"],
    "disk": ["disk", "hard drive", "hdd", "ssd", "硬盘", "硬碟", "磁盘", "磁碟"],
    "memory": ["memory", "dimm", "内存", "記憶體"],
}


class ErpSettings(PluginSettings):
    """One ERP connector."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    type: Literal["tryton", "table", "odoo", "erpnext", "sapb1"]
    url: str = Field(default="", description="base URL (tryton, odoo, erpnext, sapb1)")
    database: str = Field(default="", description="tryton / odoo database, SAP B1 CompanyDB")
    user: str = ""
    password: SecretStr = SecretStr("")
    api_key: SecretStr = SecretStr("")  # odoo API key, erpnext "key:secret"
    api: Literal["jsonrpc", "json2"] = Field(default="jsonrpc", description="odoo: execute_kw or /json/2")
    path: str = Field(
        default="",
        description="table: a CSV file or an SQLAlchemy URL; odoo/erpnext/sapb1: the reservation ledger "
        "(default <data_dir>/parts-<name>.sqlite)",
    )
    timeout: float = Field(default=20.0, gt=0)
    lead_time_days: float | None = Field(default=None, ge=0, description="when the ERP has none")
    consume_location: str = Field(default="", description="tryton: location code consumed parts go to")
    skip_depots: list[str] = Field(default_factory=lambda: ["WH"], description="warehouses never offered")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"not an http(s) URL: {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _needs(self) -> ErpSettings:
        if self.type == "table" and not self.path:
            raise ValueError("a table ERP needs path (CSV file or sqlite:/// URL)")
        if self.type != "table" and not self.url:
            raise ValueError(f"a {self.type} ERP needs url")
        return self


class PartsSettings(PluginSettings):
    """The ``[plugins.parts]`` table."""

    erps: list[ErpSettings] = Field(default_factory=list)
    erp: str = Field(default="", description="the ERP the job and CLI use; default: the first")
    quantity: float = Field(
        default=1, gt=0, le=1000, allow_inf_nan=False, description="parts reserved per ticket and part"
    )
    categories: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_CATEGORIES))
    regions: dict[str, list[str]] = Field(
        default_factory=dict, description="region -> depot codes, nearest first"
    )
    models: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict, description="model -> category -> part numbers (wins over the ERP's answer)"
    )
    reserve: bool = Field(default=True, description="reserve a part for the ticket, or only show stock")
    reserve_unknown: bool = Field(
        default=False,
        description="reserve also for a ticket whose unit is not in the asset register and whose customer "
        "is not in the customer directory (off: a spam mail naming a model and a part would drain stock)",
    )
    cancel_states: list[str] = Field(
        default_factory=lambda: ["closed"],
        description="a ticket reaching one of these without having been resolved is cancelled: release",
    )
    consume_states: list[str] = Field(default_factory=lambda: ["resolved"], description="part used: consume")

    @model_validator(mode="after")
    def _erp(self) -> PartsSettings:
        names = [e.name for e in self.erps]
        if len(set(names)) != len(names):
            raise ValueError("erps: names must be unique")
        if self.erp and self.erp not in names:
            raise ValueError(f"erp {self.erp!r} is not one of the erps {names}")
        self.regions = {k.lower(): [d.upper() for d in v] for k, v in self.regions.items()}
        self.categories = {k.lower(): [w.lower() for w in v] for k, v in self.categories.items()}
        return self

    @property
    def default_erp(self) -> str:
        return self.erp or (self.erps[0].name if self.erps else "")
