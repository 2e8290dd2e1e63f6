"""Our own model-facing types; every provider translates to and from these."""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object

    def as_openai(self) -> dict[str, Any]:
        # Mistral accepts the same function-tool shape.
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ImagePart:
    """An image a user message carries to a model that can see (a photo)."""

    data: bytes
    mime_type: str  # image/jpeg, image/png, image/webp

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    images: tuple[ImagePart, ...] = ()  # user messages only: the text goes first, then these

    def as_wire(self) -> dict[str, Any]:
        """The chat-completions message dict both providers accept (OpenAI's
        image parts; Mistral's SDK messages are built in its provider)."""
        content: Any = self.content
        if self.images:
            content = [{"type": "text", "text": self.content}] if self.content else []
            content += [{"type": "image_url", "image_url": {"url": image.data_url()}} for image in self.images]
        message: dict[str, Any] = {"role": self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.name and self.role == "tool":
            message["name"] = self.name
        return message


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    # "none" forbids tool calls while still describing the tools, so a history
    # that contains tool messages stays valid (used for a turn's last round).
    tool_choice: Literal["auto", "none"] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # The tier (by name) to ask first: an agent's own model; the other enabled
    # tiers stay its fallbacks. Not sent to any model.
    prefer_tier: str | None = None

    @property
    def has_images(self) -> bool:
        """Only endpoints that can see may answer it (``vision = true``)."""
        return any(message.images for message in self.messages)


def request_options(request: ChatRequest) -> dict[str, Any]:
    """The chat-completions fields besides model and messages that both
    providers send the same way: tools, tool_choice, max_tokens, temperature."""
    options: dict[str, Any] = {}
    if request.tools:
        options["tools"] = [t.as_openai() for t in request.tools]
        if request.tool_choice:
            options["tool_choice"] = request.tool_choice
    if request.max_tokens:
        options["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        options["temperature"] = request.temperature
    return options


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer as it streams."""

    text: str


@dataclass(frozen=True)
class Completion:
    """The end of a model response: the whole text, tool calls, usage."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    model: str = ""
    endpoint: str = ""  # "tier/provider:model" that answered, set by the chain


StreamEvent = TextDelta | Completion


def estimate_tokens(text: str) -> int:
    """A cheap, deliberately generous token estimate for history budgets:
    about 3 characters per token (English runs ~4, Cyrillic ~2.5), plus the
    per-message framing that chat formats add."""
    return math.ceil(len(text) / 3) + 4
