"""Reminders and time zones in Telegram: /remind, /reminders, /timezone, a
shared location, the buttons (callback data "rem:..."), and the Notifier
that delivers fired reminders."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable

from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters

from bot.channels.telegram.inbound import NEW_MESSAGES
from bot.channels.telegram.outbound import Problem, classify
from bot.channels.telegram.replies import answer_button, edit_after_button, reply
from bot.context import RequestContext
from bot.i18n import t
from bot.reminders import views
from bot.errors import RecipientBlocked
from bot.reminders.notifier import DeliveryFailed, DueReminder
from bot.reminders.parsing import ReminderInputError
from bot.reminders.service import SNOOZE_OPTIONS, ReminderService
from bot.reminders.timezones import describe, lookup_zone, zone_near
from bot.reminders.views import explain, fired_text

log = logging.getLogger(__name__)

Gate = Callable[[Update], Awaitable[RequestContext | None]]
_BUTTON = re.compile(r"^rem:(?:(c|d):(\d+)|s:(\d+):(10m|1h|1d)|(r)|tz:([\w/+\-]+))$")


# --- delivery -----------------------------------------------------------------------


def fired_keyboard(reminder_id: int, language: str) -> InlineKeyboardMarkup:
    labels = {"10m": "rem_btn_10m", "1h": "rem_btn_1h", "1d": "rem_btn_tomorrow"}
    snooze = [
        InlineKeyboardButton(t(labels[option], language), callback_data=f"rem:s:{reminder_id}:{option}")
        for option in SNOOZE_OPTIONS
    ]
    done = [InlineKeyboardButton(t("rem_btn_done", language), callback_data=f"rem:d:{reminder_id}")]
    return InlineKeyboardMarkup([snooze, done])


class TelegramReminderNotifier:
    """Delivers fired reminders as plain messages (user text is never parsed
    as markup) with snooze/done buttons, translating Telegram's errors."""

    def __init__(self, bot: Callable[[], Bot]) -> None:
        # The bot is built with the Application, after the scheduler that uses us.
        self._bot = bot

    async def deliver(self, reminder: DueReminder) -> None:
        try:
            await self._bot().send_message(
                reminder.chat_id, fired_text(reminder), reply_markup=fired_keyboard(reminder.id, reminder.language)
            )
        except TelegramError as exc:
            problem = classify(exc)
            if problem.kind in (Problem.BLOCKED, Problem.CHAT_GONE):
                raise RecipientBlocked(problem.message) from exc
            raise DeliveryFailed(problem.message) from exc


# --- commands and buttons ------------------------------------------------------------------


def _argument(message: Message) -> str:
    parts = (message.text or "").split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


class ReminderHandlers:
    def __init__(self, service: ReminderService) -> None:
        self._service = service
        self._gate: Gate | None = None

    def register(self, application: Application, gate: Gate) -> None:  # type: ignore[type-arg]
        self._gate = gate
        application.add_handler(CommandHandler("remind", self._on_remind, filters=NEW_MESSAGES))
        application.add_handler(CommandHandler("reminders", self._on_list, filters=NEW_MESSAGES))
        application.add_handler(CommandHandler("timezone", self._on_timezone, filters=NEW_MESSAGES))
        application.add_handler(CallbackQueryHandler(self._on_button, pattern=r"^rem:"))
        application.add_handler(MessageHandler(filters.LOCATION & filters.ChatType.PRIVATE, self._on_location))

    async def _ctx(self, update: Update) -> RequestContext | None:
        assert self._gate is not None
        return await self._gate(update)

    # /remind -----------------------------------------------------------------------

    async def _on_remind(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._ctx(update)
        message = update.effective_message
        if ctx is None or message is None:
            return
        await _reply(message, await views.remind(self._service, ctx, _argument(message)))

    # /reminders ----------------------------------------------------------------------

    async def _on_list(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._ctx(update)
        message = update.effective_message
        if ctx is None or message is None:
            return
        text, keyboard = await self._list_view(ctx)
        await _reply(message, text, html_mode=True, keyboard=keyboard)

    async def _list_view(self, ctx: RequestContext) -> tuple[str, InlineKeyboardMarkup | None]:
        listing = await views.reminder_list(self._service, ctx)
        if listing.header is None:
            return html.escape(listing.lines[0]), None
        # The header is an i18n template with markup; only the zone in it is data.
        header = t("rem_list_header", ctx.language, zone=html.escape(ctx.timezone))
        lines = [header, "", *(html.escape(line) for line in listing.lines)]
        buttons = [
            InlineKeyboardButton(t("rem_btn_cancel", ctx.language, n=number), callback_data=f"rem:c:{record.id}")
            for number, record in enumerate(listing.records, start=1)
        ]
        rows = [buttons[i : i + 5] for i in range(0, len(buttons), 5)]
        if listing.has_paused:
            rows.append([InlineKeyboardButton(t("rem_btn_resume", ctx.language), callback_data="rem:r")])
        return "\n".join(lines), InlineKeyboardMarkup(rows)

    # /timezone and locations -------------------------------------------------------------

    async def _on_timezone(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._ctx(update)
        message = update.effective_message
        if ctx is None or message is None:
            return
        query = _argument(message).strip()
        if not query:
            await _reply(message, views.current_zone_text(self._service, ctx))
            return
        found = lookup_zone(query[:100])
        if found.exact:
            await _reply(message, await views.set_zone(self._service, ctx, found.exact))
        elif found.suggestions:
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(z, callback_data=f"rem:tz:{z}")] for z in found.suggestions])
            await _reply(message, t("tz_pick", ctx.language), keyboard=keyboard)
        else:
            await _reply(message, t("tz_unknown", ctx.language, query=query[:100]))

    async def _on_location(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._ctx(update)
        message = update.effective_message
        if ctx is None or message is None or message.location is None:
            return
        zone_name = zone_near(message.location.latitude, message.location.longitude)
        local, _offset = describe(zone_name, self._service.now())
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(zone_name, callback_data=f"rem:tz:{zone_name}")]])
        await _reply(message, t("tz_location", ctx.language, zone=zone_name, local=local), keyboard=keyboard)

    # buttons ------------------------------------------------------------------------------

    async def _on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        ctx = await self._ctx(update)
        if ctx is None:
            await _answer(query)
            return
        match = _BUTTON.match(query.data or "")
        if match is None:
            await _answer(query, t("rem_gone", ctx.language))
            return
        kind, reminder_id, snooze_id, option, resume, zone_name = match.groups()
        if zone_name:
            await self._button_zone(query, ctx, zone_name)
        elif resume:
            count = await self._service.resume(ctx)
            await _answer(query, t("rem_resumed", ctx.language, count=count))
            await self._refresh_list(query, ctx)
        else:
            target = int(reminder_id or snooze_id)
            owner = await self._service.owner_of(target)
            if owner is None:
                await _answer(query, t("rem_gone", ctx.language))
            elif owner != ctx.user_id:
                await _answer(query, t("rem_not_yours", ctx.language))
            elif kind == "c":
                await self._button_cancel(query, ctx, target)
            elif kind == "d":
                await self._service.done(ctx.user_id, target)
                await _answer(query, t("rem_done", ctx.language))
                await _append_status(query, t("rem_done", ctx.language))
            else:
                await self._button_snooze(query, ctx, target, option)

    async def _button_cancel(self, query: CallbackQuery, ctx: RequestContext, reminder_id: int) -> None:
        record = await self._service.cancel(ctx.user_id, reminder_id)
        await _answer(query, t("rem_cancelled", ctx.language, text=record.text[:150]) if record else t("rem_gone", ctx.language))
        await self._refresh_list(query, ctx)

    async def _button_snooze(self, query: CallbackQuery, ctx: RequestContext, reminder_id: int, option: str) -> None:
        try:
            outcome = await self._service.snooze(ctx.user_id, reminder_id, option)  # type: ignore[arg-type]
        except ReminderInputError as exc:
            await _answer(query, explain(exc, ctx.language)[:190])
            return
        if outcome is None:
            await _answer(query, t("rem_gone", ctx.language))
            return
        status = t("rem_snoozed", ctx.language, when=outcome.when, zone=outcome.zone)
        await _answer(query, status)
        await _append_status(query, status)

    async def _button_zone(self, query: CallbackQuery, ctx: RequestContext, zone_name: str) -> None:
        found = lookup_zone(zone_name)
        if not found.exact:
            await _answer(query, t("tz_unknown", ctx.language, query=zone_name)[:190])
            return
        text = await views.set_zone(self._service, ctx, found.exact)
        await _answer(query)
        await _edit(query, text)

    async def _refresh_list(self, query: CallbackQuery, ctx: RequestContext) -> None:
        text, keyboard = await self._list_view(ctx)
        await _edit(query, text, html_mode=True, keyboard=keyboard)


async def _reply(
    message: Message, text: str, *, html_mode: bool = False, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    await reply(message, text, html=html_mode, keyboard=keyboard)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    await answer_button(query, text)


async def _edit(
    query: CallbackQuery, text: str, *, html_mode: bool = False, keyboard: InlineKeyboardMarkup | None = None
) -> None:
    await edit_after_button(query, text, html=html_mode, keyboard=keyboard)


async def _append_status(query: CallbackQuery, status: str) -> None:
    """The fired message, its buttons gone, with what was done to it."""
    message = query.message
    original = message.text if isinstance(message, Message) and message.text else ""
    await _edit(query, f"{original}\n\n{status}" if original else status)
