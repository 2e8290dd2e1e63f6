"""One MCP tool server: its connection, kept up by a task of its own.

The task connects (starting the process for a stdio server), lists the
server's tools and attaches them to the registry; then it waits. When the
connection breaks (the process died, the HTTP server went away, a tool
listing fails) the tools are detached, so no model is offered a tool that
cannot answer, and the task connects again after a growing pause. Every
few minutes it lists the tools again: a server may add or drop some, and a
dead connection is noticed even when nobody calls.

The MCP SDK keeps its connection in an anyio task group that must be left
by the task that entered it, so only this task ever opens or closes the
client; turns call through it from their own tasks, which the SDK allows.

A call is bounded by the server's timeout and passes a circuit breaker per
server: a server that keeps timing out or failing is skipped at no cost
for a while, so a hung server costs each turn one timeout at most, and
after a few, nothing."""

from __future__ import annotations

import asyncio
import functools
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, MCPError, StdioServerParameters, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CONNECTION_CLOSED
from pydantic import BaseModel, ValidationError

from bot.context import RequestContext
from bot.errors import ToolError
from bot.llm.breaker import CircuitBreaker
from bot.settings import McpServerSettings
from bot.tools.mcp.views import ServerState, ServerView
from bot.tools.mcp.results import UnusableSchema, checked_schema, description_of, model_tool_name, result_text
from bot.tools.registry import Tool, ToolRegistry

log = logging.getLogger(__name__)

# Pauses before connecting again after a failure, in seconds; the last repeats.
RESTART_DELAYS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300)
REFRESH_INTERVAL = 300.0
MAX_TOOLS = 128  # per server: each one costs tokens in every turn
# The executor's deadline is the server's timeout plus this, so the call's
# own deadline fires first and the breaker hears about it.
EXECUTOR_MARGIN = 1.0


class McpServer:
    def __init__(
        self,
        name: str,
        config: McpServerSettings,
        registry: ToolRegistry,
        *,
        log_dir: Path,
        refresh_interval: float = REFRESH_INTERVAL,
        restart_delays: tuple[float, ...] = RESTART_DELAYS,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._registry = registry
        self._log_dir = log_dir
        self._refresh_interval = refresh_interval
        self._restart_delays = restart_delays
        self.breaker = breaker or CircuitBreaker(failure_threshold=3, window=60.0, cooldown=30.0, hard_cooldown=300.0)
        self.state = ServerState.STARTING if config.enabled else ServerState.DISABLED
        self.restarts = 0
        self.error: str | None = None
        self._client: Client | None = None
        self._attached: dict[str, Tool] = {}
        self._skipped: dict[str, str] = {}
        self._in_flight = 0
        self._broken = asyncio.Event()
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set whenever the server is up (tests and doctor wait on it)
        self.attempt_failed = asyncio.Event()  # set when a connection attempt failed (doctor waits on it)

    @property
    def group(self) -> str:
        """The group name BOT_TOOLS_DISABLED and /tools use for all its tools."""
        return f"mcp:{self.name}"

    def view(self) -> ServerView:
        return ServerView(
            name=self.name,
            transport=self.config.transport,
            state=self.state,
            tools=tuple(self._attached),
            skipped=tuple(f"{tool}: {why}" for tool, why in self._skipped.items()),
            restarts=self.restarts,
            error=self.error,
            breaker=self.breaker.state.value,
        )

    # The connection's life -------------------------------------------------

    async def run(self) -> None:
        """Keep the server connected until ``stop``."""
        failures = 0
        while not self._stop.is_set():
            try:
                await self._connected_session()
                failures = 0  # it was up: the next failure starts the pauses over
            except Exception as exc:
                self.error = _describe(exc)
                log.warning("MCP server %s: %s", self.name, self.error)
                failures += 1
                self.attempt_failed.set()
            finally:
                self._detach_all()
                self._client = None
                self.ready.clear()
            if self._stop.is_set():
                break
            self.state = ServerState.RESTARTING
            self.restarts += 1
            delay = self._restart_delays[min(max(failures - 1, 0), len(self._restart_delays) - 1)]
            await _wait(self._stop, delay)
        self.state = ServerState.STOPPED

    def stop(self) -> None:
        self._stop.set()

    async def _connected_session(self) -> None:
        async with AsyncExitStack() as stack:
            # asyncio.timeout, not wait_for: the SDK's task group must be
            # entered (and later left) by this very task.
            async with asyncio.timeout(self.config.connect_timeout):
                client = await self._open(stack)
                tools = await _list_tools(client)
            self._client = client
            self._broken.clear()
            self._sync_tools(tools)
            self.state, self.error = ServerState.READY, None
            self.attempt_failed.clear()
            self.ready.set()
            log.info("MCP server %s ready: %d tools", self.name, len(self._attached))
            await self._serve(client)

    async def _open(self, stack: AsyncExitStack) -> Client:
        if self.config.command:
            params = StdioServerParameters(
                command=self.config.command,
                args=self.config.args,
                env={key: value.get_secret_value() for key, value in self.config.env.items()} or None,
                cwd=self.config.cwd,
            )
            transport: Any = _stdio_transport(params, stack.enter_context(self._stderr_log()))
        else:
            assert self.config.url is not None
            headers = {key: value.get_secret_value() for key, value in self.config.headers.items()}
            http = await stack.enter_async_context(create_mcp_http_client(headers=headers))
            transport = streamable_http_client(self.config.url, http_client=http)
        client = Client(transport, read_timeout_seconds=self.config.timeout, cache=None)
        return await stack.enter_async_context(client)

    def _stderr_log(self) -> TextIO:
        """A stdio server's stderr goes to a log file of its own, where an
        operator can read why it failed."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return open(self._log_dir / f"mcp-{self.name}.log", "a", encoding="utf-8")

    async def _serve(self, client: Client) -> None:
        """Until stopped or broken; lists the tools again now and then."""
        while True:
            stop = asyncio.ensure_future(self._stop.wait())
            broken = asyncio.ensure_future(self._broken.wait())
            done, pending = await asyncio.wait(
                {stop, broken}, timeout=self._refresh_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in pending:
                waiter.cancel()
            if stop in done:
                return
            if broken in done:
                raise ConnectionError(self.error or "the connection broke")
            async with asyncio.timeout(self.config.connect_timeout):
                listed = await _list_tools(client)
            self._sync_tools(listed)

    # Tools in the registry -------------------------------------------------------

    def _sync_tools(self, listed: list[types.Tool]) -> None:
        wanted: dict[str, Tool] = {}
        self._skipped = {}
        for remote in listed:
            reason = self._why_not_offered(remote)
            if reason is None and len(wanted) >= MAX_TOOLS:
                reason = f"more than {MAX_TOOLS} tools"
            if reason is not None:
                self._skipped[remote.name] = reason
                continue
            try:
                tool = self._as_tool(remote)
            except UnusableSchema as exc:
                self._skipped[remote.name] = str(exc)
                continue
            wanted[tool.name] = tool
        for name in list(self._attached):
            if name not in wanted or wanted[name].spec() != self._attached[name].spec():
                self._registry.detach(name)
                del self._attached[name]
        for name, tool in wanted.items():
            if name in self._attached:
                continue
            if self._registry.attach(tool):
                self._attached[name] = tool
            elif not self._registry.is_disabled(tool):
                self._skipped[tool.name] = "another tool already has this name"
        if self._skipped:
            log.info("MCP server %s: tools not offered: %s", self.name, "; ".join(self.view().skipped))

    def _why_not_offered(self, remote: types.Tool) -> str | None:
        if self.config.tools is not None and remote.name not in self.config.tools:
            return "not in `tools`"
        if remote.name in self.config.tools_disabled:
            return "in `tools_disabled`"
        return None

    def _as_tool(self, remote: types.Tool) -> Tool:
        name = model_tool_name(self.name, remote.name)
        schema = checked_schema(remote.input_schema)
        return Tool(
            name=name,
            description=description_of(remote, self.name),
            func=functools.partial(self.call, remote.name),  # the registry adds (ctx, arguments)
            arguments=_NoArguments,
            injected={},
            is_async=True,
            admin_only=self.config.admin_only,
            timeout=self.config.timeout + EXECUTOR_MARGIN,
            hints={},
            plugin=self.group,
            input_schema=schema,
        )

    def _detach_all(self) -> None:
        for name in self._attached:
            self._registry.detach(name)
        self._attached = {}

    # Calls ---------------------------------------------------------------------

    async def call(self, remote_name: str, ctx: RequestContext, arguments: dict[str, Any]) -> str:
        client = self._client
        if client is None or self.state is not ServerState.READY:
            raise ToolError(f"the tool server {self.name} is not available right now; try again later")
        if self._in_flight >= self.config.max_concurrent:
            raise ToolError(f"the tool server {self.name} is busy with other calls; try again shortly")
        if not self.breaker.allow_request():
            raise ToolError(f"the tool server {self.name} keeps failing, so it is skipped for a while")
        self._in_flight += 1
        try:
            return await self._call(client, remote_name, ctx, arguments)
        finally:
            self._in_flight -= 1

    async def _call(self, client: Client, remote_name: str, ctx: RequestContext, arguments: dict[str, Any]) -> str:
        meta = _request_meta(ctx, with_user=self.config.send_user_context)
        try:
            async with asyncio.timeout(self.config.timeout):
                result = await client.call_tool(remote_name, arguments, meta=meta)  # type: ignore[arg-type]
        except TimeoutError:
            self.breaker.record_failure()
            log.warning("MCP server %s: %s timed out after %g s", self.name, remote_name, self.config.timeout)
            raise
        except asyncio.CancelledError:
            self.breaker.release_probe()
            raise
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                self._connection_lost("the connection closed")
                raise ToolError(f"the tool server {self.name} stopped; it is being restarted") from None
            self.breaker.record_success()  # it answered: alive, just unhappy with this call
            raise ToolError(f"the tool server {self.name} refused the call: {str(exc)[:300]}") from None
        except ValidationError:
            self.breaker.record_failure()
            raise ToolError(f"the tool server {self.name} sent a malformed result") from None
        except Exception as exc:  # transport failures: httpx, broken pipes, a process gone
            self._connection_lost(_describe(exc))
            raise ToolError(f"the tool server {self.name} could not be reached") from None
        self.breaker.record_success()
        return result_text(result)

    def _connection_lost(self, why: str) -> None:
        self.breaker.record_failure()
        self.error = why
        self._broken.set()



def _request_meta(ctx: RequestContext, *, with_user: bool) -> dict[str, Any] | None:
    """The call's metadata: its idempotency key always (the same when a turn
    cut short by a crash makes the call again; it names no user), who asks
    only where configured."""
    meta: dict[str, Any] = {}
    if ctx.tool_call_key is not None:
        meta["arium/idempotency_key"] = ctx.tool_call_key
    if with_user:
        meta["arium/user"] = {"id": ctx.user_id, "language": ctx.language, "timezone": ctx.timezone}
    return meta or None


async def probe_server(name: str, config: McpServerSettings, log_dir: Path) -> ServerView:
    """Connect once, list the tools, disconnect (``doctor``). Raises
    ToolError with the reason when the first attempt fails."""
    server = McpServer(name, config, ToolRegistry(), log_dir=log_dir, restart_delays=(config.connect_timeout,))
    task = asyncio.ensure_future(server.run())
    try:
        outcomes = {asyncio.ensure_future(server.ready.wait()), asyncio.ensure_future(server.attempt_failed.wait())}
        await asyncio.wait(outcomes, timeout=config.connect_timeout + 1, return_when=asyncio.FIRST_COMPLETED)
        for waiter in outcomes:
            waiter.cancel()
        view = server.view()
        if not server.ready.is_set():
            raise ToolError(f"did not come up: {view.error or 'no answer in time'}")
        return view
    finally:
        server.stop()
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            task.cancel()


class _NoArguments(BaseModel):
    """Unused: a tool with an input_schema checks arguments against it."""


def _stdio_transport(params: StdioServerParameters, errlog: TextIO) -> Any:
    from mcp.client.stdio import stdio_client

    return stdio_client(params, errlog=errlog)


async def _list_tools(client: Client) -> list[types.Tool]:
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(20):  # pages; a server that never stops paging gets its first 20
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


async def _wait(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


def _describe(exc: BaseException) -> str:
    """A short reason for logs and /health: the innermost error of an
    exception group (the SDK's task groups wrap them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
