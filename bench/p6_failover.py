"""P6: what the fallback chain adds when the first endpoint is down.

Three ways to get the same answer from the second endpoint (the fake model
server answering at once), side by side in one run:
  direct       the second endpoint's provider, no chain
  failover     the chain, first endpoint refusing connections, breaker closed
               (a fresh chain each time: the cost of discovering the outage)
  breaker open the chain, first endpoint's breaker already open
The figures are the medians of repeated runs minus the direct median."""

from __future__ import annotations

import asyncio
import statistics
import time
from contextlib import aclosing

from bench.harness import Row
from bot.llm.base import Provider
from bot.llm.breaker import BreakerState, CircuitBreaker
from bot.llm.chain import ChainPolicy, Endpoint, FallbackChain, Tier
from bot.llm.openai_provider import OpenAIProvider
from bot.llm.types import ChatMessage, ChatRequest, Completion
from tests.fakes.model_server import FakeModelServer

REQUEST = ChatRequest(messages=(ChatMessage("system", "s"), ChatMessage("user", "ping")))
RUNS = 30
# The shipped defaults, so the figure is what a user of the bot gets.
POLICY = ChainPolicy()


def _provider(base_url: str) -> Provider:
    return OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=base_url, timeout=10, max_connections=10)


def _breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, window=60, cooldown=300, hard_cooldown=300)


async def _complete(source: Provider | FallbackChain) -> float:
    started = time.perf_counter()
    async with aclosing(source.stream(REQUEST)) as stream:
        async for event in stream:
            if isinstance(event, Completion):
                break
    return time.perf_counter() - started


def _chain(dead: Provider, alive: Provider) -> FallbackChain:
    return FallbackChain(
        [Tier("first", [Endpoint(dead, _breaker(), tier="first")]), Tier("second", [Endpoint(alive, _breaker(), tier="second")])],
        POLICY,
    )


async def measure() -> dict[str, list[float]]:
    async with FakeModelServer(models=()) as fake:
        alive = _provider(fake.openai_base_url)
        dead = _provider(f"{FakeModelServer.refused_url()}/v1")
        open_chain = _chain(dead, alive)
        while open_chain.endpoints[0].breaker.state is not BreakerState.OPEN:
            await _complete(open_chain)
        timings: dict[str, list[float]] = {"direct": [], "failover": [], "breaker open": []}
        for _ in range(3):  # warm connections and SDK code paths
            await _complete(alive)
        for _ in range(RUNS):
            # Interleaved, so a noisy moment on the machine hits all three alike.
            timings["direct"].append(await _complete(alive))
            timings["failover"].append(await _complete(_chain(dead, alive)))
            timings["breaker open"].append(await _complete(open_chain))
        await alive.aclose()
        await dead.aclose()
        return timings


async def run() -> list[Row]:
    timings = await measure()
    direct = statistics.median(timings["direct"])
    failover = statistics.median(timings["failover"]) - direct
    skipped = statistics.median(timings["breaker open"]) - direct
    return [
        Row("P6", "openai", "direct call to the 2nd endpoint, median", f"{direct * 1000:.1f} ms"),
        Row("P6", "openai", "added by the first failover (refused)", f"{failover * 1000:.0f} ms", "<= 1500 ms",
            "PASS" if failover <= 1.5 else "FAIL"),
        Row("P6", "openai", "added with the breaker open", f"{skipped * 1000:.2f} ms", "<= 10 ms",
            "PASS" if skipped <= 0.010 else "FAIL"),
    ]


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)  # the failovers log a warning each
    for row in asyncio.run(run()):
        print(f"| {row.bench} | {row.measure} | {row.value} | {row.budget} | {row.result} |")
