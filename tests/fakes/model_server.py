"""A protocol-faithful fake of chat-completion model APIs.

One real HTTP server on 127.0.0.1, running in the caller's event loop, speaks
two wire formats so the real SDKs can be pointed at it unchanged:

- OpenAI-compatible under ``{url}/openai/v1`` (``AsyncOpenAI(base_url=...)``)
- Mistral under ``{url}/mistral/v1`` (``Mistral(server_url=f"{url}/mistral")``)

Tests script what the "model" does per request with ``Reply`` (an answer),
``Fault`` (an HTTP error) and ``StreamFault`` (a stream that breaks); requests
the script does not cover go to ``responder`` (an echo by default).
``/v1/embeddings`` (both dialects) answers ``embedding_function`` of each
input (hashed words by default), or the status ``embeddings_failing`` names.
``/openai/v1/audio/transcriptions`` is scripted through ``transcriptions``
(tests/fakes/transcriptions.py).

Shapes follow what the providers send and what the installed SDKs parse
(openai 3.x, mistralai 3.x). Unauthenticated requests are rejected before the
script is consulted, as the real APIs reject them before reaching a model.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import socket
import struct
import string
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiohttp import web

from tests.fakes.transcriptions import FakeTranscriptions
from tests.limits import WAIT_LIMIT

Dialect = Literal["openai", "mistral"]
DIALECTS: tuple[Dialect, ...] = ("openai", "mistral")

# Context window the fake claims in error messages and model cards.
DEFAULT_CONTEXT_WINDOW = 32768


# --------------------------------------------------------------------------
# Scripting API
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCallSpec:
    """One tool call the model makes. ``arguments`` as a str is sent verbatim
    (so a test can send malformed JSON arguments); a dict is JSON-encoded."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class Reply:
    """A normal answer (JSON, or SSE when the request asked to stream)."""

    text: str = ""
    tool_calls: list[ToolCallSpec] = field(default_factory=list)
    chunks: list[str] | None = None  # how `text` is split when streaming
    chunk_delay: float = 0.0  # seconds between streamed chunks
    delay: float = 0.0  # seconds before the response headers (first byte)
    usage: tuple[int, int] | None = None  # (prompt, completion); default: estimated
    finish_reason: str | None = None  # default: "tool_calls" if tool calls else "stop"

    def __post_init__(self) -> None:
        # `chunks` alone defines the text; both given must agree, or a test
        # would assert on a text the stream never carried.
        if self.chunks is not None:
            joined = "".join(self.chunks)
            if not self.text:
                self.text = joined
            elif joined != self.text:
                raise ValueError("Reply.chunks must join to Reply.text")


@dataclass
class Fault:
    """An HTTP error in the requesting dialect's error shape.

    ``kind="context_length"`` produces the provider's real context-window
    error (use status 400); ``message`` overrides the default wording."""

    status: int
    message: str = ""
    retry_after: float | None = None  # sets the Retry-After header (seconds)
    kind: Literal["context_length"] | None = None

    def __post_init__(self) -> None:
        if self.kind not in (None, "context_length"):
            raise ValueError(f"unknown Fault.kind {self.kind!r}")


@dataclass
class StreamFault:
    """A stream that breaks after ``text_before`` has been streamed.

    - "stall": stop sending, keep the connection open ``seconds``, then drop it
    - "drop": close the connection abruptly (no chunk terminator, no [DONE])
    - "malformed": send a ``data:`` line that is not JSON, then end the stream

    On a non-streaming request the same fault hits the JSON body instead."""

    mode: Literal["stall", "drop", "malformed"]
    text_before: str = ""
    seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.mode not in ("stall", "drop", "malformed"):
            raise ValueError(f"unknown StreamFault.mode {self.mode!r}")


Step = Reply | Fault | StreamFault


@dataclass(frozen=True)
class Request:
    """One request as the fake received it. Header names are lower-case."""

    dialect: Dialect
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() at arrival

    @property
    def is_chat(self) -> bool:
        return self.path.endswith("/chat/completions")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""


Responder = Callable[[Request], Step]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Text in, vector out (any length, any norm): what /v1/embeddings answers.
EmbeddingFunction = Callable[[str], list[float]]
EMBEDDING_DIM = 64


def hashed_words(text: str) -> list[float]:
    """The default embedding: a bag of the text's lower-cased words, each
    hashed to one of EMBEDDING_DIM dimensions. Texts sharing words are
    similar; that is all a protocol fake needs to promise. Like a real
    model's, no vector is zero (a text without words has one of its own)."""
    vector = [0.0] * EMBEDDING_DIM
    for word in re.findall(r"\w+", text.lower()) or [""]:
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % EMBEDDING_DIM] += 1.0
    return vector


def echo_responder(request: Request) -> Step:
    return Reply(text=f"echo: {request.last_user_text}")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of a message content: a str, or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict)
        )
    return ""


def _estimate_tokens(text: str) -> int:
    # ~4 characters per token is the usual rule of thumb for English BPEs.
    return max(1, (len(text) + 3) // 4)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += 4  # role and separators, as chat templates add per message
        total += _estimate_tokens(_content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            total += _estimate_tokens(json.dumps(call, ensure_ascii=False))
    return max(1, total)


def _completion_tokens(reply: Reply) -> int:
    parts = [reply.text] + [c.name + c.arguments_json() for c in reply.tool_calls]
    return max(1, sum(_estimate_tokens(p) for p in parts if p))


def _word_pieces(text: str) -> list[str]:
    """Split into word-sized pieces that concatenate back to `text`."""
    return re.findall(r"\s*\S+\s*|\s+", text)


def _split_evenly(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _alnum(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _usage_dict(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@dataclass(frozen=True)
class _Turn:
    """Facts shared by every chunk of one answer."""

    id: str
    model: str
    created: int
    usage: dict[str, int]
    include_usage: bool  # OpenAI streams: only when stream_options asks


# --------------------------------------------------------------------------
# Wire formats
# --------------------------------------------------------------------------


class _Wire(Protocol):
    name: Dialect

    def new_id(self) -> str: ...
    def completion(self, turn: _Turn, reply: Reply) -> dict[str, Any]: ...
    def stream(self, turn: _Turn, reply: Reply, pieces: list[str]) -> list[dict[str, Any]]: ...
    def partial_stream(self, turn: _Turn, pieces: list[str]) -> list[dict[str, Any]]: ...
    def error(self, status: int, message: str, kind: str | None, prompt: int) -> dict[str, Any]: ...
    def unauthorized(self, key: str | None) -> dict[str, Any]: ...
    def unknown_model(self, model: str) -> tuple[int, dict[str, Any]]: ...
    def model_list(self, models: Iterable[str], created: int) -> dict[str, Any]: ...


class _OpenAIWire:
    """OpenAI Chat Completions as api.openai.com sends it."""

    name: Dialect = "openai"

    _ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
        400: ("Invalid request.", "invalid_request_error", None),
        401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
        403: ("You are not allowed to sample from this model", "invalid_request_error", None),
        404: ("Not found.", "invalid_request_error", None),
        429: (
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
        ),
        500: (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        503: ("The server is overloaded or not ready yet.", "server_error", None),
    }

    def new_id(self) -> str:
        return "chatcmpl-" + _alnum(29)

    def _tool_call(self, index: int, call: ToolCallSpec) -> dict[str, Any]:
        return {
            "index": index,
            "id": call.id or "call_" + _alnum(24),
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json()},
        }

    def completion(self, turn: _Turn, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text if reply.text or not reply.tool_calls else None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            calls = [self._tool_call(i, c) for i, c in enumerate(reply.tool_calls)]
            # Non-streamed tool calls carry no index in OpenAI's format.
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
        return {
            "id": turn.id,
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": _finish_reason(reply),
                }
            ],
            "usage": turn.usage,
            "system_fingerprint": "fp_fake",
        }

    def _chunk(self, turn: _Turn, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if turn.include_usage:
            chunk["usage"] = None  # present-but-null until the final usage chunk
        return chunk

    def partial_stream(self, turn: _Turn, pieces: list[str]) -> list[dict[str, Any]]:
        first = self._chunk(turn, {"role": "assistant", "content": "", "refusal": None})
        return [first] + [self._chunk(turn, {"content": p}) for p in pieces if p]

    def stream(self, turn: _Turn, reply: Reply, pieces: list[str]) -> list[dict[str, Any]]:
        events = self.partial_stream(turn, pieces)
        for index, call in enumerate(reply.tool_calls):
            events.extend(self._tool_call_chunks(turn, index, call))
        events.append(self._chunk(turn, {}, _finish_reason(reply)))
        if turn.include_usage:
            usage_chunk = self._chunk(turn, {})
            usage_chunk["choices"] = []
            usage_chunk["usage"] = turn.usage
            events.append(usage_chunk)
        return events

    def _tool_call_chunks(self, turn: _Turn, index: int, call: ToolCallSpec) -> list[dict[str, Any]]:
        # Like the real API: id, type and name in the first piece with empty
        # arguments, then the arguments string spread over several chunks.
        head = self._tool_call(index, call)
        head["function"]["arguments"] = ""
        events = [self._chunk(turn, {"tool_calls": [head]})]
        for piece in _split_evenly(call.arguments_json(), 3):
            if piece:
                delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                events.append(self._chunk(turn, delta))
        return events

    def error(self, status: int, message: str, kind: str | None, prompt: int) -> dict[str, Any]:
        if kind == "context_length":
            text = message or (
                f"This model's maximum context length is {DEFAULT_CONTEXT_WINDOW} tokens. "
                f"However, your messages resulted in {prompt} tokens. "
                "Please reduce the length of the messages."
            )
            return _openai_error(text, "invalid_request_error", "messages", "context_length_exceeded")
        default_text, err_type, code = self._ERROR_DEFAULTS.get(
            status, ("The server had an error processing your request.", "server_error", None)
        )
        return _openai_error(message or default_text, err_type, None, code)

    def unauthorized(self, key: str | None) -> dict[str, Any]:
        if not key:
            return _openai_error(
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
                None,
                None,
            )
        masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "***"
        return _openai_error(
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            None,
            "invalid_api_key",
        )

    def unknown_model(self, model: str) -> tuple[int, dict[str, Any]]:
        text = f"The model `{model}` does not exist or you do not have access to it."
        return 404, _openai_error(text, "invalid_request_error", None, "model_not_found")

    def model_list(self, models: Iterable[str], created: int) -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": created, "owned_by": "system"} for m in models]
        return {"object": "list", "data": data}


def _openai_error(message: str, err_type: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


class _MistralWire:
    """Mistral's /v1/chat/completions as api.mistral.ai sends it."""

    name: Dialect = "mistral"

    _ERROR_DEFAULTS: dict[int, tuple[str, str, str | None]] = {
        400: ("Invalid request", "invalid_request_error", None),
        404: ("Not Found", "not_found", None),
        429: ("Rate limit exceeded", "rate_limited", "1300"),
        500: ("Internal server error", "internal_server_error", None),
        503: ("Service unavailable", "service_unavailable", None),
    }

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def _tool_call(self, index: int, call: ToolCallSpec) -> dict[str, Any]:
        return {
            "id": call.id or _alnum(9),  # Mistral's ids are 9 alphanumerics
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json()},
            "index": index,
        }

    def completion(self, turn: _Turn, reply: Reply) -> dict[str, Any]:
        calls = [self._tool_call(i, c) for i, c in enumerate(reply.tool_calls)]
        message = {
            "role": "assistant",
            "content": reply.text,
            "tool_calls": calls or None,
            "prefix": False,
        }
        return {
            "id": turn.id,
            "object": "chat.completion",
            "created": turn.created,
            "model": turn.model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish_reason(reply)}],
            "usage": turn.usage,
        }

    def _chunk(self, turn: _Turn, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": turn.id,
            "object": "chat.completion.chunk",
            "created": turn.created,
            "model": turn.model,
            "choices": [choice],
        }

    def partial_stream(self, turn: _Turn, pieces: list[str]) -> list[dict[str, Any]]:
        first = self._chunk(turn, {"role": "assistant", "content": ""})
        return [first] + [self._chunk(turn, {"content": p}) for p in pieces if p]

    def stream(self, turn: _Turn, reply: Reply, pieces: list[str]) -> list[dict[str, Any]]:
        events = self.partial_stream(turn, pieces)
        # Mistral sends each tool call whole (arguments already complete).
        for index, call in enumerate(reply.tool_calls):
            events.append(self._chunk(turn, {"content": "", "tool_calls": [self._tool_call(index, call)]}))
        # Mistral puts finish_reason and usage on the last chunk it sends,
        # which carries content (or the tool call) rather than an empty delta.
        if len(events) == 1:  # only the role chunk: finish on an empty delta
            events.append(self._chunk(turn, {"content": ""}))
        last = events[-1]
        last["choices"][0]["finish_reason"] = _finish_reason(reply)
        last["usage"] = turn.usage
        return events

    def error(self, status: int, message: str, kind: str | None, prompt: int) -> dict[str, Any]:
        if kind == "context_length":
            text = message or (
                f"Prompt contains {prompt} tokens, too large for model with "
                f"{DEFAULT_CONTEXT_WINDOW} maximum context length"
            )
            return _mistral_error(text, "invalid_request_error", None)
        if status == 401 and not message:
            return self.unauthorized(None)
        default_text, err_type, code = self._ERROR_DEFAULTS.get(
            status, ("Internal server error", "internal_server_error", None)
        )
        return _mistral_error(message or default_text, err_type, code)

    def unauthorized(self, key: str | None) -> dict[str, Any]:
        # Mistral's gateway answers 401 with this short body, not the
        # {"object": "error", ...} shape its API errors use.
        return {"detail": "Unauthorized"}

    def unknown_model(self, model: str) -> tuple[int, dict[str, Any]]:
        return 400, _mistral_error(f"Invalid model: {model}", "invalid_model", "1500")

    def model_list(self, models: Iterable[str], created: int) -> dict[str, Any]:
        capabilities = {"completion_chat": True, "function_calling": True, "completion_fim": False}
        data = [
            {
                "id": m,
                "object": "model",
                "created": created,
                "owned_by": "mistralai",
                "capabilities": capabilities,
                "name": m,
                "description": f"Fake model {m}",
                "max_context_length": DEFAULT_CONTEXT_WINDOW,
                "aliases": [],
                "deprecation": None,
                "default_model_temperature": 0.3,
                "type": "base",
            }
            for m in models
        ]
        return {"object": "list", "data": data}


def _mistral_error(message: str, err_type: str, code: str | None) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": err_type, "param": None, "code": code}


def _finish_reason(reply: Reply) -> str:
    if reply.finish_reason:
        return reply.finish_reason
    return "tool_calls" if reply.tool_calls else "stop"


_WIRES: dict[Dialect, _Wire] = {"openai": _OpenAIWire(), "mistral": _MistralWire()}


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


# A socket bound but never listening: connecting to it is refused (RST), and
# holding it keeps any other process from taking the port meanwhile.
_refusing_socket: socket.socket | None = None


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class FakeModelServer:
    """Fake OpenAI + Mistral chat-completion server. Use ``async with``."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        models: tuple[str, ...] = ("mistral-small-latest", "gpt-4o-mini"),
    ) -> None:
        self.accepted_keys: set[str] = {api_key}  # add keys to accept more
        self.models: tuple[str, ...] = models  # empty: accept any model name
        # Models that take image parts; any other refuses them with a 400, as
        # the real APIs do for a text-only model. None: every model does.
        self.vision_models: set[str] | None = None
        self.responder: Responder | None = echo_responder
        self.embedding_function: EmbeddingFunction = hashed_words
        # While set, /v1/embeddings answers this HTTP status (an outage).
        self.embeddings_failing: int | None = None
        # Speech to text (OpenAI dialect only), with the same keys as the rest.
        self.transcriptions = FakeTranscriptions(lambda http: self._auth_failure(http, _WIRES["openai"]))
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[tuple[Dialect | None, Step]] = deque()
        self._arrived = asyncio.Condition()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._created = int(time.time())

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        for dialect in DIALECTS:
            app.router.add_post(f"/{dialect}/v1/chat/completions", self._chat_handler(dialect))
            app.router.add_get(f"/{dialect}/v1/models", self._models_handler(dialect))
            app.router.add_post(f"/{dialect}/v1/embeddings", self._embeddings_handler(dialect))
        app.router.add_post("/openai/v1/audio/transcriptions", self._transcriptions_handler)
        # handler_cancellation: a client that gives up (timeout) cancels its
        # handler, so in_flight stays accurate. A short shutdown_timeout keeps
        # stop() from waiting on stalled streams.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await self._runner.setup()
        # The default backlog (128) drops SYNs when hundreds of clients
        # connect at once (the P2 benchmark); each retry then costs ~1 s.
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=1.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("FakeModelServer is not started")
        return self._url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"

    @property
    def mistral_server_url(self) -> str:
        return f"{self.url}/mistral"

    @staticmethod
    def refused_url() -> str:
        """Root URL of a port where nothing listens (connection refused)."""
        global _refusing_socket
        if _refusing_socket is None:
            _refusing_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            _refusing_socket.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{_refusing_socket.getsockname()[1]}"

    # ---- scripting -------------------------------------------------------

    def script(self, *steps: Step, dialect: Dialect | None = None) -> None:
        """Queue steps; each authorized chat request (of `dialect`, if given)
        consumes the first matching one, in order."""
        if dialect is not None and dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self._script.extend((dialect, step) for step in steps)

    @property
    def pending_steps(self) -> int:
        return len(self._script)

    def chat_requests(self, dialect: Dialect | None = None) -> list[Request]:
        return [
            r for r in self.requests if r.is_chat and (dialect is None or r.dialect == dialect)
        ]

    async def wait_requests(
        self, count: int, timeout: float = WAIT_LIMIT, *, dialect: Dialect | None = None
    ) -> None:
        """Wait until `count` chat requests (of `dialect`, if given) arrived."""
        async with self._arrived:
            try:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: len(self.chat_requests(dialect)) >= count),
                    timeout,
                )
            except TimeoutError:
                seen = len(self.chat_requests(dialect))
                raise TimeoutError(f"expected {count} chat requests, got {seen}") from None

    def _next_step(self, request: Request) -> Step:
        for index, (dialect, step) in enumerate(self._script):
            if dialect in (None, request.dialect):
                del self._script[index]
                return step
        responder = self.responder or echo_responder
        return responder(request)

    # ---- request handling ------------------------------------------------

    def _chat_handler(self, dialect: Dialect) -> _Handler:
        async def handle(http: web.Request) -> web.StreamResponse:
            return await self._tracked(self._chat(http, _WIRES[dialect]), chat=True)

        return handle

    def _embeddings_handler(self, dialect: Dialect) -> _Handler:
        async def handle(http: web.Request) -> web.StreamResponse:
            return await self._tracked(self._embeddings(http, _WIRES[dialect]), chat=False)

        return handle

    def embedding_requests(self, dialect: Dialect | None = None) -> list[Request]:
        return [
            r for r in self.requests
            if r.path.endswith("/embeddings") and (dialect is None or r.dialect == dialect)
        ]

    async def _transcriptions_handler(self, http: web.Request) -> web.StreamResponse:
        # Tracked, so stop() cancels a scripted delay instead of waiting it out.
        return await self._tracked(self.transcriptions.handle(http), chat=False)

    def _models_handler(self, dialect: Dialect) -> _Handler:
        async def handle(http: web.Request) -> web.StreamResponse:
            return await self._tracked(self._models(http, _WIRES[dialect]), chat=False)

        return handle

    async def _tracked(self, work: Awaitable[web.StreamResponse], *, chat: bool) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        if chat:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await work
        finally:
            if chat:
                self.in_flight -= 1
            self._handlers.discard(task)

    async def _record(self, http: web.Request, wire: _Wire, body: dict[str, Any]) -> Request:
        request = Request(
            dialect=wire.name,
            path=http.path,
            body=body,
            headers={k.lower(): v for k, v in http.headers.items()},
            at=time.monotonic(),
        )
        self.requests.append(request)
        async with self._arrived:
            self._arrived.notify_all()
        return request

    def _bearer_key(self, http: web.Request) -> str | None:
        header = http.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        return key.strip() if scheme.lower() == "bearer" and key.strip() else None

    def _auth_failure(self, http: web.Request, wire: _Wire) -> web.Response | None:
        key = self._bearer_key(http)
        if key in self.accepted_keys:
            return None
        return web.json_response(wire.unauthorized(key), status=401)

    async def _models(self, http: web.Request, wire: _Wire) -> web.StreamResponse:
        await self._record(http, wire, {})
        denied = self._auth_failure(http, wire)
        return denied or web.json_response(wire.model_list(self.models, self._created))

    async def _embeddings(self, http: web.Request, wire: _Wire) -> web.StreamResponse:
        """``input``: a string or a list of them (both dialects); float
        lists, or base64 of little-endian float32 when asked (the openai SDK's
        default)."""
        try:
            body = await http.json()
        except ValueError:
            body = None
        await self._record(http, wire, body if isinstance(body, dict) else {})
        denied = self._auth_failure(http, wire)
        if denied is not None:
            return denied
        if self.embeddings_failing is not None:
            status = self.embeddings_failing
            return web.json_response(wire.error(status, "embeddings are failing", None, 0), status=status)
        texts = body.get("input") if isinstance(body, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return web.json_response(wire.error(400, "input must be a string or a list of strings", None, 0), status=400)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = self.embedding_function(text)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(text.split()) + 1 for text in texts)
        payload: dict[str, Any] = {
            "object": "list", "data": data, "model": str(body.get("model", "")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        if wire.name == "mistral":
            payload["id"] = wire.new_id()
        return web.json_response(payload)

    async def _chat(self, http: web.Request, wire: _Wire) -> web.StreamResponse:
        try:
            body = await http.json()
        except ValueError:
            body = None
        request = await self._record(http, wire, body if isinstance(body, dict) else {})
        denied = self._auth_failure(http, wire)
        if denied is not None:
            return denied
        if not isinstance(body, dict):
            return web.json_response(wire.error(400, "Request body is not valid JSON", None, 0), status=400)
        model = str(body.get("model", ""))
        if self.models and model not in self.models:
            status, payload = wire.unknown_model(model)
            return web.json_response(payload, status=status)
        problem = _tool_protocol_problem(wire.name, request.messages) or _image_problem(
            wire.name, request.messages, model, self.vision_models
        )
        if problem is not None:
            return web.json_response(wire.error(400, problem, None, 0), status=400)
        step = self._next_step(request)
        if isinstance(step, Fault):
            return self._fault(request, wire, step)
        if isinstance(step, StreamFault):
            return await self._stream_fault(http, request, wire, step)
        return await self._reply(http, request, wire, step)

    def _turn(self, request: Request, wire: _Wire, reply: Reply | None) -> _Turn:
        if reply is not None and reply.usage is not None:
            prompt, completion = reply.usage
        else:
            prompt = _prompt_tokens(request.messages)
            completion = _completion_tokens(reply) if reply is not None else 0
        options = request.body.get("stream_options")
        include_usage = wire.name == "mistral" or (
            isinstance(options, dict) and bool(options.get("include_usage"))
        )
        return _Turn(
            id=wire.new_id(),
            model=str(request.body.get("model", "")),
            created=int(time.time()),
            usage=_usage_dict(prompt, completion),
            include_usage=include_usage,
        )

    def _fault(self, request: Request, wire: _Wire, fault: Fault) -> web.Response:
        prompt = _prompt_tokens(request.messages)
        payload = wire.error(fault.status, fault.message, fault.kind, prompt)
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        return web.json_response(payload, status=fault.status, headers=headers)

    async def _reply(
        self, http: web.Request, request: Request, wire: _Wire, reply: Reply
    ) -> web.StreamResponse:
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        turn = self._turn(request, wire, reply)
        if not request.stream:
            return web.json_response(wire.completion(turn, reply), dumps=_dumps)
        pieces = reply.chunks if reply.chunks is not None else _word_pieces(reply.text)
        response = await self._open_stream(http, wire)
        try:
            await self._send(response, wire.stream(turn, reply, pieces), reply.chunk_delay)
            await response.write(_sse("[DONE]"))
        except ConnectionError:
            pass  # the client went away mid-stream; nothing left to tell it
        return response

    async def _stream_fault(
        self, http: web.Request, request: Request, wire: _Wire, fault: StreamFault
    ) -> web.StreamResponse:
        if not request.stream:
            return await self._json_fault(http, fault)
        turn = self._turn(request, wire, None)
        response = await self._open_stream(http, wire)
        try:
            await self._send(response, wire.partial_stream(turn, _word_pieces(fault.text_before)), 0.0)
            if fault.mode == "malformed":
                await response.write(_sse('{"id": "broken", "choices": [{"delta": {"content": "tr'))
                await response.write(_sse("[DONE]"))
                return response
            if fault.mode == "stall":
                await asyncio.sleep(fault.seconds)
        except ConnectionError:
            return response
        await self._drop(http)
        return response

    async def _json_fault(self, http: web.Request, fault: StreamFault) -> web.StreamResponse:
        """A StreamFault hitting a non-streaming request."""
        if fault.mode == "malformed":
            return web.Response(text='{"id": "broken", "choices": [', content_type="application/json")
        if fault.mode == "stall":
            await asyncio.sleep(fault.seconds)
        await self._drop(http)
        return web.Response()  # never sent: the connection is gone

    async def _open_stream(self, http: web.Request, wire: _Wire) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        if wire.name == "openai":
            headers["x-request-id"] = "req_" + uuid.uuid4().hex
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(http)
        return response

    async def _send(self, response: web.StreamResponse, events: list[dict[str, Any]], delay: float) -> None:
        for index, event in enumerate(events):
            if index and delay > 0:
                await asyncio.sleep(delay)
            await response.write(_sse(event))

    async def _drop(self, http: web.Request) -> None:
        """Close the TCP connection without finishing the HTTP response."""
        transport = http.transport
        if transport is not None:
            # close(), not abort(): bytes already written still reach the
            # client, then EOF arrives where the next chunk should be.
            transport.close()
        # Give aiohttp's connection_lost a turn; it cancels this handler.
        await asyncio.sleep(1.0)


_MISTRAL_CALL_ID = re.compile(r"^[A-Za-z0-9]{9}$")


def _image_problem(
    dialect: Dialect, messages: list[dict[str, Any]], model: str, vision_models: set[str] | None
) -> str | None:
    """Image parts as each API takes them: OpenAI's ``{"type": "image_url",
    "image_url": {"url": ...}}``, Mistral's ``image_url`` as a string or such an
    object; data URLs must hold base64 of an image type; only user messages
    carry them, and only a model that can see accepts them."""
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind != "image_url":
                return f"Invalid content part: {json.dumps(part)[:100]}"
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            elif dialect == "openai":
                return "Invalid type for 'messages[].content[].image_url': expected an object, but got a string."
            if not isinstance(url, str) or not _DATA_URL.match(url):
                return "Invalid image URL: expected a base64-encoded data URL with an image type."
            if message.get("role") != "user":
                return "Image content is only supported in user messages."
            if vision_models is not None and model not in vision_models:
                return f"Model {model} does not support image input."
    return None


_DATA_URL = re.compile(r"^data:image/(jpeg|png|webp|gif);base64,[A-Za-z0-9+/]+=*$")


def _tool_protocol_problem(dialect: Dialect, messages: list[dict[str, Any]]) -> str | None:
    """The error both APIs give for a malformed tool conversation: every tool
    message answers a call of the assistant message before it, and every call
    is answered before the conversation goes on. Mistral also refuses an
    assistant message with both text and tool calls, and call ids that are not
    9 alphanumerics."""
    open_calls: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            if call_id not in open_calls:
                if dialect == "mistral":
                    return "Unexpected tool call id " + call_id + " in tool results"
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'."
                )
            open_calls.remove(call_id)
            continue
        if open_calls:
            if dialect == "mistral":
                return "Not the same number of function calls and responses"
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding "
                "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(open_calls)
            )
        calls = message.get("tool_calls") if role == "assistant" else None
        if not calls:
            continue
        ids = [str((call or {}).get("id") or "") for call in calls]
        if dialect == "mistral":
            if _content_text(message.get("content")):
                return "Assistant message must have either content or tool_calls, but not both."
            bad = next((i for i in ids if not _MISTRAL_CALL_ID.match(i)), None)
            if bad is not None:
                return f"Tool call id was {bad} but must be a-z, A-Z, 0-9, with a length of 9."
        open_calls = ids
    if open_calls:
        if dialect == "mistral":
            return "Not the same number of function calls and responses"
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages responding "
            "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
            + ", ".join(open_calls)
        )
    return None


def _dumps(payload: Any) -> str:
    return json.dumps(payload, ensure_ascii=False)


__all__ = [
    "DIALECTS",
    "Dialect",
    "FakeModelServer",
    "Fault",
    "Reply",
    "Request",
    "Responder",
    "Step",
    "StreamFault",
    "ToolCallSpec",
    "echo_responder",
]
