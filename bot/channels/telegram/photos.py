"""Photos (and images sent as files) for models that can see: the largest
size Telegram offers within the limits is downloaded, bounded by
bot/media/images.py, and goes to the model with the caption as the
question. The decisions (limits, re-encoding, which endpoints see) live in
the core; this module only picks a size and downloads it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from telegram import Document, Message, PhotoSize, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from bot.channels.telegram.inbound import TelegramInbound, meant_for_bot, strip_mention
from bot.channels.telegram.replies import reply
from bot.context import RequestContext
from bot.i18n import t
from bot.media.images import ImageLimits, ImageUnreadable, fit_image

log = logging.getLogger(__name__)

# Telegram lets bots download files up to 20 MB; an image over it cannot be read at all.
DOWNLOAD_LIMIT = 20 * 1024 * 1024


@dataclass(frozen=True)
class PhotoSettings:
    limits: ImageLimits
    can_see: Callable[[], bool]  # an enabled model endpoint takes images


def best_size(sizes: Sequence[PhotoSize], limits: ImageLimits) -> PhotoSize:
    """The largest size within the limits; if none is, the smallest (it is
    scaled down after the download)."""
    fitting = [
        size
        for size in sizes
        if max(size.width, size.height) <= limits.max_side and (size.file_size or 0) <= limits.max_bytes
    ]
    if fitting:
        return max(fitting, key=lambda size: size.width * size.height)
    return min(sizes, key=lambda size: size.width * size.height)


class PhotoIntake:
    def __init__(self, inbound: TelegramInbound, settings: PhotoSettings) -> None:
        self._inbound = inbound
        self._settings = settings

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.photo or not meant_for_bot(message, context.bot):
            return
        await self._answer(update, context, message, best_size(message.photo, self._settings.limits))

    async def on_image_document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.document is None or not meant_for_bot(message, context.bot):
            return
        await self._answer(update, context, message, message.document)

    async def _answer(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, message: Message, file: PhotoSize | Document
    ) -> None:
        ctx = await self._inbound.gate(update)
        if ctx is None:
            return
        if not self._settings.can_see():
            await reply(update, t("vision_unavailable", ctx.language))
            return
        data = await self._download(update, message, file, ctx)
        if data is None:
            return
        try:
            image = await asyncio.to_thread(fit_image, data, self._settings.limits)
        except ImageUnreadable as exc:
            log.info("an image in chat %s could not be read: %s", message.chat.id, exc)
            await reply(update, t("photo_unreadable", ctx.language))
            return
        caption = strip_mention(message.caption or "", context.bot.username).strip()
        await self._inbound.answer(update, context.bot, ctx, caption, images=(image,))

    @staticmethod
    async def _download(
        update: Update, message: Message, file: PhotoSize | Document, ctx: RequestContext
    ) -> bytes | None:
        if file.file_size and file.file_size > DOWNLOAD_LIMIT:
            await reply(update, t("photo_unreadable", ctx.language))
            return None
        try:
            handle = await file.get_file()
            return bytes(await handle.download_as_bytearray())
        except TelegramError as exc:
            log.warning("could not download a photo in chat %s: %s", message.chat.id, exc)
            await reply(update, t("photo_download_failed", ctx.language))
            return None
