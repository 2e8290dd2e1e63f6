"""What an MCP tool costs a turn, next to a built-in tool doing the same
work: one call through the registry and the executor, as the tool loop runs
it. The MCP server is ours (tests/fakes/mcp_server.py, the official SDK's
server side), once over stdio and once over streamable HTTP.

    .venv/bin/python -m bench.mcp_calls [--calls 300] [--parallel 8]

Rounds are interleaved (built-in, stdio, HTTP, built-in, ...) so the
machine's noise falls on all three alike; the table gives per-call
latency percentiles and the ratio of medians to the built-in tool, then the
same with ``--parallel`` calls in flight at once (calls/s)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.auth import Role
from bot.context import ChatType, RequestContext
from bot.settings import McpServerSettings
from bot.tools.executor import ToolExecutor
from bot.tools.mcp.server import McpServer
from bot.tools.registry import ToolRegistry, parse_arguments

REPO = Path(__file__).resolve().parent.parent
Call = Callable[[], Awaitable[object]]


async def echo(ctx: RequestContext, text: str) -> str:
    """Say the text back (the built-in twin of the MCP server's echo)."""
    return f"echo: {text}"


def context() -> RequestContext:
    from datetime import datetime, timezone

    return RequestContext(
        user_id=1, chat_id=1, chat_type=ChatType.PRIVATE, role=Role.USER, language="en", timezone="UTC",
        user_name="bench", request_id="bench", received_at=datetime.now(timezone.utc),
    )


def caller(registry: ToolRegistry, executor: ToolExecutor, name: str) -> Call:
    tool = registry.get(name)
    assert tool is not None, name
    ctx = context()
    raw = json.dumps({"text": "hello"})

    async def call() -> object:
        bound = registry.bind(tool, ctx, parse_arguments(tool, raw))
        outcome = await executor.run(tool.name, ctx.user_id, bound, is_async=True, timeout=tool.timeout)
        assert outcome.ok, outcome.content
        return outcome

    return call


async def timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def throughput(call: Call, calls: int, parallel: int) -> float:
    started = time.perf_counter()
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return calls / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_http_server(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mcp_server", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the MCP server did not start")


def row(name: str, samples: list[float], base: float) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"| {name} | {p50 * 1000:.2f} | {p99 * 1000:.2f} | {p50 / base:.1f}x |"


async def main(calls: int, parallel: int) -> None:
    port = free_port()
    http = start_http_server(port)
    registry = ToolRegistry()
    registry.register(echo, plugin="bench")
    executor = ToolExecutor(workers=4, queue_size=16, timeout=30, per_user=max(4, parallel))
    logs = Path(tempfile.mkdtemp())
    stdio = McpServer(
        "stdio",
        McpServerSettings(command=sys.executable, args=["-m", "tests.fakes.mcp_server", "--stdio"], cwd=REPO,
                          max_concurrent=max(8, parallel)),
        registry, log_dir=logs,
    )
    remote = McpServer(
        "http", McpServerSettings(url=f"http://127.0.0.1:{port}/mcp", max_concurrent=max(8, parallel)),
        registry, log_dir=logs,
    )
    tasks = [asyncio.ensure_future(stdio.run()), asyncio.ensure_future(remote.run())]
    try:
        await asyncio.wait_for(asyncio.gather(stdio.ready.wait(), remote.ready.wait()), 60)
        variants = {
            "built-in async tool": caller(registry, executor, "echo"),
            "MCP over stdio": caller(registry, executor, "stdio__echo"),
            "MCP over streamable HTTP": caller(registry, executor, "http__echo"),
        }
        for call in variants.values():  # warm up: first-call costs are not the steady state
            for _ in range(20):
                await call()
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(calls):
            for name, call in variants.items():
                samples[name].append(await timed(call))
        base = statistics.median(samples["built-in async tool"])
        print(f"One call at a time, {calls} calls each, interleaved:\n")
        print("| tool | p50 ms | p99 ms | p50 vs built-in |")
        print("| --- | --- | --- | --- |")
        for name, values in samples.items():
            print(row(name, values, base))
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(3):
            for name, call in variants.items():
                rates[name].append(await throughput(call, calls, parallel))
        print(f"\n{parallel} calls in flight, {calls} calls per round, best of 3 rounds:\n")
        print("| tool | calls/s |")
        print("| --- | --- |")
        for name, values in rates.items():
            print(f"| {name} | {max(values):.0f} |")
    finally:
        stdio.stop()
        remote.stop()
        await asyncio.wait(tasks, timeout=10)
        http.kill()
        http.wait()
        await executor.shutdown(grace=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--parallel", type=int, default=8)
    options = parser.parse_args()
    asyncio.run(main(options.calls, options.parallel))
