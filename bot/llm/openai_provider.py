"""OpenAI-compatible endpoints (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from bot.errors import ModelConnectError, ModelError, ModelTransientError
from bot.llm.base import (
    Provider, classify_status, display_url, event_stream_lines, parse_retry_after, sse_chunks as _sse_chunks,
)
from bot.llm.types import (
    ChatMessage,
    ChatRequest,
    Completion,
    StreamEvent,
    TextDelta,
    ToolCall,
    Usage,
    request_options,
)


@dataclass
class _ToolCallParts:
    """OpenAI streams a tool call in pieces keyed by index; this gathers them."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIProvider(Provider):
    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float,
        max_connections: int,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(model, endpoint=f"openai:{model}@{display_url(base_url, 'api.openai.com')}")
        http_client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        # max_retries=0: the fallback chain owns retries, so they do not multiply.
        self._client = AsyncOpenAI(
            api_key=api_key or "not-needed",
            base_url=base_url,
            max_retries=0,
            http_client=http_client,
        )

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        # The body goes in extra_body, which the SDK merges into the request
        # JSON as is. Passed as named parameters, the SDK re-walks messages and
        # tool schemas against its type definitions on every call (~0.3 ms per
        # message, ~4 ms for the tool list here); ours are already wire format.
        body = {"messages": [_wire_message(m) for m in request.messages], **request_options(request)}
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [],  # replaced by extra_body's
            "extra_body": body,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text: list[str] = []
        calls: dict[int, _ToolCallParts] = {}
        usage = Usage()
        finish: str | None = None
        model = self.model
        # The SDK's own stream turns every chunk into typed models (~0.5 ms of
        # CPU per chunk here, i.e. most of a turn's overhead); its streaming
        # response gives the same SSE lines, which are plain JSON.
        async with self._client.chat.completions.with_streaming_response.create(**kwargs) as response:
            async for chunk in _sse_chunks(event_stream_lines(response.iter_text())):
                model = chunk.get("model") or model
                if chunk.get("usage"):
                    usage = Usage(chunk["usage"].get("prompt_tokens") or 0, chunk["usage"].get("completion_tokens") or 0)
                for choice in chunk.get("choices") or ():
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                        yield TextDelta(delta["content"])
                    for piece in delta.get("tool_calls") or ():
                        _add_tool_call_piece(calls, piece)
        tool_calls = tuple(
            ToolCall(id=p.id or f"call_{i}", name=p.name, arguments="".join(p.arguments) or "{}")
            for i, p in sorted(calls.items())
        )
        yield Completion("".join(text), tool_calls, usage, finish, model)

    def _translate(self, exc: Exception) -> ModelError | None:
        error = translate_openai_error(exc, self.endpoint)
        # The SDK does not wrap a malformed SSE chunk: json raises straight through.
        if error is None and isinstance(exc, (json.JSONDecodeError, ValueError, KeyError)):
            return ModelTransientError(f"{self.endpoint}: malformed response", endpoint=self.endpoint)
        return error

    async def list_models(self) -> list[str]:
        try:
            page = await self._client.models.list()
            return [m.id async for m in page]
        except Exception as exc:
            error = self._translate(exc)
            if error is None:
                raise
            raise error from exc

    async def aclose(self) -> None:
        await self._client.close()


def _add_tool_call_piece(calls: dict[int, _ToolCallParts], piece: dict[str, Any]) -> None:
    parts = calls.setdefault(int(piece.get("index") or 0), _ToolCallParts())
    parts.id = piece.get("id") or parts.id
    function = piece.get("function") or {}
    parts.name = function.get("name") or parts.name
    if function.get("arguments"):
        parts.arguments.append(function["arguments"])


def translate_openai_error(exc: Exception, endpoint: str, *, secret: str | None = None) -> ModelError | None:
    """Our error for what the openai SDK raised (chat and transcription
    alike); None for anything that is not the endpoint's fault. ``secret``
    is masked in the server's message: some servers echo the key they got."""
    if isinstance(exc, openai.APIStatusError):
        message = _error_text(exc)
        if secret:
            message = message.replace(secret, "***")
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        return classify_status(exc.status_code, message, endpoint=endpoint, retry_after=retry_after)
    if isinstance(exc, openai.APITimeoutError):  # before its base class, APIConnectionError
        return ModelTransientError(f"{endpoint}: timed out", endpoint=endpoint)
    if isinstance(exc, openai.APIConnectionError) and _never_connected(exc):
        return ModelConnectError(f"{endpoint}: cannot connect", endpoint=endpoint)
    if isinstance(exc, (openai.APIConnectionError, openai.APIError, httpx2.HTTPError)):
        return ModelTransientError(f"{endpoint}: {exc.__class__.__name__}", endpoint=endpoint)
    return None


def _error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    code = ""
    if isinstance(body, dict):
        code = str(body.get("code") or "")
    return f"{code} {exc.message}".strip()


def _never_connected(exc: BaseException) -> bool:
    """True when the SDK's connection error wraps a failure to connect at all."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, httpx2.ConnectError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _wire_message(message: ChatMessage) -> dict[str, Any]:
    """OpenAI's shapes: an assistant turn that only calls tools has null
    content, and a tool result carries no name (the API's tool message has
    role, content and tool_call_id only)."""
    wire = message.as_wire()
    if message.tool_calls and not message.content:
        wire["content"] = None
    if message.role == "tool":
        wire.pop("name", None)
    return wire
