"""Voice notes, audio files and video notes, answered as if they were typed.

The recording is transcribed (bot/media/transcription.py); the user first
sees what was understood, quoted in a message of its own, then the answer,
which takes the inbound path a text takes (the same gates, addressing and
input checks) with the transcript as the user's text, so history and memory
keep the words, not the audio. Whatever goes wrong before the transcript
exists (too long, download, transcription) is said plainly and keeps
nothing: no message is stored and the model is not asked."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import timedelta

from telegram import Audio, Bot, Message, Update, VideoNote, Voice
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import ContextTypes, filters
from telegram.warnings import PTBDeprecationWarning

from bot.channels.telegram.inbound import TelegramInbound, meant_for_bot, strip_mention
from bot.channels.telegram.replies import reply
from bot.context import RequestContext
from bot.errors import TranscriptionFailed
from bot.i18n import add_strings, t
from bot.media.transcription import AudioClip, Transcriber, upload_name
from bot.runtime.units import human_size

log = logging.getLogger(__name__)

# What this module answers; registered before the catch-all "unsupported".
VOICE_MESSAGES = filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE

# The quoted transcript is a confirmation, not a copy: long speech is cut.
PREVIEW_CHARS = 300

add_strings(
    {
        "en": {
            "voice_heard": "🎤 “{transcript}”",
            "voice_not_enabled": "Voice messages are not enabled on this bot. Please send your message as text.",
            "voice_too_long": "That recording is {length} long; I can listen to {limit} at most. Please send a shorter one, or type it.",
            "voice_too_big": "That recording is {size}; I can take {limit} at most. Please send a shorter one, or type it.",
            "voice_empty_file": "That recording is empty: there is nothing in it to listen to.",
            "voice_download_failed": "I couldn't download that recording from Telegram. Please try sending it again.",
            "voice_failed": (
                "I couldn't transcribe that recording: speech recognition isn't answering right now. "
                "Nothing was saved; please try again in a minute, or type it."
            ),
            "voice_unreadable": (
                "I couldn't read that recording's audio format. Please send it as a voice message or an MP3, or type it."
            ),
            "voice_silence": "I couldn't hear any words in that recording. Could you say it again, or type it?",
            "voice_length_minutes": "{minutes} min {seconds} s",
            "voice_length_seconds": "{seconds} s",
        },
        "ru": {
            "voice_heard": "🎤 «{transcript}»",
            "voice_not_enabled": "Голосовые сообщения в этом боте не включены. Пожалуйста, напишите текстом.",
            "voice_too_long": "Запись длится {length}, а я слушаю не больше {limit}. Пришлите запись покороче или напишите текстом.",
            "voice_too_big": "Запись весит {size}, а я принимаю не больше {limit}. Пришлите запись покороче или напишите текстом.",
            "voice_empty_file": "Запись пустая: в ней нечего слушать.",
            "voice_download_failed": "Не получилось скачать запись из Telegram. Попробуйте отправить её ещё раз.",
            "voice_failed": (
                "Не получилось распознать запись: распознавание речи сейчас не отвечает. "
                "Ничего не сохранено; попробуйте через минуту или напишите текстом."
            ),
            "voice_unreadable": (
                "Не получилось прочитать формат этой записи. Пришлите её голосовым сообщением или в MP3, "
                "или напишите текстом."
            ),
            "voice_silence": "В этой записи не слышно слов. Повторите, пожалуйста, или напишите текстом.",
            "voice_length_minutes": "{minutes} мин {seconds} с",
            "voice_length_seconds": "{seconds} с",
        },
    }
)


@dataclass(frozen=True)
class VoiceLimits:
    """Recordings past either limit are refused before they are downloaded."""

    max_seconds: int = 600
    max_bytes: int = 20 * 1024 * 1024


@dataclass(frozen=True)
class Recording:
    """What a voice note, audio file or video note says about itself."""

    medium: Voice | Audio | VideoNote
    seconds: float  # as the sender's app declared it
    declared_size: int | None  # optional in the Bot API
    file_name: str  # as the transcription endpoint should see it
    mime_type: str


def recording_of(message: Message) -> Recording | None:
    if message.voice is not None:
        voice = message.voice
        mime = voice.mime_type or "audio/ogg"
        return Recording(voice, _seconds(voice), voice.file_size, upload_name(None, mime, stem="voice"), mime)
    if message.audio is not None:
        audio = message.audio
        mime = audio.mime_type or "audio/mpeg"
        return Recording(audio, _seconds(audio), audio.file_size, upload_name(audio.file_name, mime), mime)
    if message.video_note is not None:
        note = message.video_note
        # Video notes are always MP4; the Bot API does not give their type.
        return Recording(note, _seconds(note), note.file_size, "video_note.mp4", "video/mp4")
    return None


def _seconds(medium: Voice | Audio | VideoNote) -> float:
    with warnings.catch_warnings():  # PTB announces a type change of this attribute (int -> timedelta)
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = medium.duration
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def spoken_length(seconds: float, language: str) -> str:
    minutes, rest = divmod(round(seconds), 60)
    if minutes:
        return t("voice_length_minutes", language, minutes=minutes, seconds=rest)
    return t("voice_length_seconds", language, seconds=rest)


def preview(transcript: str, limit: int = PREVIEW_CHARS) -> str:
    """The transcript on one line, cut at a word with … when it is long."""
    text = " ".join(transcript.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:  # a word boundary not too far back
        cut = cut[:space]
    return cut.rstrip(" ,.;:-—") + "…"


def as_typed(transcript: str, caption: str) -> str:
    """The user's turn: what they said, then what they wrote with it."""
    return f"{transcript}\n\n{caption}" if caption else transcript


@dataclass(frozen=True)
class VoiceSettings:
    """How the channel treats recordings. ``transcriber`` None: voice is not
    enabled, and the user is told so. ``language_hint``: pass the user's
    interface language to the endpoint."""

    transcriber: Transcriber | None = None
    limits: VoiceLimits = VoiceLimits()
    language_hint: bool = False


class VoiceIntake:
    """Recordings take the inbound path a text takes, once transcribed."""

    def __init__(self, inbound: TelegramInbound, settings: VoiceSettings) -> None:
        self._inbound = inbound
        self._transcriber = settings.transcriber
        self._limits = settings.limits
        self._language_hint = settings.language_hint

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        recording = recording_of(message) if message is not None else None
        if message is None or recording is None:
            return
        if not meant_for_bot(message, context.bot):
            return  # a recording shared in a group, not meant for the bot
        if self._transcriber is None:
            # Nothing reaches the model, so the daily quota is not charged.
            ctx = await self._inbound.gate(update, reaches_model=False)
            if ctx is not None:
                await reply(update, t("voice_not_enabled", ctx.language))
            return
        ctx = await self._inbound.gate(update, reaches_model=True)
        if ctx is None:
            return
        transcript = await self._transcript(update, context.bot, recording, ctx, self._transcriber)
        if transcript is None:
            return
        await reply(update, t("voice_heard", ctx.language, transcript=preview(transcript)))
        caption = strip_mention(message.caption or "", context.bot.username).strip()
        await self._inbound.answer(update, context.bot, ctx, as_typed(transcript, caption))

    async def _transcript(
        self, update: Update, bot: Bot, recording: Recording, ctx: RequestContext, transcriber: Transcriber
    ) -> str | None:
        """The words of the recording, or None after telling the user why not."""
        refusal = self._refusal(recording, ctx.language)
        if refusal is not None:
            await reply(update, refusal)
            return None
        data = await self._download(update, recording, ctx)
        if data is None:
            return None
        await self._show_working(bot, ctx.chat_id)
        clip = AudioClip(data, recording.file_name, recording.mime_type)
        try:
            transcript = await transcriber.transcribe(clip, language=ctx.language if self._language_hint else None)
        except TranscriptionFailed as exc:
            log.warning("could not transcribe a recording in chat %s: %s", ctx.chat_id, exc)
            await reply(update, t("voice_unreadable" if exc.audio_refused else "voice_failed", ctx.language))
            return None
        if not transcript:
            await reply(update, t("voice_silence", ctx.language))
            return None
        return transcript

    def _refusal(self, recording: Recording, language: str) -> str | None:
        """Why the recording is not worth downloading, from what it declares."""
        limits = self._limits
        if recording.seconds > limits.max_seconds:
            return t(
                "voice_too_long",
                language,
                length=spoken_length(recording.seconds, language),
                limit=spoken_length(limits.max_seconds, language),
            )
        if recording.declared_size is not None and recording.declared_size > limits.max_bytes:
            return self._too_big(recording.declared_size, language)
        if recording.declared_size == 0:
            return t("voice_empty_file", language)
        return None

    def _too_big(self, size: int, language: str) -> str:
        return t("voice_too_big", language, size=human_size(size), limit=human_size(self._limits.max_bytes))

    async def _download(self, update: Update, recording: Recording, ctx: RequestContext) -> bytes | None:
        try:
            file = await recording.medium.get_file()
            data = bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("could not download a recording in chat %s: %s", ctx.chat_id, exc)
            await reply(update, t("voice_download_failed", ctx.language))
            return None
        # file_size is optional in the Bot API: what arrived is checked too.
        if len(data) > self._limits.max_bytes:
            await reply(update, self._too_big(len(data), ctx.language))
            return None
        if not data:
            await reply(update, t("voice_empty_file", ctx.language))
            return None
        return data

    @staticmethod
    async def _show_working(bot: Bot, chat_id: int) -> None:
        # Transcription takes seconds; "typing…" says the bot is on it.
        try:
            await bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.info("typing action failed: %s", exc)
