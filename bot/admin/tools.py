"""/tools: which tools the model may call, switched on and off at run time.

A switch names a tool (``calculate``, ``time__get_current_time``) or a group:
a plugin (``files``) or an MCP server (``mcp:time``). Switches are kept in
runtime_settings, so they outlive a restart, and apply to tools that appear
later too (an MCP server that comes up after the switch). Configuration's
BOT_TOOLS_DISABLED is stronger: what it disables is never registered."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bot.errors import AriumError
from bot.storage.runtime import RuntimeSettingsRepository
from bot.tools.registry import ToolRegistry

if TYPE_CHECKING:  # the MCP SDK is imported only by bots that name MCP servers
    from bot.tools.mcp.views import ServerView

log = logging.getLogger(__name__)

TOOLS_KEY = "tools_off"
CORE_GROUP = "core"


@dataclass(frozen=True)
class ToolsAction:
    verb: Literal["show", "on", "off"]
    name: str = ""


def parse_tools_args(args: Sequence[str]) -> ToolsAction | None:
    """``/tools``, ``/tools off NAME``, ``/tools on NAME``; None when malformed."""
    if not args:
        return ToolsAction("show")
    if len(args) == 2 and args[0].lower() in ("on", "off") and args[1].strip():
        verb: Literal["on", "off"] = "on" if args[0].lower() == "on" else "off"
        return ToolsAction(verb, args[1].strip())
    return None


class UnknownTool(AriumError):
    """/tools named neither a tool nor a group."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class ToolGroup:
    name: str  # a plugin's name, "mcp:SERVER", or "core"
    on: bool
    tools: tuple[tuple[str, bool], ...]  # (tool name, on)
    server: ServerView | None = None  # for an MCP server's group


class ToolControl:
    def __init__(
        self,
        registry: ToolRegistry,
        store: RuntimeSettingsRepository,
        servers: Callable[[], list[ServerView]] = list,
    ) -> None:
        self._registry = registry
        self._store = store
        self._servers = servers

    def view(self) -> list[ToolGroup]:
        off = self._registry.switched_off
        by_group: dict[str, list[tuple[str, bool]]] = {}
        for tool in self._registry.tools():
            by_group.setdefault(tool.plugin or CORE_GROUP, []).append((tool.name, self._registry.is_on(tool)))
        servers = {f"mcp:{server.name}": server for server in self._servers()}
        for group in servers:
            by_group.setdefault(group, [])
        return [
            ToolGroup(name, name not in off, tuple(sorted(tools)), servers.get(name))
            for name, tools in sorted(by_group.items(), key=lambda item: (item[0].startswith("mcp:"), item[0]))
        ]

    async def switch(self, action: ToolsAction, *, by: int) -> str:
        """Apply ``on``/``off``; returns the name switched. Unknown names are refused."""
        known = {tool.name for tool in self._registry.tools()} | {group.name for group in self.view()}
        if action.name not in known:
            raise UnknownTool(action.name)
        off = set(self._registry.switched_off)
        if action.verb == "off":
            off.add(action.name)
        else:
            off.discard(action.name)
        await self._store.set(TOOLS_KEY, sorted(off), by=by)  # stored first: a failed write changes nothing
        self._registry.switch_off(off)
        log.info("tools switched %s by %s: %s", action.verb, by, action.name)
        return action.name

    async def restore(self) -> None:
        saved = await self._store.get(TOOLS_KEY)
        if saved is None:
            return
        if not _is_names(saved):
            log.error("saved tool switches are malformed; all configured tools are on")
            return
        self._registry.switch_off(saved)
        if saved:
            log.info("tools switched off at run time earlier: %s", ", ".join(saved))


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
