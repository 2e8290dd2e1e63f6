"""Mistral's API through the official mistralai SDK."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mistralai.client import Mistral, errors as mistral_errors, models as mistral_models

from bot.errors import ModelConnectError, ModelError, ModelTransientError
from bot.llm.base import Provider, classify_status, display_url, event_stream_lines, parse_retry_after, sse_chunks
from bot.llm.mistral_sdk import release_sdk_models, reuse_sdk_models
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


class MistralProvider(Provider):
    provider = "mistral"

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        server_url: str | None,
        timeout: float,
        max_connections: int,
        connect_timeout: float = 10.0,
    ) -> None:
        super().__init__(model, endpoint=f"mistral:{model}@{display_url(server_url, 'api.mistral.ai')}")
        # The SDK's default client has a small pool; hundreds of parallel chats
        # would queue behind it. No RetryConfig: the chain owns retries.
        async_client = httpx2.AsyncClient(
            follow_redirects=True,
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
            limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self._async_client = async_client
        self._client = Mistral(
            api_key=api_key,
            server_url=server_url,
            async_client=async_client,
            timeout_ms=int(timeout * 1000),
        )
        # The SDK's per-request pydantic classes, built once per type (bot/llm/mistral_sdk.py).
        reuse_sdk_models()
        self._reusing = True

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [_to_mistral(m) for m in request.messages],
            **request_options(request),
        }
        # The SDK makes the request (auth, headers, status errors); the answer's
        # SSE lines are read here as plain JSON. Iterating the SDK's stream
        # validates every event into pydantic models, ~0.85 ms of CPU per
        # streamed piece, most of a turn's overhead with Mistral.
        stream = await self._client.chat.stream_async(**kwargs)
        text: list[str] = []
        calls: list[ToolCall] = []
        usage = Usage()
        finish: str | None = None
        model = self.model
        async with stream:
            async for chunk in sse_chunks(event_stream_lines(stream.response.aiter_text())):
                model = chunk.get("model") or model
                reported = chunk.get("usage") or {}
                if reported.get("prompt_tokens") is not None:
                    usage = Usage(reported.get("prompt_tokens") or 0, reported.get("completion_tokens") or 0)
                for choice in chunk.get("choices") or ():
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") or {}
                    piece = _delta_text(delta.get("content"))
                    if piece:
                        text.append(piece)
                        yield TextDelta(piece)
                    for call in delta.get("tool_calls") or ():
                        calls.append(_tool_call(call, len(calls)))
        finish_reason = str(finish) if finish is not None else None
        yield Completion("".join(text), tuple(calls), usage, finish_reason, model)

    def _translate(self, exc: Exception) -> ModelError | None:
        if isinstance(exc, mistral_errors.MistralError):
            return classify_status(
                exc.status_code,
                exc.body or exc.message,
                endpoint=self.endpoint,
                retry_after=parse_retry_after(exc.headers.get("retry-after")),
            )
        if isinstance(exc, httpx2.ConnectError):
            return ModelConnectError(f"{self.endpoint}: cannot connect", endpoint=self.endpoint)
        if isinstance(exc, (mistral_errors.NoResponseError, httpx2.HTTPError)):
            return ModelTransientError(f"{self.endpoint}: {exc.__class__.__name__}", endpoint=self.endpoint)
        if isinstance(exc, (json.JSONDecodeError, ValueError)):
            return ModelTransientError(f"{self.endpoint}: malformed response", endpoint=self.endpoint)
        return None

    async def list_models(self) -> list[str]:
        try:
            response = await self._client.models.list_async()
            return [m.id for m in (response.data or [])]
        except Exception as exc:
            error = self._translate(exc)
            if error is None:
                raise
            raise error from exc

    async def aclose(self) -> None:
        if self._reusing:
            self._reusing = False
            release_sdk_models()
        await self._async_client.aclose()


def _delta_text(content: Any) -> str:
    """Mistral sends content as a string, or as a list of typed chunks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""  # None
    # Typed chunks as JSON objects: only text chunks carry "text" (thinking does not).
    return "".join((part.get("text") or "") if isinstance(part, dict) else "" for part in content)


def _tool_call(call: dict[str, Any], position: int) -> ToolCall:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return ToolCall(id=call.get("id") or f"call_{position}", name=function.get("name") or "", arguments=arguments)


_MISTRAL_CALL_ID = re.compile(r"^[A-Za-z0-9]{9}$")


def mistral_call_id(call_id: str) -> str:
    """Mistral accepts only 9 alphanumerics as a tool call id; ids minted by
    another provider (``call_...``) are mapped to a stable 9-character digest,
    the same for the assistant's call and the tool's answer."""
    if _MISTRAL_CALL_ID.match(call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _to_mistral(message: ChatMessage) -> Any:
    """A typed SDK message (given dicts, the SDK validates each into a pydantic
    model on every call). Mistral's rules: an assistant message carries content
    or tool_calls but not both (a preamble before a tool call is dropped; the
    answer comes after the results anyway), and call ids are 9 alphanumerics."""
    if message.role == "system":
        return mistral_models.SystemMessage(content=message.content)
    if message.role == "user":
        if message.images:
            chunks: list[Any] = [mistral_models.TextChunk(text=message.content)] if message.content else []
            chunks += [mistral_models.ImageURLChunk(image_url=image.data_url()) for image in message.images]
            return mistral_models.UserMessage(content=chunks)
        return mistral_models.UserMessage(content=message.content)
    if message.role == "tool":
        return mistral_models.ToolMessage(
            content=message.content, tool_call_id=mistral_call_id(message.tool_call_id or ""), name=message.name
        )
    calls = [
        mistral_models.ToolCall(
            id=mistral_call_id(c.id),
            type="function",
            function=mistral_models.FunctionCall(name=c.name, arguments=c.arguments),
        )
        for c in message.tool_calls
    ]
    return mistral_models.AssistantMessage(content="" if calls else message.content, tool_calls=calls or None)
