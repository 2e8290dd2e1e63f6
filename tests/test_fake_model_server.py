"""The fake model server, driven by the real openai and mistralai SDKs.

These tests pin down what each SDK sees for each scripted behaviour, so the
bot's fallback logic can rely on the same exception classes in its own tests.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import ResponseValidationError, SDKError
from openai import AsyncOpenAI

from tests.fakes.model_server import (
    FakeModelServer,
    Fault,
    Reply,
    Request,
    StreamFault,
    ToolCallSpec,
)
from tests.fakes.transcriptions import Transcript, TranscriptionFault, wav_bytes

OPENAI_MODEL = "gpt-4o-mini"
MISTRAL_MODEL = "mistral-small-latest"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello"},
]
WEATHER = ToolCallSpec("get_weather", {"city": "Санкт-Петербург", "days": 3})
REMIND = ToolCallSpec("set_reminder", {"text": "tea", "in_minutes": 5})


@pytest.fixture
async def fake() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


# Building an httpx2 client loads the CA bundle (~40 ms); one shared TLS
# context keeps the suite fast. The fake is plain HTTP, so nothing else changes.
_TLS = ssl.create_default_context()


def make_openai(base_url: str, *, key: str = "test-key", timeout: float = 5.0) -> AsyncOpenAI:
    http_client = openai.DefaultAsyncHttpx2Client(verify=_TLS)
    return AsyncOpenAI(
        api_key=key, base_url=base_url, max_retries=0, timeout=timeout, http_client=http_client
    )


@asynccontextmanager
async def make_mistral(
    server_url: str, *, key: str = "test-key", timeout: float = 5.0
) -> AsyncIterator[Mistral]:
    # The SDK builds both a sync and an async client; it leaves supplied
    # clients open, so they are closed here.
    sync_client = httpx2.Client(verify=_TLS, follow_redirects=True)
    async_client = httpx2.AsyncClient(verify=_TLS, follow_redirects=True)
    try:
        yield Mistral(
            api_key=key,
            server_url=server_url,
            timeout_ms=int(timeout * 1000),
            client=sync_client,
            async_client=async_client,
        )
    finally:
        await async_client.aclose()
        sync_client.close()


@pytest.fixture
async def oai(fake: FakeModelServer) -> AsyncIterator[AsyncOpenAI]:
    client = make_openai(fake.openai_base_url)
    yield client
    await client.close()


@pytest.fixture
async def mistral(fake: FakeModelServer) -> AsyncIterator[Mistral]:
    async with make_mistral(fake.mistral_server_url) as client:
        yield client


async def openai_stream_text(client: AsyncOpenAI, received: list[str]) -> None:
    stream = await client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received.append(chunk.choices[0].delta.content)


async def mistral_stream_text(client: Mistral, received: list[str]) -> None:
    stream = await client.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
    async for event in stream:
        content = event.data.choices[0].delta.content
        if isinstance(content, str) and content:
            received.append(content)


# --------------------------------------------------------------------------
# OpenAI dialect
# --------------------------------------------------------------------------


async def test_openai_complete_with_usage(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Reply(text="Hello!", usage=(12, 3)))
    result = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert result.choices[0].message.content == "Hello!"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (12, 3, 15)
    [request] = fake.chat_requests("openai")
    assert request.body["messages"] == MESSAGES
    assert request.headers["authorization"] == "Bearer test-key"


async def test_openai_stream_reassembles_text_and_usage(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    text = "Привет, мир! Streaming works 🙂 fine."
    fake.script(Reply(text=text))
    stream = await oai.chat.completions.create(
        model=OPENAI_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    pieces: list[str] = []
    finish: list[str | None] = []
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []  # usage arrives in its own final chunk
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish.append(choice.finish_reason)
    assert "".join(pieces) == text
    assert len([p for p in pieces if p]) > 3
    assert finish[-1] == "stop"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


async def test_openai_stream_has_no_usage_unless_asked(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Reply(text="a b c", chunks=["a", " b", " c"]))
    stream = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content] == ["a", " b", " c"]
    assert all(c.usage is None for c in chunks)


async def test_openai_streamed_tool_calls_assemble_by_index(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Reply(tool_calls=[WEATHER, ToolCallSpec(REMIND.name, REMIND.arguments, id="call_fixed")]))
    stream = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    calls: dict[int, dict[str, Any]] = {}
    argument_pieces = 0
    finish = None
    async for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["name"] = delta.function.name or call["name"]
                if delta.function.arguments:
                    call["arguments"] += delta.function.arguments
                    argument_pieces += 1
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "set_reminder"]
    assert json.loads(calls[0]["arguments"]) == WEATHER.arguments
    assert json.loads(calls[1]["arguments"]) == REMIND.arguments
    assert calls[0]["id"].startswith("call_") and calls[1]["id"] == "call_fixed"
    assert argument_pieces > 2  # arguments really were split across chunks


async def test_openai_non_streamed_tool_call(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Reply(tool_calls=[WEATHER]))
    result = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    message = result.choices[0].message
    assert result.choices[0].finish_reason == "tool_calls"
    assert message.content is None and message.tool_calls is not None
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == WEATHER.arguments


async def test_openai_wrong_key_is_authentication_error(fake: FakeModelServer) -> None:
    fake.script(Reply(text="never sent"))
    client = make_openai(fake.openai_base_url, key="wrong-key")
    try:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    finally:
        await client.close()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert fake.pending_steps == 1  # auth fails before the script is consulted


async def test_openai_429_exposes_retry_after(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Fault(429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as caught:
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.code == "rate_limit_exceeded"


async def test_openai_500_is_internal_server_error(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Fault(500))
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)


async def test_openai_context_length_error(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(Fault(400, kind="context_length"))
    with pytest.raises(openai.BadRequestError) as caught:
        await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length" in caught.value.message


async def test_openai_unknown_model_is_not_found(oai: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await oai.chat.completions.create(model="gpt-nope", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


async def test_openai_hang_before_first_byte_times_out(fake: FakeModelServer) -> None:
    fake.script(Reply(text="late", delay=30))
    client = make_openai(fake.openai_base_url, timeout=0.1)
    try:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES, stream=True)
    finally:
        await client.close()


async def test_openai_stall_mid_stream_times_out_after_text(fake: FakeModelServer) -> None:
    fake.script(StreamFault("stall", text_before="Hello there", seconds=30))
    client = make_openai(fake.openai_base_url, timeout=0.3)
    received: list[str] = []
    try:
        with pytest.raises(openai.APITimeoutError):
            await openai_stream_text(client, received)
    finally:
        await client.close()
    assert "".join(received) == "Hello there"


async def test_openai_drop_mid_stream_is_connection_error(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(StreamFault("drop", text_before="Partial answer"))
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        await openai_stream_text(oai, received)
    assert "".join(received) == "Partial answer"


async def test_openai_malformed_chunk_raises(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.script(StreamFault("malformed", text_before="Partial"))
    received: list[str] = []
    # The SDK does not wrap this: json.JSONDecodeError (a ValueError) escapes.
    with pytest.raises(json.JSONDecodeError):
        await openai_stream_text(oai, received)
    assert "".join(received) == "Partial"


async def test_openai_models_list(oai: AsyncOpenAI) -> None:
    page = await oai.models.list()
    assert [model.id for model in page.data] == ["mistral-small-latest", "gpt-4o-mini"]


async def test_openai_refused_connection() -> None:
    client = make_openai(f"{FakeModelServer.refused_url()}/openai/v1")
    try:
        with pytest.raises(openai.APIConnectionError):
            await client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    finally:
        await client.close()


# --------------------------------------------------------------------------
# Mistral dialect
# --------------------------------------------------------------------------


async def test_mistral_complete_with_usage(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(Reply(text="Bonjour !", usage=(20, 4)))
    result = await mistral.chat.complete_async(model=MISTRAL_MODEL, messages=MESSAGES)
    assert result.choices[0].message is not None
    assert result.choices[0].message.content == "Bonjour !"
    assert result.choices[0].finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (20, 4, 24)
    [request] = fake.chat_requests("mistral")
    assert request.path == "/mistral/v1/chat/completions" and not request.stream


async def test_mistral_stream_reassembles_text_and_usage(fake: FakeModelServer, mistral: Mistral) -> None:
    text = "Привет! Streaming through the Mistral SDK."
    fake.script(Reply(text=text))
    stream = await mistral.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
    events = [event async for event in stream]
    pieces = [e.data.choices[0].delta.content for e in events]
    assert "".join(p for p in pieces if isinstance(p, str)) == text
    last = events[-1].data
    # Mistral puts finish_reason and usage on the last content chunk.
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None and last.usage.total_tokens > 0
    assert all(e.data.usage is None for e in events[:-1])
    assert fake.chat_requests("mistral")[0].stream


async def test_mistral_streamed_tool_calls_arrive_whole(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(Reply(tool_calls=[WEATHER, REMIND]))
    stream = await mistral.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
    calls = []
    finish = None
    async for event in stream:
        choice = event.data.choices[0]
        finish = choice.finish_reason or finish
        if isinstance(choice.delta.tool_calls, list):
            calls.extend(choice.delta.tool_calls)
    assert finish == "tool_calls"
    assert [(c.index, c.function.name) for c in calls] == [(0, "get_weather"), (1, "set_reminder")]
    assert all(isinstance(c.function.arguments, str) for c in calls)
    assert json.loads(str(calls[0].function.arguments)) == WEATHER.arguments
    assert all(c.type == "function" and c.id and len(c.id) == 9 for c in calls)


async def test_mistral_non_streamed_tool_call(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(Reply(tool_calls=[WEATHER]))
    result = await mistral.chat.complete_async(model=MISTRAL_MODEL, messages=MESSAGES)
    message = result.choices[0].message
    assert result.choices[0].finish_reason == "tool_calls"
    assert message is not None and isinstance(message.tool_calls, list)
    assert json.loads(str(message.tool_calls[0].function.arguments)) == WEATHER.arguments


async def test_mistral_wrong_key_is_sdk_error_401(fake: FakeModelServer) -> None:
    async with make_mistral(fake.mistral_server_url, key="wrong-key") as client:
        with pytest.raises(SDKError) as caught:
            await client.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
    assert caught.value.status_code == 401
    assert json.loads(caught.value.body) == {"detail": "Unauthorized"}


async def test_mistral_429_exposes_retry_after(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(Fault(429, retry_after=1.5))
    with pytest.raises(SDKError) as caught:
        await mistral.chat.complete_async(model=MISTRAL_MODEL, messages=MESSAGES)
    assert caught.value.status_code == 429
    assert caught.value.headers["retry-after"] == "1.5"
    assert json.loads(caught.value.body)["type"] == "rate_limited"


async def test_mistral_500_is_sdk_error(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(Fault(503))
    with pytest.raises(SDKError) as caught:
        await mistral.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503


async def test_mistral_context_length_error(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(Fault(400, kind="context_length"))
    with pytest.raises(SDKError) as caught:
        await mistral.chat.complete_async(model=MISTRAL_MODEL, messages=MESSAGES)
    body = json.loads(caught.value.body)
    assert caught.value.status_code == 400
    assert body["object"] == "error" and body["type"] == "invalid_request_error"
    assert "too large for model with 32768 maximum context length" in body["message"]


async def test_mistral_unknown_model_is_400(mistral: Mistral) -> None:
    with pytest.raises(SDKError) as caught:
        await mistral.chat.complete_async(model="mistral-nope", messages=MESSAGES)
    assert caught.value.status_code == 400
    assert json.loads(caught.value.body)["message"] == "Invalid model: mistral-nope"


async def test_mistral_hang_before_first_byte_times_out(fake: FakeModelServer) -> None:
    fake.script(Reply(text="late", delay=30))
    async with make_mistral(fake.mistral_server_url, timeout=0.1) as client:
        # The Mistral SDK does not wrap transport errors: raw httpx2 exceptions.
        with pytest.raises(httpx2.TimeoutException):
            await client.chat.stream_async(model=MISTRAL_MODEL, messages=MESSAGES)


async def test_mistral_stall_mid_stream_times_out_after_text(fake: FakeModelServer) -> None:
    fake.script(StreamFault("stall", text_before="Hello there", seconds=30))
    received: list[str] = []
    async with make_mistral(fake.mistral_server_url, timeout=0.3) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await mistral_stream_text(client, received)
    assert "".join(received) == "Hello there"


async def test_mistral_drop_mid_stream_is_protocol_error(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(StreamFault("drop", text_before="Partial answer"))
    received: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        await mistral_stream_text(mistral, received)
    assert "".join(received) == "Partial answer"


async def test_mistral_malformed_chunk_raises(fake: FakeModelServer, mistral: Mistral) -> None:
    fake.script(StreamFault("malformed", text_before="Partial"))
    received: list[str] = []
    with pytest.raises(ResponseValidationError):
        await mistral_stream_text(mistral, received)
    assert "".join(received) == "Partial"


async def test_mistral_models_list(fake: FakeModelServer, mistral: Mistral) -> None:
    listing = await mistral.models.list_async()
    assert [getattr(card, "id", None) for card in listing.data or []] == list(fake.models)
    assert fake.requests[-1].path == "/mistral/v1/models"


async def test_mistral_refused_connection() -> None:
    async with make_mistral(f"{FakeModelServer.refused_url()}/mistral") as client:
        with pytest.raises(httpx2.ConnectError):
            await client.chat.complete_async(model=MISTRAL_MODEL, messages=MESSAGES)


# --------------------------------------------------------------------------
# Scripting, observation and shutdown
# --------------------------------------------------------------------------


async def test_script_by_dialect_and_responder(fake: FakeModelServer, oai: AsyncOpenAI, mistral: Mistral) -> None:
    fake.script(Reply(text="for mistral"), dialect="mistral")
    fake.script(Reply(text="for anyone"))
    first = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert first.choices[0].message.content == "for anyone"
    second = await mistral.chat.complete_async(model=MISTRAL_MODEL, messages=MESSAGES)
    assert second.choices[0].message is not None
    assert second.choices[0].message.content == "for mistral"
    echoed = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert echoed.choices[0].message.content == "echo: Say hello"

    def shout(request: Request) -> Reply:
        return Reply(text=request.last_user_text.upper())

    fake.responder = shout
    shouted = await oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
    assert shouted.choices[0].message.content == "SAY HELLO"


async def test_concurrency_is_observed(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.responder = lambda request: Reply(text="ok", delay=0.2)
    calls = [
        asyncio.create_task(oai.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES))
        for _ in range(8)
    ]
    await fake.wait_requests(8, timeout=5)
    assert fake.in_flight == 8
    results = await asyncio.gather(*calls)
    assert all(r.choices[0].message.content == "ok" for r in results)
    assert fake.max_in_flight == 8 and fake.in_flight == 0


async def test_wait_requests_times_out_with_a_message(fake: FakeModelServer) -> None:
    with pytest.raises(TimeoutError, match="expected 1 chat requests, got 0"):
        await fake.wait_requests(1, timeout=0.05)


async def test_stop_does_not_hang_on_open_stall() -> None:
    server = FakeModelServer()
    await server.start()
    server.script(StreamFault("stall", text_before="Hi", seconds=60))
    client = make_openai(server.openai_base_url, timeout=60)
    received: list[str] = []
    reader = asyncio.create_task(openai_stream_text(client, received))
    try:
        await server.wait_requests(1)
        while not received:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(server.stop(), timeout=2)
        # The client sees the connection die instead of waiting a minute.
        with pytest.raises(openai.APIConnectionError):
            await asyncio.wait_for(reader, timeout=2)
    finally:
        reader.cancel()
        await client.close()


# --------------------------------------------------------------------------
# Audio transcriptions (OpenAI dialect)
# --------------------------------------------------------------------------


async def transcribe(client: AsyncOpenAI, data: bytes, name: str = "note.wav", **options: Any) -> Any:
    return await client.audio.transcriptions.create(model="whisper-1", file=(name, data, "audio/wav"), **options)


async def test_transcription_answers_the_script_and_records_the_upload(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    audio = wav_bytes(0.5)
    fake.transcriptions.script(Transcript("Привет, мир"))
    result = await transcribe(oai, audio, language="ru")
    assert result.text == "Привет, мир"
    [request] = fake.transcriptions.requests
    assert (request.model, request.file_name, request.size, request.content_type) == (
        "whisper-1", "note.wav", len(audio), "audio/wav"
    )
    assert (request.language, request.api_key, request.data) == ("ru", "test-key", audio)
    assert await transcribe(oai, audio) is not None and fake.transcriptions.requests[-1].language is None
    assert fake.chat_requests() == []  # transcriptions are no chat turns


async def test_transcription_response_formats(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.transcriptions.script(Transcript("plain words"), Transcript("with details", language="russian"))
    assert await transcribe(oai, wav_bytes(), response_format="text") == "plain words"
    verbose = await transcribe(oai, wav_bytes(1.5), response_format="verbose_json")
    assert (verbose.text, verbose.language, verbose.duration) == ("with details", "russian", 1.5)
    assert (await transcribe(oai, wav_bytes())).text == "hello"  # past the script: default_text


async def test_transcription_faults_surface_as_the_sdk_errors(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.transcriptions.script(TranscriptionFault(500), TranscriptionFault(429, retry_after=3))
    with pytest.raises(openai.InternalServerError):
        await transcribe(oai, wav_bytes())
    with pytest.raises(openai.RateLimitError) as limited:
        await transcribe(oai, wav_bytes())
    assert limited.value.response.headers["retry-after"] == "3"
    with pytest.raises(openai.NotFoundError) as unknown:
        await oai.audio.transcriptions.create(model="whisper-9", file=("a.wav", wav_bytes(), "audio/wav"))
    assert unknown.value.code == "model_not_found"


async def test_transcription_refuses_what_the_real_endpoint_refuses(fake: FakeModelServer, oai: AsyncOpenAI) -> None:
    fake.transcriptions.script(Transcript("never heard"))
    with pytest.raises(openai.BadRequestError, match="Invalid file format"):
        await transcribe(oai, wav_bytes(), name="recording")  # the format is read from the suffix
    with pytest.raises(openai.BadRequestError) as empty:
        await transcribe(oai, b"", name="empty.ogg")
    assert empty.value.code == "audio_too_short"
    wrong_key = make_openai(fake.openai_base_url, key="wrong-key")
    try:
        with pytest.raises(openai.AuthenticationError):
            await transcribe(wrong_key, wav_bytes())
    finally:
        await wrong_key.close()
    assert fake.transcriptions.pending_steps == 1  # refused before the script is consulted
    assert len(fake.transcriptions.requests) == 3  # ...but every request is recorded


async def test_transcription_delay_times_the_client_out(fake: FakeModelServer) -> None:
    fake.transcriptions.script(TranscriptionFault(503, delay=30))
    client = make_openai(fake.openai_base_url, timeout=0.1)
    try:
        with pytest.raises(openai.APITimeoutError):
            await transcribe(client, wav_bytes())
    finally:
        await client.close()
