"""Run-time control of the model chain, prompts and plugins (/models,
/prompts, /reload), independent of any channel.

Changes apply at once to requests that start afterwards and are kept in
``runtime_settings``, so a restart comes back the way the admin left it:

- ``models.layout``: ``{"order": [tier key, ...], "disabled": [tier key, ...]}``.
  A tier key names the tier's endpoints (``openai:gpt-4o-mini@host/path``),
  never a secret, so a saved layout still matches after tiers are added to or
  removed from the configuration; what no longer matches is logged and ignored.
- ``prompts.pinned``: ``{"system": 2}``, the versions activated explicitly.

Refusals are ``RuntimeRefused`` carrying an i18n key and its values, so each
channel words them in the admin's language."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.admin.tools import ToolControl
from bot.errors import AriumError, PromptError
from bot.llm.chain import Endpoint
from bot.llm.service import ModelService
from bot.prompts import PromptChanges, PromptRegistry, PromptTemplate, Templates, scan
from bot.storage.runtime import RuntimeSettingsRepository
from bot.tools.plugins import PluginInfo, PluginReload, reload_plugins
from bot.tools.registry import ToolRegistry

log = logging.getLogger(__name__)

MODELS_KEY = "models.layout"
PROMPTS_KEY = "prompts.pinned"


class RuntimeRefused(AriumError):
    """The admin asked for something that cannot be done; ``key`` is the i18n
    string that says why, ``values`` fill it in."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


# The model chain -----------------------------------------------------------------

Verb = Literal["show", "up", "down", "order", "disable", "enable"]


@dataclass(frozen=True)
class ModelsAction:
    verb: Verb
    positions: tuple[int, ...] = ()


_POSITIONS = re.compile(r"^\d{1,3}(?:[,\s]+\d{1,3})*$")


def parse_models_args(args: Sequence[str]) -> ModelsAction | None:
    """``[]``, ``up N``, ``down N``, ``disable N``, ``enable N`` or
    ``order 2,1,3`` (commas or spaces); None when it is none of those."""
    if not args:
        return ModelsAction("show")
    verb, rest = args[0].lower(), " ".join(args[1:]).strip()
    if verb in ("up", "down", "disable", "enable"):
        if not rest.isdigit() or len(args) != 2:
            return None
        return ModelsAction(verb, (int(rest),))  # type: ignore[arg-type]
    if verb == "order" and _POSITIONS.match(rest):
        return ModelsAction("order", tuple(int(p) for p in re.split(r"[,\s]+", rest)))
    return None


@dataclass(frozen=True)
class EndpointView:
    model: str  # provider:model
    where: str  # host and path of the base URL; never credentials
    weight: float
    breaker: str
    requests: int
    errors: dict[str, int]
    last_error: str | None  # the error's class, never its message (a server may echo part of a key)
    last_error_at: float | None  # wall-clock time
    latency_p50: float | None


@dataclass(frozen=True)
class TierView:
    position: int  # 1-based, in the current order
    name: str
    key: str
    enabled: bool
    endpoints: tuple[EndpointView, ...]


@dataclass(frozen=True)
class ChainView:
    tiers: tuple[TierView, ...]
    # A short fingerprint of order and disabled set: a button pressed on an
    # older view is caught instead of moving whichever tier is there now.
    version: str

    def tier(self, position: int) -> TierView:
        if not 1 <= position <= len(self.tiers):
            raise RuntimeRefused("rt_no_tier", position=position, count=len(self.tiers))
        return self.tiers[position - 1]


@dataclass(frozen=True)
class ModelsOutcome:
    """What an action did (an i18n key and values) and the chain afterwards."""

    key: str
    values: dict[str, object]
    view: ChainView


def layout_version(order: Sequence[str], disabled: frozenset[str]) -> str:
    text = "\n".join(order) + "\n--\n" + "\n".join(sorted(disabled))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class ModelControl:
    """/models: the chain in its current order, reordered and switched tier by tier."""

    def __init__(self, models: ModelService, store: RuntimeSettingsRepository) -> None:
        self._models = models
        self._store = store
        # One change at a time: read, decide, save and apply as one step, so
        # two admins pressing buttons at once cannot lose either change.
        self._lock = asyncio.Lock()

    def view(self) -> ChainView:
        tiers = self._models.tiers()
        disabled = self._models.disabled_tiers()
        health = {str(entry.get("endpoint")): entry for entry in self._models.health()}
        views = tuple(
            TierView(
                position=index,
                name=tier.name,
                key=tier.key,
                enabled=tier.key not in disabled,
                endpoints=tuple(_endpoint_view(e, health.get(e.name, {})) for e in tier.endpoints),
            )
            for index, tier in enumerate(tiers, 1)
        )
        return ChainView(views, layout_version([t.key for t in tiers], disabled))

    async def apply(self, action: ModelsAction, *, by: int, expected_version: str | None = None) -> ModelsOutcome:
        """Carry out ``action``; raises RuntimeRefused saying why it cannot be.
        ``expected_version``: refuse if the chain changed since the admin saw it."""
        if action.verb == "show":
            return ModelsOutcome("", {}, self.view())
        async with self._lock:
            before = self.view()
            if expected_version is not None and expected_version != before.version:
                raise RuntimeRefused("rt_models_stale")
            order = [t.key for t in before.tiers]
            disabled = {t.key for t in before.tiers if not t.enabled}
            key, values = self._decide(before, action, order, disabled)
            if key.endswith("_already"):
                return ModelsOutcome(key, values, before)
            # Saved first: if the database fails, nothing changed anywhere.
            await self._store.set(MODELS_KEY, {"order": order, "disabled": sorted(disabled)}, by=by)
            self._models.arrange_tiers(order, disabled)
            log.info("admin %s: /models %s %s", by, action.verb, ",".join(map(str, action.positions)))
            return ModelsOutcome(key, values, self.view())

    @staticmethod
    def _decide(
        view: ChainView, action: ModelsAction, order: list[str], disabled: set[str]
    ) -> tuple[str, dict[str, object]]:
        """Edit ``order`` and ``disabled`` in place; the message key and values."""
        count = len(view.tiers)
        if action.verb == "order":
            positions = action.positions
            if sorted(positions) != list(range(1, count + 1)):
                raise RuntimeRefused("rt_order_bad", count=count, example=",".join(map(str, range(count, 0, -1))))
            order[:] = [view.tiers[p - 1].key for p in positions]
            return "rt_models_ordered", {"order": " > ".join(view.tiers[p - 1].name for p in positions)}
        position = action.positions[0]
        tier = view.tier(position)
        if action.verb in ("up", "down"):
            target = position - 1 if action.verb == "up" else position + 1
            if not 1 <= target <= count:
                edge = "rt_models_first_already" if action.verb == "up" else "rt_models_last_already"
                return edge, {"name": tier.name}
            order[position - 1], order[target - 1] = order[target - 1], order[position - 1]
            return "rt_models_moved", {"name": tier.name, "position": target}
        if action.verb == "enable":
            if tier.enabled:
                return "rt_models_enabled_already", {"name": tier.name}
            disabled.discard(tier.key)
            return "rt_models_enabled", {"name": tier.name}
        if not tier.enabled:
            return "rt_models_disabled_already", {"name": tier.name}
        if len(disabled) + 1 >= count:
            raise RuntimeRefused("rt_last_tier", name=tier.name)
        disabled.add(tier.key)
        return "rt_models_disabled", {"name": tier.name}

    async def restore(self) -> None:
        """Apply the saved layout to the configured chain (at start). Saved
        tiers that are no longer configured are ignored; configured tiers the
        saved layout does not know go after the known ones, enabled."""
        saved = await self._store.get(MODELS_KEY)
        if saved is None:
            return
        layout = _saved_layout(saved)
        if layout is None:
            log.error("saved model layout is malformed; using the configured order")
            return
        saved_order, saved_off = layout
        current = [t.key for t in self._models.tiers()]
        known = [key for key in dict.fromkeys(saved_order) if key in current]
        for key in dict.fromkeys(saved_order):
            if key not in current:
                log.warning("saved model layout names tier %r, which is no longer configured; ignored", key)
        new = [key for key in current if key not in known]
        for key in new:
            log.warning("model tier %r is not in the saved layout (new in the configuration); placed after the others", key)
        order = known + new
        disabled = {key for key in saved_off if key in current}
        if len(disabled) >= len(order):
            log.warning("the saved layout would leave no model tier enabled; enabling them all")
            disabled = set()
        self._models.arrange_tiers(order, disabled)
        log.info("model layout restored: %d tiers, %d disabled", len(order), len(disabled))


def _saved_layout(saved: Any) -> tuple[list[str], list[str]] | None:
    if not isinstance(saved, dict):
        return None
    order, off = saved.get("order", []), saved.get("disabled", [])
    if not isinstance(order, list) or not isinstance(off, list):
        return None
    if not all(isinstance(k, str) for k in [*order, *off]):
        return None
    return order, off


def _endpoint_view(endpoint: Endpoint, health: dict[str, object]) -> EndpointView:
    last = endpoint.last_error
    errors = health.get("errors")
    requests = health.get("requests")
    latency = health.get("latency_p50")
    return EndpointView(
        model=endpoint.provider.name,
        where=endpoint.name.partition("@")[2],
        weight=endpoint.weight,
        breaker=str(health.get("breaker", endpoint.breaker.state.value)),
        requests=requests if isinstance(requests, int) else 0,
        errors=dict(errors) if isinstance(errors, dict) else {},
        last_error=last[1] if last else None,
        last_error_at=last[0] if last else None,
        latency_p50=float(latency) if isinstance(latency, int | float) else None,
    )


# Prompts -------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptView:
    name: str
    versions: tuple[int, ...]
    active: int
    pinned: bool
    description: str


@dataclass(frozen=True)
class PromptReloadResult:
    changes: PromptChanges = field(default_factory=PromptChanges)
    error: str | None = None  # why nothing was reloaded (each broken file and why)


class PromptControl:
    """/prompts: templates, their versions, which is active; /prompts use."""

    def __init__(self, prompts: PromptRegistry, store: RuntimeSettingsRepository) -> None:
        self._prompts = prompts
        self._store = store
        self._lock = asyncio.Lock()

    def view(self) -> list[PromptView]:
        pinned = self._prompts.pinned()
        views = []
        for name, versions in sorted(self._prompts.names().items()):
            active = self._prompts.get(name)
            views.append(PromptView(name, tuple(versions), active.version, name in pinned, active.description))
        return views

    async def use(self, name: str, version: str, *, by: int) -> tuple[PromptTemplate, bool]:
        """Activate ``name`` at ``version`` (a number, ``v2``, or ``latest`` to
        follow the newest again). The template, and whether it is pinned."""
        known = self._prompts.names()
        if name not in known:
            raise RuntimeRefused("rt_prompt_unknown", name=name, names=", ".join(sorted(known)))
        latest = version.lower() in ("latest", "newest")
        number = version.lower().removeprefix("v")
        if not latest and not number.isdigit():
            raise RuntimeRefused("rt_prompt_bad_version", version=version)
        async with self._lock:
            versions = self._prompts.names().get(name, [])
            chosen = max(versions) if latest else int(number)
            if chosen not in versions:
                raise RuntimeRefused(
                    "rt_prompt_no_version", name=name, version=chosen, versions=", ".join(map(str, versions))
                )
            template = self._prompts.get(name, chosen)
            missing = self._prompts.unsupplied(template)
            if missing:
                raise RuntimeRefused("rt_prompt_needs", ref=template.ref, variables=", ".join(missing))
            pinned = {k: v for k, v in self._prompts.pinned().items() if k != name}
            if not latest:
                pinned[name] = chosen
            await self._store.set(PROMPTS_KEY, pinned, by=by)
            if latest:
                self._prompts.unpin(name)
            else:
                self._prompts.activate(name, chosen)
            log.info("admin %s: prompt %s now %s", by, name, "the newest version" if latest else template.ref)
            return template, not latest

    async def restore(self) -> None:
        """Pin the saved versions that still exist (at start)."""
        saved = await self._store.get(PROMPTS_KEY)
        if saved is None:
            return
        if not isinstance(saved, dict):
            log.error("saved prompt versions are malformed; using the newest versions")
            return
        for name, version in saved.items():
            try:
                self._prompts.activate(str(name), int(version))
            except (PromptError, TypeError, ValueError):
                log.warning("saved prompt version %s@%s no longer exists; using its newest version", name, version)

    async def reload(self) -> PromptReloadResult:
        """Read prompts/ again. Broken files, a template the bot would render
        without its variables, or a name the bot uses disappearing: nothing
        changes and the result says why."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(scan, self._prompts.folder)
            except PromptError as exc:
                return PromptReloadResult(error=str(exc))
            problems = self._problems(loaded)
            if problems:
                return PromptReloadResult(error="\n".join(problems))
            changes = self._prompts.install(loaded)
            if changes.unpinned:
                await self._store.set(PROMPTS_KEY, self._prompts.pinned())
            return PromptReloadResult(changes=changes)

    def _problems(self, loaded: Templates) -> list[str]:
        problems = [
            f"{name}: no version left in prompts/ (the bot uses it)"
            for name in sorted(self._prompts.names())
            if name not in loaded
        ]
        for template in self._prompts.active_after(loaded):
            missing = self._prompts.unsupplied(template)
            if missing:
                problems.append(
                    f"{template.path.name}: declares variables the bot does not supply: {', '.join(missing)}"
                )
        return problems


# Plugins -------------------------------------------------------------------------


class PluginControl:
    """The plugins' tools, reloaded in place (/reload)."""

    def __init__(
        self,
        registry: ToolRegistry,
        plugins: list[PluginInfo],
        packages: tuple[str, ...],
        *,
        entry_points: bool = True,
    ) -> None:
        self.registry = registry
        self.plugins = plugins
        self._packages = packages
        self._entry_points = entry_points
        self._lock = asyncio.Lock()

    async def reload(self) -> PluginReload:
        """Import the plugins again (in a thread: imports may be slow) into a
        new registry, then swap its tools in; a turn in flight keeps going."""
        async with self._lock:
            result = await asyncio.to_thread(
                reload_plugins, self.registry, self.plugins, self._packages, entry_points=self._entry_points
            )
            self.registry.replace_tools(result.registry)
            self.plugins = result.plugins
            log.info(
                "plugins reloaded: %d tools; added %s; removed %s; failed %s",
                len(self.registry),
                ", ".join(result.added) or "none",
                ", ".join(result.removed) or "none",
                ", ".join(info.name for info in result.failed) or "none",
            )
            return result


@dataclass(frozen=True)
class ReloadReport:
    prompts: PromptReloadResult
    plugins: PluginReload


class RuntimeControl:
    """Everything /models, /prompts, /reload and /tools act on."""

    def __init__(
        self, models: ModelControl, prompts: PromptControl, plugins: PluginControl, tools: ToolControl
    ) -> None:
        self.models = models
        self.prompts = prompts
        self.plugins = plugins
        self.tools = tools

    async def restore(self) -> None:
        """Apply what admins changed at run time before this start."""
        await self.models.restore()
        await self.prompts.restore()
        await self.tools.restore()

    async def reload(self) -> ReloadReport:
        return ReloadReport(await self.prompts.reload(), await self.plugins.reload())
