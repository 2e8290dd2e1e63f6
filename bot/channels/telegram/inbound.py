"""Telegram's side of the inbound path: what an update says (who, where,
whether it is meant for the bot), handed to the core's InboundPath, and the
answer streamed back through a TelegramReplySink. The command and feature
handlers of this package use it; it imports none of them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import Bot, Message, Update
from telegram.constants import ChatType as TgChatType, MessageEntityType
from telegram.ext import filters

from bot.channels.inbound import Arrival, InboundPath
from bot.channels.telegram.access_handlers import reaches_model as _reaches_model, start_payload
from bot.channels.telegram.replies import reply
from bot.channels.telegram.streaming import TelegramReplySink
from bot.context import RequestContext
from bot.llm.types import ImagePart
from bot.storage.repositories import UserProfile
from bot.runtime.tasks import TaskTracker

TELEGRAM_REQUEST_PREFIX = "tg"

# Commands act on new messages only: an edited "/remind ..." is not a second order.
NEW_MESSAGES = filters.UpdateType.MESSAGE


@dataclass(frozen=True)
class StreamingConfig:
    draft_interval: float  # private chats: one draft per interval at most
    edit_interval: float  # groups: one edit per interval at most


def arrival_of(update: Update, *, reaches_model: bool | None = None) -> Arrival | None:
    """What the core needs to know about an update; None for updates the bot
    never acts on (no sender, a channel post)."""
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
    return Arrival(
        profile,
        chat_id=chat.id,
        chat_type=chat.type,
        received_at=message.date,
        reaches_model=_reaches_model(update) if reaches_model is None else reaches_model,
        start_payload=start_payload(update),
        request_id=update_request_id(update.update_id),
        text=conversation_text(update),
    )


def conversation_text(update: Update) -> str | None:
    """A new plain text in a private chat as the conversation will read it
    (the text handler strips the bot's mention too); None for anything else."""
    message = update.message
    if message is None or not message.text or message.text.startswith("/"):
        return None
    if message.chat.type != TgChatType.PRIVATE:
        return None
    try:
        username = message.get_bot().username
    except RuntimeError:  # an update built without a bot (tests)
        username = None
    return strip_mention(message.text, username).strip()


def update_request_id(update_id: int) -> str:
    """A Telegram turn's request id, from its update: the same update
    delivered twice (the scaled mode's broker after a worker died) names the
    same turn, so the second delivery finds what the first one stored."""
    return f"{TELEGRAM_REQUEST_PREFIX}{update_id}"


def update_id_of(request_id: str) -> int | None:
    """The update a Telegram turn's request id names (update_request_id's
    inverse); None for another channel's."""
    digits = request_id.removeprefix(TELEGRAM_REQUEST_PREFIX).partition(".")[0]
    return int(digits) if request_id.startswith(TELEGRAM_REQUEST_PREFIX) and digits.isdigit() else None


def addressed(message: Message, bot: Bot) -> bool:
    """In groups the bot answers a mention of itself or a reply to its message."""
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot.id:
        return True
    username = (bot.username or "").lower()
    entities = message.parse_entities() or message.parse_caption_entities()
    for entity, value in entities.items():
        if entity.type == MessageEntityType.MENTION and value.lstrip("@").lower() == username:
            return True
        if entity.type == MessageEntityType.TEXT_MENTION and entity.user and entity.user.id == bot.id:
            return True
    return False


def meant_for_bot(message: Message, bot: Bot) -> bool:
    """Everything in a private chat; in groups, only what addresses the bot."""
    return message.chat.type == TgChatType.PRIVATE or addressed(message, bot)


def strip_mention(text: str, username: str | None) -> str:
    if not username:
        return text
    return re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE)


def chat_title(update: Update) -> str | None:
    return update.effective_chat.title if update.effective_chat else None


class TelegramInbound:
    def __init__(self, path: InboundPath, streaming: StreamingConfig, tasks: TaskTracker) -> None:
        self.path = path
        self._streaming = streaming
        self._tasks = tasks

    async def gate(self, update: Update, *, reaches_model: bool | None = None) -> RequestContext | None:
        """The context for an update the bot should act on, else None (a
        refusal's notice is replied, at most once per interval). ``reaches_model``
        None: judged from the update."""
        arrival = arrival_of(update, reaches_model=reaches_model)
        if arrival is None:
            return None

        async def say(notice: str) -> None:
            await reply(update, notice)

        return await self.path.admit(arrival, say)

    def sink(
        self,
        bot: Bot,
        chat_id: int,
        *,
        private: bool,
        reply_to: int | None = None,
        shown: Sequence[int] = (),
        request_id: str | None = None,
    ) -> TelegramReplySink:
        """Where an answer in ``chat_id`` streams to (drafts in private
        chats, a throttled preview message in groups). A group preview's
        messages are noted on the turn of ``request_id``; ``shown`` are those
        an earlier run left (see TelegramReplySink)."""
        on_preview = None
        if request_id is not None and not private:
            conversation = self.path.conversation

            def on_preview(ids: tuple[int, ...]) -> None:
                self._tasks.spawn(conversation.note_preview(request_id, ids), f"preview-ids:{chat_id}")

        return TelegramReplySink(
            bot,
            chat_id,
            private=private,
            tasks=self._tasks,
            preview_interval=self._streaming.draft_interval if private else self._streaming.edit_interval,
            reply_to_message_id=reply_to,
            shown=shown,
            on_preview=on_preview,
        )

    async def answer(
        self, update: Update, bot: Bot, ctx: RequestContext, text: str, *, images: tuple[ImagePart, ...] = ()
    ) -> None:
        """Check ``text`` and run a conversation turn, streaming the answer to
        the chat. With ``images`` (a photo) the text, its caption, may be empty."""
        problem = None if images and not text else self.path.input_problem(ctx, text)
        if problem is not None:
            await reply(update, problem)
            return
        message = update.effective_message
        assert message is not None
        private = message.chat.type == TgChatType.PRIVATE
        sink = self.sink(
            bot, message.chat.id, private=private, reply_to=None if private else message.message_id,
            request_id=ctx.request_id,
        )
        sink.start_typing()
        await self.path.conversation.handle(ctx, text, sink, chat_title=chat_title(update), images=images)
