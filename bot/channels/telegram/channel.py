"""Adapts Telegram updates to the channel-agnostic conversation."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from telegram import BotCommand, BotCommandScopeChat, Message, Update
from telegram.constants import ChatType as TgChatType, MessageEntityType
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.admin.access import REFUSAL_NOTICE_INTERVAL, BanCheck
from bot.admin.gates import GateChain, GateRequest, NoticeLimiter
from bot.channels.telegram.access_handlers import reaches_model as _reaches_model, start_payload
from bot.auth import Role
from bot.channels.telegram.documents import DocumentIntake
from bot.channels.telegram.ordering import ChatOrderedProcessor, PasteMerger
from bot.channels.telegram.replies import reply
from bot.channels.telegram.streaming import TelegramReplySink
from bot.context import ContextMiddleware, RequestContext, current_request_id
from bot.conversation import Conversation
from bot.i18n import t
from bot.storage.repositories import UserProfile
from bot.tasks import TaskTracker
from bot.tools.sandbox import FileSandbox

log = logging.getLogger(__name__)

# Commands shown in Telegram's menu and in /help, in this order; each has an
# i18n key "cmd_<name>" with its one-line description.
MENU_COMMANDS: list[str] = [
    "start", "help", "new", "remind", "reminders", "timezone", "memory", "forget", "export", "deleteme",
]
MENU_LANGUAGES = ("en", "ru")
# Commands act on new messages only: an edited "/remind ..." is not a second order.
NEW_MESSAGES = filters.UpdateType.MESSAGE


def _command_line(name: str, language: str) -> str:
    # /help is sent as HTML: a description may contain "<" ("/forget <words>").
    return f"/{name} — {html.escape(t(f'cmd_{name}', language), quote=False)}"


def help_text(language: str, admin_commands: Sequence[str] = ()) -> str:
    """The user commands; for an admin, the admin commands after them."""
    lines = [t("help_header", language), ""]
    lines += [_command_line(name, language) for name in MENU_COMMANDS]
    if admin_commands:
        lines += ["", t("help_admin_header", language), ""]
        lines += [_command_line(name, language) for name in admin_commands]
    return "\n".join(lines)


class ChannelFeature(Protocol):
    """A feature's own handlers (commands, buttons); registered before the
    catch-all handlers, given the gate that builds a RequestContext."""

    def register(
        self, application: Application, gate: Callable[[Update], Awaitable[RequestContext | None]]
    ) -> None: ...


@dataclass(frozen=True)
class TelegramConfig:
    token: str
    api_url: str
    max_concurrent_updates: int
    draft_interval: float
    edit_interval: float
    paste_merge_window: float
    max_input_chars: int = 40_000
    bot_name: str = "Arium"
    poll_timeout: int = 10
    admin_ids: frozenset[int] = frozenset()


class TelegramChannel:
    def __init__(
        self,
        config: TelegramConfig,
        *,
        middleware: ContextMiddleware,
        conversation: Conversation,
        tasks: TaskTracker,
        files: FileSandbox | None = None,
        features: Sequence[ChannelFeature] = (),
        gates: GateChain | None = None,
    ) -> None:
        """``gates``: banned? allow-list? rate limit? daily quota? (bot/admin);
        without them only bans are enforced."""
        self._config = config
        self._gates = gates or GateChain([BanCheck(NoticeLimiter(REFUSAL_NOTICE_INTERVAL))])
        self._middleware = middleware
        self._conversation = conversation
        self._tasks = tasks
        self._documents = DocumentIntake(self, files) if files is not None else None
        self._features = tuple(features)
        self.application = self._build_application()
        # Admin commands, in the order features registered them (for /help
        # and the admins' own command menu).
        self.admin_commands: tuple[str, ...] = tuple(
            name for feature in self._features for name in getattr(feature, "admin_command_names", ())
        )

    # Building -------------------------------------------------------------

    def _build_application(self) -> Application:
        cfg = self._config
        processor = ChatOrderedProcessor(cfg.max_concurrent_updates, PasteMerger(cfg.paste_merge_window))
        app = (
            ApplicationBuilder()
            .token(cfg.token)
            .base_url(f"{cfg.api_url}/bot")
            .base_file_url(f"{cfg.api_url}/file/bot")
            .concurrent_updates(processor)
            # PTB's default pool is one connection: hundreds of chats would queue behind it.
            .connection_pool_size(cfg.max_concurrent_updates)
            .pool_timeout(30.0)
            # No overall cap for replies (that would serialize busy moments to
            # 30/s); per-group limits and RetryAfter are honored. Bulk sends
            # (broadcasts) pace themselves.
            .rate_limiter(AIORateLimiter(overall_max_rate=0, group_max_rate=20, group_time_period=60, max_retries=3))
            .build()
        )
        app.add_handler(CommandHandler("start", self._on_start, filters=NEW_MESSAGES))
        app.add_handler(CommandHandler("help", self._on_help, filters=NEW_MESSAGES))
        app.add_handler(CommandHandler("new", self._on_new, filters=NEW_MESSAGES))
        for feature in self._features:
            feature.register(app, self._gate)
        app.add_handler(MessageHandler(filters.COMMAND & filters.UpdateType.MESSAGE, self._on_unknown_command))
        app.add_handler(MessageHandler(filters.TEXT & filters.UpdateType.MESSAGE, self._on_text))
        app.add_handler(MessageHandler(filters.UpdateType.EDITED, self._on_edited))
        if self._documents is not None:
            app.add_handler(MessageHandler(filters.Document.ALL & filters.UpdateType.MESSAGE, self._documents.on_document))
        app.add_handler(
            MessageHandler(filters.UpdateType.MESSAGE & ~filters.StatusUpdate.ALL, self._on_unsupported)
        )
        app.add_error_handler(self._on_error)
        return app

    async def register_commands(self) -> None:
        """The command menu Telegram shows, in each interface language; each
        admin's private chat also lists the admin commands."""
        for language in MENU_LANGUAGES:
            code = None if language == "en" else language
            await self._set_menu(MENU_COMMANDS, language, code, None)
            for admin_id in sorted(self._config.admin_ids):
                await self._set_menu([*MENU_COMMANDS, *self.admin_commands], language, code, admin_id)

    async def _set_menu(self, names: Sequence[str], language: str, code: str | None, chat_id: int | None) -> None:
        commands = [BotCommand(name, t(f"cmd_{name}", language)[:256]) for name in names]
        scope = BotCommandScopeChat(chat_id) if chat_id is not None else None
        try:
            await self.application.bot.set_my_commands(commands, scope=scope, language_code=code)
        except TelegramError as exc:
            # An admin who never opened a chat with the bot: Telegram says "chat not found".
            log.warning("could not register the command menu%s: %s", f" for admin {chat_id}" if chat_id else "", exc)

    # Handlers -------------------------------------------------------------

    async def _context(self, update: Update) -> RequestContext | None:
        user, chat, message = update.effective_user, update.effective_chat, update.effective_message
        if user is None or chat is None or message is None or chat.type == TgChatType.CHANNEL:
            return None
        profile = UserProfile(
            id=user.id,
            first_name=user.first_name or "",
            last_name=user.last_name,
            username=user.username,
            language=user.language_code,
        )
        return await self._middleware.build(
            profile, chat_id=chat.id, chat_type=chat.type, received_at=message.date
        )

    async def _gate(self, update: Update, *, reaches_model: bool | None = None) -> RequestContext | None:
        """The context for a message the bot should act on, else None. The
        gates decide, in order: banned, allow-list (where ``/start <code>``
        redeems an invite), rate limit, daily quota (only for messages that
        reach the model; ``reaches_model`` None: judged from the update). A
        refusal's notice is given at most once per interval, so a flood is
        not answered message by message."""
        ctx = await self._context(update)
        if ctx is None:
            return None
        model_bound = _reaches_model(update) if reaches_model is None else reaches_model
        result = await self._gates.check(GateRequest(ctx, model_bound, start_payload(update)))
        for notice in result.notices:
            await self._reply(update, notice)
        return ctx if result.passed else None

    async def _on_start(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._gate(update)
        if ctx:
            await self._reply(update, t("start", ctx.language, name=ctx.user_name, bot=self._config.bot_name))

    async def _on_help(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._gate(update)
        if ctx:
            admin = ctx.role is Role.ADMIN and ctx.is_private
            await self._reply(update, help_text(ctx.language, self.admin_commands if admin else ()), html=True)

    async def _on_new(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._gate(update)
        if ctx:
            await self._conversation.new_conversation(ctx, _chat_title(update))
            await self._reply(update, t("new_conversation", ctx.language))

    async def _on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        command = message.text.split()[0]
        name, _, addressee = command.partition("@")
        if addressee and addressee.lower() != (context.bot.username or "").lower():
            return  # meant for another bot in the group
        ctx = await self._gate(update)
        if ctx:
            await self._reply(update, t("unknown_command", ctx.language, command=name))

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        private = message.chat.type == TgChatType.PRIVATE
        if not private and not self._addressed(message, context):
            return  # group chatter not meant for the bot
        ctx = await self._gate(update)
        if ctx is None:
            return
        text = await self._full_text(message, ctx)
        text = _strip_mention(text, context.bot.username).strip()
        if not text:
            await self._reply(update, t("empty_message", ctx.language))
            return
        if len(text) > self._config.max_input_chars:
            await self._reply(
                update, t("too_long", ctx.language, length=len(text), limit=self._config.max_input_chars)
            )
            return
        await self._answer(update, context, ctx, text)

    async def _answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, text: str) -> None:
        """Run a conversation turn for ``text`` and stream the answer to the chat."""
        message = update.effective_message
        assert message is not None
        private = message.chat.type == TgChatType.PRIVATE
        sink = TelegramReplySink(
            context.bot,
            message.chat.id,
            private=private,
            tasks=self._tasks,
            preview_interval=self._config.draft_interval if private else self._config.edit_interval,
            reply_to_message_id=None if private else message.message_id,
        )
        sink.start_typing()
        await self._conversation.handle(ctx, text, sink, chat_title=_chat_title(update))

    async def _full_text(self, message: Message, ctx: RequestContext) -> str:
        processor = self.application.update_processor
        assert isinstance(processor, ChatOrderedProcessor)
        return await processor.merger.collect(ctx.chat_id, ctx.user_id, message.message_id, message.text or "")

    async def _on_edited(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        # Deliberately ignored: re-answering an edit would fork the conversation.
        log.info("ignoring an edited message in chat %s", update.effective_chat.id if update.effective_chat else "?")

    async def _on_unsupported(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        if message.chat.type != TgChatType.PRIVATE and not self._addressed(message, context):
            return
        ctx = await self._gate(update)
        if ctx:
            await self._reply(update, t("unsupported_media", ctx.language))

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        # The one error handler (Arium's ErrorReporter behind the task
        # tracker) logs it with the request id and alerts the admins; the
        # user only gets the friendly message, never the error's text.
        if context.error is not None:
            self._tasks.report_error(context.error, "update handler")
        if isinstance(update, Update) and update.effective_chat is not None:
            language = update.effective_user.language_code if update.effective_user else None
            try:
                await context.bot.send_message(update.effective_chat.id, t("internal_error", language))
            except TelegramError as exc:
                log.error("could not report the error to the chat: %s", exc)
        current_request_id.set("-")

    async def send_to_admins(self, text: str) -> None:
        """A service message to every admin's private chat (alerts)."""
        for admin_id in sorted(self._config.admin_ids):
            try:
                await self.application.bot.send_message(admin_id, text)
            except TelegramError as exc:
                log.warning("could not alert admin %s: %s", admin_id, exc)

    # Helpers --------------------------------------------------------------

    def _addressed(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> bool:
        """In groups the bot answers a mention of itself or a reply to its message."""
        bot = context.bot
        reply = message.reply_to_message
        if reply is not None and reply.from_user is not None and reply.from_user.id == bot.id:
            return True
        username = (bot.username or "").lower()
        entities = message.parse_entities() or message.parse_caption_entities()
        for entity, value in entities.items():
            if entity.type == MessageEntityType.MENTION and value.lstrip("@").lower() == username:
                return True
            if entity.type == MessageEntityType.TEXT_MENTION and entity.user and entity.user.id == bot.id:
                return True
        return False

    async def _reply(self, update: Update, text: str, *, html: bool = False) -> None:
        await reply(update, text, html=html)


def _strip_mention(text: str, username: str | None) -> str:
    if not username:
        return text
    return re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE)


def _chat_title(update: Update) -> str | None:
    return update.effective_chat.title if update.effective_chat else None
