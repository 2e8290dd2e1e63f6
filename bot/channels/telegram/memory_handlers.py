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
import math
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
from bot.memory.tools import clear_matches
from bot.userdata import UserData

log = logging.getLogger(__name__)

Gate = Callable[[Update], Awaitable[RequestContext | None]]
COMMANDS = ("memory", "forget", "export", "deleteme")
PAGE_SIZE = 8
SHOWN_CHARS = 300  # per memory in the list, so a page stays far below 4096
FORGET_SEARCH = 10
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


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


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
        page = _page_argument(context.args)
        text, markup = await self._render_page(ctx, page)
        await _reply(update, text, markup)

    async def _on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._private(update, "forget")
        if ctx is None:
            return
        query = " ".join(context.args or []).strip()
        if not query:
            await _reply(update, t("mem_forget_usage", ctx.language))
        elif query.lower() in ("all", "всё", "все"):
            await self._confirm_forget_all(update, ctx)
        else:
            await self._confirm_forget(update, ctx, query)

    async def _confirm_forget(self, update: Update, ctx: RequestContext, query: str) -> None:
        hits = clear_matches(await self._memory.search(ctx.user_id, query, FORGET_SEARCH, wait=2.0))
        if not hits:
            await _reply(update, t("mem_forget_none", ctx.language, query=_shorten(query)))
            return
        data, fitted = pack_ids([hit.memory.id for hit in hits], f"{PREFIX}:fgt:")
        shown = hits[:fitted]
        lines = [t("mem_forget_confirm", ctx.language, count=len(shown)), ""]
        lines += [f"• {_shorten(hit.memory.text)}" for hit in shown]
        if fitted < len(hits):
            lines += ["", t("mem_forget_more", ctx.language, shown=fitted)]
        await _reply(update, "\n".join(lines), _yes_no(ctx, data, "mem_yes_forget"))

    async def _confirm_forget_all(self, update: Update, ctx: RequestContext) -> None:
        count = await self._memory.count(ctx.user_id)
        if count == 0:
            await _reply(update, t("mem_empty", ctx.language))
            return
        text = t("mem_forget_all_confirm", ctx.language, count=count)
        await _reply(update, text, _yes_no(ctx, f"{PREFIX}:fga", "mem_yes_forget"))

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
        name = f"arium-export-{datetime.now(timezone.utc):%Y-%m-%d}.json"
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
            deleted = await self._memory.delete(ctx.user_id, unpack_ids(argument))
            return None, t("mem_forget_done", language, count=len(deleted)), None
        if action == "fga":
            count = await self._memory.delete_all(ctx.user_id)
            return None, t("mem_forget_all_done", language, count=count), None
        if action == "dme":
            erased = await self._userdata.erase(ctx.user_id)
            details = t("mem_erase_details", language, memories=erased.get("memories", 0),
                        messages=erased.get("history", 0))
            return None, t("mem_deleteme_done", language, details=details), None
        if action == "no":
            return None, t("mem_cancelled", language), None
        raise ValueError(f"unknown action {action!r}")

    async def _render_page(self, ctx: RequestContext, page: int) -> tuple[str, InlineKeyboardMarkup | None]:
        total = await self._memory.count(ctx.user_id)
        if total == 0:
            return t("mem_empty", ctx.language), None
        pages = math.ceil(total / PAGE_SIZE)
        page = min(max(page, 0), pages - 1)
        items, total = await self._memory.page(ctx.user_id, page, PAGE_SIZE)
        if not items:  # the list shrank meanwhile
            return t("mem_empty", ctx.language), None
        header = t("mem_page_header", ctx.language, total=total, page=page + 1, pages=pages)
        lines = [header, ""] + [f"{n}. {_shorten(m.text)}" for n, m in enumerate(items, 1)]
        lines += ["", t("mem_page_footer", ctx.language)]
        return "\n".join(lines), _page_keyboard(items, page, pages)


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


def _page_argument(args: list[str] | None) -> int:
    """``/memory 3`` opens page 3; anything else opens the first."""
    try:
        return max(0, int((args or ["1"])[0]) - 1)
    except ValueError:
        return 0


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
