"""A one-off Telegram check for `doctor`, kept here so only this package imports telegram."""

from __future__ import annotations

from telegram.error import InvalidToken, TelegramError

from bot.channels.telegram.outbound import new_bot
from bot.errors import AriumError


async def get_me(token: str, api_url: str) -> str:
    bot = new_bot(token, api_url)
    try:
        async with bot:
            return f"token valid, bot is @{bot.username}"
    except InvalidToken:
        raise AriumError("Telegram rejected TELEGRAM_BOT_TOKEN") from None
    except TelegramError as exc:
        raise AriumError(f"Telegram API error: {exc}") from None
