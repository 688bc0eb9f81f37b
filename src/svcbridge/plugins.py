"""The plugin manager: built-ins, entry points, a plugins_dir of loose files, a block list.

Kept small on purpose (datasette's plugins.py, tox's manager.py). Each plugin is loaded on its own:
one that fails to import is recorded with its reason and the rest load; strict mode re-raises for plugin
authors. A plugin that breaks the hook contract (a hook wrapper, a hook name or argument no spec has) is
refused at registration the same way, so a typo never crashes the CLI. ``call_each`` runs a per-message
hook one implementation at a time so every failure names its plugin, and awaits async implementations;
``lifecycle`` calls ``startup`` / ``shutdown`` the same way but never lets one plugin stop the others.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import structlog

from . import hookspecs
from .log import SCOPE

log = structlog.get_logger("svcbridge.plugins")

# Core defaults are plugins too; they are `trylast` so any plugin can override them.
DEFAULT_PLUGINS = ("svcbridge.defaults",)


@dataclass
class PluginInfo:
    name: str
    version: str = ""
    status: str = "loaded"  # loaded | blocked | failed
    reason: str = ""
    origin: str = ""  # builtin | entrypoint | plugins_dir
    hooks: list[str] = field(default_factory=list)


class HookFailed(Exception):
    """A hook implementation raised; carries the plugin name and the original exception."""

    def __init__(self, plugin: str, hook: str, exc: BaseException) -> None:
        super().__init__(f"{plugin}.{hook}: {type(exc).__name__}: {exc}")
        self.plugin, self.hook, self.exc = plugin, hook, exc


class PluginRefused(pluggy.PluginValidationError):
    """A plugin that imports but breaks the hook contract; it is not registered.

    A ``PluginValidationError`` so callers that expect pluggy's error (strict mode) still catch it.
    """

    def __init__(self, plugin: Any, name: str, reason: str) -> None:
        super().__init__(plugin, f"plugin {name!r} refused: {reason}")
        self.name, self.reason = name, reason


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus a status table and isolated per-implementation calls."""

    def __init__(self, strict: bool = False) -> None:
        super().__init__("svcbridge")
        self.add_hookspecs(hookspecs)
        self.strict = strict
        self.trace_calls = False
        self.from_settings = False  # built by App.build from settings alone (parsepool.py relies on it)
        self.infos: dict[str, PluginInfo] = {}
        self._impls: dict[str, list[pluggy.HookImpl]] = {}
        self._spec_names = sorted(n for n, caller in vars(self.hook).items() if caller.has_spec())

    # ------------------------------------------------------------------ loading
    def _add(self, name: str, load: Any, origin: str, version: str, blocked: set[str]) -> None:
        if name in blocked:
            self.set_blocked(name)
            self.infos[name] = PluginInfo(name, version, "blocked", "in the block list", origin)
            return
        try:
            module = load()
            self.register(module, name=name)
            hooks = sorted(h.name for h in self.get_hookcallers(module) or [])
            self.infos[name] = PluginInfo(name, version, "loaded", "", origin, hooks)
        except Exception as exc:
            if self.strict:
                raise
            reason = exc.reason if isinstance(exc, PluginRefused) else f"{type(exc).__name__}: {exc}"
            self.infos[name] = PluginInfo(name, version, "failed", reason, origin)
            log.error("plugin_load_failed", plugin=name, error=reason)

    def contract_problems(self, plugin: Any, name: str) -> list[str]:
        """What in `plugin`'s hook implementations the host cannot honour (empty: it may register).

        Checked before pluggy sees the plugin: pluggy accepts a wrapper (which ``call_each`` would never
        run, as it calls implementations one by one) and an unknown hook name (which only
        ``check_pending`` reports, for the whole manager at once).
        """
        problems = []
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            hook = opts.get("specname") or attr
            caller = getattr(self.hook, hook, None)
            spec = caller.spec if caller is not None else None
            if spec is None:
                if not opts.get("optionalhook"):  # pluggy's own opt-out for hooks of other hosts
                    close = difflib.get_close_matches(hook, self._spec_names, n=1)
                    hint = f" (did you mean {close[0]}?)" if close else ""
                    problems.append(f"unknown hook {hook!r}{hint}")
                continue
            if opts.get("hookwrapper") or opts.get("wrapper"):
                problems.append(
                    f"hook wrapper on {hook} is not supported: svcbridge calls each implementation on its"
                    " own, so the wrapper would never run; implement the hook plainly"
                )
                continue
            # pluggy refuses this too, but with a message naming neither the fix nor what is on offer
            offered = (*spec.argnames, *spec.kwargnames)
            impl = pluggy.HookImpl(plugin, name, getattr(plugin, attr), opts)
            unknown = [a for a in impl.argnames if a not in offered]
            if unknown:
                problems.append(
                    f"{hook} has no argument {', '.join(map(repr, unknown))} (it offers {', '.join(offered)})"
                )
        return problems

    def mark_failed(self, name: str, exc: BaseException) -> None:
        """Record a plugin that failed after loading (settings, registration) and unregister it."""
        if self.strict:
            raise exc
        info = self.infos.setdefault(name, PluginInfo(name))
        info.status, info.reason = "failed", f"{type(exc).__name__}: {exc}"
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        log.error("plugin_failed", plugin=name, error=info.reason)

    # ------------------------------------------------------------------ calling
    def impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations in call order (pluggy calls the stored list from the end).

        Cached per hook (several calls per message); registering or unregistering clears the cache.
        """
        found = self._impls.get(hook)
        if found is None:
            found = self._impls[hook] = list(reversed(getattr(self.hook, hook).get_hookimpls()))
        return found

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """pluggy's register, after refusing a plugin that breaks the contract (``PluginRefused``)."""
        plugin_name = name or self.get_canonical_name(plugin)
        if not self.is_blocked(plugin_name):
            problems = self.contract_problems(plugin, plugin_name)
            if problems:
                raise PluginRefused(plugin, plugin_name, "; ".join(problems))
        self._impls.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        self._impls.clear()
        return super().unregister(plugin, name)

    async def call_each(
        self,
        hook: str,
        firstresult: bool = False,
        after: Callable[[str], None] | None = None,
        budget: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call every implementation of `hook`, awaiting coroutines; raise HookFailed naming the plugin.

        With firstresult, stop at the first non-None answer and return it; otherwise return the list
        of non-None answers. ``after(plugin)`` is called after each implementation returned (the
        pipeline tells there what each plugin changed on a draft). With ``budget`` (seconds), an
        implementation that takes longer fails like one that raised: an async one is cancelled at the
        budget; a sync one cannot be stopped (it blocks the event loop) and fails when it returns.
        """
        results = []
        for impl in self.impls(hook):
            args = {k: kwargs[k] for k in impl.argnames}
            if self.trace_calls:
                log.info("hook_call", hook=hook, plugin=impl.plugin_name)
            # every log line a plugin writes from inside its hook names the plugin and hook
            token = SCOPE.set((*SCOPE.get(), ("plugin", impl.plugin_name), ("hook", hook)))
            try:
                began = time.perf_counter() if budget is not None else 0.0
                res = impl.function(**args)
                if budget is not None and (took := time.perf_counter() - began) > budget:
                    log.warning("hook_over_budget", hook=hook, plugin=impl.plugin_name, took_s=round(took, 2))
                    raise TimeoutError(
                        f"a sync {hook} took {took:.1f} s, over its {budget:g} s budget: it blocked the "
                        "daemon; do blocking work with asyncio.to_thread from an async hook, or in a job"
                    )
                if res is not None and inspect.isawaitable(res):  # most hooks answer None: skip the ABC check
                    if budget is None:
                        res = await res
                    else:
                        try:
                            # asyncio.timeout, not wait_for: wait_for wraps the coroutine in a new Task
                            # (two loop turns a call, every message), timeout() awaits it in place
                            async with asyncio.timeout(budget):
                                res = await res
                        except TimeoutError:
                            log.warning("hook_over_budget", hook=hook, plugin=impl.plugin_name, took_s=budget)
                            why = f"{hook} did not finish within its {budget:g} s budget"
                            raise TimeoutError(why) from None
            except Exception as exc:
                raise HookFailed(impl.plugin_name, hook, exc) from exc
            finally:
                SCOPE.reset(token)
            if after is not None:
                after(impl.plugin_name)
            if res is not None:
                if firstresult:
                    return res
                results.append(res)
        return None if firstresult else results

    async def lifecycle(self, hook: str, **kwargs: Any) -> None:
        """Call ``startup`` or ``shutdown`` on every plugin, each on its own, awaiting coroutines.

        Never raises for a plugin (but in strict mode at startup): a failing ``startup`` is logged with
        the plugin's name and marks it failed (unregistered, so it is not shut down either); a failing
        ``shutdown`` is logged and the next plugin still shuts down.
        """
        if hook not in ("startup", "shutdown"):
            raise ValueError(f"not a lifecycle hook: {hook}")
        for impl in self.impls(hook):
            if self.trace_calls:
                log.info("hook_call", hook=hook, plugin=impl.plugin_name)
            token = SCOPE.set((*SCOPE.get(), ("plugin", impl.plugin_name), ("hook", hook)))
            try:
                res = impl.function(**{k: kwargs[k] for k in impl.argnames})
                if inspect.isawaitable(res):
                    await res
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.error(f"plugin_{hook}_failed", plugin=impl.plugin_name, error=error)
                if hook == "startup":
                    self.mark_failed(impl.plugin_name, exc)  # re-raises in strict mode
            finally:
                SCOPE.reset(token)

    def register_objects(self, hook: str, settings: Any) -> list[tuple[str, Any]]:
        """Call a start-up ``register_*`` hook per plugin; a failing plugin is marked, others go on."""
        found: list[tuple[str, Any]] = []
        for impl in self.impls(hook):
            bucket: list[Any] = []

            def register(*objs: Any, _bucket: list[Any] = bucket) -> None:
                _bucket.append(objs[0] if len(objs) == 1 else objs)

            args = {"register": register, "settings": settings}
            try:
                impl.function(**{k: args[k] for k in impl.argnames})
            except Exception as exc:
                self.mark_failed(impl.plugin_name, exc)
                continue
            found.extend((impl.plugin_name, obj) for obj in bucket)
        return found


def make_plugin_manager(
    *,
    entrypoints: bool = True,
    plugins_dir: str | Path | None = None,
    blocked: list[str] | tuple[str, ...] = (),
    strict: bool = False,
    trace: bool = False,
    extra: tuple[Any, ...] = (),
) -> PluginManager:
    """Build a fresh manager: built-ins, then entry points, then loose ``*.py`` files in plugins_dir."""
    pm = PluginManager(strict=strict)
    block = set(blocked)
    for modname in DEFAULT_PLUGINS:
        pm._add(modname, lambda m=modname: importlib.import_module(m), "builtin", "", block)
    if entrypoints:
        for ep in importlib.metadata.entry_points(group="svcbridge"):
            version = ep.dist.version if ep.dist else ""
            pm._add(ep.name, ep.load, "entrypoint", version, block)
    if plugins_dir:
        for path in sorted(Path(plugins_dir).glob("*.py")):
            pm._add(path.stem, lambda p=path: _load_file(p), "plugins_dir", "", block)
    for obj in extra:
        pm._add(getattr(obj, "__name__", repr(obj)), lambda o=obj: o, "extra", "", block)
    # no check_pending(): register() refused every plugin with an unknown hook name, one at a time,
    # where check_pending would raise for the whole manager and so stop every CLI command
    pm.trace_calls = trace
    if trace:
        pm.add_hookcall_monitoring(
            lambda name, impls, kw: log.debug("hook_call", hook=name, plugins=[i.plugin_name for i in impls]),
            lambda outcome, name, impls, kw: log.debug("hook_done", hook=name),
        )
    return pm


def _load_file(path: Path) -> Any:
    name = f"svcbridge_local_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
