"""The fallback chain over real providers (real SDKs over HTTP) against the
fake model server with injected faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest

from bot.errors import ModelError, ModelUnavailable, StreamBrokenError
from bot.llm.base import Provider
from bot.llm.breaker import BreakerState, CircuitBreaker
from bot.llm.cache import ResponseCache
from bot.llm.chain import ChainPolicy, Endpoint, FallbackChain, Tier, trim_history
from bot.llm.mistral_provider import MistralProvider
from bot.llm.openai_provider import OpenAIProvider
from bot.llm.types import ChatMessage, ChatRequest, Completion, TextDelta
from tests.fakes.model_server import Fault, FakeModelServer, Reply, StreamFault, ToolCallSpec

REQUEST = ChatRequest(messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")))


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingSleep:
    """Stands in for asyncio.sleep so retry waits are observed, not waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer(models=()) as fake:
        yield fake


@pytest.fixture
async def backup() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer(models=()) as fake:
        yield fake


def openai(server: FakeModelServer | None, *, url: str | None = None, timeout: float = 5.0) -> Provider:
    base = url or (server.openai_base_url if server else "")
    return OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=base, timeout=timeout, max_connections=50)


def mistral(server: FakeModelServer) -> Provider:
    return MistralProvider(
        "mistral-small-latest", api_key="test-key", server_url=server.mistral_server_url, timeout=5.0, max_connections=50
    )


def endpoint(provider: Provider, tier: str, *, clock: ManualClock | None = None, failures: int = 3, weight: float = 1.0) -> Endpoint:
    breaker = CircuitBreaker(
        failure_threshold=failures, window=60, cooldown=30, hard_cooldown=300, clock=clock or ManualClock()
    )
    return Endpoint(provider, breaker, tier=tier, weight=weight)


def chain(*tiers: list[Endpoint], sleep: RecordingSleep | None = None, **policy: float) -> FallbackChain:
    return FallbackChain(
        [Tier(f"t{i}", eps) for i, eps in enumerate(tiers)],
        ChainPolicy(**policy),  # type: ignore[arg-type]
        sleep=sleep or RecordingSleep(),
    )


async def answer(fallback: FallbackChain, request: ChatRequest = REQUEST) -> tuple[str, Completion]:
    shown: list[str] = []
    async with aclosing(fallback.stream(request)) as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                shown.append(event.text)
            else:
                return "".join(shown), event
    raise AssertionError("no completion")


async def close_all(fallback: FallbackChain) -> None:
    for e in fallback.endpoints:
        await e.provider.aclose()


async def test_transient_errors_are_retried_then_fall_through(server: FakeModelServer) -> None:
    server.script(Fault(503), Fault(502), Fault(500), dialect="mistral")
    server.script(Reply(text="from the second tier"), dialect="openai")
    sleep = RecordingSleep()
    fallback = chain([endpoint(mistral(server), "a", failures=10)], [endpoint(openai(server), "b")], sleep=sleep)
    try:
        text, completion = await answer(fallback)
    finally:
        await close_all(fallback)
    assert text == "from the second tier"
    assert completion.endpoint == "t1/openai:gpt-4o-mini"
    assert len(server.chat_requests("mistral")) == 3  # max_attempts
    assert len(sleep.delays) == 2 and all(0 < d <= 4.0 for d in sleep.delays)
    stats = fallback.endpoints[0].snapshot()
    assert stats["errors"] == {"ModelTransientError": 1} and stats["retries"] == 2


async def test_retries_stop_at_the_time_budget(server: FakeModelServer, backup: FakeModelServer) -> None:
    server.script(*[Fault(503)] * 10)
    backup.script(Reply(text="ok"))
    fallback = chain(
        [endpoint(openai(server), "a", failures=100)],
        [endpoint(openai(backup), "b")],
        max_attempts=10,
        retry_budget=0.0,
    )
    try:
        text, _ = await answer(fallback)
    finally:
        await close_all(fallback)
    assert text == "ok" and len(server.chat_requests()) == 1


async def test_retry_after_is_honored_and_a_long_one_falls_through(server: FakeModelServer, backup: FakeModelServer) -> None:
    server.script(Fault(429, retry_after=2), Reply(text="after waiting"))
    sleep = RecordingSleep()
    fallback = chain([endpoint(openai(server), "a")], sleep=sleep)
    try:
        text, _ = await answer(fallback)
        assert text == "after waiting" and sleep.delays == [2.0]

        server.script(Fault(429, retry_after=120))
        backup.script(Reply(text="the other tier"))
        impatient = chain([endpoint(openai(server), "a")], [endpoint(openai(backup), "b")], sleep=sleep)
        text, _ = await answer(impatient)
        assert text == "the other tier" and sleep.delays == [2.0], "a 120 s Retry-After is not waited for"
        await close_all(impatient)
    finally:
        await close_all(fallback)


@pytest.mark.parametrize("status", [401, 404])
async def test_auth_and_not_found_fall_through_at_once_and_stay_skipped(
    server: FakeModelServer, backup: FakeModelServer, status: int
) -> None:
    server.script(Fault(status))
    fallback = chain([endpoint(openai(server), "a")], [endpoint(openai(backup), "b")])
    try:
        await answer(fallback)
        await answer(fallback)
    finally:
        await close_all(fallback)
    assert len(server.chat_requests()) == 1, "not retried, and skipped afterwards"
    assert fallback.endpoints[0].breaker.state is BreakerState.OPEN
    assert len(backup.chat_requests()) == 2


async def test_breaker_opens_skips_half_opens_and_closes(server: FakeModelServer, backup: FakeModelServer) -> None:
    clock = ManualClock()
    flaky = endpoint(openai(server), "a", clock=clock, failures=2)
    fallback = chain([flaky], [endpoint(openai(backup), "b")], max_attempts=1)
    server.script(Fault(500), Fault(500))
    try:
        await answer(fallback)
        assert flaky.breaker.state is BreakerState.CLOSED
        await answer(fallback)
        assert flaky.breaker.state is BreakerState.OPEN
        await answer(fallback)
        assert len(server.chat_requests()) == 2, "an open endpoint is skipped"

        clock.now += 31  # past the cool-down: one probe goes through
        assert flaky.breaker.state is BreakerState.HALF_OPEN
        server.script(Reply(text="probe ok"))
        text, _ = await answer(fallback)
        assert text == "probe ok" and flaky.breaker.state is BreakerState.CLOSED
    finally:
        await close_all(fallback)


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=1, window=10, cooldown=5, hard_cooldown=50, clock=clock)
    breaker.record_failure()
    assert not breaker.allow_request()
    clock.now += 5
    assert breaker.allow_request() and not breaker.allow_request()
    breaker.record_failure()  # the probe failed: open again for a full cool-down
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    assert not breaker.allow_request()
    clock.now += 1
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.allow_request() and breaker.allow_request()


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=2, window=10, cooldown=5, hard_cooldown=50, clock=clock)
    breaker.record_failure()
    clock.now += 11
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED


async def test_a_stream_that_dies_after_text_ends_honestly_without_failover(
    server: FakeModelServer, backup: FakeModelServer
) -> None:
    server.script(StreamFault(mode="drop", text_before="Half an answer"))
    fallback = chain([endpoint(openai(server), "a")], [endpoint(openai(backup), "b")])
    try:
        with pytest.raises(StreamBrokenError) as info:
            await answer(fallback)
    finally:
        await close_all(fallback)
    assert info.value.partial_text == "Half an answer"
    assert not backup.chat_requests(), "no failover once the user saw text"


async def test_stall_mid_stream_is_cut_by_the_idle_timeout(server: FakeModelServer) -> None:
    server.script(StreamFault(mode="stall", text_before="Thinking", seconds=10))
    fallback = chain([endpoint(openai(server), "a")], idle_timeout=0.3)
    try:
        with pytest.raises(StreamBrokenError) as info:
            await answer(fallback)
    finally:
        await close_all(fallback)
    assert info.value.partial_text == "Thinking"


async def test_hang_before_the_first_token_fails_over(server: FakeModelServer, backup: FakeModelServer) -> None:
    server.script(Reply(text="too late", delay=10))
    backup.script(Reply(text="on time"))
    fallback = chain([endpoint(openai(server), "a")], [endpoint(openai(backup), "b")], first_token_timeout=0.3, max_attempts=1)
    try:
        text, _ = await answer(fallback)
    finally:
        await close_all(fallback)
    assert text == "on time"


async def test_connection_refused_fails_over(backup: FakeModelServer) -> None:
    backup.script(Reply(text="second endpoint"))
    refused = openai(None, url=f"{FakeModelServer.refused_url()}/v1")
    fallback = chain([endpoint(refused, "a")], [endpoint(openai(backup), "b")])
    try:
        text, _ = await answer(fallback)
    finally:
        await close_all(fallback)
    assert text == "second endpoint"
    stats = fallback.endpoints[0].snapshot()
    assert stats["errors"] == {"ModelConnectError": 1}
    assert stats["retries"] == 1, "a refused connection is retried once, then the next tier answers"


async def test_context_length_trims_old_history_and_retries(server: FakeModelServer) -> None:
    history = []
    for i in range(4):
        history += [ChatMessage("user", f"question {i}"), ChatMessage("assistant", f"answer {i}")]
    request = ChatRequest(messages=(ChatMessage("system", "sys"), *history, ChatMessage("user", "now")))
    server.script(Fault(400, kind="context_length"), Reply(text="fits now"))
    fallback = chain([endpoint(mistral(server), "a")])
    try:
        text, _ = await answer(fallback, request)
    finally:
        await close_all(fallback)
    assert text == "fits now"
    first, second = server.chat_requests()
    assert len(second.messages) < len(first.messages)
    assert second.messages[0]["role"] == "system" and second.messages[1]["role"] == "user"
    assert second.messages[-1]["content"] == "now"


def test_trim_history_keeps_system_and_the_newest_turn() -> None:
    request = ChatRequest(messages=(ChatMessage("system", "s"), ChatMessage("user", "only")))
    assert trim_history(request) is None
    longer = ChatRequest(
        messages=(ChatMessage("system", "s"), ChatMessage("user", "a"), ChatMessage("assistant", "b"), ChatMessage("user", "c"))
    )
    trimmed = trim_history(longer)
    assert trimmed is not None and [m.content for m in trimmed.messages] == ["s", "c"]


async def test_balancing_prefers_the_least_busy_endpoint_by_weight(server: FakeModelServer, backup: FakeModelServer) -> None:
    for fake in (server, backup):
        fake.responder = lambda request: Reply(text="slow", delay=0.4)  # type: ignore[assignment, misc]
    heavy, light = endpoint(openai(server), "a", weight=3), endpoint(openai(backup), "a", weight=1)
    fallback = FallbackChain([Tier("a", [heavy, light])], ChainPolicy())
    try:
        await asyncio.gather(*(answer(fallback) for _ in range(8)))
    finally:
        await close_all(fallback)
    assert (len(server.chat_requests()), len(backup.chat_requests())) == (6, 2)
    assert heavy.in_flight == light.in_flight == 0


async def test_everything_down_raises_once_per_outage_to_the_observer(server: FakeModelServer) -> None:
    events: list[str] = []

    class Observer:
        def chain_unavailable(self, error: ModelUnavailable) -> None:
            events.append(f"down:{len(error.failures)}")

        def chain_recovered(self) -> None:
            events.append("up")

    server.script(Fault(500), Fault(500))
    fallback = chain([endpoint(openai(server), "a", failures=100)], max_attempts=1)
    fallback.set_observer(Observer())
    try:
        for _ in range(2):
            with pytest.raises(ModelUnavailable):
                await answer(fallback)
        await answer(fallback)
    finally:
        await close_all(fallback)
    assert events == ["down:1", "up"]


class RecordingObserver:
    def __init__(self) -> None:
        self.events: list[str] = []

    def chain_unavailable(self, error: ModelUnavailable) -> None:
        self.events.append("down")

    def chain_recovered(self) -> None:
        self.events.append("up")


async def test_a_refused_request_is_not_an_outage(server: FakeModelServer, backup: FakeModelServer) -> None:
    # Both endpoints are up; one refuses the payload, the other finds it too long.
    server.script(Fault(400, "unsupported parameter"))
    backup.script(Fault(400, kind="context_length"), Fault(400, kind="context_length"))
    fallback = chain([endpoint(openai(server), "a")], [endpoint(openai(backup), "b")], max_attempts=1)
    observer = RecordingObserver()
    fallback.set_observer(observer)
    try:
        with pytest.raises(ModelUnavailable):
            await answer(fallback)
        await answer(fallback)
    finally:
        await close_all(fallback)
    assert observer.events == [], "a refusal of one request neither alerts nor announces a recovery"


async def test_internal_calls_never_raise_the_outage_alert(server: FakeModelServer) -> None:
    server.script(Fault(500), Fault(500))
    fallback = chain([endpoint(openai(server), "a", failures=100)], max_attempts=1)
    observer = RecordingObserver()
    fallback.set_observer(observer)
    try:
        with pytest.raises(ModelUnavailable):
            await fallback.complete(REQUEST)  # a summary or an extraction: no user waits for it
        assert observer.events == []
        with pytest.raises(ModelUnavailable):
            await answer(fallback)  # a user's turn meets the same outage
        await answer(fallback)
    finally:
        await close_all(fallback)
    assert observer.events == ["down", "up"]


async def test_tool_calls_come_through_either_tier(server: FakeModelServer) -> None:
    server.script(Fault(503), dialect="mistral")
    server.script(Reply(tool_calls=[ToolCallSpec("calculate", {"expression": "6*7"})]), dialect="openai")
    fallback = chain([endpoint(mistral(server), "a")], [endpoint(openai(server), "b")], max_attempts=1)
    try:
        _, completion = await answer(fallback)
    finally:
        await close_all(fallback)
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [("calculate", '{"expression": "6*7"}')]


async def test_cache_answers_identical_deterministic_calls(server: FakeModelServer) -> None:
    fallback = FallbackChain(
        [Tier("a", [endpoint(openai(server), "a")])], ChainPolicy(), cache=ResponseCache(8, ttl=60)
    )
    deterministic = ChatRequest(messages=REQUEST.messages, temperature=0)
    try:
        first = await fallback.complete(deterministic, cache=True)
        second = await fallback.complete(deterministic, cache=True)
        await answer(fallback, deterministic)  # a chat turn is never served from the cache by default
        await fallback.complete(ChatRequest(messages=REQUEST.messages, temperature=0.7), cache=True)
    finally:
        await close_all(fallback)
    assert first == second
    assert len(server.chat_requests()) == 3


def test_cache_entries_expire() -> None:
    clock = ManualClock()
    cache = ResponseCache(2, ttl=10, clock=clock)
    cache.put(REQUEST, Completion("x"))
    assert cache.get(REQUEST) == Completion("x")
    clock.now += 11
    assert cache.get(REQUEST) is None


async def test_only_our_errors_leave_the_chain(server: FakeModelServer) -> None:
    server.script(StreamFault(mode="malformed"))
    fallback = chain([endpoint(mistral(server), "a")], max_attempts=1)
    try:
        with pytest.raises(ModelError):
            await answer(fallback)
    finally:
        await close_all(fallback)


async def test_one_request_counts_once_against_the_breaker(server: FakeModelServer) -> None:
    server.script(Fault(500), Fault(500), Fault(500), Reply(text="fine again"))
    only = endpoint(openai(server), "a", failures=2)
    fallback = chain([only], max_attempts=3)
    try:
        with pytest.raises(ModelUnavailable):
            await answer(fallback)
        assert only.breaker.state is BreakerState.CLOSED, "three attempts of one request are one failure"
        text, _ = await answer(fallback)
    finally:
        await close_all(fallback)
    assert text == "fine again"


async def test_when_every_breaker_is_open_the_soonest_is_tried_anyway(server: FakeModelServer) -> None:
    clock = ManualClock()
    only = endpoint(openai(server), "a", clock=clock, failures=1)
    fallback = chain([only], max_attempts=1)
    server.script(Fault(500), Reply(text="recovered"))
    try:
        with pytest.raises(ModelUnavailable):
            await answer(fallback)
        assert only.breaker.state is BreakerState.OPEN
        text, _ = await answer(fallback)  # still inside the cool-down
    finally:
        await close_all(fallback)
    assert text == "recovered", "a single endpoint is not left untried for the whole cool-down"
    assert only.breaker.state is BreakerState.CLOSED
