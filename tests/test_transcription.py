"""The Transcriber against the fake model server through the real openai SDK:
endpoints in order, errors translated into our tree, no secret in a message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from bot.errors import ModelAuthError, ModelBadRequest, ModelConnectError, ModelTransientError, TranscriptionFailed
from bot.media.transcription import AudioClip, Transcriber, TranscriptionEndpoint, endpoints_from, upload_name
from bot.settings import Settings
from tests.fakes.model_server import FakeModelServer
from tests.fakes.transcriptions import Transcript, TranscriptionFault, wav_bytes

CLIP = AudioClip(wav_bytes(0.2), "note.wav", "audio/wav")


@pytest.fixture
async def model() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as fake:
        yield fake


@pytest.fixture
async def transcribers() -> AsyncIterator[list[Transcriber]]:
    """Transcribers a test builds; their clients are closed at the end."""
    built: list[Transcriber] = []
    yield built
    for transcriber in built:
        await transcriber.aclose()


def build(built: list[Transcriber], endpoints: Sequence[TranscriptionEndpoint], timeout: float = 10.0) -> Transcriber:
    transcriber = Transcriber(endpoints, timeout=timeout, connect_timeout=2.0)
    built.append(transcriber)
    return transcriber


def at(model: FakeModelServer, name: str = "whisper-1", key: str = "test-key") -> TranscriptionEndpoint:
    return TranscriptionEndpoint(name, model.openai_base_url, key)


async def test_the_first_endpoint_answers_with_the_hint(model: FakeModelServer, transcribers: list[Transcriber]) -> None:
    model.transcriptions.script(Transcript("  Напомни мне завтра  "))
    transcriber = build(transcribers, [at(model)])
    assert await transcriber.transcribe(CLIP, language="ru") == "Напомни мне завтра"
    [request] = model.transcriptions.requests
    assert (request.model, request.file_name, request.content_type, request.language) == (
        "whisper-1", "note.wav", "audio/wav", "ru"
    )
    assert request.data == CLIP.data


async def test_a_failing_endpoint_hands_over_to_the_next(model: FakeModelServer, transcribers: list[Transcriber]) -> None:
    model.accepted_keys.add("second-key")
    model.transcriptions.script(TranscriptionFault(500), TranscriptionFault(429, retry_after=1), Transcript("third time"))
    transcriber = build(
        transcribers,
        [at(model), at(model, "gpt-4o-mini-transcribe", "second-key"), at(model, "gpt-4o-transcribe")],
    )
    assert await transcriber.transcribe(CLIP) == "third time"
    asked = [(r.model, r.api_key) for r in model.transcriptions.requests]
    assert asked == [("whisper-1", "test-key"), ("gpt-4o-mini-transcribe", "second-key"), ("gpt-4o-transcribe", "test-key")]


async def test_every_failure_is_ours_and_names_no_secret(model: FakeModelServer, transcribers: list[Transcriber]) -> None:
    model.transcriptions.script(TranscriptionFault(503, delay=30))
    refused = TranscriptionEndpoint("whisper-1", f"{FakeModelServer.refused_url()}/v1", "sk-refused-secret")
    transcriber = build(
        transcribers, [at(model), refused, at(model, key="sk-wrong-secret"), at(model, "whisper-9")], timeout=0.3
    )
    with pytest.raises(TranscriptionFailed) as caught:
        await transcriber.transcribe(CLIP)
    failures = caught.value.failures
    assert [type(f) for f in failures] == [ModelTransientError, ModelConnectError, ModelAuthError, type(failures[3])]
    assert "timed out" in str(failures[0]) and failures[3].status == 404
    assert not caught.value.audio_refused
    for secret in ("sk-refused-secret", "sk-wrong-secret", "test-key"):
        assert secret not in str(caught.value)


async def test_audio_every_endpoint_refuses_is_told_apart(model: FakeModelServer, transcribers: list[Transcriber]) -> None:
    model.accepted_keys.add("sk-echoed-secret")
    model.transcriptions.script(
        TranscriptionFault(400, message="bad audio sent with sk-echoed-secret"),
        TranscriptionFault(400, message="Audio file might be corrupted or unsupported"),
    )
    transcriber = build(transcribers, [at(model, key="sk-echoed-secret"), at(model, "gpt-4o-mini-transcribe")])
    with pytest.raises(TranscriptionFailed) as caught:
        await transcriber.transcribe(CLIP)
    assert caught.value.audio_refused
    assert all(isinstance(f, ModelBadRequest) for f in caught.value.failures)
    assert "sk-echoed-secret" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize(
    ("file_name", "mime", "expected"),
    [
        (None, "audio/ogg", "audio.ogg"),
        ("song.mp3", "audio/mpeg", "song.mp3"),
        ("track", "audio/mpeg", "track.mp3"),
        ("memo.opus", "audio/ogg; codecs=opus", "memo.ogg"),
        ("Lecture.M4A", None, "Lecture.M4A"),
        ("sample.xyz", "audio/x-unknown", "sample.xyz"),
    ],
)
def test_upload_names_carry_a_suffix_the_endpoint_reads(file_name: str | None, mime: str | None, expected: str) -> None:
    assert upload_name(file_name, mime) == expected


def test_endpoints_come_from_the_settings_with_openai_defaults() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        transcription_model="openai:whisper-1",
        openai_api_key="main-key",
        openai_base_url="http://127.0.0.1:9/v1",
        transcription_endpoints=[
            {"model": "whisper-large-v3", "base_url": "https://api.groq.com/openai/v1", "api_key": "groq-key"},
            {"model": "local-whisper"},
        ],
    )
    assert endpoints_from(settings) == [
        TranscriptionEndpoint("whisper-1", "http://127.0.0.1:9/v1", "main-key"),
        TranscriptionEndpoint("whisper-large-v3", "https://api.groq.com/openai/v1", "groq-key"),
        TranscriptionEndpoint("local-whisper", "http://127.0.0.1:9/v1", "main-key"),
    ]
    assert "groq-key" not in repr(endpoints_from(settings))
    assert endpoints_from(Settings(_env_file=None)) == []  # type: ignore[call-arg]
    assert Transcriber.from_settings(Settings(_env_file=None)) is None  # type: ignore[call-arg]
