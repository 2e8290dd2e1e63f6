"""Voice notes, audio files and video notes end to end: the real bot against
the fake Bot API and the fake model server (chat and transcriptions)."""

from __future__ import annotations

import json

from sqlalchemy import select

from bot.app import Arium
from bot.channels.telegram.voice import PREVIEW_CHARS
from bot.storage.models import Reminder
from tests.conftest import BotFactory, eventually, handled_so_far
from tests.fakes.model_server import FakeModelServer, Reply, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram
from tests.fakes.transcriptions import Transcript, TranscriptionFault, wav_bytes

PRIVATE = 1001
GROUP = -100777
WHISPER = "openai:whisper-1"
# Telegram's apps record OGG/Opus; the fake endpoint reads only the name's suffix.
OGG = b"OggS\x00\x02" + bytes(range(256)) * 8


def user_texts(model: FakeModelServer) -> list[str]:
    """The last user message of each chat request the model got."""
    return [request.last_user_text for request in model.chat_requests()]


async def stored_history(app: Arium, count: int) -> list[str]:
    history = await eventually(lambda: app.messages.history(PRIVATE, 10_000), lambda h: len(h) == count)
    return [message.content for message in history]


async def test_a_voice_note_is_quoted_then_answered_as_if_typed(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.transcriptions.script(Transcript("What is the capital of France?"))
    model.script(Reply(text="Paris."))
    app = await start_bot(transcription_model=WHISPER)
    tg.user_voice(OGG, duration=4)
    heard, answer = await tg.wait_messages(PRIVATE, 2)
    assert heard.text == "🎤 “What is the capital of France?”"
    assert answer.text == "Paris."
    assert user_texts(model) == ["What is the capital of France?"]
    [request] = model.transcriptions.requests
    assert (request.model, request.file_name, request.content_type, request.size) == (
        "whisper-1", "voice.ogg", "audio/ogg", len(OGG)
    )
    assert request.data == OGG and request.language is None  # no hint unless BOT_VOICE_LANGUAGE_HINT
    assert await stored_history(app, 2) == ["What is the capital of France?", "Paris."]


async def test_a_russian_user_gets_russian_framing_and_the_hint(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.transcriptions.script(Transcript("Какая завтра погода?"))
    await start_bot(transcription_model=WHISPER, bot_voice_language_hint=True)
    tg.user_voice(OGG, language_code="ru")
    heard, answer = await tg.wait_messages(PRIVATE, 2)
    assert heard.text == "🎤 «Какая завтра погода?»"
    assert answer.text == "echo: Какая завтра погода?"
    assert model.transcriptions.requests[0].language == "ru"


async def test_an_audio_file_with_a_caption_and_a_long_transcript(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    lecture = " ".join(f"sentence number {i} of a long lecture." for i in range(40))
    model.transcriptions.script(Transcript(lecture))
    app = await start_bot(transcription_model=WHISPER)
    audio = wav_bytes(1.0)
    tg.user_audio(audio, duration=1, file_name="lecture.wav", mime_type="audio/wav", caption="summarize it")
    heard, _ = await tg.wait_messages(PRIVATE, 2)
    assert heard.text.startswith("🎤 “sentence number 0") and heard.text.endswith("…”")
    assert len(heard.text) <= PREVIEW_CHARS + len("🎤 “…”")  # cut, at a word
    # The model, history and memory get every word, then the caption.
    assert user_texts(model) == [f"{lecture}\n\nsummarize it"]
    assert (model.transcriptions.requests[0].file_name, model.transcriptions.requests[0].size) == ("lecture.wav", len(audio))
    assert (await stored_history(app, 2))[0] == f"{lecture}\n\nsummarize it"


async def test_a_video_note_is_transcribed_from_its_mp4(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.transcriptions.script(Transcript("hello from a round video"))
    await start_bot(transcription_model=WHISPER)
    tg.user_video_note(b"\x00\x00\x00\x18ftypmp42" + OGG, duration=6)
    heard, answer = await tg.wait_messages(PRIVATE, 2)
    assert (heard.text, answer.text) == ("🎤 “hello from a round video”", "echo: hello from a round video")
    assert (model.transcriptions.requests[0].file_name, model.transcriptions.requests[0].content_type) == (
        "video_note.mp4", "video/mp4"
    )


async def test_the_fallback_endpoint_answers_when_the_first_fails(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.accepted_keys.add("second-key")
    model.transcriptions.script(TranscriptionFault(500), Transcript("still understood"))
    await start_bot(
        transcription_model=WHISPER,
        transcription_endpoints=[{"model": "gpt-4o-mini-transcribe", "api_key": "second-key"}],
    )
    tg.user_voice(OGG)
    heard, answer = await tg.wait_messages(PRIVATE, 2)
    assert (heard.text, answer.text) == ("🎤 “still understood”", "echo: still understood")
    asked = [(r.model, r.api_key) for r in model.transcriptions.requests]
    assert asked == [("whisper-1", "test-key"), ("gpt-4o-mini-transcribe", "second-key")]


async def test_when_every_endpoint_fails_nothing_is_kept(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.transcriptions.script(TranscriptionFault(500))
    app = await start_bot(
        transcription_model=WHISPER,
        transcription_endpoints=[{"model": "whisper-1", "base_url": f"{FakeModelServer.refused_url()}/v1"}],
    )
    tg.user_voice(OGG)
    [failed] = await tg.wait_messages(PRIVATE, 1)
    assert failed.text.startswith("I couldn't transcribe that recording") and "Nothing was saved" in failed.text
    await handled_so_far(tg, PRIVATE)
    assert model.chat_requests() == []
    assert await app.messages.history(PRIVATE, 10_000) == []
    assert len(model.transcriptions.requests) == 1  # the second endpoint was never reached: refused


async def test_audio_no_endpoint_can_read_gets_its_own_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(transcription_model=WHISPER)
    # No name and a type nobody knows: the endpoint cannot tell the format.
    tg.user_audio(b"\x01\x02\x03", file_name=None, mime_type="audio/x-mystery")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert "audio format" in answer.text
    assert model.transcriptions.requests[0].file_name == "audio" and model.chat_requests() == []


async def test_long_or_big_recordings_are_refused_before_download(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(transcription_model=WHISPER, bot_voice_max_seconds=60, bot_voice_max_mb=0.001)
    tg.user_voice(b"short", duration=61)
    tg.user_voice(OGG, duration=5)
    tg.user_voice(OGG, duration=5, language_code="ru")
    too_long, too_big, too_big_ru = await tg.wait_messages(PRIVATE, 3)
    assert too_long.text.startswith("That recording is 1 min 1 s long") and "1 min 0 s" in too_long.text
    assert too_big.text.startswith("That recording is 2.0 KB") and "1.0 KB" in too_big.text
    assert too_big_ru.text.startswith("Запись весит 2.0 KB")
    assert tg.downloads == [] and model.transcriptions.requests == [] and model.chat_requests() == []


async def test_a_size_the_message_did_not_declare_is_checked_after_download(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(transcription_model=WHISPER, bot_voice_max_mb=0.001)
    tg.user_voice(OGG, declare_size=False)
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.startswith("That recording is 2.0 KB")
    assert len(tg.downloads) == 1 and model.transcriptions.requests == []


async def test_zero_byte_recordings_and_silence(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.transcriptions.script(Transcript("   "))
    app = await start_bot(transcription_model=WHISPER)
    tg.user_voice(b"")  # declared empty: not even downloaded
    tg.user_voice(b"", declare_size=False)  # found empty once downloaded
    tg.user_voice(OGG)  # transcribed as nothing: silence
    empty, empty_too, silence = await tg.wait_messages(PRIVATE, 3)
    assert empty.text == empty_too.text == "That recording is empty: there is nothing in it to listen to."
    assert silence.text.startswith("I couldn't hear any words")
    assert len(tg.downloads) == 2 and len(model.transcriptions.requests) == 1
    await handled_so_far(tg, PRIVATE)
    assert model.chat_requests() == [] and await app.messages.history(PRIVATE, 10_000) == []


async def test_without_a_transcription_model_voice_is_not_enabled(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    assert app.transcriber is None
    tg.user_voice(OGG)
    tg.user_video_note(OGG, language_code="ru")
    english, russian = await tg.wait_messages(PRIVATE, 2)
    assert english.text == "Voice messages are not enabled on this bot. Please send your message as text."
    assert russian.text.startswith("Голосовые сообщения в этом боте не включены")
    assert tg.downloads == [] and model.transcriptions.requests == [] and model.chat_requests() == []


async def test_in_groups_only_recordings_for_the_bot_are_transcribed(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.transcriptions.script(Transcript("what time is it?"))
    await start_bot(transcription_model=WHISPER)
    tg.user_voice(OGG, chat_id=GROUP, user_id=5)  # chatter between members
    await handled_so_far(tg, GROUP, user_id=5)
    assert tg.downloads == [] and not tg.messages(GROUP)[:-1]  # only the /help answer
    tg.user_voice(OGG, chat_id=GROUP, user_id=5, caption="@arium_test_bot")
    await tg.wait_for(lambda: any(m.text.startswith("echo:") for m in tg.messages(GROUP)))
    heard, answer = [m for m in tg.messages(GROUP) if "/help" not in m.text]
    assert heard.text == "🎤 “what time is it?”" and heard.reply_to_message_id is not None
    # In groups the model hears who speaks; the mention is not part of the question.
    assert answer.text == "echo: Ann: what time is it?"
    assert len(model.transcriptions.requests) == 1


async def test_remind_by_voice_creates_the_reminder(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    spoken = "Remind me tomorrow at 9 to call mom."
    model.transcriptions.script(Transcript(spoken))
    model.script(
        Reply(tool_calls=[ToolCallSpec("create_reminder", {"text": "call mom", "when": "tomorrow at 9"})]),
        Reply(text="Done: I'll remind you tomorrow at 09:00 to call mom."),
    )
    app = await start_bot(transcription_model=WHISPER)
    tg.user_voice(OGG, duration=3)
    heard, answer = await tg.wait_messages(PRIVATE, 2)
    assert heard.text == f"🎤 “{spoken}”" and answer.text.startswith("Done")
    first, second = model.chat_requests()
    assert first.last_user_text == spoken
    assert "create_reminder" in {tool["function"]["name"] for tool in first.body["tools"]}
    created = json.loads(second.messages[-1]["content"])
    assert created["text"] == "call mom" and created["fires_at"].endswith(" 09:00")
    async with app.db.reading() as session:
        stored = (await session.execute(select(Reminder))).scalars().all()
    assert [(r.user_id, r.text) for r in stored] == [(PRIVATE, "call mom")]
    tg.user_text("/reminders")
    listed = await tg.wait_messages(PRIVATE, 3)
    assert "call mom" in listed[-1].text
