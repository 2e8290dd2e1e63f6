"""Documents a user sends in Telegram: downloaded here, then read, stored and
described to the model by the core (bot/media/document_reader.py); the
answer is the turn's answer, or the core's refusal."""

from __future__ import annotations

import logging

from telegram import Document, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.channels.telegram.inbound import TelegramInbound, meant_for_bot, strip_mention
from bot.channels.telegram.replies import reply
from bot.i18n import add_strings, t
from bot.media.document_reader import Accepted, DocumentReader, Upload

log = logging.getLogger(__name__)

add_strings(
    {
        "en": {
            "documents_download_failed": "I couldn't download that file from Telegram. Please try sending it again.",
        },
        "ru": {
            "documents_download_failed": "Не получилось скачать файл из Telegram. Попробуйте отправить его ещё раз.",
        },
    }
)


class DocumentIntake:
    """Documents take the inbound path text messages take: the same gates,
    addressing and answer, so they pass exactly the same checks."""

    def __init__(self, inbound: TelegramInbound, reader: DocumentReader) -> None:
        self._inbound = inbound
        self._reader = reader

    async def on_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.document is None:
            return
        if not meant_for_bot(message, context.bot):
            return  # a file shared in a group, not meant for the bot
        ctx = await self._inbound.gate(update)
        if ctx is None:
            return
        document = message.document
        refusal = self._reader.refusal_before_download(document.file_size, ctx.language)
        if refusal is not None:
            await reply(update, refusal)
            return
        data = await self._download(document, message.chat.id)
        if data is None:
            await reply(update, t("documents_download_failed", ctx.language))
            return
        caption = strip_mention(message.caption or "", context.bot.username).strip()
        upload = Upload(document.file_name, document.mime_type, data)
        outcome = await self._reader.receive(ctx.user_id, ctx.language, upload, caption)
        if not isinstance(outcome, Accepted):
            await reply(update, outcome.message)
            return
        await self._inbound.answer(update, context.bot, ctx, outcome.note)

    async def _download(self, document: Document, chat_id: int) -> bytes | None:
        try:
            file = await document.get_file()
            return bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("could not download a document in chat %s: %s", chat_id, exc)
            return None
