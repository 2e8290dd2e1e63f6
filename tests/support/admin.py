"""The admin commands (/stats and the like) driven through the fake
Telegram: the admin, the price list and the model names as the usage
records name them, a command sent with its replies awaited, and the size of
a chart the bot sent."""

from __future__ import annotations

import struct
from typing import Any

from tests.fakes.telegram_server import FakeTelegram

ADMIN = 1001  # the fake Telegram's default user; a test makes them admin with bot_admin_ids
MINI = "openai:gpt-4o-mini/openai:gpt-4o-mini"  # what usage_daily holds for BOT_MODELS=openai:gpt-4o-mini
MISTRAL = "primary/mistral:mistral-small-latest"
PRICES = {"openai:gpt-4o-mini": (0.15, 0.60)}


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def command(tg: FakeTelegram, text: str, chat_id: int = ADMIN, *, replies: int = 1, **kwargs: Any) -> list[Any]:
    before = len(tg.messages(chat_id))
    tg.user_text(text, chat_id=chat_id, **kwargs)
    messages = await tg.wait_messages(chat_id, before + replies)
    return messages[before:]
