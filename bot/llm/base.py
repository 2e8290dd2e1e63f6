"""The Provider seam: one small base class; the chain is a list of these."""

from __future__ import annotations

import abc
import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from bot.errors import (
    ContextLengthError,
    ModelAuthError,
    ModelBadRequest,
    ModelError,
    ModelNotFoundError,
    ModelRateLimited,
    ModelTransientError,
    StreamBrokenError,
)
from bot.llm.types import ChatRequest, Completion, StreamEvent, TextDelta

# After [DONE], how long the rest of the response body (the chunked
# encoding's last empty chunk, normally already on its way) may take. Read
# to its end, the connection goes back to the pool for the next request; left
# unread, the client closes it, and the next model request pays a new TCP
# (and TLS) connection before it can leave.
DRAIN_AFTER_DONE = 0.05


def display_url(url: str | None, default: str) -> str:
    """Host and path of a base URL for logs and alerts, never its credentials."""
    if not url:
        return default
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{host}{parts.path}".rstrip("/") or default


CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "context length",
    "maximum context",
    "too large for model",
    "prompt is too long",
)


class Provider(abc.ABC):
    """One model at one endpoint, spoken to through its SDK."""

    provider: str  # "mistral" | "openai"

    def __init__(self, model: str, endpoint: str) -> None:
        self.model = model
        self.endpoint = endpoint  # a display name for logs and errors; never a secret

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield TextDelta pieces, then exactly one Completion. Raises only
        ModelError: StreamBrokenError once text was produced, else the class
        the SDK's failure maps to."""
        produced: list[str] = []
        try:
            async for event in self._stream(request):
                if isinstance(event, TextDelta):
                    produced.append(event.text)
                yield event
        except Exception as exc:
            error = exc if isinstance(exc, ModelError) else self._translate(exc)
            if error is None or isinstance(error, StreamBrokenError):
                raise
            # Once text was shown, any failure ends the answer: no failover.
            if produced:
                raise StreamBrokenError(
                    f"{self.endpoint}: stream broke after text: {error}",
                    endpoint=self.endpoint,
                    partial_text="".join(produced),
                ) from exc
            if error is exc:
                raise
            raise error from exc

    @abc.abstractmethod
    def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """The SDK call itself; may raise the SDK's own exceptions."""

    @abc.abstractmethod
    def _translate(self, exc: Exception) -> ModelError | None:
        """Our error for an SDK/transport exception, or None if it is not one."""

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once (for internal calls that need no streaming)."""
        async for event in self.stream(request):
            if isinstance(event, Completion):
                return event
        raise ModelTransientError("stream ended without a completion", endpoint=self.endpoint)

    @abc.abstractmethod
    async def list_models(self) -> list[str]:
        """Model ids the endpoint serves; used by `doctor` to check key and URL."""

    async def aclose(self) -> None:
        """Release HTTP connections."""


def classify_status(
    status: int,
    message: str,
    *,
    endpoint: str,
    retry_after: float | None = None,
) -> ModelError:
    """Map an HTTP error from any provider onto our exception tree."""
    lowered = message.lower()
    if status in (401, 403):
        return ModelAuthError(f"{endpoint}: authentication failed ({status})", endpoint=endpoint, status=status)
    if status == 404:
        return ModelNotFoundError(f"{endpoint}: not found ({status}): {message[:200]}", endpoint=endpoint, status=status)
    if status == 429:
        return ModelRateLimited(f"{endpoint}: rate limited", endpoint=endpoint, retry_after=retry_after)
    if any(marker in lowered for marker in CONTEXT_LENGTH_MARKERS):
        return ContextLengthError(f"{endpoint}: prompt exceeds the context window", endpoint=endpoint, status=status)
    if status >= 500 or status in (408, 409):
        return ModelTransientError(f"{endpoint}: server error {status}", endpoint=endpoint, status=status)
    return ModelBadRequest(f"{endpoint}: request refused ({status}): {message[:300]}", endpoint=endpoint, status=status)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; rare from model APIs, and a backoff covers it


# An event stream's lines end at CRLF, LF or CR, and nowhere else.
_EVENT_STREAM_LINE_END = re.compile(r"\r\n|\r|\n")


async def event_stream_lines(text: AsyncIterator[str]) -> AsyncIterator[str]:
    """The lines of a text/event-stream, from its decoded text as it arrives.
    Not httpx's line iterators: they split where ``str.splitlines`` does,
    also at U+2028, U+2029, U+0085 and other separators that a model's answer
    may hold unescaped inside a chunk's JSON (a server writing raw UTF-8),
    which cut the chunk in two and lost or broke the answer."""
    rest = ""
    after_cr = False  # the last piece ended in CR: a LF opening the next one is the same line end
    async for piece in text:
        if after_cr and piece.startswith("\n"):
            piece = piece[1:]
        if not piece:
            continue
        after_cr = piece.endswith("\r")
        *lines, rest = _EVENT_STREAM_LINE_END.split(rest + piece)
        for line in lines:
            yield line
    if rest:
        yield rest


async def sse_chunks(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of a chat-completions event stream, until [DONE].
    Comment lines (some gateways send keep-alives) are skipped."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            await _drain(lines)
            return
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not a JSON object")  # noqa: TRY004 - reported as a malformed response
        if chunk.get("error"):
            # OpenAI-compatible servers report failures inside a 200 stream this way.
            raise ModelTransientError(f"error event in the stream: {str(chunk['error'])[:200]}")
        yield chunk


async def _drain(lines: AsyncIterator[str]) -> None:
    """The rest of a finished stream, read so its connection can be reused;
    a server that keeps it open longer only loses the connection."""
    try:
        async with asyncio.timeout(DRAIN_AFTER_DONE):
            async for _ in lines:
                pass
    except Exception:  # noqa: BLE001 - timed out, or the server cut it: the answer is complete anyway
        pass
