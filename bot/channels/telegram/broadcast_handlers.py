"""/broadcast in Telegram: the command, its buttons ("bc:send:<id>",
"bc:cancel:<id>"), the progress message, and the bulk Sender.

The text keeps the admin's Telegram formatting. Telegram clients turn what
the admin types (bold, italics, links, code, spoilers) into message entities
before the bot sees it, so the entities after the command are converted to
Telegram HTML (python-telegram-bot's ``Message.text_html``) and users get
exactly what the admin wrote. Markdown conversion (render.py, made for the
model's answers) is deliberately not applied: it would reinterpret
characters the admin meant literally (``snake_case``, ``2*3*4``). The admin
is shown the result before confirming.

Bulk sends go through their own ``telegram.Bot`` without PTB's rate limiter:
its automatic 429 retries pause only requests that pass through it, and
would hide flood control from the Pacer that paces every bulk send."""

from __future__ import annotations

import logging
import re

from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.constants import ChatType as TgChatType, MessageEntityType, ParseMode
from telegram.error import BadRequest, RetryAfter, TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes
from telegram.request import HTTPXRequest

import bot.admin.broadcast_strings  # noqa: F401  (registers the strings)
from bot.channels.telegram.outbound import Problem, classify, new_bot, retry_after_seconds
from bot.channels.telegram.replies import answer_button
from bot.admin.broadcast import (
    Broadcaster,
    BroadcastTextError,
    Cancelled,
    Confirmed,
    FloodControl,
    ProgressView,
    SendFailed,
    State,
)
from bot.channels.telegram.admin_base import AdminCommands, reply
from bot.context import RequestContext
from bot.errors import RecipientBlocked
from bot.runtime.events import EventBus
from bot.i18n import t

log = logging.getLogger(__name__)

TELEGRAM_LIMIT = 4096
_BUTTON = re.compile(r"^bc:(send|cancel):(\d{1,18})$")


# --- the text --------------------------------------------------------------------------


def text_after_command(message: Message) -> tuple[str, str]:
    """(Telegram HTML, visible text) of what follows the command, with the
    admin's formatting kept. Entity offsets count UTF-16 code units."""
    text = message.text or ""
    entities = list(message.entities or ())
    units = text.encode("utf-16-le")
    command = next((e for e in entities if e.type == MessageEntityType.BOT_COMMAND and e.offset == 0), None)
    cut = command.length if command else 0
    rest = units[cut * 2 :].decode("utf-16-le")
    body = rest.strip()
    if not body:
        return "", ""
    start = cut + len(rest[: len(rest) - len(rest.lstrip())].encode("utf-16-le")) // 2
    end = start + len(body.encode("utf-16-le")) // 2
    shifted: list[MessageEntity] = []
    for entity in entities:
        if entity is command:
            continue
        first, last = max(entity.offset, start), min(entity.offset + entity.length, end)
        if last <= first:
            continue
        data = entity.to_dict()
        data.update(offset=first - start, length=last - first)
        shifted.append(MessageEntity.de_json(data, None))
    # A Message is the public way to render entities as Telegram HTML.
    detached = Message(message_id=message.message_id, date=message.date, chat=message.chat, text=body, entities=shifted)
    return detached.text_html, body


# --- the Sender for bulk sends -------------------------------------------------------------------


def _translate(exc: TelegramError) -> Exception:
    """A failed bulk send in the broadcaster's terms."""
    problem = classify(exc)
    if problem.kind is Problem.BLOCKED:
        return RecipientBlocked(problem.message)
    if problem.kind is Problem.FLOOD:
        return FloodControl(problem.message, problem.retry_after)
    # Not retried: a chat that is gone, or a send that may have arrived (no duplicates).
    return SendFailed(problem.message, retryable=problem.kind in (Problem.REJECTED, Problem.TRANSIENT))


class TelegramBulkSender:
    """Implements bot.admin.broadcast.Sender with its own connection pool."""

    max_text_length = TELEGRAM_LIMIT

    def __init__(self, token: str, api_url: str, *, connections: int = 8) -> None:
        self._request = HTTPXRequest(connection_pool_size=connections, pool_timeout=10.0)
        self._gone: set[tuple[int, int]] = set()  # progress messages deleted by the admin
        self._bot = new_bot(token, api_url, request=self._request)

    async def send(self, user_id: int, text: str) -> None:
        try:
            await self._bot.send_message(user_id, text, parse_mode=ParseMode.HTML)
        except TelegramError as exc:
            raise _translate(exc) from exc

    async def show_progress(self, chat_id: int, message_id: int, view: ProgressView) -> None:
        if (chat_id, message_id) in self._gone:
            return
        try:
            await self._bot.edit_message_text(
                progress_text(view), chat_id=chat_id, message_id=message_id,
                reply_markup=progress_keyboard(view),
            )
        except RetryAfter as exc:
            raise FloodControl(exc.message, retry_after_seconds(exc)) from exc
        except BadRequest as exc:
            reason = exc.message.lower()
            if "not found" in reason:
                self._gone.add((chat_id, message_id))  # deleted: the broadcast goes on without it
                log.info("the progress message of broadcast %s is gone; not updating it", view.broadcast_id)
            elif "not modified" not in reason:
                log.warning("could not update the progress of broadcast %s: %s", view.broadcast_id, exc.message)
        except TelegramError as exc:
            log.warning("could not update the progress of broadcast %s: %s", view.broadcast_id, exc)

    async def close(self) -> None:
        await self._request.shutdown()


# --- rendering ----------------------------------------------------------------------------


def duration(seconds: float, language: str) -> str:
    total = max(0, round(seconds))
    minutes, rest = divmod(total, 60)
    if minutes:
        return t("bc_duration_min", language, minutes=minutes, seconds=f"{rest:02d}")
    return t("bc_duration_s", language, seconds=rest)


def progress_text(view: ProgressView) -> str:
    language, bid = view.language, view.broadcast_id
    counts = t(
        "bc_progress_counts", language, sent=view.sent, total=view.total, blocked=view.blocked, failed=view.failed
    )
    if view.state is State.DONE:
        return f"{t('bc_progress_done', language, id=bid, elapsed=duration(view.elapsed_seconds, language))}\n{counts}"
    if view.state is State.CANCELLED:
        left = max(0, view.total - view.done)
        return f"{t('bc_progress_cancelled', language, id=bid, left=left)}\n{counts}"
    if view.state is State.PAUSED:
        return f"{t('bc_progress_paused', language, id=bid)}\n{counts}"
    if view.rate is None or view.eta_seconds is None:
        speed = t("bc_progress_measuring", language)
    else:
        speed = t("bc_progress_rate", language, rate=f"{view.rate:.1f}", eta=duration(view.eta_seconds, language))
    return f"{t('bc_progress_sending', language, id=bid)}\n{counts}\n{speed}"


def progress_keyboard(view: ProgressView) -> InlineKeyboardMarkup | None:
    if view.state is not State.SENDING:
        return None
    stop = InlineKeyboardButton(t("bc_btn_stop", view.language), callback_data=f"bc:cancel:{view.broadcast_id}")
    return InlineKeyboardMarkup([[stop]])


def confirm_keyboard(broadcast_id: int, count: int, language: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(t("bc_btn_send", language, count=count), callback_data=f"bc:send:{broadcast_id}"),
        InlineKeyboardButton(t("bc_btn_cancel", language), callback_data=f"bc:cancel:{broadcast_id}"),
    ]])


# --- the command and its buttons ------------------------------------------------------------


class BroadcastCommands(AdminCommands):
    def __init__(self, events: EventBus, broadcaster: Broadcaster) -> None:
        super().__init__(events)
        self._broadcaster = broadcaster

    def register_admin(self, application: Application) -> None:  # type: ignore[type-arg]
        self.command(application, "broadcast", self._on_broadcast)
        application.add_handler(CallbackQueryHandler(self._on_button, pattern=r"^bc:"))

    async def _on_broadcast(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        message = update.effective_message
        assert message is not None
        if message.chat.type != TgChatType.PRIVATE:
            await reply(update, t("bc_private_only", ctx.language))
            return "refused: not a private chat"
        html, visible = text_after_command(message)
        try:
            draft = await self._broadcaster.prepare(ctx.user_id, html, visible)
        except BroadcastTextError as exc:
            if exc.code == "empty":
                return await self.usage(update, ctx, t("bc_usage", ctx.language))
            await reply(update, t("bc_too_long", ctx.language, **exc.values))
            return f"refused: {exc.values.get('length')} characters"
        broadcast_id = draft.record.id
        if draft.audience == 0:
            await self._broadcaster.discard(broadcast_id)
            await reply(update, t("bc_nobody", ctx.language))
            return "refused: no active users"
        try:
            # The preview is the broadcast itself: Telegram validates the markup here.
            await message.reply_text(draft.record.text, parse_mode=ParseMode.HTML, do_quote=False)
            control = await message.reply_text(
                t("bc_confirm", ctx.language, count=draft.audience),
                reply_markup=confirm_keyboard(broadcast_id, draft.audience, ctx.language), do_quote=False,
            )
        except TelegramError as exc:
            await self._broadcaster.discard(broadcast_id)
            await reply(update, t("bc_preview_failed", ctx.language, reason=str(exc)[:200]))
            return f"refused: preview failed ({str(exc)[:100]})"
        await self._broadcaster.attach_progress(broadcast_id, control.chat.id, control.message_id)
        return f"draft #{broadcast_id} for {draft.audience} users"

    async def _on_button(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        pressed = await self.admin_button(update)
        if pressed is None:
            return
        query, ctx = pressed
        match = _BUTTON.match(query.data or "")
        if match is None:
            await _answer(query, t("bc_stale", ctx.language))
            return
        action, broadcast_id = match.group(1), int(match.group(2))
        if action == "send":
            outcome = await self._confirm(query, ctx, broadcast_id)
            self.audit(ctx, "broadcast_confirm", f"#{broadcast_id}", outcome)
        else:
            outcome = await self._cancel(query, ctx, broadcast_id)
            self.audit(ctx, "broadcast_cancel", f"#{broadcast_id}", outcome)

    async def _confirm(self, query: CallbackQuery, ctx: RequestContext, broadcast_id: int) -> str:
        outcome, record = await self._broadcaster.confirm(broadcast_id)
        language = ctx.language
        if outcome is Confirmed.STARTED and record is not None:
            # The run edits this message into the progress view right away.
            await _answer(query, t("bc_starting", language, count=record.total))
            return f"started for {record.total} users"
        if outcome is Confirmed.EXPIRED:
            await _edit(query, t("bc_expired", language))
            await _answer(query, t("bc_expired", language))
        else:
            key = {
                Confirmed.UNKNOWN: "bc_stale", Confirmed.RUNNING: "bc_already_running",
                Confirmed.DONE: "bc_already_done", Confirmed.CANCELLED: "bc_already_cancelled",
            }[outcome]
            await _answer(query, t(key, language))
        return f"not started: {outcome}"

    async def _cancel(self, query: CallbackQuery, ctx: RequestContext, broadcast_id: int) -> str:
        outcome, _record = await self._broadcaster.cancel(broadcast_id)
        language = ctx.language
        if outcome is Cancelled.DRAFT:
            await _edit(query, t("bc_draft_cancelled", language))
            await _answer(query, t("bc_draft_cancelled", language))
        elif outcome is Cancelled.STOPPING:
            await _answer(query, t("bc_stopping", language))  # the run writes the summary
        else:
            key = {
                Cancelled.UNKNOWN: "bc_stale", Cancelled.ALREADY_DONE: "bc_already_done",
                Cancelled.ALREADY_CANCELLED: "bc_already_cancelled",
            }[outcome]
            await _answer(query, t(key, language))
        return str(outcome)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    await answer_button(query, text)


async def _edit(query: CallbackQuery, text: str) -> None:
    try:
        await query.edit_message_text(text)
    except TelegramError as exc:
        log.info("could not update a broadcast message after a button press: %s", exc)
