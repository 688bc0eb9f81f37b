"""Settings precedence, secrets from env and files, and a canary secret that never reaches a log."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import structlog
from click.testing import CliRunner

from svcbridge import log as logmod
from svcbridge.cli import main
from svcbridge.errors import ConfigError
from svcbridge.settings import load_settings

CANARY = "canary-Secr3t-7f1e9a"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for k in [k for k in __import__("os").environ if k.startswith("SVCBRIDGE_")]:
        monkeypatch.delenv(k)
    yield
    logmod._SECRETS.clear()


def test_env_overrides_toml_with_nesting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('ticket_prefix = "RMA"\n[http]\nport = 9000\n[plugins.webhook]\ntolerance = 60\n')
    monkeypatch.setenv("SVCBRIDGE_HTTP__PORT", "9100")
    monkeypatch.setenv("SVCBRIDGE_PLUGINS__WEBHOOK__SECRET", CANARY)
    s = load_settings(cfg)
    assert (s.ticket_prefix, s.http.port) == ("RMA", 9100)
    assert s.plugins["webhook"] == {"tolerance": 60, "secret": CANARY}
    monkeypatch.setenv("SVCBRIDGE_CONFIG", str(cfg))
    assert load_settings().config_path == cfg


def test_secret_file_and_missing_secret_file(tmp_path: Path) -> None:
    from svcbridge.app import collect_settings_models
    from svcbridge.plugins import make_plugin_manager

    secret = tmp_path / "hook.secret"
    secret.write_text(CANARY + "\n")
    s = load_settings(None, plugins={"webhook": {"secret_file": str(secret)}})
    models, _ = collect_settings_models(make_plugin_manager())
    assert s.validate_plugins(models) == []
    assert s.plugin_config("webhook").secret.get_secret_value() == CANARY
    assert CANARY in s.secret_values()
    assert CANARY not in repr(s.plugin_config("webhook"))
    s2 = load_settings(None, plugins={"webhook": {"secret_file": str(tmp_path / "nope")}})
    errors = s2.validate_plugins(models)
    assert errors and errors[0][0] == "plugins.webhook" and "cannot read secret file" in errors[0][1]


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[http\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(cfg)


async def test_canary_secret_is_never_logged(tmp_path: Path, make_app, monkeypatch: pytest.MonkeyPatch) -> None:
    """Log the canary through every path: config dump, HTTP error text, auth failure, exception."""
    buf = io.StringIO()
    monkeypatch.setenv("SVCBRIDGE_PLUGINS__WEBHOOK__SECRET", CANARY)
    app = make_app(plugins={"webhook": {"tolerance": 300}})
    logmod.configure("json", "debug", stream=buf)
    log = structlog.get_logger("test")
    # 1. a config dump
    log.info("config", settings=app.settings.model_dump(mode="json"), plugins=app.settings.plugins)
    # 2. an HTTP error whose body echoes the credential
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f"bad token {request.headers['authorization']}")

    from svcbridge import AuthFailed, http_request, make_client

    client = make_client("https://desk.test", headers={"Authorization": f"Token {CANARY}"},
                         transport=httpx.MockTransport(handler), allow=["desk.test"])
    with pytest.raises(AuthFailed) as exc:
        await http_request(client, "GET", "/tickets")
    log.error("auth_failed", error=exc.value, headers=dict(client.headers))
    # 3. an exception with a traceback carrying the secret
    try:
        raise RuntimeError(f"login failed for password {CANARY}")
    except RuntimeError:
        log.exception("login_failed")
    # 4. stdlib logging (uvicorn, httpx, alembic)
    import logging

    logging.getLogger("uvicorn.error").error("request failed: %s", CANARY)
    out = buf.getvalue()
    assert out.count("\n") >= 4
    assert CANARY not in out
    assert logmod.MASK in out
    for line in out.splitlines():
        if line.startswith("{"):
            json.loads(line)


def test_cli_never_prints_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/var"\n[http]\nenabled = false\n[plugins.webhook]\ntolerance = "x"\n')
    monkeypatch.setenv("SVCBRIDGE_PLUGINS__WEBHOOK__SECRET", CANARY)
    res = CliRunner().invoke(main, ["--config", str(cfg), "check-config"])
    assert res.exit_code == 2
    assert CANARY not in res.output
    res = CliRunner().invoke(main, ["--config", str(cfg), "plugins", "--json"])
    assert CANARY not in res.output


def test_inner_log_scope_wins_and_the_lines_own_keys_win_over_both() -> None:
    from svcbridge.log import _merge_scope, scope

    with scope(plugin="outer", journal_id=1), scope(plugin="inner"):
        assert _merge_scope(None, "info", {"event": "x"}) == {"event": "x", "plugin": "inner", "journal_id": 1}
        assert _merge_scope(None, "info", {"event": "x", "plugin": "own"})["plugin"] == "own"
