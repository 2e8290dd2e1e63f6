"""Tools the model can call: the registry (schemas from typed functions), the
executor (thread pool with backpressure and timeouts), the per-turn loop, the
plugin loader and the event recorder. See DESIGN.md sections 3 and 4."""

from bot.errors import ToolError
from bot.tools.executor import ToolExecutor, ToolOutcome, ToolStatus
from bot.tools.manager import ToolCallManager, ToolLoopConfig, ToolsRunning
from bot.tools.registry import Tool, ToolDefinitionError, ToolRegistry, build_tool

__all__ = [
    "Tool",
    "ToolCallManager",
    "ToolDefinitionError",
    "ToolError",
    "ToolExecutor",
    "ToolLoopConfig",
    "ToolOutcome",
    "ToolRegistry",
    "ToolStatus",
    "ToolsRunning",
    "build_tool",
]
