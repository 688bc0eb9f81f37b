"""Settings: a TOML file, environment overrides, secrets from env or files, one model per plugin.

Precedence (highest first): keyword overrides, ``SVCBRIDGE_*`` environment (``__`` nests, so
``SVCBRIDGE_PLUGINS__EMAIL__PASSWORD`` sets ``[plugins.email] password``), the TOML file. The file is
``--config``, else ``$SVCBRIDGE_CONFIG``, else ``config/svcbridge.toml``.

Each plugin validates its own ``[plugins.<section>]`` table with the model it registered, before anything
starts; every error is reported with its TOML path (``plugins.email.port: ...``). A field ``foo`` of a
plugin model can be given as ``foo_file = "/run/secrets/foo"`` instead: the file's content is read.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError
from .storesettings import RAW_TOML, StoreSettings

__all__ = ["PluginSettings", "Settings", "load_settings"]

DEFAULT_CONFIG = Path("config/svcbridge.toml")
_TOML = RAW_TOML  # the raw TOML of the load in progress (storesettings.py, which we import)


class PluginSettings(BaseModel):
    """Base for a plugin's settings model: unknown keys are errors, ``<secret>_file`` reads a file.

    ``transport`` is the test seam for a plugin's outbound HTTP: a test gives an in-process httpx
    transport (a fake vendor, a fake helpdesk) and the plugin hands it to ``svcbridge.make_client``
    (``make_client(base, transport=cfg.transport)``); TOML cannot set it (it is not a plain value).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    transport: httpx.AsyncBaseTransport | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="tests only: an in-process httpx transport for this plugin's outbound HTTP",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key, value in data.items():
            base = key[: -len("_file")] if key.endswith("_file") else None
            if base and base in cls.model_fields and key not in cls.model_fields:
                try:
                    out[base] = Path(value).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(f"{key}: cannot read secret file: {exc.strerror}") from None
                del out[key]
        return out


class HttpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8480, ge=0, le=65535)
    public_url: str | None = Field(default=None, description="URL the providers call, for signatures")
    header_timeout: float = Field(
        default=10.0, gt=0, description="seconds a connection has to send a request's headers"
    )
    body_timeout: float = Field(default=30.0, gt=0, description="seconds for a body after its headers")
    keep_alive_timeout: float = Field(default=5.0, gt=0, description="idle keep-alive connections close")
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="open connections at most (lowered to leave file descriptors free); beyond it the "
        "longest wait for headers is closed, or the new connection gets a 503 when all are requests",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses / CIDRs of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are "
        "believed (the right-most hop not among them is the client); empty: the peer is the client",
    )
    allowed_hosts: list[str] | None = Field(
        default=None,
        description="Host header names answered (a leading '.' also allows subdomains, '*' allows all); "
        "unset: the bound host, localhost forms and public_url's host; others get a 400",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        """Names as a Host header carries them, checked at load: an entry with a port, a scheme or a
        path never matched (every request got a 400, the daemon looked down); an IDN is written in
        its ASCII form (xn--...), which is what clients send."""
        if value is None:
            return None
        out = []
        for item in value:
            name = item.strip().lower()
            dot, bare = (".", name[1:]) if name.startswith(".") else ("", name)
            bare = bare.rstrip(".")
            try:
                ipaddress.ip_address(bare[1:-1] if bare.startswith("[") and bare.endswith("]") else bare)
                is_ip = True
            except ValueError:
                is_ip = False
            if name == "*" or (is_ip and not dot):
                out.append(name)
                continue
            if not bare or is_ip or any(c in bare for c in ":/ @?#\\\t*[]"):
                raise ValueError(
                    f"{item!r} is not a host name: list the name alone, without port, scheme or path "
                    "('bridge.example.com'; '.example.com' with its subdomains; '*' for any)"
                )
            try:
                bare = bare.encode("idna").decode("ascii")
            except UnicodeError:
                raise ValueError(f"{item!r} is not a valid host name") from None
            out.append(dot + bare)
        return out

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (CIDR)") from None
        return [v.strip() for v in value]


class ConsoleSettings(BaseModel):
    """The operator console (console/, docs/console.md), served on the [http] listener."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    admin_token: SecretStr | None = Field(
        default=None, description="bearer token for scripts (admin rights); prefer admin_token_file or env"
    )
    admin_token_file: Path | None = Field(default=None, description="file holding the admin token")
    session_hours: float = Field(default=12.0, gt=0, description="a console session lasts this long")
    idle_minutes: float = Field(default=60.0, gt=0, description="a session unused this long ends")
    login_attempts: int = Field(default=5, ge=1, description="failed logins per user or address per window")
    login_window: float = Field(default=300.0, gt=0, description="seconds of the login rate-limit window")
    login_lockout_max: float = Field(
        default=3600.0,
        gt=0,
        description="longest lockout: the first is login_window, each repeat within it doubles, up to this",
    )
    timezone: str = Field(default="UTC", description="dates for operators without a time zone of their own")
    source_fail_threshold: float = Field(
        default=300.0, ge=0, description="seconds a source may fail before /readyz says not ready"
    )
    refresh_seconds: float = Field(default=3.0, gt=0, description="how often an open page asks for news")

    def token(self) -> str | None:
        """The admin token (the file wins over the value); None when none is configured."""
        if self.admin_token_file is not None:
            value = self.admin_token_file.read_text(encoding="utf-8").strip()
            return value or None
        return self.admin_token.get_secret_value() if self.admin_token else None


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class OutboxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    poll_interval: float = Field(default=0.5, gt=0)
    max_attempts: int = Field(default=15, ge=1, description="retryable failures before dead letter")
    backoff_initial: float = Field(default=2.0, gt=0)
    backoff_max: float = Field(default=900.0, gt=0)
    breaker_threshold: int = Field(default=5, ge=1, description="consecutive failures that open it")
    breaker_cooldown: float = Field(default=60.0, gt=0)
    # items claimed per round: each round costs four short transactions, so small rounds made the
    # bookkeeping, not the targets, the limit (bench/delivery.py); `concurrency` still bounds the calls
    batch: int = Field(default=200, ge=1)
    concurrency: int = Field(default=4, ge=1, description="items of one target in flight at once")
    auto_limits: dict[int, int] = Field(
        # Zammad's per-recipient map (minutes -> automatic messages): ends autoresponder ping-pong
        default_factory=lambda: {10: 10, 30: 15, 60: 25, 180: 50, 600: 100},
        description="window in minutes -> at most this many automatic notifications to one recipient",
    )


class PipelineSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch: int = Field(default=200, ge=1)
    batch_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="raw message bytes per batch at most (a larger single message is a batch of its own)",
    )
    parse_workers: int | None = Field(
        default=None, ge=0, description="processes parsing large batches; unset: one per CPU (max 4), 0: off"
    )
    on_closed_reply: Literal["reopen", "new_linked"] = "reopen"
    hook_budget: float = Field(
        default=10.0,
        gt=0,
        description="seconds one plugin's per-message hook may take; over it, that message is quarantined "
        "naming the plugin (an async hook is cancelled; a sync one is reported when it returns)",
    )
    lease_ttl: float = Field(
        default=60.0,
        ge=5.0,
        description="seconds the pipeline lease lasts unrenewed (how long replicas wait for a lost holder)",
    )


class RoutingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: str | None = None
    source: str | None = None
    customer: str | None = None
    max_priority: int | None = Field(default=None, ge=1, le=4, description="P1..this priority")
    sinks: list[str]


class NotificationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fallback_channels: list[str] = Field(
        default_factory=list,
        description="channels tried in order when the ticket's own channel has no notifier or no "
        "address for the contact (e.g. a fax customer answered by mail: ['email'])",
    )
    templates_dir: Path | None = Field(
        default=None,
        description="your own <lang>/<name>.txt / .html templates; each file there replaces the shipped one",
    )

    @field_validator("templates_dir")
    @classmethod
    def _templates(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        if not v.is_dir():
            raise ValueError(f"not a directory: {v}")
        from .templating import check_templates

        errors = check_templates(str(v))
        if errors:
            raise ValueError("templates do not render: " + "; ".join(errors))
        return v


class RoutingSettings(BaseModel):
    """Which sinks receive a new ticket: the first matching rule wins, else ``default``."""

    model_config = ConfigDict(extra="forbid")
    default: list[str] = Field(default_factory=lambda: ["local"])
    rules: list[RoutingRule] = Field(default_factory=list)


class _TomlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return (_TOML.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_TOML.get() or {})


class Settings(BaseSettings):
    """Root settings of the daemon."""

    model_config = SettingsConfigDict(env_prefix="SVCBRIDGE_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path("var")
    database_url: str | None = Field(default=None, description="default sqlite:///<data_dir>/svcbridge.db")
    ticket_prefix: str = Field(default="SB", pattern=r"^[A-Z][A-Z0-9]{0,7}$")
    timezone: str = Field(
        default="UTC",
        description="the deployment's time zone (IANA, e.g. Asia/Shanghai): report months and times typed "
        "without an offset (sla milestone --at) are taken in it",
    )
    our_addresses: list[str] = Field(default_factory=list, description="mail from these is never a ticket")
    outbound_allow: list[str] = Field(
        default_factory=list,
        description="hosts or networks (CIDR) outbound HTTP may reach although not public, e.g. 127.0.0.1/32",
    )
    plugins_dir: Path | None = None
    blocked_plugins: list[str] = Field(default_factory=list)
    strict_plugins: bool = False
    trace_hooks: bool = False
    shutdown_grace: float = Field(default=10.0, ge=0)
    http: HttpSettings = Field(default_factory=HttpSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    _plugin_models: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    config_path: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _TomlSource(settings_cls), file_secret_settings

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (IANA name, e.g. Asia/Shanghai)") from None
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'svcbridge.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.store.blob_dir or self.data_dir / "blobs"

    def plugin_config(self, section: str) -> Any:
        """The validated settings model of ``[plugins.<section>]`` (None when the section is absent)."""
        return self._plugin_models.get(section)

    def validate_plugins(self, models: dict[str, type[BaseModel]]) -> list[tuple[str, str]]:
        """Validate each registered plugin section; return (toml path, message) for every error."""
        errors: list[tuple[str, str]] = []
        for section, model in models.items():
            raw = self.plugins.get(section)
            if raw is None:
                continue
            try:
                self._plugin_models[section] = model.model_validate(raw)
            except ValidationError as exc:
                errors.extend(_errors(exc, f"plugins.{section}"))
        for section in self.plugins:
            if section not in models:
                errors.append((f"plugins.{section}", "no loaded plugin declares this section"))
        return errors

    def routing_errors(self, sinks: Collection[str]) -> list[tuple[str, str]]:
        """``[routing]`` entries naming a sink that no plugin registered (not configured, or its plugin
        failed), with their TOML paths; ``sinks`` are the registered names."""
        known = ", ".join(sorted(sinks)) or "none"
        hint = f"no sink of this name is configured (configured: {known}; see `svcbridge plugins`)"
        places = [(f"routing.default.{i}", name) for i, name in enumerate(self.routing.default)]
        for r, rule in enumerate(self.routing.rules):
            places += [(f"routing.rules.{r}.sinks.{i}", name) for i, name in enumerate(rule.sinks)]
        return [(path, f"{name!r}: {hint}") for path, name in places if name not in sinks]

    def secret_values(self) -> list[str]:
        """Every SecretStr value in the settings, so logging can redact them wherever they appear."""
        found: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, SecretStr):
                found.append(obj.get_secret_value())
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, dict):
                for v in obj.values():
                    walk(v)
            elif isinstance(obj, list | tuple):
                for v in obj:
                    walk(v)

        walk(self)
        walk(list(self._plugin_models.values()))
        if self.database_url and "@" in self.database_url:
            # a password inside a database URL is a secret too
            userinfo = self.database_url.split("://", 1)[-1].rsplit("@", 1)[0]
            if ":" in userinfo:
                found.append(userinfo.split(":", 1)[1])
        return [s for s in found if len(s) >= 4]


def _errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        path = ".".join(p for p in (prefix, loc) if p)
        out.append((path or "<root>", err["msg"]))
    return out


def resolve_config_path(path: str | Path | None) -> tuple[Path, bool]:
    """The config file to read and whether the user named it explicitly."""
    if path:
        return Path(path), True
    env = os.environ.get("SVCBRIDGE_CONFIG")
    if env:
        return Path(env), True
    return DEFAULT_CONFIG, False


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file and environment into ``Settings``; raise ConfigError listing every problem."""
    cfg, explicit = resolve_config_path(path)
    data: dict[str, Any] = {}
    if cfg.exists():
        try:
            data = tomllib.loads(cfg.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([(str(cfg), f"invalid TOML: {exc}")]) from None
    elif explicit:
        raise ConfigError([(str(cfg), "config file not found")])
    token = _TOML.set(data)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_errors(exc)) from None
    finally:
        _TOML.reset(token)
    settings.config_path = cfg if cfg.exists() else None
    return settings
