"""Telegram side of memory: /memory (paged, a delete button per item),
/forget <words> and /forget all (after confirmation), /export (a JSON file),
/deleteme (after confirmation).

Buttons carry their whole action in callback_data ("mem:<action>:<args>"),
so they work across restarts and need no server-side state. Every action
applies to the user who pressed the button (from the update, never from the
data), so a forged or forwarded button cannot touch anyone else's memories.
Memory is personal: these commands answer only in private chats.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

import bot.memory.strings  # noqa: F401  (registers this module's strings)
from bot.channels.telegram.inbound import NEW_MESSAGES
from bot.channels.telegram.replies import answer_button, reply
from bot.context import RequestContext
from bot.errors import AriumError
from bot.i18n import t
from bot.memory.records import MemoryRecord
from bot.memory.service import MemoryService
from bot.memory.commands import (
    erase_everything,
    export_filename,
    forget,
    forget_everything,
    forget_request,
    memory_page,
    page_argument,
)
from bot.personal_data import UserData

log = logging.getLogger(__name__)

Gate = Callable[[Update], Awaitable[RequestContext | None]]
COMMANDS = ("memory", "forget", "export", "deleteme")
PAGE_SIZE = 8
CALLBACK_LIMIT = 64  # bytes of callback_data Telegram accepts
PREFIX = "mem"


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def pack_ids(ids: list[int], prefix: str) -> tuple[str, int]:
    """callback_data with as many ids as fit in 64 bytes, and how many fit."""
    data, count = prefix, 0
    for memory_id in ids:
        candidate = data + ("," if count else "") + _base36(memory_id)
        if len(candidate.encode()) > CALLBACK_LIMIT:
            break
        data, count = candidate, count + 1
    return data, count


def unpack_ids(text: str) -> list[int]:
    """Ids from callback_data; raises ValueError on anything malformed."""
    ids = [int(part, 36) for part in text.split(",")]
    if not ids or any(i <= 0 for i in ids):
        raise ValueError("no ids")
    return ids


class MemoryCommands:
    def __init__(self, memory: MemoryService, userdata: UserData) -> None:
        self._memory = memory
        self._userdata = userdata
        self._gate: Gate | None = None

    def register(self, app: Application, gate: Gate) -> None:  # type: ignore[type-arg]
        self._gate = gate
        app.add_handler(CommandHandler("memory", self._on_memory, filters=NEW_MESSAGES))
        app.add_handler(CommandHandler("forget", self._on_forget, filters=NEW_MESSAGES))
        app.add_handler(CommandHandler("export", self._on_export, filters=NEW_MESSAGES))
        app.add_handler(CommandHandler("deleteme", self._on_deleteme, filters=NEW_MESSAGES))
        app.add_handler(CallbackQueryHandler(self._on_button, pattern=rf"^{PREFIX}:"))

    # Commands -------------------------------------------------------------

    async def _private(self, update: Update, command: str) -> RequestContext | None:
        assert self._gate is not None
        ctx = await self._gate(update)
        if ctx is None:
            return None
        if not ctx.is_private:
            await _reply(update, t("mem_private_only", ctx.language, command=f"/{command}"))
            return None
        return ctx

    async def _on_memory(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._private(update, "memory")
        if ctx is None:
            return
        page = page_argument(" ".join(context.args or []))
        text, markup = await self._render_page(ctx, page)
        await _reply(update, text, markup)

    async def _on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._private(update, "forget")
        if ctx is None:
            return
        request = await forget_request(self._memory, ctx, " ".join(context.args or []))
        if request.answer is not None:
            await _reply(update, request.answer)
        elif request.everything:
            await _reply(update, request.prompt(ctx.language), _yes_no(ctx, f"{PREFIX}:fga", "mem_yes_forget"))
        else:
            data, fitted = pack_ids(request.ids, f"{PREFIX}:fgt:")
            shown = fitted if fitted < len(request.ids) else None
            await _reply(update, request.prompt(ctx.language, shown), _yes_no(ctx, data, "mem_yes_forget"))

    async def _on_export(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._private(update, "export")
        message = update.effective_message
        if ctx is None or message is None:
            return
        try:
            data = await self._userdata.export_json(ctx.user_id)
        except AriumError as exc:
            log.error("export failed: %s", exc)
            await _reply(update, t("mem_export_failed", ctx.language))
            return
        name = export_filename(datetime.now(timezone.utc))
        try:
            await message.reply_document(
                document=io.BytesIO(data), filename=name, caption=t("mem_export_caption", ctx.language)
            )
        except TelegramError as exc:
            log.error("could not send the export: %s", exc)
            await _reply(update, t("mem_export_failed", ctx.language))

    async def _on_deleteme(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._private(update, "deleteme")
        if ctx is None:
            return
        text = t("mem_deleteme_confirm", ctx.language)
        await _reply(update, text, _yes_no(ctx, f"{PREFIX}:dme", "mem_yes_erase"))

    # Buttons --------------------------------------------------------------

    async def _on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        assert self._gate is not None
        ctx = await self._gate(update)
        if ctx is None or not ctx.is_private:
            await _answer(query)
            return
        action, _, argument = (query.data or "").removeprefix(f"{PREFIX}:").partition(":")
        try:
            notice, text, markup = await self._act(ctx, action, argument)
        except ValueError:  # malformed data: an old client, a forged button
            notice, text, markup = t("mem_button_stale", ctx.language), None, None
        except AriumError as exc:
            log.error("memory button %r failed: %s", query.data, exc)
            notice, text, markup = t("mem_failed", ctx.language), None, None
        await _answer(query, notice)
        if text is not None:
            await _edit(query, text, markup)

    async def _act(
        self, ctx: RequestContext, action: str, argument: str
    ) -> tuple[str | None, str | None, InlineKeyboardMarkup | None]:
        """(pop-up notice, new message text, new keyboard) for a button press."""
        language = ctx.language
        if action == "page":
            text, markup = await self._render_page(ctx, int(argument))
            return None, text, markup
        if action == "del":
            memory_id, _, page = argument.partition(":")
            deleted = await self._memory.delete(ctx.user_id, unpack_ids(memory_id)[:1])
            text, markup = await self._render_page(ctx, int(page or 0))
            return t("mem_deleted" if deleted else "mem_already_gone", language), text, markup
        if action == "fgt":
            return None, await forget(self._memory, ctx, unpack_ids(argument)), None
        if action == "fga":
            return None, await forget_everything(self._memory, ctx), None
        if action == "dme":
            return None, await erase_everything(self._userdata, ctx), None
        if action == "no":
            return None, t("mem_cancelled", language), None
        raise ValueError(f"unknown action {action!r}")

    async def _render_page(self, ctx: RequestContext, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
        shown = await memory_page(self._memory, ctx.user_id, page, PAGE_SIZE)
        if shown is None:
            return t("mem_empty", ctx.language), None
        lines = [*shown.lines(ctx.language), "", t("mem_page_footer", ctx.language)]
        return "\n".join(lines), _page_keyboard(shown.items, shown.page, shown.pages)


def _page_keyboard(items: list[MemoryRecord], page: int, pages: int) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(f"🗑 {n}", callback_data=f"{PREFIX}:del:{_base36(m.id)}:{page}")
        for n, m in enumerate(items, 1)
    ]
    rows = [buttons[i : i + 4] for i in range(0, len(buttons), 4)]
    navigation = []
    if page > 0:
        navigation.append(InlineKeyboardButton("◀", callback_data=f"{PREFIX}:page:{page - 1}"))
    if page < pages - 1:
        navigation.append(InlineKeyboardButton("▶", callback_data=f"{PREFIX}:page:{page + 1}"))
    if navigation:
        rows.append(navigation)
    return InlineKeyboardMarkup(rows)


def _yes_no(ctx: RequestContext, yes_data: str, yes_key: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[
            InlineKeyboardButton(t(yes_key, ctx.language), callback_data=yes_data),
            InlineKeyboardButton(t("mem_no", ctx.language), callback_data=f"{PREFIX}:no"),
        ]]
    )


async def _reply(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    await reply(update, text, keyboard=markup)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    await answer_button(query, text)


async def _edit(query: object, text: str, markup: InlineKeyboardMarkup | None) -> None:
    try:
        await query.edit_message_text(text, reply_markup=markup)  # type: ignore[attr-defined]
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            log.info("could not update the memory message: %s", exc)
    except TelegramError as exc:
        log.info("could not update the memory message: %s", exc)
