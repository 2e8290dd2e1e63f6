"""Registering the webhook with Telegram: the same call whether the Telegram
channel itself takes the updates (`run` in webhook mode) or a process without
a channel does (the scaled mode's gateway)."""

from __future__ import annotations

import logging

from telegram import Bot

log = logging.getLogger(__name__)

# The update kinds the bot handles, asked for by polling and by the webhook alike.
UPDATE_KINDS = ["message", "edited_message", "callback_query"]


async def set_webhook(bot: Bot, url: str, secret: str) -> None:
    """setWebhook with the secret and the update kinds the bot handles;
    updates that waited meanwhile are still wanted (drop_pending_updates=False)."""
    await bot.set_webhook(url=url, secret_token=secret, allowed_updates=UPDATE_KINDS, drop_pending_updates=False)


async def register_webhook(token: str, api_url: str, url: str, secret: str) -> None:
    """The same, for a process with no Telegram channel of its own (the gateway)."""
    async with Bot(token, base_url=f"{api_url}/bot", base_file_url=f"{api_url}/file/bot") as bot:
        await set_webhook(bot, url, secret)
        log.info("Telegram: webhook set to the gateway")
