"""A Provider that plays a script instead of calling a model: one scripted
reply per request, in the order given, and a record of every request it got.

It is a real ``bot.llm.base.Provider`` subclass, so the fallback chain, the
breaker and the base class's error handling treat it like the SDK providers:
its failures are plain ``OSError``s that ``_translate`` maps onto our error
tree, as an SDK provider maps its transport errors. For the layers above the
providers (the conversation), which need neither HTTP nor a model server; the
SDK providers themselves are tested against tests/fakes/model_server.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bot.errors import ModelConnectError, ModelError
from bot.llm.base import Provider
from bot.llm.types import ChatRequest, Completion, StreamEvent, TextDelta, Usage


@dataclass(frozen=True)
class Answer:
    """Streams ``pieces`` as TextDeltas, then the Completion of their text."""

    pieces: tuple[str, ...]
    usage: Usage = field(default_factory=lambda: Usage(prompt_tokens=21, completion_tokens=7))

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True)
class Refuse:
    """Fails before any text, as a server that refuses connections does."""


@dataclass(frozen=True)
class BreakAfter:
    """Streams ``pieces``, then the connection drops: no Completion."""

    pieces: tuple[str, ...]


ScriptedReply = Answer | Refuse | BreakAfter


class UnscriptedRequest(AssertionError):
    """The provider got a request its script has no reply for. Not a
    ModelError, so the chain does not fail over on it: it reaches the test."""


class ScriptedProvider(Provider):
    provider = "scripted"

    def __init__(self, model: str = "scripted-model", endpoint: str = "scripted") -> None:
        super().__init__(model, endpoint)
        self._script: deque[ScriptedReply] = deque()
        self.requests: list[ChatRequest] = []

    def script(self, *replies: ScriptedReply) -> None:
        """Queue the replies to the next requests, in order."""
        self._script.extend(replies)

    @property
    def unplayed(self) -> int:
        """Scripted replies no request has used yet."""
        return len(self._script)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        if not self._script:
            raise UnscriptedRequest(f"{self.endpoint}: request #{len(self.requests)} has no scripted reply")
        reply = self._script.popleft()
        if isinstance(reply, Refuse):
            raise ConnectionRefusedError(111, "Connection refused")
        for piece in reply.pieces:
            yield TextDelta(piece)
        if isinstance(reply, BreakAfter):
            raise ConnectionResetError(104, "Connection reset by peer")
        yield Completion(text=reply.text, usage=reply.usage, finish_reason="stop", model=self.model)

    def _translate(self, exc: Exception) -> ModelError | None:
        if isinstance(exc, OSError):
            return ModelConnectError(f"{self.endpoint}: cannot connect: {exc}", endpoint=self.endpoint)
        return None

    async def list_models(self) -> list[str]:
        return [self.model]
