"""The HTTP API (FastAPI): OpenAI-compatible chat completions and models, and
Arium's own resources (memories, reminders, export), each request for the one
user its key belongs to, through the core's inbound path (the user's gates:
ban, allow-list, rate limit, daily quota).

Errors are OpenAI-shaped JSON, ``{"error": {"message", "type", "code"}}``;
anything of another user answers 404, as if it did not exist."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytz
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.channels.api.eval_pages import EvalPageServices, eval_router
from bot.channels.inbound import Arrival, InboundPath
from bot.context import ChatType, RequestContext
from bot.conversation import TurnResult
from bot.identity import API, local_chat_id
from bot.linking import Linker, LinkRefused
from bot.llm.types import ChatMessage, ImagePart
from bot.media.images import ImageLimits, ImageUnreadable, fit_image
from bot.memory.service import MemoryService
from bot.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics
from bot.reminders.parsing import ReminderInputError
from bot.reminders.service import ReminderService
from bot.reminders.views import explain
from bot.storage.api_keys import ApiKeyRepository
from bot.storage.models import MAX_ROW_ID
from bot.storage.reminders import ReminderRecord
from bot.storage.repositories import UserProfile, UserRepository
from bot.runtime.tasks import TaskTracker
from bot.personal_data import UserData

log = logging.getLogger(__name__)

# Ids are 64-bit in the database: a larger number is a 400, not a driver overflow.
RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
MODEL_ID = "arium"  # what /v1/models lists; the fallback chain picks the real model
MAX_MESSAGES = 200
MAX_PAGE = 1000


@dataclass(frozen=True)
class ApiServices:
    keys: ApiKeyRepository
    users: UserRepository
    inbound: InboundPath
    memory: MemoryService
    reminders: ReminderService
    userdata: UserData
    tasks: TaskTracker
    metrics: Metrics
    linker: Linker
    max_body_bytes: int = 1_000_000
    images: ApiImages | None = None
    eval_pages: EvalPageServices | None = None  # the evaluation results page (/eval)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    error = {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class BodyTooLarge(StarletteHTTPException):
    """A chunked body that grew past the limit while being read. An HTTP
    exception, so FastAPI's body parsing lets it through (anything else
    raised there becomes its 400 "error parsing the body")."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, by the declared
    length before reading, and by counting while reading (chunked bodies)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            await error_response(413, f"the request body is over {self._limit} bytes", "body_too_large")(
                scope, receive, send
            )
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._limit:
                    raise BodyTooLarge
            return message

        await self._app(scope, counted, send)


# --- request bodies -----------------------------------------------------------------


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: ImageUrl | str | None = None


class WireMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, tools...: the server decides
    model: str = MODEL_ID
    messages: list[WireMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None


class NewReminder(BaseModel):
    text: str = Field(min_length=1, max_length=1000)


class LinkCodeEntry(BaseModel):
    code: str = Field(min_length=1, max_length=64)


@dataclass(frozen=True)
class ApiImages:
    """Images in user messages (OpenAI's image_url parts, as data URLs) for
    models that can see."""

    limits: ImageLimits
    can_see: Callable[[], bool]
    per_request: int = 8


async def client_messages(body: ChatCompletionBody, images: ApiImages | None = None) -> list[ChatMessage]:
    """The client's conversation as the core's messages; raises ApiError for
    what the server cannot take (tool results: tools run here; parts other
    than text and images; images where no model can see them)."""
    messages: list[ChatMessage] = []
    pictures = 0
    for message in body.messages:
        if message.role == "tool":
            raise ApiError(400, "tool messages are not accepted: Arium runs its tools on the server", "tool_messages")
        text, raw_images = _parts_of(message.content)
        if not _is_unicode(text):
            raise ApiError(
                400, "a message holds a lone UTF-16 surrogate (an emoji cut in half?); send valid Unicode text",
                "invalid_text",
            )
        if raw_images and message.role != "user":
            raise ApiError(400, "images are accepted in user messages only", "unsupported_content")
        pictures += len(raw_images)
        role = "system" if message.role == "developer" else message.role
        fitted = await _fitted_images(raw_images, images, pictures) if raw_images else ()
        messages.append(ChatMessage(role, text, images=fitted))  # type: ignore[arg-type]
    if not any(m.role == "user" for m in messages):
        raise ApiError(400, "the conversation has no user message", "no_user_message")
    return messages


def _is_unicode(text: str) -> bool:
    """JSON can spell a lone surrogate ("\\ud800"), which no encoder takes: sent
    on to a model, it failed every endpoint's request as if the model were down."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parts_of(content: str | list[ContentPart] | None) -> tuple[str, list[bytes]]:
    """The text and the raw image bytes of one message's content."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[bytes] = []
    for part in content:
        if part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif part.type == "image_url" and part.image_url is not None:
            url = part.image_url.url if isinstance(part.image_url, ImageUrl) else part.image_url
            images.append(_data_url_bytes(url))
        elif part.type in ("text", "image_url"):
            field = "text" if part.type == "text" else "image_url"
            raise ApiError(400, f"a content part of type {part.type!r} needs its {field!r}", "invalid_request")
        else:
            raise ApiError(
                400, f"content parts of type {part.type!r} are not supported; send text or image_url", "unsupported_content"
            )
    return "\n".join(texts), images


def _data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 image data URL. Remote URLs are refused: the
    server does not fetch what a client points it at."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ApiError(400, "send images as base64 data URLs (data:image/png;base64,...)", "unsupported_content")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "the image data URL is not valid base64", "bad_image") from None


async def _fitted_images(raw: list[bytes], images: ApiImages | None, so_far: int) -> tuple[ImagePart, ...]:
    if images is None or not images.can_see():
        raise ApiError(400, "no model of this server can look at images", "vision_unavailable")
    if so_far > images.per_request:
        raise ApiError(400, f"at most {images.per_request} images per request", "too_many_images")
    try:
        return tuple([await asyncio.to_thread(fit_image, data, images.limits) for data in raw])
    except ImageUnreadable:
        raise ApiError(400, "an image could not be read (send JPEG, PNG or WebP)", "bad_image") from None


# --- answers ---------------------------------------------------------------------------


class CollectingSink:
    """The ReplySink of an API turn: every change of the answer goes into a
    queue the response reads from; ``end`` closes it."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.final = ""  # the answer as finished, with any note (a cut-off stream's)

    def end(self) -> None:
        self.events.put_nowait(("end", ""))

    async def update(self, text: str) -> None:
        self.events.put_nowait(("text", text))

    async def finish(self, text: str) -> None:
        self.final = text
        self.events.put_nowait(("text", text))

    async def notice(self, text: str) -> None:
        self.events.put_nowait(("notice", text))

    async def progress(self, hint: str) -> None:
        self.events.put_nowait(("restart", ""))


def usage_of(result: TurnResult) -> dict[str, int]:
    prompt, completion = result.tokens_in or 0, result.tokens_out or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def reminder_json(record: ReminderRecord) -> dict[str, Any]:
    fire_at = record.next_fire_at
    local = fire_at.astimezone(pytz.timezone(record.timezone)) if fire_at is not None else None
    return {
        "id": record.id,
        "text": record.text,
        "status": record.status,
        "fire_at": local.isoformat() if local is not None else None,
        "local": f"{local:%Y-%m-%d %H:%M} ({record.timezone})" if local is not None else None,
        "timezone": record.timezone,
        "recurrence": record.rule,
    }


# --- the application -------------------------------------------------------------------------


def _services(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


async def caller(request: Request) -> int:
    """The user of the request's key; 401 without a valid one."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "send your Arium API key as 'Authorization: Bearer <key>'", "missing_api_key")
    user_id = await _services(request).keys.user_of(key.strip())
    if user_id is None:
        raise ApiError(401, "the API key is not valid (unknown or revoked)", "invalid_api_key")
    return user_id


Caller = Annotated[int, Depends(caller)]


async def chatting(request: Request, user_id: Caller) -> RequestContext:
    """The context of a request for the model (the daily quota applies)."""
    return await _admit(_services(request), user_id, reaches_model=True)


async def acting(request: Request, user_id: Caller) -> RequestContext:
    """The context of any other request (ban, allow-list and rate limit apply)."""
    return await _admit(_services(request), user_id, reaches_model=False)


Chatting = Annotated[RequestContext, Depends(chatting)]
Acting = Annotated[RequestContext, Depends(acting)]


def build_api(services: ApiServices) -> FastAPI:
    api = FastAPI(title="Arium", version="1", docs_url=None, redoc_url=None)
    api.state.services = services
    _install_error_handlers(api, services.tasks)
    api.add_middleware(BodyLimit, limit=services.max_body_bytes)  # type: ignore[arg-type]

    if services.eval_pages is not None:
        api.include_router(eval_router(services.eval_pages))

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metrics")
    async def metrics() -> Response:
        return Response(services.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @api.get("/v1/models")
    async def models(_: Caller) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "arium"}]}

    @api.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionBody, ctx: Chatting) -> JSONResponse | StreamingResponse:
        messages = await client_messages(body, services.images)
        last_user = next(m.content for m in reversed(messages) if m.role == "user").strip()
        problem = services.inbound.input_problem(ctx, last_user)
        if problem is not None:
            raise ApiError(400, problem, "bad_input")
        turn = _Turn(services, ctx, messages, body.model)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await turn.stream(include_usage)
        return await turn.whole()

    @api.get("/v1/memories")
    async def memories(
        ctx: Acting,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        page: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    ) -> dict[str, Any]:
        items, total = await services.memory.page(ctx.user_id, page, limit)
        data = [
            {"id": m.id, "text": m.text, "kind": m.kind, "created_at": m.created_at.isoformat()} for m in items
        ]
        return {"object": "list", "data": data, "total": total}

    @api.delete("/v1/memories/{memory_id}")
    async def forget(memory_id: RowId, ctx: Acting) -> dict[str, Any]:
        if not await services.memory.delete(ctx.user_id, [memory_id]):
            raise ApiError(404, f"no memory {memory_id}", "not_found")
        return {"id": memory_id, "deleted": True}

    @api.get("/v1/reminders")
    async def reminders(ctx: Acting) -> dict[str, Any]:
        return {"object": "list", "data": [reminder_json(r) for r in await services.reminders.listed(ctx)]}

    @api.post("/v1/reminders", status_code=201)
    async def remind(body: NewReminder, ctx: Acting) -> dict[str, Any]:
        try:
            outcome = await services.reminders.remind(ctx, body.text)
        except ReminderInputError as exc:
            raise ApiError(400, explain(exc, ctx.language), f"reminder_{exc.code}") from None
        return reminder_json(outcome.record)

    @api.delete("/v1/reminders/{reminder_id}")
    async def cancel(reminder_id: RowId, ctx: Acting) -> dict[str, Any]:
        if await services.reminders.cancel(ctx.user_id, reminder_id) is None:
            raise ApiError(404, f"no active reminder {reminder_id}", "not_found")
        return {"id": reminder_id, "deleted": True}

    @api.get("/v1/export")
    async def export(ctx: Acting) -> dict[str, Any]:
        return await services.userdata.export(ctx.user_id)

    @api.post("/v1/link/code", status_code=201)
    async def link_code(ctx: Acting) -> dict[str, Any]:
        """A one-time code to enter with /link in Telegram or the console."""
        issued = await services.linker.issue(ctx)
        return {"code": issued.shown, "expires_at": issued.expires_at.isoformat()}

    @api.post("/v1/link")
    async def link(body: LinkCodeEntry, ctx: Acting) -> dict[str, Any]:
        """Enter a code shown by /link elsewhere: this key's user and that
        one become one, sharing memories and reminders."""
        try:
            linked = await services.linker.redeem(ctx, body.code)
        except LinkRefused as refused:
            raise ApiError(400, refused.text(ctx.language), f"link_{refused.code}") from None
        return {
            "linked": True, "memories_moved": linked.memories, "reminders_moved": linked.reminders,
            "files_moved": linked.files,
        }

    return api


async def _admit(services: ApiServices, user_id: int, *, reaches_model: bool) -> RequestContext:
    """The request's context after the user's gates; a refusal is an error
    response (429 with Retry-After for the limits)."""
    user = await services.users.get(user_id)
    if user is None:  # erased since the key was checked
        raise ApiError(401, "the API key is not valid (unknown or revoked)", "invalid_api_key")
    profile = UserProfile(user.id, user.first_name, user.last_name, user.username, user.language)
    arrival = Arrival(
        profile, chat_id=local_chat_id(API, user.id), chat_type=ChatType.API, reaches_model=reaches_model
    )
    ctx, result = await services.inbound.check(arrival)
    if result.passed:
        return ctx
    message = result.notices[0] if result.notices else "this request is not allowed now"
    if result.retry_after is not None:
        seconds = max(1, int(result.retry_after + 0.999))
        raise ApiError(429, message, f"{result.refused_by}_limit", headers={"Retry-After": str(seconds)})
    raise ApiError(403, message, result.refused_by or "refused")


class _Turn:
    """One chat completion: the conversation runs in its own task and the
    response reads what it produced."""

    def __init__(self, services: ApiServices, ctx: RequestContext, messages: list[ChatMessage], model: str) -> None:
        self._sink = CollectingSink()
        self._id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._model = model
        # Tracked: a client that leaves does not cancel the turn, and shutdown waits for it.
        turn = services.inbound.conversation.handle_client_history(ctx, messages, self._sink)
        self._task = services.tasks.spawn(turn, f"api-turn:{ctx.user_id}")
        self._task.add_done_callback(lambda _: self._sink.end())

    async def whole(self) -> JSONResponse:
        result = await self._task
        if result.status == "failed":
            raise _unavailable()
        return JSONResponse(
            {
                "id": self._id,
                "object": "chat.completion",
                "created": self._created,
                "model": self._model,
                # A cut-off answer says so, as the streamed one does: its note,
                # and finish_reason "length" rather than "stop".
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": _content(result, self._sink)},
                    "finish_reason": _finish_reason(result),
                }],
                "usage": usage_of(result),
            }
        )

    async def stream(self, include_usage: bool) -> StreamingResponse:
        """Wait for the first piece of the answer, so that a model failure is
        still an error status; then stream the rest as SSE chunks."""
        first = await self._next_event()
        if first is None or first[0] == "notice":
            await self._task
            raise _unavailable()
        return StreamingResponse(
            self._chunks(first, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def _next_event(self) -> tuple[str, str] | None:
        """The sink's next event, or None once the turn ended."""
        event = await self._sink.events.get()
        return None if event[0] == "end" else event

    async def _chunks(self, first: tuple[str, str], include_usage: bool) -> AsyncIterator[str]:
        sent = ""
        event: tuple[str, str] | None = first
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            while event is not None:
                kind, text = event
                if kind == "restart":
                    sent = ""  # a tool round: the next text is a new answer, appended after what was sent
                elif kind == "text" and text.startswith(sent) and len(text) > len(sent):
                    yield self._chunk({"content": text[len(sent):]})
                    sent = text
                event = await self._next_event()
            result = await self._task
            yield self._chunk({}, finish_reason=_finish_reason(result))
            if include_usage:
                yield _sse({**self._head(), "choices": [], "usage": usage_of(result)})
            yield "data: [DONE]\n\n"
        finally:
            if not self._task.done():  # the client went away: the turn still finishes and is counted
                log.info("API client left during a streamed answer; the turn finishes in the background")

    def _head(self) -> dict[str, Any]:
        return {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return _sse({**self._head(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


def _content(result: TurnResult, sink: CollectingSink) -> str:
    """A whole answer's text; a cut-off one as the user saw it, with its note."""
    return (sink.final or result.text) if result.status == "partial" else result.text


def _finish_reason(result: TurnResult) -> str:
    return "stop" if result.status == "complete" else "length"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _unavailable() -> ApiError:
    return ApiError(503, "the AI is unavailable right now; try again in a minute", "model_unavailable")


def _install_error_handlers(api: FastAPI, tasks: TaskTracker) -> None:
    @api.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
        return error_response(400, message, "invalid_request")

    @api.exception_handler(BodyTooLarge)
    async def on_too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
        return error_response(413, "the request body is too large", "body_too_large")

    @api.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, str(exc.detail), code)

    @api.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        # The one error handler: logged with its traceback, counted in
        # /metrics and /health, and the admins alerted, as for a Telegram update.
        tasks.report_error(exc, f"API {request.method} {request.url.path}")
        return error_response(500, "internal error; it was logged", "internal_error")

