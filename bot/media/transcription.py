"""Speech to text: voice notes, audio files and video notes become the text
of a turn, as if the user had typed it.

An OpenAI-compatible ``/v1/audio/transcriptions`` endpoint (OpenAI, Groq, a
local whisper server) is asked through the openai SDK. TRANSCRIPTION_MODEL
names the first endpoint; ``[[transcription_endpoints]]`` in the TOML file
names more, tried in order when one fails. An endpoint is asked once: the
sender is waiting for an answer, and the next endpoint is a better bet than
a second try at one that just failed (the SDK's own retries are off, as for
the chat models, so attempts never multiply). SDK errors are translated into
our exception tree here, at the boundary; callers see only
``TranscriptionFailed``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from bot.errors import ModelError, ModelTransientError, TranscriptionFailed
from bot.llm.base import display_url

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from bot.settings import Settings

log = logging.getLogger(__name__)

# OpenAI's endpoint tells formats apart by the file name's suffix and refuses
# names without one of these; most compatible servers follow it.
ACCEPTED_SUFFIXES = frozenset(
    {".flac", ".m4a", ".mp3", ".mp4", ".mpeg", ".mpga", ".oga", ".ogg", ".wav", ".webm"}
)
SUFFIX_BY_MIME = {
    "audio/ogg": ".ogg",
    "audio/opus": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/mp4": ".m4a",
    "audio/m4a": ".m4a",
    "audio/x-m4a": ".m4a",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/webm": ".webm",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}
# Without an API key the SDK refuses to build a client; a local whisper
# server needs none, so it gets a placeholder it ignores.
NO_KEY = "not-needed"


@dataclass(frozen=True)
class TranscriptionEndpoint:
    """One OpenAI-compatible speech-to-text model at a URL with a key."""

    model: str
    base_url: str | None = None  # None: the SDK's default (api.openai.com)
    api_key: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """For logs and errors: the model and host, never the key."""
        return f"openai:{self.model}@{display_url(self.base_url, 'api.openai.com')}"


@dataclass(frozen=True)
class AudioClip:
    """A recording to transcribe, as the user sent it."""

    data: bytes = field(repr=False)
    file_name: str
    mime_type: str


def upload_name(file_name: str | None, mime_type: str | None, *, stem: str = "audio") -> str:
    """A file name the endpoint accepts for this recording: the sender's own
    when its suffix is a known audio format, else one derived from the MIME
    type (an audio file named "track" of type audio/mpeg is sent as
    "track.mp3"). Unknown formats keep their name: the server decides."""
    path = PurePosixPath(file_name or stem)
    if path.suffix.lower() in ACCEPTED_SUFFIXES:
        return path.name
    suffix = SUFFIX_BY_MIME.get((mime_type or "").split(";")[0].strip().lower())
    if suffix is None:
        return path.name
    return f"{path.stem if path.suffix else path.name}{suffix}"


def endpoints_from(settings: Settings) -> list[TranscriptionEndpoint]:
    """TRANSCRIPTION_MODEL first (with OPENAI_API_KEY and OPENAI_BASE_URL),
    then each ``[[transcription_endpoints]]`` entry; empty when unset."""
    if settings.transcription_model is None:
        return []
    default_key = _secret(settings.openai_api_key)
    endpoints = [TranscriptionEndpoint(settings.transcription_model.model, settings.openai_base_url, default_key)]
    for entry in settings.transcription_endpoints:
        endpoints.append(
            TranscriptionEndpoint(
                entry.model,
                entry.base_url or settings.openai_base_url,
                _secret(entry.api_key) or default_key,
            )
        )
    return endpoints


class Transcriber:
    """Turns a recording into text through the first endpoint that answers.
    One SDK client per endpoint, built here once and reused by every voice
    note (each client keeps its connection pool)."""

    def __init__(
        self, endpoints: Sequence[TranscriptionEndpoint], *, timeout: float, connect_timeout: float = 10.0
    ) -> None:
        if not endpoints:
            raise ValueError("a Transcriber needs at least one endpoint")
        # The SDK is imported here, not with the module: a bot without
        # TRANSCRIPTION_MODEL (or with Mistral only) never pays for it at start.
        import httpx2
        from openai import AsyncOpenAI

        self.endpoints = tuple(endpoints)
        # A connect timeout of its own: an endpoint that is down should hand
        # over to the next in seconds, not after the whole transcription budget.
        limit = httpx2.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._clients = [
            AsyncOpenAI(api_key=e.api_key or NO_KEY, base_url=e.base_url, max_retries=0, timeout=limit)
            for e in self.endpoints
        ]

    @classmethod
    def from_settings(cls, settings: Settings) -> Transcriber | None:
        """None when TRANSCRIPTION_MODEL is unset (voice is not enabled)."""
        endpoints = endpoints_from(settings)
        if not endpoints:
            return None
        return cls(endpoints, timeout=settings.bot_voice_timeout, connect_timeout=settings.bot_connect_timeout)

    async def transcribe(self, clip: AudioClip, *, language: str | None = None) -> str:
        """The words spoken in ``clip`` (empty for silence). ``language``: an
        ISO-639-1 hint such as "ru". Raises TranscriptionFailed when no
        endpoint could do it."""
        failures: list[ModelError] = []
        for endpoint, client in zip(self.endpoints, self._clients, strict=True):
            try:
                return await self._ask(endpoint, client, clip, language)
            except ModelError as error:
                failures.append(error)
                log.warning("transcription by %s failed: %s", endpoint.name, error)
        reasons = "; ".join(str(failure) for failure in failures)
        raise TranscriptionFailed(f"no transcription endpoint could transcribe the audio: {reasons}", failures=failures)

    async def _ask(
        self, endpoint: TranscriptionEndpoint, client: AsyncOpenAI, clip: AudioClip, language: str | None
    ) -> str:
        options: dict[str, Any] = {"language": language} if language else {}
        try:
            result = await client.audio.transcriptions.create(
                model=endpoint.model, file=(clip.file_name, clip.data, clip.mime_type), **options
            )
        except Exception as exc:
            from bot.llm.openai_provider import translate_openai_error

            secret = endpoint.api_key if endpoint.api_key != NO_KEY else None
            error = translate_openai_error(exc, endpoint.name, secret=secret)
            if error is None:
                raise
            raise error from exc
        return _text_of(result, endpoint)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


def _text_of(result: object, endpoint: TranscriptionEndpoint) -> str:
    # JSON answers come back as a Transcription; a server that answers plain
    # text (some do, whatever was asked) comes back as str.
    text = result if isinstance(result, str) else getattr(result, "text", None)
    if not isinstance(text, str):
        raise ModelTransientError(f"{endpoint.name}: the answer has no transcript text", endpoint=endpoint.name)
    return text.strip()


def _secret(value: Any) -> str | None:
    plain = value.get_secret_value() if value is not None else None
    return plain or None
