"""The hook contract stays documented and typed: every hook has a docstring naming each parameter
(datasette's test_docs), every parameter and return is annotated with a type that resolves, every hook is
named in the docs, and every hook implementation in the tree matches a spec."""

from __future__ import annotations

import ast
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

from svcbridge import hookspecs
from svcbridge.plugins import make_plugin_manager

DOCS = Path(__file__).resolve().parent.parent / "docs"
HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "svcbridge_spec")
]


def _type_checking_names(module: types.ModuleType) -> dict[str, Any]:
    """The names `module` imports under ``if TYPE_CHECKING:``, imported for real (as a type checker sees them)."""
    assert module.__file__
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names: dict[str, Any] = {"__name__": module.__name__, "__package__": module.__package__}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            exec(compile(ast.Module(body=node.body, type_ignores=[]), module.__file__, "exec"), names)
    return {k: v for k, v in names.items() if not k.startswith("__")}


NAMESPACE = {**vars(hookspecs), **_type_checking_names(hookspecs)}


def _loose(hint: Any) -> list[str]:
    """The parts of a resolved annotation that are not real types (Any, strings, bare objects)."""
    if hint is type(None):
        return []
    args = typing.get_args(hint)
    if args:  # X | None, list[X], type[X]: the origin is a real type, check what it is applied to
        return [p for a in args for p in _loose(a)]
    if hint is Any or not isinstance(hint, type):
        return [repr(hint)]
    return []


def signature_problems(fn: Callable[..., Any], namespace: dict[str, Any]) -> list[str]:
    """What is wrong with `fn`'s annotations: a parameter or the return without one, one that does
    not resolve, one that resolves to Any. A register callable's Protocol is checked the same way."""
    params = [p for p in inspect.signature(fn).parameters if p != "self"]  # a Protocol's __call__
    raw = fn.__annotations__
    problems = [f"{p} is not annotated" for p in params if p not in raw]
    if "return" not in raw:
        problems.append("the return is not annotated")
    try:
        hints = typing.get_type_hints(fn, globalns=namespace)
    except (NameError, TypeError) as exc:
        return [*problems, f"annotations do not resolve: {exc}"]
    for name, hint in hints.items():
        problems += [f"{name}: {part} is not a real type" for part in _loose(hint)]
        call = vars(hint).get("__call__") if isinstance(hint, type) else None  # a Protocol's own __call__
        if isinstance(hint, type) and typing.Protocol in hint.__mro__ and inspect.isfunction(call):
            problems += [f"{name} ({hint.__name__}): {p}" for p in signature_problems(call, namespace)]
    return problems


def test_there_are_hooks() -> None:
    expected = {"parse_message", "thread_message", "register_sinks", "compose_notifications", "startup", "shutdown"}
    assert expected <= set(HOOKS)


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


@pytest.mark.parametrize("name", HOOKS)
def test_hook_signature_is_typed(name: str) -> None:
    assert signature_problems(getattr(hookspecs, name), NAMESPACE) == []


@pytest.mark.parametrize("name", [h for h in HOOKS if h.startswith("register_")])
def test_register_hooks_type_their_register_callable(name: str) -> None:
    hint = typing.get_type_hints(getattr(hookspecs, name), globalns=NAMESPACE)["register"]
    assert isinstance(hint, type) and typing.Protocol in hint.__mro__, f"{name}: register is {hint!r}"
    params = list(inspect.signature(hint.__call__).parameters.values())[1:]
    assert params and all(p.kind is p.POSITIONAL_ONLY for p in params), "the host passes objects positionally"


def test_signature_checker_catches_loose_annotations() -> None:
    """The checker itself can fail: each kind of loose annotation is reported."""

    def unannotated(raw, settings: Any):  # type: ignore[no-untyped-def]
        """Nothing typed."""

    def unresolvable(raw: NoSuchModel) -> None:  # type: ignore[name-defined]  # noqa: F821
        """A name that is imported nowhere."""

    class LooseRegister(typing.Protocol):
        def __call__(self, obj: Any, /) -> None: ...

    def loose_register(register: LooseRegister) -> list[Any] | None:
        """A register callable whose parameter is Any, and an Any inside the return."""

    ns = {**NAMESPACE, "Any": Any, "LooseRegister": LooseRegister}  # this module's names, for the fakes
    assert signature_problems(unannotated, ns) == [
        "raw is not annotated",
        "the return is not annotated",
        "settings: typing.Any is not a real type",
    ]
    assert "annotations do not resolve" in signature_problems(unresolvable, ns)[0]
    assert signature_problems(loose_register, ns) == [
        "register (LooseRegister): obj: typing.Any is not a real type",
        "return: typing.Any is not a real type",
    ]


def _docs_mention(doc: Path, hook: str) -> bool:
    return f"`{hook}`" in doc.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", HOOKS)
def test_architecture_doc_names_every_hook(name: str) -> None:
    assert _docs_mention(DOCS / "architecture.md", name), f"docs/architecture.md does not mention {name}"


def test_plugin_guide_names_every_hook() -> None:
    guide = DOCS / "plugins.md"
    if not guide.exists():  # written later (issue 11 item 9); from then on it must name every hook
        pytest.skip("docs/plugins.md is not written yet")
    missing = [h for h in HOOKS if not _docs_mention(guide, h)]
    assert not missing, f"docs/plugins.md does not mention {missing}"


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

    with pytest.raises(pluggy.PluginValidationError, match="parse_mesage"):
        make_plugin_manager(entrypoints=False, strict=True, extra=(Bad(),))
