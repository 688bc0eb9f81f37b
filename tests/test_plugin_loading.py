"""Plugin loading isolates failures: a broken plugin is reported with its reason, the others run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from svcbridge import hookimpl
from svcbridge.cli import main
from svcbridge.errors import ConfigError
from svcbridge.plugins import make_plugin_manager


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed distribution (dist-info on sys.path) with two svcbridge entry points."""
    site = tmp_path / "site"
    (site / "thirdparty_ok").mkdir(parents=True)
    (site / "thirdparty_ok" / "__init__.py").write_text(
        "from svcbridge import hookimpl\n\n@hookimpl\ndef normalize_draft(draft):\n    draft.customer = 'ACME'\n"
    )
    (site / "thirdparty_broken.py").write_text("raise RuntimeError('missing dependency foo')\n")
    info = site / "thirdparty-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[svcbridge]\nok = thirdparty_ok\nbroken = thirdparty_broken\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for mod in ("thirdparty_ok", "thirdparty_broken"):
        sys.modules.pop(mod, None)


def test_broken_entry_point_is_reported_and_others_load(fake_dist: Path) -> None:
    pm = make_plugin_manager()
    assert pm.infos["broken"].status == "failed"
    assert "missing dependency foo" in pm.infos["broken"].reason
    assert pm.infos["ok"].status == "loaded"
    assert pm.infos["ok"].version == "1.2.3"
    assert pm.infos["ok"].hooks == ["normalize_draft"]
    assert pm.infos["email"].status == "loaded"


def test_strict_mode_reraises(fake_dist: Path) -> None:
    with pytest.raises(RuntimeError, match="missing dependency foo"):
        make_plugin_manager(strict=True)


def test_block_list(fake_dist: Path) -> None:
    pm = make_plugin_manager(blocked=["broken", "webhook"])
    assert pm.infos["broken"].status == "blocked"
    assert pm.infos["webhook"].status == "blocked"
    assert pm.get_plugin("webhook") is None
    assert "thirdparty_broken" not in sys.modules


def test_plugins_dir_loose_files(tmp_path: Path) -> None:
    d = tmp_path / "local-plugins"
    d.mkdir()
    (d / "tagger.py").write_text(
        "from svcbridge import hookimpl\n\n@hookimpl\ndef classify_ticket(draft, ticket):\n    draft.sla_policy = 'gold'\n"
    )
    (d / "typo.py").write_text("def oops(:\n")
    pm = make_plugin_manager(plugins_dir=d)
    assert pm.infos["tagger"].status == "loaded" and pm.infos["tagger"].origin == "plugins_dir"
    assert pm.infos["typo"].status == "failed" and "SyntaxError" in pm.infos["typo"].reason


async def test_async_and_sync_impls_both_work() -> None:
    from svcbridge import TicketDraft, hookimpl

    class SyncP:
        @hookimpl
        def classify_ticket(self, draft):
            draft.labels["sync"] = True

    class AsyncP:
        @hookimpl
        async def classify_ticket(self, draft, ticket):
            draft.labels["async"] = ticket is None

    pm = make_plugin_manager(entrypoints=False, extra=(SyncP(), AsyncP()))
    d = TicketDraft(channel="email")
    await pm.call_each("classify_ticket", draft=d, ticket=None)
    assert d.labels == {"sync": True, "async": True}


def test_plugin_settings_failure_is_reported(make_app, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        make_app(plugins={"webhook": {"tolerance": "soon"}, "nosuch": {}})
    paths = [p for p, _ in exc.value.errors]
    assert "plugins.webhook.tolerance" in paths
    assert "plugins.nosuch" in paths


def test_failing_register_hook_marks_only_that_plugin(make_app) -> None:
    from svcbridge import hookimpl

    class Exploding:
        __name__ = "exploding"

        @hookimpl
        def register_sinks(self, register, settings):
            raise ValueError("cannot reach licence server")

    pm = make_plugin_manager(extra=(Exploding(),))
    app = make_app(pm=pm)
    assert pm.infos["exploding"].status == "failed"
    assert "licence server" in pm.infos["exploding"].reason
    assert "local" in app.delivery.sinks


def test_cli_plugins_json(fake_dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["plugins", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["broken"]["status"] == "failed"
    assert rows["ok"]["version"] == "1.2.3"
    assert "parse_message" in rows["email"]["hooks"]


# --------------------------------------------------------------------------------------------------
# Plugins that break the hook contract are refused at load, by name and with the reason
# --------------------------------------------------------------------------------------------------


def _plugin(name: str, **hooks: Any) -> Any:
    """A plugin object named `name` whose methods are `hooks` (already marked with hookimpl)."""
    return type(name, (), {"__name__": name, **{h: staticmethod(f) for h, f in hooks.items()}})()


def _refused(pm: Any, name: str) -> str:
    """The reason `name` was refused, after checking nothing of it stayed registered."""
    info = pm.infos[name]
    assert info.status == "failed", vars(info)
    assert pm.get_plugin(name) is None
    assert all(i.plugin_name != name for h in ("enrich_ticket", "parse_message") for i in pm.impls(h))
    return info.reason


def _ok() -> Any:
    """A fresh well-formed hook function (hookimpl marks the function object itself, so never share one)."""

    def impl(draft):
        draft.labels["ok"] = True

    return impl


@pytest.mark.parametrize("style", ["hookwrapper", "wrapper"])
def test_hook_wrapper_is_refused_and_the_others_load(style: str) -> None:
    @hookimpl(**{style: True})
    def enrich_ticket(draft):
        yield  # a wrapper: would be skipped silently, call_each calls implementations one at a time

    good = _plugin("good", classify_ticket=hookimpl(_ok()))
    pm = make_plugin_manager(extra=(_plugin("wrapping", enrich_ticket=enrich_ticket), good))
    reason = _refused(pm, "wrapping")
    assert reason.startswith("hook wrapper on enrich_ticket is not supported: ")
    assert pm.infos["good"].status == "loaded" and pm.infos["email"].status == "loaded"


def test_unknown_hook_name_is_refused_with_a_suggestion() -> None:
    pm = make_plugin_manager(
        extra=(_plugin("typo", enrich_tickets=hookimpl(_ok()), parse_message=hookimpl(lambda raw: None)),)
    )
    assert _refused(pm, "typo") == "unknown hook 'enrich_tickets' (did you mean enrich_ticket?)"
    assert pm.infos["email"].status == "loaded"


def test_unknown_name_without_a_close_spec_and_optionalhook() -> None:
    pm = make_plugin_manager(
        entrypoints=False,
        extra=(
            _plugin("far", frobnicate=hookimpl(_ok())),
            _plugin("optional", other_hosts_hook=hookimpl(optionalhook=True)(_ok())),  # pluggy's opt-out
        ),
    )
    assert _refused(pm, "far") == "unknown hook 'frobnicate'"
    assert pm.infos["optional"].status == "loaded"


def test_argument_the_spec_lacks_is_refused() -> None:
    def enrich_ticket(draft, tiket):  # misspelt argument: pluggy refuses it, the message names the plugin
        pass

    pm = make_plugin_manager(extra=(_plugin("argtypo", enrich_ticket=hookimpl(enrich_ticket)),))
    reason = _refused(pm, "argtypo")
    assert reason == "enrich_ticket has no argument 'tiket' (it offers draft, ticket, settings, jobs, assets)"
    assert pm.infos["local"].status == "loaded"


def test_several_problems_are_reported_together() -> None:
    pm = make_plugin_manager(
        entrypoints=False,
        extra=(_plugin("messy", enrich_tickets=hookimpl(_ok()), status_updated=hookimpl(lambda tickt: None)),),
    )
    reason = _refused(pm, "messy")
    assert "unknown hook 'enrich_tickets'" in reason and "status_updated has no argument 'tickt'" in reason


def test_strict_mode_raises_a_clear_error_for_a_refused_plugin() -> None:
    from svcbridge.plugins import PluginRefused

    @hookimpl(wrapper=True)
    def enrich_ticket(draft):
        return (yield)

    for bad in (_plugin("wrapping", enrich_ticket=enrich_ticket), _plugin("typo", enrich_tickets=hookimpl(_ok()))):
        with pytest.raises(PluginRefused) as exc:
            make_plugin_manager(entrypoints=False, strict=True, extra=(bad,))
        assert str(exc.value).startswith(f"plugin {type(bad).__name__!r} refused: ")
        assert exc.value.name == type(bad).__name__


def test_cli_lists_refused_plugins_with_their_reason_and_the_others(
    fake_dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, check_pending() raised for the whole manager: every command died, `plugins` included."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "local-plugins"
    d.mkdir()
    (d / "misspelt.py").write_text(
        "from svcbridge import hookimpl\n\n@hookimpl\ndef enrich_tickets(draft):\n    pass\n"
    )
    (d / "wrapping.py").write_text(
        "from svcbridge import hookimpl\n\n@hookimpl(hookwrapper=True)\ndef enrich_ticket(draft):\n    yield\n"
    )
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/var"\nplugins_dir = "{d}"\n[http]\nenabled = false\n')
    res = CliRunner().invoke(main, ["--config", str(cfg), "plugins", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["misspelt"]["status"] == "failed"
    assert rows["misspelt"]["reason"] == "unknown hook 'enrich_tickets' (did you mean enrich_ticket?)"
    assert rows["wrapping"]["status"] == "failed"
    assert rows["wrapping"]["reason"].startswith("hook wrapper on enrich_ticket is not supported")
    assert rows["ok"]["status"] == "loaded" and rows["email"]["status"] == "loaded"
    assert CliRunner().invoke(main, ["--config", str(cfg), "check-config"]).exit_code == 0
