"""The Telegram channel: python-telegram-bot's Application (long polling, or
updates from a webhook that the HTTP server hands to ``accept_update``),
the handlers of the commands every channel offers, the catch-all handlers,
and the Channel lifecycle. Features (reminders, memory, admin commands)
register their own handlers; everything inbound goes through the core's
InboundPath (via TelegramInbound)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.constants import ChatType as TgChatType
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    BaseRateLimiter,
    Application,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.auth import Role
from bot.channels.base import Capabilities, Channel
from bot.channels.inbound import InboundPath
from bot.channels.telegram.photos import PhotoIntake, PhotoSettings
from bot.channels.telegram.documents import DocumentIntake
from bot.channels.telegram.inbox import InboxFirstRequest, InboxQueue, UpdateInbox
from bot.channels.telegram.inbound import (
    NEW_MESSAGES,
    StreamingConfig,
    TelegramInbound,
    chat_title,
    meant_for_bot,
    strip_mention,
    update_request_id,
)
from bot.channels.telegram.ordering import ChatOrderedProcessor, PasteMerger
from bot.channels.telegram.outbound import application_builder
from bot.channels.telegram.replies import reply
from bot.channels.telegram.voice import VOICE_MESSAGES, VoiceIntake, VoiceSettings
from bot.channels.telegram.webhook import UPDATE_KINDS, set_webhook
from bot.commands import MENU_COMMANDS, help_text, new_conversation, start_text, unknown_command_text
from bot.context import RequestContext, current_request_id
from bot.errors import UpdateNotAccepted
from bot.conversation import ReplySink
from bot.i18n import t
from bot.media.document_reader import DocumentReader
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)

MENU_LANGUAGES = ("en", "ru")
WEBHOOK_WRITE_WAIT = 5.0  # a webhook delivery waits this long for its update to be written down


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
    bot_name: str = "Arium"
    poll_timeout: int = 10
    admin_ids: frozenset[int] = frozenset()
    # Webhook mode (both set): Telegram posts updates, the HTTP server hands
    # them to accept_update; otherwise the bot long-polls.
    webhook_url: str | None = None
    webhook_secret: str | None = None
    # Telegram's limits shared through Redis by every process of the scaled
    # mode (shared_limits.py); None: this process's own limiter.
    redis_url: str | None = None
    redis_prefix: str = "arium"

    @property
    def webhook_mode(self) -> bool:
        return bool(self.webhook_url and self.webhook_secret)


class TelegramChannel(Channel):
    name = "telegram"
    capabilities = Capabilities(streaming=True, buttons=True, files=True, markup=True)

    def __init__(
        self,
        config: TelegramConfig,
        *,
        inbound: InboundPath,
        tasks: TaskTracker,
        documents: DocumentReader | None = None,
        photos: PhotoSettings | None = None,
        features: Sequence[ChannelFeature] = (),
        voice: VoiceSettings = VoiceSettings(),
        inbox: UpdateInbox | None = None,
    ) -> None:
        self._config = config
        self._tasks = tasks
        # A single process keeps each update until handled (inbox.py); a
        # worker of the scaled mode claims the broker's deliveries instead.
        self._inbox = inbox
        self.inbound = TelegramInbound(inbound, StreamingConfig(config.draft_interval, config.edit_interval), tasks)
        self._documents = DocumentIntake(self.inbound, documents) if documents is not None else None
        # Always there: with voice not enabled it answers so, in the user's language.
        self._voice = VoiceIntake(self.inbound, voice)
        self._photos = PhotoIntake(self.inbound, photos) if photos is not None else None
        self._features = tuple(features)
        self.application = self._build_application()
        self._taking_webhooks = False  # between start_receiving and stop, in webhook mode
        # Admin commands, in the order features registered them (for /help
        # and the admins' own command menu).
        self.admin_commands: tuple[str, ...] = tuple(
            name for feature in self._features for name in getattr(feature, "admin_command_names", ())
        )
        # User commands of configured features (/agent), after MENU_COMMANDS in the menu and /help.
        self.feature_commands: tuple[str, ...] = tuple(
            name for feature in self._features for name in getattr(feature, "user_command_names", ())
        )

    # Building -------------------------------------------------------------

    def _build_application(self) -> Application:
        cfg = self._config
        inbox = self._inbox
        processor = ChatOrderedProcessor(
            cfg.max_concurrent_updates,
            PasteMerger(cfg.paste_merge_window),
            on_done=_settle_in(inbox) if inbox is not None else None,
        )
        builder = application_builder(cfg.token, cfg.api_url)
        if inbox is not None:
            # The poller's queue notes each update; its next getUpdates (the
            # confirm) waits until they are written down.
            builder = builder.update_queue(InboxQueue(inbox)).get_updates_request(
                InboxFirstRequest(inbox, connection_pool_size=1)
            )
        app = (
            builder
            .concurrent_updates(processor)
            # PTB's default pool is one connection: hundreds of chats would queue behind it.
            .connection_pool_size(cfg.max_concurrent_updates)
            .pool_timeout(30.0)
            # One process: no overall cap for replies (that would serialize busy
            # moments to 30/s); per-group limits and RetryAfter are honored. Bulk
            # sends (broadcasts) pace themselves. With REDIS_URL every process
            # shares Telegram's limits instead (the scaled mode).
            .rate_limiter(_rate_limiter(cfg))
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
        if self._photos is not None:
            app.add_handler(MessageHandler(filters.PHOTO & filters.UpdateType.MESSAGE, self._photos.on_photo))
            app.add_handler(
                MessageHandler(filters.Document.IMAGE & filters.UpdateType.MESSAGE, self._photos.on_image_document)
            )
        if self._documents is not None:
            app.add_handler(MessageHandler(filters.Document.ALL & filters.UpdateType.MESSAGE, self._documents.on_document))
        app.add_handler(MessageHandler(VOICE_MESSAGES & filters.UpdateType.MESSAGE, self._voice.on_voice))
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
            await self._set_menu([*MENU_COMMANDS, *self.feature_commands], language, code, None)
            for admin_id in sorted(self._config.admin_ids):
                menu = [*MENU_COMMANDS, *self.feature_commands, *self.admin_commands]
                await self._set_menu(menu, language, code, admin_id)

    async def _set_menu(self, names: Sequence[str], language: str, code: str | None, chat_id: int | None) -> None:
        commands = [BotCommand(name, t(f"cmd_{name}", language)[:256]) for name in names]
        scope = BotCommandScopeChat(chat_id) if chat_id is not None else None
        try:
            await self.application.bot.set_my_commands(commands, scope=scope, language_code=code)
        except TelegramError as exc:
            # An admin who never opened a chat with the bot: Telegram says "chat not found".
            log.warning("could not register the command menu%s: %s", f" for admin {chat_id}" if chat_id else "", exc)

    # The Channel lifecycle -------------------------------------------------

    async def start(self) -> None:
        """Connect (the bot's identity, the command menu); updates flow once
        ``start_receiving`` is called, after the core's services started."""
        await self.application.initialize()
        await self.application.start()
        await self.register_commands()

    async def feed(self, data: dict[str, Any]) -> None:
        """One update from outside (the scaled mode's broker), handled as a
        polled one would be (chats in parallel, each in order, pastes
        merged), returning once its handlers finished: its turn is stored."""
        application = self.application
        update = Update.de_json(data, application.bot)
        await application.update_processor.process_update(update, application.process_update(update))

    async def handle_kept_updates(self) -> int:
        """Updates an earlier run received and never handled (a crash came
        first), handled now, before new ones: those whose turn was stored
        were finished by turn recovery already. Returns how many were handled
        here; once per start (start_receiving makes sure of it)."""
        if self._inbox is None or self._inbox.opened:
            return 0
        kept = await self._inbox.open()
        fresh = []
        for data in kept:
            if await self._inbox.turn_stored(update_request_id(data["update_id"])):
                self._inbox.settle([data["update_id"]], urgent=False)
            else:
                fresh.append(data)
        if fresh:
            log.warning("handling %d update(s) received just before the last stop and never handled", len(fresh))
        # Started in their order: each chat's updates run one after another, chats at once.
        outcomes = await asyncio.gather(*(self._feed_kept(data) for data in fresh))
        return sum(outcomes)

    async def _feed_kept(self, data: dict[str, Any]) -> bool:
        """One kept update through the usual handlers (marked done by the
        processor, as any update is, even when a handler fails)."""
        try:
            await self.feed(data)
        except Exception:  # noqa: BLE001 - one unreadable update must not keep the bot from starting
            log.exception("could not handle kept update %s; dropping it", data.get("update_id"))
            assert self._inbox is not None
            self._inbox.settle([data["update_id"]], urgent=True)  # not again at every start
            return False
        return True

    async def start_receiving(self) -> None:
        await self.handle_kept_updates()  # if the core did not ask first: nothing is received unwritten
        if self._config.webhook_mode:
            await self._set_webhook()
        else:
            await self._start_polling()
        log.info("Telegram: receiving updates as @%s", self.application.bot.username)

    async def _set_webhook(self) -> None:
        cfg = self._config
        assert cfg.webhook_url is not None and cfg.webhook_secret is not None
        # Ready before Telegram knows the URL: it may POST the updates that waited at once.
        self._taking_webhooks = True
        await set_webhook(self.application.bot, cfg.webhook_url, cfg.webhook_secret)
        log.info("Telegram: webhook set; updates arrive over HTTP")

    async def _start_polling(self) -> None:
        await self._delete_webhook_left_set()
        assert self.application.updater is not None
        await self.application.updater.start_polling(
            timeout=self._config.poll_timeout, allowed_updates=UPDATE_KINDS
        )

    async def _delete_webhook_left_set(self) -> None:
        """Telegram refuses getUpdates while a webhook is set: a bot that ran
        in webhook mode before must remove it to poll. Pending updates stay
        (drop_pending_updates=False): polling picks them up."""
        try:
            info = await self.application.bot.get_webhook_info()
        except TelegramError as exc:
            # PTB's start_polling deletes any webhook too; this check is for the log line.
            log.warning("could not ask Telegram whether a webhook is set: %s", exc)
            return
        if info.url:
            log.info("Telegram: a webhook is set (%d updates waiting); deleting it to long-poll", info.pending_update_count)
            await self.application.bot.delete_webhook(drop_pending_updates=False)

    async def accept_update(self, data: dict[str, Any]) -> None:
        """One update from the webhook, onto PTB's queue: ChatOrderedProcessor
        then keeps each chat in order and chats in parallel, as with polling.
        Raises UpdateNotAccepted while starting or stopping (503: Telegram
        delivers it again, to this process after a restart)."""
        if not self._taking_webhooks:
            raise UpdateNotAccepted("the bot is starting or stopping")
        try:
            update = Update.de_json(data, self.application.bot)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Telegram would only resend the same bytes: dropping it keeps the updates after it flowing.
            log.warning("dropping update %s that could not be read: %r", data.get("update_id"), exc)
            return
        await self.application.update_queue.put(update)  # noted in the inbox, if new
        # Answered once written down (a 503 makes Telegram deliver it again,
        # and the inbox knows it then: it is handled once).
        if self._inbox is not None and not await self._inbox.written(WEBHOOK_WRITE_WAIT):
            raise UpdateNotAccepted("the update could not be written down in time")

    async def stop(self, timeout: float) -> None:
        # In webhook mode the webhook is NOT deleted, on purpose: Telegram
        # keeps the updates sent while the bot is down (it retries 503s and
        # refused connections) and delivers them after the restart. A next
        # start in polling mode deletes it itself (_delete_webhook_left_set).
        self._taking_webhooks = False
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self.application.running:
            try:
                await asyncio.wait_for(self.application.stop(), timeout)
            except TimeoutError:
                log.warning("replies still running after %.0f s; stopping anyway", timeout)
        if self._inbox is not None:
            await self._inbox.close()  # the done marks of the last turns

    async def close(self) -> None:
        await self.application.shutdown()

    async def deliver(self, address: int, text: str) -> None:
        try:
            await self.application.bot.send_message(address, text)
        except TelegramError as exc:
            log.warning("could not send a message to chat %s: %s", address, exc)

    def sink_for(self, chat_id: int, chat_type: str, *, shown: Sequence[int] = ()) -> ReplySink | None:
        return self.inbound.sink(self.application.bot, chat_id, private=chat_type == TgChatType.PRIVATE, shown=shown)

    async def send_to_admins(self, text: str) -> None:
        """A service message to every admin's private chat (alerts)."""
        for admin_id in sorted(self._config.admin_ids):
            await self.deliver(admin_id, text)

    # Handlers -------------------------------------------------------------

    async def _gate(self, update: Update, *, reaches_model: bool | None = None) -> RequestContext | None:
        """The context for a message the bot should act on, else None (the
        gates of the core's inbound path decide; see TelegramInbound.gate)."""
        return await self.inbound.gate(update, reaches_model=reaches_model)

    async def _on_start(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._gate(update)
        if ctx:
            await reply(update, start_text(ctx, self._config.bot_name))

    async def _on_help(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._gate(update)
        if ctx:
            admin = ctx.role is Role.ADMIN and ctx.is_private
            admin_commands = self.admin_commands if admin else ()
            await reply(update, help_text(ctx.language, admin_commands, extra=self.feature_commands), html=True)

    async def _on_new(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        ctx = await self._gate(update)
        if ctx:
            await reply(update, await new_conversation(self.inbound.path.conversation, ctx, chat_title(update)))

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
            await reply(update, unknown_command_text(ctx, name))

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        if not meant_for_bot(message, context.bot):
            return  # group chatter not meant for the bot
        ctx = await self._gate(update)
        if ctx is None:
            return
        processor = self.application.update_processor
        assert isinstance(processor, ChatOrderedProcessor)
        text = await processor.merger.collect(ctx.chat_id, ctx.user_id, message.message_id, message.text)
        await self.inbound.answer(update, context.bot, ctx, strip_mention(text, context.bot.username).strip())

    async def _on_edited(self, update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        # Deliberately ignored: re-answering an edit would fork the conversation.
        log.info("ignoring an edited message in chat %s", update.effective_chat.id if update.effective_chat else "?")

    async def _on_unsupported(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not meant_for_bot(message, context.bot):
            return
        ctx = await self._gate(update)
        if ctx:
            await reply(update, t("unsupported_media", ctx.language))

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


def _settle_in(inbox: UpdateInbox) -> Callable[[Update, list[int]], None]:
    """Marks handled updates done; a command's or a button's at once (see UpdateInbox.settle)."""

    def settle(update: Update, update_ids: list[int]) -> None:
        text = update.message.text if update.message is not None else None
        command = text is not None and text.startswith("/")
        inbox.settle(update_ids, urgent=command or update.callback_query is not None)

    return settle


def _rate_limiter(cfg: TelegramConfig) -> BaseRateLimiter[Any]:
    if cfg.redis_url is None:
        return AIORateLimiter(overall_max_rate=0, group_max_rate=20, group_time_period=60, max_retries=3)
    # Imported only here: the limits library adds ~85 ms to a start that does not use it.
    from bot.channels.telegram.shared_limits import telegram_rate_limiter

    return telegram_rate_limiter(cfg.redis_url, redis_prefix=cfg.redis_prefix, token=cfg.token)
