"""The MCP servers of one bot, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from bot.runtime.tasks import TaskTracker
from bot.settings import McpServerSettings
from bot.tools.mcp.server import McpServer
from bot.tools.mcp.views import ServerState, ServerView
from bot.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


class McpServers:
    def __init__(
        self, configs: dict[str, McpServerSettings], registry: ToolRegistry, *, log_dir: Path
    ) -> None:
        self.servers = [McpServer(name, config, registry, log_dir=log_dir) for name, config in configs.items()]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, tasks: TaskTracker) -> None:
        for server in self.servers:
            if server.state is not ServerState.DISABLED:
                self._tasks.append(tasks.spawn(server.run(), name=f"mcp-{server.name}"))

    async def stop(self, grace: float = 5.0) -> None:
        """Ask every connection to close (a stdio server's process ends with
        it); cancel those that do not within ``grace`` seconds."""
        for server in self.servers:
            server.stop()
        running = [task for task in self._tasks if not task.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for task in late:
                log.warning("MCP server task %s did not stop in time; cancelling it", task.get_name())
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=grace)
        self._tasks = []

    def views(self) -> list[ServerView]:
        return [server.view() for server in self.servers]

    def groups(self) -> Iterable[str]:
        return (server.group for server in self.servers)

    def __len__(self) -> int:
        return len(self.servers)
