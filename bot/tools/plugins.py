"""Plugins: modules that add tools through one hook,

    def register_tools(register):
        register(my_function, hints={"en": "doing it…"}, admin_only=False, timeout=None)

The built-ins are listed in BUILTIN_PLUGINS; any other module dropped into a
plugin package (``plugins/`` by default) and any installed distribution that
declares an ``arium.plugins`` entry point add tools without touching bot/.
A plugin that fails to import or to register is skipped and reported (by
``python -m bot doctor`` and in the log), never fatal; the tools it managed to
register before failing are removed again, so it is all or nothing."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


def discover(packages: Iterable[str] = PLUGIN_PACKAGES, *, entry_points: bool = True) -> list[_Candidate]:
    """Built-ins first (in their listed order), then local modules by name, then entry points."""
    candidates = [_Candidate(name, "builtin", _importer(name)) for name in BUILTIN_PLUGINS]
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
            candidates.append(_Candidate(name, "local", _importer(name)))
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            candidates.append(_Candidate(f"{point.name} ({point.value})", "entry point", point.load))
    return candidates


def load_plugins(
    registry: ToolRegistry, packages: Iterable[str] = PLUGIN_PACKAGES, *, entry_points: bool = True
) -> list[PluginInfo]:
    infos = []
    for candidate in discover(packages, entry_points=entry_points):
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


def _raiser(exc: Exception) -> Callable[[], Any]:
    def fail() -> Any:
        raise exc

    return fail
