"""Registering a webhook with Telegram for a process that has no Telegram
channel of its own (the scaled mode's gateway)."""

from __future__ import annotations

import logging

from telegram import Bot

from bot.channels.telegram.channel import UPDATE_KINDS

log = logging.getLogger(__name__)


async def register_webhook(token: str, api_url: str, url: str, secret: str) -> None:
    """setWebhook with the secret and the update kinds the bot handles;
    updates that waited meanwhile are kept (drop_pending_updates=False)."""
    async with Bot(token, base_url=f"{api_url}/bot", base_file_url=f"{api_url}/file/bot") as bot:
        await bot.set_webhook(url=url, secret_token=secret, allowed_updates=UPDATE_KINDS, drop_pending_updates=False)
        log.info("Telegram: webhook set to the gateway")
