"""Tool benchmarks: executor overhead per call, and one turn with 8 tool calls
of 200 ms each, parallel (8 workers) against sequential (1 worker).

    .venv/bin/python -m bench.tools            # about 15 s
    .venv/bin/python -m bench.tools --calls 500 --repeats 2

The turn runs the real ToolCallManager and the real OpenAI SDK against the
fake model server on 127.0.0.1 (model time near zero), so the wall time is
tools plus the bot's own work. Bounded: every step has a time limit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import statistics
import time
from datetime import datetime, timezone

from bench.harness import percentile
from bot.auth import Role
from bot.context import ChatType, RequestContext
from bot.llm.openai_provider import OpenAIProvider
from bot.llm.types import ChatMessage, ChatRequest, Completion
from bot.tools.executor import ToolExecutor
from bot.tools.manager import ToolCallManager, ToolLoopConfig
from bot.tools.registry import ToolRegistry
from tests.fakes.model_server import FakeModelServer, Reply, ToolCallSpec

LIMIT_SECONDS = 50.0
TOOL_SECONDS = 0.2
CALLS_PER_TURN = 8


def _ctx() -> RequestContext:
    return RequestContext(
        user_id=1, chat_id=1, chat_type=ChatType.PRIVATE, role=Role.USER, language="en",
        timezone="UTC", user_name="bench", request_id="bench", received_at=datetime.now(timezone.utc),
    )


def _noop() -> str:
    return "ok"


async def _async_noop() -> str:
    return "ok"


async def executor_overhead(calls: int) -> list[tuple[str, str]]:
    """Per-call cost of going through the executor, beside calling directly."""
    pool = ToolExecutor(workers=8, queue_size=64, timeout=10, per_user=8)
    rows: list[tuple[str, str]] = []
    for label, func, is_async in (("sync tool (thread pool)", _noop, False), ("async tool (on the loop)", _async_noop, True)):
        for _ in range(50):  # warm up threads and caches
            await pool.run("noop", 1, func, is_async=is_async)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            await pool.run("noop", 1, func, is_async=is_async)
            samples.append((time.perf_counter() - start) * 1e6)
        rows.append(
            (f"executor overhead, {label}", f"p50 {percentile(samples, 50):.0f} µs, p99 {percentile(samples, 99):.0f} µs")
        )
    direct = []
    for _ in range(calls):
        start = time.perf_counter()
        _noop()
        direct.append((time.perf_counter() - start) * 1e6)
    rows.append(("direct call of the same function", f"p50 {percentile(direct, 50):.1f} µs"))
    await pool.shutdown()
    return rows


async def one_turn(model: FakeModelServer, workers: int) -> float:
    pool = ToolExecutor(workers=workers, queue_size=CALLS_PER_TURN, timeout=10, per_user=CALLS_PER_TURN)
    registry = ToolRegistry()

    def slow_lookup(item: int) -> str:
        """Look something up (takes 200 ms)."""
        time.sleep(TOOL_SECONDS)
        return f"item {item}"

    registry.register(slow_lookup)
    models = OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=model.openai_base_url, timeout=10, max_connections=4)
    manager = ToolCallManager(models=models, registry=registry, executor=pool, events=None, config=ToolLoopConfig())
    model.script(
        Reply(tool_calls=[ToolCallSpec("slow_lookup", {"item": i}) for i in range(CALLS_PER_TURN)]),
        Reply(text="done"),
    )
    request = ChatRequest(messages=(ChatMessage("user", "look up eight things"),))
    start = time.perf_counter()
    async for event in manager.stream(_ctx(), request):
        if isinstance(event, Completion):
            assert event.text == "done"
    elapsed = time.perf_counter() - start
    await pool.shutdown()
    await models.aclose()
    return elapsed


async def parallel_turn(repeats: int) -> list[tuple[str, str]]:
    async with FakeModelServer() as model:
        await one_turn(model, CALLS_PER_TURN)  # warm up the SDK and the connection
        parallel = [await one_turn(model, CALLS_PER_TURN) for _ in range(repeats)]
        sequential = [await one_turn(model, 1) for _ in range(repeats)]
    p, s = statistics.median(parallel), statistics.median(sequential)
    ideal = TOOL_SECONDS
    return [
        (f"turn with {CALLS_PER_TURN} tool calls of 200 ms, parallel (8 workers)", f"{p * 1000:.0f} ms (median of {repeats})"),
        ("same turn, sequential (1 worker)", f"{s * 1000:.0f} ms"),
        ("parallel / sequential", f"{p / s:.3f} (ideal 1/8 = 0.125)"),
        ("parallel overhead above one 200 ms call", f"{(p - ideal) * 1000:.0f} ms (two model round trips included)"),
    ]


async def main(calls: int, repeats: int) -> None:
    logging.disable(logging.WARNING)
    rows = await asyncio.wait_for(executor_overhead(calls), LIMIT_SECONDS / 2)
    rows += await asyncio.wait_for(parallel_turn(repeats), LIMIT_SECONDS / 2)
    print(f"Tools benchmark, {datetime.now(timezone.utc):%Y-%m-%d}, Python {platform.python_version()}, "
          f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores\n")
    print("| measure | value |")
    print("| --- | --- |")
    for measure, value in rows:
        print(f"| {measure} | {value} |")


def run() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per overhead measurement (default 2000)")
    parser.add_argument("--repeats", type=int, default=3, help="turns per variant (default 3)")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.repeats))


if __name__ == "__main__":
    run()
