"""Plugin loading isolates failures: a broken plugin is reported with its reason, the others run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

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
