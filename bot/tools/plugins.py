"""Plugins: modules that add tools through one hook,

    def register_tools(register):
        register(my_function, hints={"en": "doing it…"}, admin_only=False, timeout=None)

The built-ins are listed in BUILTIN_PLUGINS; any other module dropped into a
plugin package (``plugins/`` by default) and any installed distribution that
declares an ``arium.plugins`` entry point add tools without touching bot/.
A plugin that fails to import or to register is skipped and reported (by
``python -m bot doctor`` and in the log), never fatal; the tools it managed to
register before failing are removed again, so it is all or nothing.

``reload_plugins`` imports every plugin again (/reload) into a new registry
that replaces the serving one in one step; a plugin that loaded before but
fails now keeps its previous tools, so a typo does not take working tools away."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from bot.tools.registry import Tool, ToolRegistry

log = logging.getLogger(__name__)

BUILTIN_PLUGINS: tuple[str, ...] = ("plugins.time", "plugins.calc", "plugins.files")
PLUGIN_PACKAGES: tuple[str, ...] = ("plugins",)
ENTRY_POINT_GROUP = "arium.plugins"

Hook = Callable[[Callable[..., Any]], None]


@dataclass
class PluginInfo:
    name: str
    source: str  # builtin | local | entry point
    tools: list[str] = field(default_factory=list)
    error: str | None = None
    kept: bool = False  # failed on reload; ``tools`` are still the previous version's

    @property
    def ok(self) -> bool:
        return self.error is None


class Registrar:
    """The ``register`` a plugin's hook receives: registers into the registry
    under the plugin's name, remembering what it added."""

    def __init__(self, registry: ToolRegistry, plugin: str) -> None:
        self._registry = registry
        self.plugin = plugin
        self.added: list[Tool] = []

    def __call__(self, func: Callable[..., Any], **options: Any) -> Tool | None:
        tool = self._registry.register(func, plugin=self.plugin, **options)
        if tool is not None:
            self.added.append(tool)
        return tool


@dataclass(frozen=True)
class _Candidate:
    name: str
    source: str
    load: Callable[[], Any]


def discover(
    packages: Iterable[str] = PLUGIN_PACKAGES, *, entry_points: bool = True, fresh: bool = False
) -> list[_Candidate]:
    """Built-ins first (in their listed order), then local modules by name, then
    entry points. ``fresh``: import modules already imported again, so edited
    files take effect."""
    if fresh:
        importlib.invalidate_caches()  # or files dropped in since the last import may stay unseen
    importer = _reimporter if fresh else _importer
    candidates = [_Candidate(name, "builtin", importer(name)) for name in BUILTIN_PLUGINS]
    known = set(BUILTIN_PLUGINS)
    for package_name in packages:
        try:
            package = importlib.import_module(package_name)
        except Exception as exc:
            candidates.append(_Candidate(package_name, "local", _raiser(exc)))
            continue
        for module in sorted(pkgutil.iter_modules(getattr(package, "__path__", [])), key=lambda m: m.name):
            name = f"{package_name}.{module.name}"
            if module.name.startswith("_") or name in known:
                continue
            known.add(name)
            candidates.append(_Candidate(name, "local", importer(name)))
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            load = _entry_point_reloader(point) if fresh else point.load
            candidates.append(_Candidate(f"{point.name} ({point.value})", "entry point", load))
    return candidates


def load_plugins(
    registry: ToolRegistry,
    packages: Iterable[str] = PLUGIN_PACKAGES,
    *,
    entry_points: bool = True,
    fresh: bool = False,
) -> list[PluginInfo]:
    infos = []
    for candidate in discover(packages, entry_points=entry_points, fresh=fresh):
        info = PluginInfo(candidate.name, candidate.source)
        registrar = Registrar(registry, _short_name(candidate.name))
        try:
            hook = _hook(candidate.load())
            hook(registrar)
        except Exception as exc:  # a broken plugin must not take the bot down
            for tool in registrar.added:
                registry.unregister(tool.name)
            info.error = f"{exc.__class__.__name__}: {exc}"
            log.error("plugin %s skipped: %s", candidate.name, info.error)
        else:
            info.tools = [tool.name for tool in registrar.added]
        infos.append(info)
    return infos


@dataclass(frozen=True)
class PluginReload:
    """The outcome of reloading the plugins: the next registry (not serving
    yet) and what differs from the current one, by tool name."""

    registry: ToolRegistry
    plugins: list[PluginInfo]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]  # same name, new description or arguments

    @property
    def failed(self) -> list[PluginInfo]:
        return [info for info in self.plugins if not info.ok]


def reload_plugins(
    current: ToolRegistry,
    previous: list[PluginInfo],
    packages: Iterable[str] = PLUGIN_PACKAGES,
    *,
    entry_points: bool = True,
) -> PluginReload:
    """Import every plugin again into a registry forked from ``current``: the
    tools that did not come from a plugin (memory, reminders) carry over. Safe
    to run in a thread: ``current`` is only read."""
    from_plugins = {name for info in previous for name in info.tools}
    before = {tool.name: tool for tool in current.registered_tools()}
    registry = current.fork(lambda tool: tool.name not in from_plugins)
    infos = load_plugins(registry, packages, entry_points=entry_points, fresh=True)
    earlier = {info.name: info for info in previous}
    for info in infos:
        if info.ok or not (earlier.get(info.name) and earlier[info.name].tools):
            continue
        kept = [before[name] for name in earlier[info.name].tools if name in before and registry.get(name) is None]
        for tool in kept:
            registry.adopt(tool)
        info.tools, info.kept = [tool.name for tool in kept], bool(kept)
        if kept:
            log.warning("plugin %s failed to reload; its previous tools stay: %s", info.name, ", ".join(info.tools))
    after = {tool.name: tool for tool in registry.registered_tools()}
    return PluginReload(
        registry=registry,
        plugins=infos,
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        changed=tuple(sorted(n for n in after.keys() & before.keys() if after[n].spec() != before[n].spec())),
    )


def _hook(loaded: Any) -> Hook:
    hook = getattr(loaded, "register_tools", None) if isinstance(loaded, ModuleType) else loaded
    if not callable(hook):
        raise TypeError("the plugin has no register_tools(register) function")
    return hook  # type: ignore[no-any-return]


def _short_name(name: str) -> str:
    """plugins.files -> files: the name BOT_TOOLS_DISABLED uses for a whole plugin."""
    return name.split(" ")[0].rsplit(".", 1)[-1]


def _importer(name: str) -> Callable[[], ModuleType]:
    return lambda: importlib.import_module(name)


def _reimporter(name: str) -> Callable[[], ModuleType]:
    return lambda: _fresh_import(name)


def _fresh_import(name: str) -> ModuleType:
    module = sys.modules.get(name)
    if module is None:
        return importlib.import_module(name)
    _drop_bytecode(module)
    return importlib.reload(module)


def _entry_point_reloader(point: importlib.metadata.EntryPoint) -> Callable[[], Any]:
    def load() -> Any:
        if point.module in sys.modules:
            _fresh_import(point.module)
        return point.load()

    return load


def _drop_bytecode(module: ModuleType) -> None:
    """Remove the module's cached bytecode before a reload. The cache is
    checked against the source's mtime in whole seconds and its size, so an
    edit of the same length within a second would otherwise load the old code."""
    source = getattr(module, "__file__", None)
    if not source or not source.endswith(".py"):
        return
    try:
        Path(importlib.util.cache_from_source(source)).unlink(missing_ok=True)
    except (NotImplementedError, OSError):  # no bytecode cache here, or not ours to delete
        pass


def _raiser(exc: Exception) -> Callable[[], Any]:
    def fail() -> Any:
        raise exc

    return fail
