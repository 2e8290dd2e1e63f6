"""Documents a user sends (text, Markdown, CSV, JSON... up to the sandbox's
file size limit) are saved into their private files, and the model is told so
in the turn that follows, with the caption as the user's request."""

from __future__ import annotations

import asyncio
import logging
from pathlib import PurePosixPath

from telegram import Document, Message, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.channels.telegram.inbound import TelegramInbound, meant_for_bot, strip_mention
from bot.channels.telegram.replies import reply
from bot.context import RequestContext
from bot.i18n import add_strings, t
from bot.tools.sandbox import FileSandbox, SandboxError, human_size

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset(
    {".txt", ".text", ".md", ".markdown", ".csv", ".tsv", ".json", ".jsonl", ".log", ".yaml", ".yml",
     ".toml", ".ini", ".xml", ".html", ".htm", ".srt", ".py", ".js", ".sql"}
)
TEXT_MIME_TYPES = frozenset(
    {"application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml",
     "application/csv", "application/x-ndjson", "application/sql", "application/javascript"}
)

add_strings(
    {
        "en": {
            "documents_not_text": (
                "I can keep text files (txt, md, csv, json and similar) up to {limit}. "
                "This one doesn't look like text."
            ),
            "documents_too_big": "That file is {size}; I can keep files up to {limit}.",
            "documents_download_failed": "I couldn't download that file from Telegram. Please try sending it again.",
            "documents_not_saved": "I couldn't save that file: {reason}",
        },
        "ru": {
            "documents_not_text": (
                "Я могу сохранять текстовые файлы (txt, md, csv, json и похожие) размером до {limit}. "
                "Этот файл не похож на текст."
            ),
            "documents_too_big": "Файл весит {size}, а я сохраняю файлы до {limit}.",
            "documents_download_failed": "Не получилось скачать файл из Telegram. Попробуйте отправить его ещё раз.",
            "documents_not_saved": "Не получилось сохранить файл: {reason}",
        },
    }
)


def looks_textual(document: Document) -> bool:
    mime = (document.mime_type or "").lower()
    suffix = PurePosixPath(document.file_name or "").suffix.lower()
    return mime.startswith("text/") or mime in TEXT_MIME_TYPES or suffix in TEXT_SUFFIXES


def decode_text(data: bytes) -> str | None:
    """The text of an upload, or None if it is not UTF-8 text (a binary file
    renamed to .txt, for example)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return text


def model_note(file_name: str, saved_as: str, size: int, caption: str) -> str:
    note = (
        f'[The user sent the file "{file_name}" ({human_size(size)}). It is saved in their files as '
        f'"{saved_as}"; read it with read_file("{saved_as}") when needed.]'
    )
    return f"{note}\n{caption}" if caption else note


class DocumentIntake:
    """Documents take the inbound path text messages take: the same gates,
    addressing and answer, so they pass exactly the same checks."""

    def __init__(self, inbound: TelegramInbound, files: FileSandbox) -> None:
        self._inbound = inbound
        self._files = files

    async def on_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.document is None:
            return
        if not meant_for_bot(message, context.bot):
            return  # a file shared in a group, not meant for the bot
        ctx = await self._inbound.gate(update)
        if ctx is None:
            return
        saved = await self._save(update, message, message.document, ctx)
        if saved is None:
            return
        caption = strip_mention(message.caption or "", context.bot.username).strip()
        name = message.document.file_name or saved[0]
        await self._inbound.answer(update, context.bot, ctx, model_note(name, saved[0], saved[1], caption))

    async def _save(
        self, update: Update, message: Message, document: Document, ctx: RequestContext
    ) -> tuple[str, int] | None:
        """(saved path, size), or None after telling the user why not."""
        limit = self._files.limits.max_file_bytes
        if not looks_textual(document):
            await reply(update, t("documents_not_text", ctx.language, limit=human_size(limit)))
            return None
        if document.file_size and document.file_size > limit:
            size = human_size(document.file_size)
            await reply(update, t("documents_too_big", ctx.language, size=size, limit=human_size(limit)))
            return None
        try:
            file = await document.get_file()
            data = bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("could not download a document in chat %s: %s", message.chat.id, exc)
            await reply(update, t("documents_download_failed", ctx.language))
            return None
        if len(data) > limit:  # file_size is optional in the Bot API
            await reply(update, t("documents_too_big", ctx.language, size=human_size(len(data)), limit=human_size(limit)))
            return None
        text = decode_text(data)
        if text is None:
            await reply(update, t("documents_not_text", ctx.language, limit=human_size(limit)))
            return None
        name = document.file_name or "document.txt"
        try:
            written = await asyncio.to_thread(self._files.save_document, ctx.user_id, name, text)
        except SandboxError as exc:
            await reply(update, t("documents_not_saved", ctx.language, reason=str(exc)))
            return None
        return written.path, len(data)
