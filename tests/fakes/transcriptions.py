"""The speech-to-text half of the fake model server: OpenAI's
``POST /v1/audio/transcriptions`` as the openai SDK calls it, a multipart
form with ``model``, ``file`` and optionally ``language``, ``prompt``,
``response_format`` and ``temperature``.

Tests script what each request hears, in order: ``Transcript`` (the words)
or ``TranscriptionFault`` (an HTTP error in OpenAI's shape, after an optional
delay); requests past the script hear ``default_text``. Every request that
arrives is recorded as a ``TranscriptionRequest``, so a test can check which
model, key, file name, size and type reached the server.

The checks the real endpoint makes before it transcribes are kept, because
a bot that gets them wrong fails in production: the key (401), the model
(404), a file name with a supported suffix (400, the endpoint reads the
format from it), a file that is not empty (400) and at most 25 MB (413)."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from aiohttp import BodyPartReader, web

SUPPORTED_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
MAX_FILE_BYTES = 25 * 1024 * 1024
DEFAULT_MODELS = ("whisper-1", "gpt-4o-mini-transcribe", "gpt-4o-transcribe")


@dataclass
class Transcript:
    """What the endpoint heard; ``delay`` seconds pass before it answers."""

    text: str
    delay: float = 0.0
    language: str = "english"  # verbose_json names the language it detected


@dataclass
class TranscriptionFault:
    """An HTTP error in OpenAI's shape, after ``delay`` seconds."""

    status: int
    message: str = ""
    retry_after: float | None = None  # sets the Retry-After header (seconds)
    delay: float = 0.0


TranscriptionStep = Transcript | TranscriptionFault


@dataclass(frozen=True)
class TranscriptionRequest:
    """One request as the fake received it."""

    model: str
    file_name: str
    size: int  # bytes of the uploaded file
    content_type: str  # of the file part
    language: str | None
    response_format: str | None
    api_key: str | None
    data: bytes = field(repr=False)


# A response for a request the real endpoint refuses, None when it is fine.
AuthCheck = Callable[[web.Request], web.Response | None]


class FakeTranscriptions:
    """Mounted by FakeModelServer; ``auth_failure`` is its own key check, so
    both halves accept the same keys."""

    def __init__(self, auth_failure: AuthCheck) -> None:
        self._auth_failure = auth_failure
        self.models: tuple[str, ...] = DEFAULT_MODELS  # empty: accept any model name
        self.default_text = "hello"
        self.requests: list[TranscriptionRequest] = []
        self._script: deque[TranscriptionStep] = deque()

    def script(self, *steps: TranscriptionStep) -> None:
        """Queue steps; each accepted request consumes the first one."""
        self._script.extend(steps)

    @property
    def pending_steps(self) -> int:
        return len(self._script)

    async def handle(self, http: web.Request) -> web.StreamResponse:
        try:
            form, upload = await _read_form(http)
        except ValueError as exc:
            return _error(400, str(exc), param=None)
        request = self._record(http, form, upload)
        denied = self._auth_failure(http)
        if denied is not None:
            return denied
        refusal = self._refusal(request, upload is not None)
        if refusal is not None:
            return refusal
        step = self._script.popleft() if self._script else Transcript(self.default_text)
        if step.delay:
            await asyncio.sleep(step.delay)
        if isinstance(step, TranscriptionFault):
            return _fault(step)
        return _answer(step, request)

    def _record(self, http: web.Request, form: dict[str, str], upload: _Upload | None) -> TranscriptionRequest:
        scheme, _, key = http.headers.get("Authorization", "").partition(" ")
        request = TranscriptionRequest(
            model=form.get("model", ""),
            file_name=upload.name if upload else "",
            size=len(upload.data) if upload else 0,
            content_type=upload.content_type if upload else "",
            language=form.get("language"),
            response_format=form.get("response_format"),
            api_key=key.strip() if scheme.lower() == "bearer" and key.strip() else None,
            data=upload.data if upload else b"",
        )
        self.requests.append(request)
        return request

    def _refusal(self, request: TranscriptionRequest, has_file: bool) -> web.Response | None:
        """The real endpoint's checks, in its order."""
        if not request.model:
            return _error(400, "you must provide a model parameter", param="model")
        if not has_file:
            return _error(400, "you must provide a file parameter", param="file")
        if self.models and request.model not in self.models:
            return _error(
                404, f"The model `{request.model}` does not exist or you do not have access to it.",
                param="model", code="model_not_found", kind="invalid_request_error",
            )
        if request.response_format is not None and request.response_format not in RESPONSE_FORMATS:
            return _error(400, f"response_format must be one of {list(RESPONSE_FORMATS)}", param="response_format")
        if PurePosixPath(request.file_name).suffix.lower().lstrip(".") not in SUPPORTED_FORMATS:
            return _error(
                400, f"Invalid file format. Supported formats: {list(SUPPORTED_FORMATS)}",
                param="file", code="invalid_value",
            )
        if request.size > MAX_FILE_BYTES:
            return _error(413, f"Maximum content size limit ({MAX_FILE_BYTES}) exceeded", param="file")
        if request.size == 0:
            return _error(
                400, "Audio file is too short. Minimum audio length is 0.1 seconds.",
                param="file", code="audio_too_short",
            )
        return None


@dataclass(frozen=True)
class _Upload:
    name: str
    content_type: str
    data: bytes


async def _read_form(http: web.Request) -> tuple[dict[str, str], _Upload | None]:
    """The form's text fields and its file. Read part by part: aiohttp's
    ``post()`` stops at 1 MB, and audio is larger than that."""
    if not http.content_type.startswith("multipart/"):
        raise ValueError("Invalid Content-Type header: expected multipart/form-data")
    fields: dict[str, str] = {}
    upload: _Upload | None = None
    reader = await http.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.filename is not None:
            content_type = part.headers.get("Content-Type", "application/octet-stream")
            upload = _Upload(part.filename, content_type, bytes(await part.read()))
        else:
            fields[part.name] = await part.text()
    return fields, upload


def wav_bytes(seconds: float = 1.0, *, rate: int = 16_000, frequency: float = 440.0) -> bytes:
    """A real WAV file (16-bit mono, a sine tone) for tests to send."""
    frames = int(seconds * rate)
    samples = (int(12_000 * math.sin(2 * math.pi * frequency * i / rate)) for i in range(frames))
    out = io.BytesIO()
    with wave.open(out, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"".join(struct.pack("<h", sample) for sample in samples))
    return out.getvalue()


def _answer(step: Transcript, request: TranscriptionRequest) -> web.Response:
    text, kind = step.text, request.response_format or "json"
    if kind == "text":
        return web.Response(text=text, content_type="text/plain")
    if kind in ("srt", "vtt"):
        return web.Response(text=_captions(text, kind), content_type="text/plain")
    if kind == "verbose_json":
        duration = _wav_seconds(request.data)
        return web.json_response({
            "task": "transcribe", "language": step.language, "duration": duration, "text": text,
            "segments": [{"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text}] if text else [],
        })
    return web.json_response({"text": text})


def _captions(text: str, kind: str) -> str:
    if kind == "vtt":
        return f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n"
    return f"1\n00:00:00,000 --> 00:00:01,000\n{text}\n"


def _wav_seconds(data: bytes) -> float:
    """A WAV's length from its header; other formats are not decoded here."""
    try:
        with wave.open(io.BytesIO(data)) as audio:
            return round(audio.getnframes() / audio.getframerate(), 3)
    except (wave.Error, EOFError):
        return 0.0


def _fault(fault: TranscriptionFault) -> web.Response:
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
    default = "Rate limit reached for requests" if fault.status == 429 else "The server had an error processing your request."
    kind = "requests" if fault.status == 429 else "server_error" if fault.status >= 500 else "invalid_request_error"
    code = "rate_limit_exceeded" if fault.status == 429 else None
    body = _error_body(fault.message or default, kind, None, code)
    return web.json_response(body, status=fault.status, headers=headers)


def _error(
    status: int, message: str, *, param: str | None, code: str | None = None, kind: str = "invalid_request_error"
) -> web.Response:
    return web.json_response(_error_body(message, kind, param, code), status=status)


def _error_body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
