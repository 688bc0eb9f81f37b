"""The hook contract stays documented: every hook has a docstring naming each parameter (datasette's
test_docs), and every hook implementation in the tree matches a spec."""

from __future__ import annotations

import inspect

import pluggy
import pytest

from svcbridge import hookspecs
from svcbridge.plugins import make_plugin_manager

HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "svcbridge_spec")
]


def test_there_are_hooks() -> None:
    assert {"parse_message", "thread_message", "register_sinks", "compose_notifications"} <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented(name: str) -> None:
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80, f"{name} needs a real docstring"
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc, f"{name}: parameter {param!r} is not documented"
    firstresult = fn.svcbridge_spec["firstresult"]
    assert ("firstresult" in doc) == firstresult or not firstresult, f"{name}: say it is firstresult"
    assert "Rais" in doc or "exception" in doc, f"{name}: say what an exception means"
    assert "alled" in doc, f"{name}: say when it is called"


def test_architecture_doc_names_every_hook() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [h for h in HOOKS if f"`{h}`" not in doc]
    assert not missing, f"docs/architecture.md does not mention {missing}"


def test_every_loaded_impl_has_a_spec() -> None:
    pm = make_plugin_manager(strict=True)
    pm.check_pending()  # raises PluginValidationError on an impl without a spec
    loaded = {n for n, i in pm.infos.items() if i.status == "loaded"}
    assert {"svcbridge.defaults", "email", "local", "webhook"} <= loaded


def test_unknown_hook_is_refused_in_strict_mode() -> None:
    class Bad:
        @pluggy.HookimplMarker("svcbridge")
        def parse_mesage(self, raw):  # typo: no such hook
            return None

    with pytest.raises(pluggy.PluginValidationError):
        make_plugin_manager(entrypoints=False, strict=True, extra=(Bad(),))
