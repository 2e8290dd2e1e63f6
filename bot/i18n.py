"""User-facing strings, in every language we speak. Core strings live here;
a feature keeps its own table in its package and adds it with
``add_strings`` at import, so features do not edit one shared file."""

from __future__ import annotations

import html
import re

DEFAULT_LANGUAGE = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "start": (
            "Hi, {name}! I'm {bot}, your personal AI assistant.\n"
            "Just write to me — ask a question, think something through, draft a text.\n"
            "In groups, mention me or reply to my message.\n\n/help lists what I can do."
        ),
        "help_header": "<b>What I understand</b>\nJust write a message and I'll answer.",
        "help_admin_header": "<b>Admin commands</b> (only you see these)",
        "cmd_start": "greeting",
        "cmd_help": "this list",
        "cmd_new": "start a fresh conversation (I forget the current one)",
        "new_conversation": "Started a fresh conversation. What's on your mind?",
        "unsupported_media": "I can only read text messages for now. Please describe it in words.",
        "unknown_command": "I don't know the command {command}. /help lists the ones I understand.",
        "empty_message": "Your message looks empty. What would you like to ask?",
        "banned": "Sorry, you can't use this bot.",
        "model_failed": (
            "Sorry, the AI is unavailable right now. Your message was saved — please try again in a minute."
        ),
        "stream_broken": "[the answer was cut off by a connection problem — ask me to continue]",
        "vision_unavailable": (
            "I can't look at images with the models this bot uses. Please describe the picture in words."
        ),
        "photo_download_failed": "I couldn't download that photo from Telegram. Please try sending it again.",
        "photo_unreadable": "I couldn't open that image. Please send it as a normal photo (JPEG or PNG).",
        "internal_error": "Something went wrong on my side. Your message was saved; please try again.",
        "too_long": "That message is too long for me ({length} characters, limit {limit}). Please shorten it.",
    },
    "ru": {
        "start": (
            "Привет, {name}! Я {bot}, ваш личный ИИ-ассистент.\n"
            "Просто напишите мне — задайте вопрос, обсудите идею, попросите составить текст.\n"
            "В группах упомяните меня или ответьте на моё сообщение.\n\n/help — что я умею."
        ),
        "help_header": "<b>Что я понимаю</b>\nПросто напишите сообщение, и я отвечу.",
        "help_admin_header": "<b>Команды администратора</b> (их видите только вы)",
        "cmd_start": "приветствие",
        "cmd_help": "этот список",
        "cmd_new": "начать новый разговор (текущий я забуду)",
        "new_conversation": "Начали новый разговор. О чём поговорим?",
        "unsupported_media": "Пока я понимаю только текст. Пожалуйста, опишите это словами.",
        "unknown_command": "Я не знаю команду {command}. Список команд — /help.",
        "empty_message": "Сообщение пустое. О чём вы хотели спросить?",
        "banned": "Извините, вам недоступен этот бот.",
        "model_failed": (
            "Извините, ИИ сейчас недоступен. Ваше сообщение сохранено — попробуйте ещё раз через минуту."
        ),
        "stream_broken": "[ответ оборвался из-за сбоя связи — попросите меня продолжить]",
        "vision_unavailable": (
            "Модели этого бота не умеют смотреть на изображения. Пожалуйста, опишите картинку словами."
        ),
        "photo_download_failed": "Не получилось скачать фото из Telegram. Попробуйте отправить его ещё раз.",
        "photo_unreadable": "Не получилось открыть изображение. Отправьте его как обычное фото (JPEG или PNG).",
        "internal_error": "У меня что-то пошло не так. Ваше сообщение сохранено, попробуйте ещё раз.",
        "too_long": "Сообщение слишком длинное ({length} символов, предел {limit}). Сократите его, пожалуйста.",
    },
}


def add_strings(table: dict[str, dict[str, str]]) -> None:
    """Add a feature's strings; a key defined twice is a bug, so it fails loudly."""
    for language, strings in table.items():
        existing = STRINGS.setdefault(language, {})
        clashes = sorted(set(existing) & set(strings))
        if clashes:
            raise ValueError(f"i18n keys defined twice for {language}: {', '.join(clashes)}")
        existing.update(strings)


def t(key: str, language: str | None = None, **values: object) -> str:
    """The string ``key`` in ``language`` (falling back to English), filled in."""
    lang = (language or DEFAULT_LANGUAGE).split("-")[0].lower()
    table = STRINGS.get(lang, STRINGS[DEFAULT_LANGUAGE])
    template = table.get(key) or STRINGS[DEFAULT_LANGUAGE][key]
    return template.format(**values) if values else template


def plain(text: str) -> str:
    """A string of this table without its markup (some carry <b>), for
    channels that show plain text, such as the console."""
    return html.unescape(re.sub(r"</?b>", "", text))
