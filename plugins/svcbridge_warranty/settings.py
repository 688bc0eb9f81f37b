"""``[plugins.assets]``: extraction, warranty terms, fault categories, vendor lookups and alerts.

Every table is optional; the defaults are the terms of the contracts svcbridge serves (main parts 3
years, other parts 1 year, chassis 6 months, paid-repair parts 3 months, 90 days of grace after the
production date). Secrets (vendor client secrets) are never in the file: ``*_env`` names an
environment variable, ``*_file`` a file holding it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from svcbridge import PluginSettings

from .rules import Terms, parse_term
from .serials import LABELS, NOT_SERIAL_LABELS, VENDOR_PATTERNS, Extractor

DEFAULT_TERMS = {"default": {"main": "3y", "other": "1y", "chassis": "6m"}}

# fault categories: keyword (lower case, substring) lists in Chinese (both scripts) and English
DEFAULT_CATEGORIES: dict[str, list[str]] = {
    "power": [
        "无法开机",
        "不开机",
        "開不了機",
        "無法開機",
        "不能开机",
        "电源",
        "電源",
        "断电",
        "斷電",
        "won't power",
        "wont power",
        "no power",
        "power supply",
        "psu",
        "does not turn on",
        "won't turn on",
    ],
    "display": [
        "黑屏",
        "花屏",
        "显示器",
        "顯示器",
        "屏幕",
        "螢幕",
        "no display",
        "screen",
        "monitor",
        "flicker",
    ],
    "network": [
        "网络",
        "網路",
        "断网",
        "斷網",
        "无法连线",
        "無法連線",
        "上不了网",
        "交换机",
        "交換機",
        "network",
        "link down",
        "packet loss",
        "no connectivity",
        "switch port",
    ],
    "printing": ["打印", "列印", "卡纸", "卡紙", "墨盒", "碳粉", "printer", "printing", "paper jam", "toner"],
    "storage": ["硬盘", "硬碟", "磁盘", "磁碟", "raid", "disk", "ssd", "hard drive"],
    "boot": ["蓝屏", "藍屏", "死机", "當機", "系统崩溃", "blue screen", "bsod", "boot loop", "crash"],
}


class VendorSettings(BaseModel):
    """One vendor's warranty API (``[plugins.assets.vendors.<dell|lenovo|hp|cisco>]``)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    base_url: str | None = Field(default=None, description="API root; default: the vendor's production URL")
    token_url: str | None = Field(default=None, description="OAuth2 token endpoint (Dell, HP, Cisco)")
    client_id: str | None = None
    client_secret_env: str | None = Field(default=None, description="environment variable holding the secret")
    client_secret_file: Path | None = Field(default=None, description="file holding the secret")
    ttl: float = Field(default=86400.0, gt=0, description="seconds an answer is fresh")
    timeout: float = Field(default=20.0, gt=0)
    breaker_threshold: int = Field(default=3, ge=1, description="failures in a row that open the breaker")
    breaker_cooldown: float = Field(
        default=300.0, gt=0, description="seconds before the vendor is tried again"
    )
    retry_initial: float = Field(default=30.0, gt=0, description="first retry of a failed lookup after (s)")
    retry_max: float = Field(default=3600.0, gt=0, description="retries back off up to this (s)")
    max_attempts: int = Field(default=12, ge=1, description="then the lookup is dead (svcbridge jobs retry)")

    def secret(self) -> str | None:
        """The client secret (Lenovo: the ClientID key) from the environment or a file, never the TOML."""
        if self.client_secret_env:
            return os.environ.get(self.client_secret_env) or None
        if self.client_secret_file:
            return self.client_secret_file.read_text(encoding="utf-8").strip() or None
        return None


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=3, description="address on the channel (mail address, E.164 phone)")
    channel: str = "email"
    language: str = "zh-CN"


class AlertSettings(BaseModel):
    """Rules on top: out of warranty, repeat failure, batch defect (``[plugins.assets.alerts]``)."""

    model_config = ConfigDict(extra="forbid")
    sales: Contact | None = Field(default=None, description="told about out-of-warranty units (paid service)")
    service_manager: Contact | None = Field(default=None, description="told about repeat failures")
    quality: Contact | None = Field(default=None, description="told about batch defects")
    tell_customer: bool = Field(
        default=False, description="the acknowledgement says an out-of-warranty repair is paid service"
    )
    repeat_days: int = Field(default=30, ge=1, description="same unit and category again within: replace it")
    batch_customers: int = Field(
        default=3, ge=2, description="distinct customers with the same model+category"
    )
    batch_days: int = Field(default=14, ge=1, description="window of the batch-defect count")


class ExtractionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[str] = Field(default_factory=list, description="more label words (regex) before a serial")
    not_serial_labels: list[str] = Field(default_factory=list, description="more labels of non-serials")
    vendor_patterns: dict[str, str] = Field(
        default_factory=dict, description="vendor -> regex, added/replaced"
    )
    open_vendors: list[str] = Field(
        default_factory=lambda: ["cisco", "hp", "lenovo"],
        description="vendors whose pattern may name the serial without a label word (dell: only when known)",
    )


class WarrantySettings(PluginSettings):
    model_config = ConfigDict(extra="forbid")
    default_timezone: str = "Asia/Shanghai"
    production_grace_days: int = Field(default=90, ge=0)
    replacement: Literal["new", "remaining"] = "new"
    replacement_minimum_days: int = Field(default=0, ge=0)
    paid_repair_months: int = Field(default=3, ge=0)
    unit_category: str = "main"
    terms: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TERMS.items()}
    )
    categories: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_CATEGORIES.items()}
    )
    extraction: ExtractionSettings = Field(default_factory=ExtractionSettings)
    vendors: dict[Literal["dell", "lenovo", "hp", "cisco"], VendorSettings] = Field(default_factory=dict)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    @field_validator("default_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("terms")
    @classmethod
    def _terms(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        out = {line.lower(): {cat.lower(): term for cat, term in table.items()} for line, table in v.items()}
        for table in out.values():
            for term in table.values():
                parse_term(term)
        out.setdefault("default", {})
        for cat, term in DEFAULT_TERMS["default"].items():
            out["default"].setdefault(cat, term)
        return out

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return {name: [w.lower() for w in words if w.strip()] for name, words in v.items()}

    @model_validator(mode="after")
    def _patterns(self) -> WarrantySettings:
        try:
            self.extractor()  # a bad regex is a configuration error, reported by check-config
        except re.error as exc:
            raise ValueError(f"extraction: a pattern does not compile: {exc}") from None
        return self

    def terms_model(self) -> Terms:
        return Terms(
            terms=self.terms,
            production_grace_days=self.production_grace_days,
            replacement=self.replacement,
            replacement_minimum_days=self.replacement_minimum_days,
            paid_repair_months=self.paid_repair_months,
            unit_category=self.unit_category,
        )

    def extractor(self, ref_prefix: str = "SB") -> Extractor:
        return Extractor(
            labels=LABELS + self.extraction.labels,
            not_serial_labels=NOT_SERIAL_LABELS + self.extraction.not_serial_labels,
            vendor_patterns={**VENDOR_PATTERNS, **self.extraction.vendor_patterns},
            ref_prefixes=[ref_prefix],
        )
