"""Both providers against the fake model server, through the real SDKs:
streaming, tool calls, usage, and SDK errors translated into ours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.errors import (
    ContextLengthError,
    ModelAuthError,
    ModelRateLimited,
    ModelTransientError,
    StreamBrokenError,
)
from bot.llm.base import Provider
from bot.llm.mistral_provider import MistralProvider
from bot.llm.openai_provider import OpenAIProvider
from bot.llm.types import ChatMessage, ChatRequest, Completion, TextDelta, ToolSpec
from tests.fakes.model_server import Fault, FakeModelServer, Reply, StreamFault, ToolCallSpec

REQUEST = ChatRequest(messages=(ChatMessage("system", "be brief"), ChatMessage("user", "hello")))


def make_provider(dialect: str, server: FakeModelServer, *, key: str = "test-key", timeout: float = 5.0) -> Provider:
    if dialect == "mistral":
        return MistralProvider(
            "mistral-small-latest", api_key=key, server_url=server.mistral_server_url, timeout=timeout, max_connections=10
        )
    return OpenAIProvider("gpt-4o-mini", api_key=key, base_url=server.openai_base_url, timeout=timeout, max_connections=10)


@pytest.fixture
async def server() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake


@pytest.fixture(params=["mistral", "openai"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def collect(provider: Provider, request: ChatRequest = REQUEST) -> tuple[list[str], Completion]:
    deltas: list[str] = []
    completion: Completion | None = None
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            completion = event
    assert completion is not None
    return deltas, completion


async def test_streams_text_and_usage(server: FakeModelServer, dialect: str) -> None:
    server.script(Reply(text="Hello there, friend", chunks=["Hello", " there,", " friend"], usage=(11, 3)))
    provider = make_provider(dialect, server)
    try:
        deltas, completion = await collect(provider)
    finally:
        await provider.aclose()
    assert deltas == ["Hello", " there,", " friend"]
    assert completion.text == "Hello there, friend"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    sent = server.chat_requests(dialect)[0].body
    assert sent["stream"] is True
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085", "\x0b", "\x1c"], ids=["LS", "PS", "NEL", "VT", "FS"])
async def test_line_separators_inside_the_answer_stay_in_the_answer(
    server: FakeModelServer, dialect: str, separator: str
) -> None:
    # The fake writes raw UTF-8 JSON, as Python-based servers do: these
    # characters reach the stream unescaped. Only CR and LF end an event's line.
    text = f"one{separator}two"
    server.script(Reply(text=text, chunks=[f"one{separator}", "two"]))
    provider = make_provider(dialect, server)
    try:
        deltas, completion = await collect(provider)
    finally:
        await provider.aclose()
    assert deltas == [f"one{separator}", "two"] and completion.text == text


async def test_event_stream_lines_end_at_cr_lf_and_crlf_even_across_pieces() -> None:
    from bot.llm.base import event_stream_lines

    async def pieces(*texts: str) -> AsyncIterator[str]:
        for text in texts:
            yield text

    async def lines(*texts: str) -> list[str]:
        return [line async for line in event_stream_lines(pieces(*texts))]

    assert await lines("data: a\r", "\ndata: b\n\n") == ["data: a", "data: b", ""]
    assert await lines("data: a\rdata: b\r\n", "", "data: c") == ["data: a", "data: b", "data: c"]
    assert await lines("da", "ta: x\u2028y\n") == ["data: x\u2028y"]
    assert await lines("a\r", "\r", "\nb\n") == ["a", "", "b"]


async def test_a_finished_stream_leaves_its_connection_for_the_next_request(
    server: FakeModelServer, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read to its end after [DONE], a stream's connection goes back to the
    pool: the next turn's request does not wait for a new TCP connection."""
    connects = 0
    real = asyncio.BaseEventLoop.create_connection

    async def counting(self: asyncio.BaseEventLoop, *args: Any, **kwargs: Any) -> Any:
        nonlocal connects
        connects += 1
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", counting)
    server.script(Reply(text="one"), Reply(text="two"), Reply(text="three"))
    provider = make_provider(dialect, server)
    try:
        answers = [(await collect(provider))[1].text for _ in range(3)]
    finally:
        await provider.aclose()
    assert answers == ["one", "two", "three"]
    assert connects == 1


async def test_what_follows_done_never_holds_up_or_breaks_the_answer() -> None:
    from bot.llm.base import DRAIN_AFTER_DONE, sse_chunks

    async def stalls_after_done() -> AsyncIterator[str]:
        yield 'data: {"choices": [{"delta": {"content": "hi"}}]}'
        yield "data: [DONE]"
        await asyncio.sleep(30)
        yield "data: never read"

    async def breaks_after_done() -> AsyncIterator[str]:
        yield 'data: {"choices": [{"delta": {"content": "hi"}}]}'
        yield "data: [DONE]"
        raise ConnectionResetError("the server cut the connection")

    for lines in (stalls_after_done(), breaks_after_done()):
        started = asyncio.get_running_loop().time()
        chunks = [chunk async for chunk in sse_chunks(lines)]
        assert chunks == [{"choices": [{"delta": {"content": "hi"}}]}]
        assert asyncio.get_running_loop().time() - started < DRAIN_AFTER_DONE + 1.0


async def test_tool_calls_are_parsed_from_the_stream(server: FakeModelServer, dialect: str) -> None:
    server.script(
        Reply(tool_calls=[ToolCallSpec("current_time", {"timezone": "Europe/Moscow"}), ToolCallSpec("calculate", {"expression": "2+2"})])
    )
    provider = make_provider(dialect, server)
    tool = ToolSpec("current_time", "The time", {"type": "object", "properties": {"timezone": {"type": "string"}}})
    try:
        _, completion = await collect(provider, ChatRequest(messages=REQUEST.messages, tools=(tool,)))
    finally:
        await provider.aclose()
    assert [(c.name, c.arguments.replace(" ", "")) for c in completion.tool_calls] == [
        ("current_time", '{"timezone":"Europe/Moscow"}'),
        ("calculate", '{"expression":"2+2"}'),
    ]
    assert all(c.id for c in completion.tool_calls)
    assert server.chat_requests(dialect)[0].body["tools"][0]["function"]["name"] == "current_time"


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault(401), ModelAuthError),
        (Fault(429, retry_after=7), ModelRateLimited),
        (Fault(503), ModelTransientError),
        (Fault(400, kind="context_length"), ContextLengthError),
    ],
)
async def test_http_errors_are_classified(server: FakeModelServer, dialect: str, fault: Fault, expected: type) -> None:
    server.script(fault)
    provider = make_provider(dialect, server)
    try:
        with pytest.raises(expected) as info:
            await collect(provider)
    finally:
        await provider.aclose()
    if isinstance(info.value, ModelRateLimited):
        assert info.value.retry_after == 7


async def test_wrong_key_is_an_auth_error(server: FakeModelServer, dialect: str) -> None:
    provider = make_provider(dialect, server, key="wrong")
    try:
        with pytest.raises(ModelAuthError):
            await collect(provider)
    finally:
        await provider.aclose()


@pytest.mark.parametrize("mode", ["drop", "malformed"])
async def test_stream_broken_after_text_keeps_the_partial_answer(server: FakeModelServer, dialect: str, mode: str) -> None:
    server.script(StreamFault(mode=mode, text_before="The answer is"))  # type: ignore[arg-type]
    provider = make_provider(dialect, server)
    try:
        with pytest.raises(StreamBrokenError) as info:
            await collect(provider)
    finally:
        await provider.aclose()
    assert info.value.partial_text == "The answer is"


async def test_hang_before_first_byte_is_transient(server: FakeModelServer, dialect: str) -> None:
    server.script(Reply(text="late", delay=5))
    provider = make_provider(dialect, server, timeout=0.3)
    try:
        with pytest.raises(ModelTransientError):
            await collect(provider)
    finally:
        await provider.aclose()


async def test_connection_refused_is_transient(dialect: str) -> None:
    url = FakeModelServer.refused_url()
    provider: Provider
    if dialect == "mistral":
        provider = MistralProvider("m", api_key="k", server_url=url, timeout=2, max_connections=2)
    else:
        provider = OpenAIProvider("m", api_key="k", base_url=f"{url}/v1", timeout=2, max_connections=2)
    try:
        with pytest.raises(ModelTransientError):
            await collect(provider)
    finally:
        await provider.aclose()


async def test_list_models(server: FakeModelServer, dialect: str) -> None:
    provider = make_provider(dialect, server)
    try:
        assert "mistral-small-latest" in await provider.list_models()
    finally:
        await provider.aclose()
