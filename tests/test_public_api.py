"""Plugins use only the public API: names in svcbridge.__all__ (httpx's test_exported_members)."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import svcbridge

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def test_all_is_complete_and_importable() -> None:
    for name in svcbridge.__all__:
        assert hasattr(svcbridge, name), name
    public = {n for n in dir(svcbridge) if not n.startswith("_")}
    modules = {n for n in public if isinstance(getattr(svcbridge, n), types.ModuleType)}
    assert public - set(svcbridge.__all__) - modules == set()


def _svcbridge_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "svcbridge":
            if node.module != "svcbridge":
                bad.append((node.lineno, f"from {node.module} import ..."))
            else:
                bad += [(node.lineno, a.name) for a in node.names if a.name not in svcbridge.__all__]
        elif isinstance(node, ast.Import):
            bad += [(node.lineno, a.name) for a in node.names if a.name.startswith("svcbridge.")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "svcbridge":
            if node.attr not in svcbridge.__all__:
                bad.append((node.lineno, f"svcbridge.{node.attr}"))
    return bad


def test_plugins_import_only_public_names() -> None:
    files = sorted(PLUGINS.rglob("*.py"))
    assert files
    problems = {str(f.relative_to(PLUGINS)): b for f in files if (b := _svcbridge_imports(f))}
    assert problems == {}


def test_defaults_plugin_uses_public_api_too() -> None:
    path = Path(svcbridge.__file__).parent / "defaults.py"
    assert _svcbridge_imports(path) == []


def test_checker_catches_a_private_import(tmp_path: Path) -> None:
    p = tmp_path / "x.py"
    p.write_text("from svcbridge.store.repo import Store\nfrom svcbridge import hookimpl, _secret\n")
    assert [b[1] for b in _svcbridge_imports(p)] == ["from svcbridge.store.repo import ...", "_secret"]
