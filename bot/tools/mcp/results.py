"""What an MCP server's answers become on our side: its tools as registry
tools (names the model may see, schemas checked), its call results as the
text the model reads."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from mcp import types

from bot.errors import ToolError
from bot.tools.registry import TOOL_NAME

# Past this a part of a result is cut before it is joined: the tool loop
# shows the model a few thousand characters anyway, and a server that sends
# megabytes must not cost more than that in memory and time.
PART_CHARS = 100_000
DESCRIPTION_CHARS = 1024
_NOT_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def model_tool_name(server: str, tool: str) -> str:
    """``server__tool``, in the characters and length both providers accept.
    The server's name keeps two servers' tools apart; a name too long is cut
    and given a short hash of the original, so it stays unique."""
    name = f"{server}__{_NOT_NAME.sub('_', tool).strip('_') or 'tool'}"
    if len(name) > 64:
        digest = hashlib.sha1(tool.encode()).hexdigest()[:8]
        name = f"{name[:55]}_{digest}"
    if not TOOL_NAME.match(name):  # a server name starting with a digit: give it a letter
        name = f"t_{name}"[:64]
    return name


class UnusableSchema(Exception):
    """A tool's input schema cannot be offered to a model; says why."""


def checked_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The tool's JSON schema as offered to the model: it must be a valid
    schema for an object (both providers require one); ``properties`` is
    added when missing, as some models insist on it."""
    data = dict(schema or {"type": "object"})
    if data.get("type", "object") != "object":
        raise UnusableSchema(f"its arguments are not an object (type {data.get('type')!r})")
    data["type"] = "object"
    data.setdefault("properties", {})
    try:
        validator_for(data).check_schema(data)
    except SchemaError as exc:
        raise UnusableSchema(f"invalid JSON schema: {exc.message[:200]}") from None
    return data


def description_of(tool: types.Tool, server: str) -> str:
    text = (tool.description or tool.title or tool.name).strip()
    if len(text) > DESCRIPTION_CHARS:
        text = text[: DESCRIPTION_CHARS - 1] + "…"
    return f"{text} (tool server: {server})"


def result_text(result: types.CallToolResult) -> str:
    """The result as the model reads it; a result the server marked as an
    error raises ToolError with its text, so the model sees a failed call."""
    parts = [_part_text(part) for part in result.content]
    if not any(parts) and result.structured_content is not None:
        parts = [_cut(json.dumps(result.structured_content, ensure_ascii=False, default=str))]
    text = "\n\n".join(p for p in parts if p)
    if result.is_error:
        raise ToolError(text[:500] or "the tool server reported an error without details")
    return text or "done (the tool returned nothing)"


def _part_text(part: Any) -> str:
    if isinstance(part, types.TextContent):
        return _cut(part.text)
    if isinstance(part, types.ImageContent):
        return f"[an image ({part.mime_type}, {_size(part.data)}) the tool returned: not shown here]"
    if isinstance(part, types.AudioContent):
        return f"[audio ({part.mime_type}, {_size(part.data)}) the tool returned: not shown here]"
    if isinstance(part, types.EmbeddedResource):
        resource = part.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[{resource.uri}]\n{_cut(resource.text)}"
        return f"[a binary resource {resource.uri} ({resource.mime_type or 'unknown type'}): not shown here]"
    if isinstance(part, types.ResourceLink):
        return f"[link: {part.name} {part.uri}]"
    return f"[a {getattr(part, 'type', 'content')} part: not shown here]"


def _size(base64_data: str) -> str:
    kilobytes = len(base64_data) * 3 // 4 // 1024
    return f"{kilobytes} KB"


def _cut(text: str) -> str:
    if len(text) <= PART_CHARS:
        return text
    return f"{text[:PART_CHARS]}\n[cut: {len(text) - PART_CHARS} more characters]"
