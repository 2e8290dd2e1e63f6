"""Answering in Telegram without ever raising: a reply, a button press
acknowledged, a message edited after a press. A failure is logged (the chat
may be gone, the press too old); the action that led here still counts."""

from __future__ import annotations

import logging

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType as TgChatType, ParseMode
from telegram.error import BadRequest, TelegramError

log = logging.getLogger(__name__)

# Telegram shows at most 200 characters of a button press's answer.
ANSWER_LIMIT = 200


async def reply(
    target: Update | Message, text: str, *, html: bool = False, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    """Answers the message (quoted in groups, where several people talk)."""
    message = target.effective_message if isinstance(target, Update) else target
    if message is None:
        return
    try:
        await message.reply_text(
            text,
            parse_mode=ParseMode.HTML if html else None,
            reply_markup=keyboard,
            do_quote=message.chat.type != TgChatType.PRIVATE,
        )
    except TelegramError as exc:
        log.error("could not reply in chat %s: %s", message.chat.id, exc)


async def answer_button(query: CallbackQuery, text: str | None = None) -> None:
    try:
        await query.answer(text[:ANSWER_LIMIT] if text else None)
    except TelegramError as exc:  # too old to answer: the press itself still counts
        log.info("could not answer a button press: %s", exc)


async def edit_after_button(
    query: CallbackQuery, text: str, *, html: bool = False, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    """Replaces the pressed message's text and buttons; "not modified" is no error."""
    try:
        await query.edit_message_text(text, parse_mode=ParseMode.HTML if html else None, reply_markup=keyboard)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.warning("could not update a message after a button press: %s", exc)
    except TelegramError as exc:
        log.warning("could not update a message after a button press: %s", exc)
