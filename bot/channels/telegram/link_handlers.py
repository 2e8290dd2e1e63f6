"""/link in Telegram: /link shows a one-time code to enter in another
channel; /link CODE enters a code shown elsewhere (bot/linking.py). Only
in private chats: a code shown in a group could be used by anyone there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.channels.telegram.inbound import NEW_MESSAGES
from bot.channels.telegram.replies import reply
from bot.context import RequestContext
from bot.i18n import t
from bot.linking import Linker, link_command

Gate = Callable[[Update], Awaitable[RequestContext | None]]


class LinkCommands:
    def __init__(self, linker: Linker) -> None:
        self._linker = linker
        self._gate: Gate | None = None

    def register(self, app: Application, gate: Gate) -> None:  # type: ignore[type-arg]
        self._gate = gate
        app.add_handler(CommandHandler("link", self._on_link, filters=NEW_MESSAGES))

    async def _on_link(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert self._gate is not None
        ctx = await self._gate(update)
        if ctx is None:
            return
        if not ctx.is_private:
            await reply(update, t("link_private_only", ctx.language))
            return
        await reply(update, await link_command(self._linker, ctx, " ".join(context.args or [])))
