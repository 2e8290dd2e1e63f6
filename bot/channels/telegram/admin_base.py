"""The shared shape of every admin command in Telegram.

``AdminCommands.command`` registers a handler that only admins reach. A
non-admin gets exactly the answer an unknown command gets, so the reply
reveals neither that the command exists nor anything it would show. Every
admin command run is published as an ``AdminAction`` (who, what, arguments,
outcome), which the audit writer stores in batches."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from telegram import CallbackQuery, Update
from telegram.ext import Application, CommandHandler, ContextTypes, filters

import bot.admin.strings  # noqa: F401  (registers the strings)
from bot.auth import Role
from bot.channels.telegram.replies import answer_button, reply
from bot.context import RequestContext
from bot.runtime.events import AdminAction, EventBus
from bot.i18n import t

log = logging.getLogger(__name__)

Gate = Callable[[Update], Awaitable[RequestContext | None]]
# (update, context, request context, the command's arguments) -> the outcome
# recorded in the audit log.
AdminHandler = Callable[[Update, ContextTypes.DEFAULT_TYPE, RequestContext, list[str]], Awaitable[str]]


class AdminCommands:
    """Base of a ChannelFeature made of admin commands."""

    def __init__(self, events: EventBus) -> None:
        self._events = events
        self._gate: Gate | None = None
        self.admin_command_names: list[str] = []

    def register(self, application: Application, gate: Gate) -> None:
        self._gate = gate
        self.register_admin(application)

    def register_admin(self, application: Application) -> None:
        """Subclasses add their commands here with ``self.command``."""
        raise NotImplementedError

    def command(self, application: Application, name: str, handler: AdminHandler) -> None:
        self.admin_command_names.append(name)

        async def guarded(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            assert self._gate is not None
            ctx = await self._gate(update)
            if ctx is None:
                return
            if ctx.role is not Role.ADMIN:
                await reply(update, t("unknown_command", ctx.language, command=f"/{name}"))
                return
            args = list(context.args or [])
            outcome = await handler(update, context, ctx, args)
            self.audit(ctx, name, " ".join(args), outcome)

        # New messages only: an edited "/ban 42" or "/broadcast ..." is not a second order.
        application.add_handler(CommandHandler(name, guarded, filters=filters.UpdateType.MESSAGE))

    async def admin_button(self, update: Update) -> tuple[CallbackQuery, RequestContext] | None:
        """The press and its context when an admin pressed; for anyone else the
        press is acknowledged silently (a forged or forwarded button learns
        nothing) and None is returned."""
        query = update.callback_query
        if query is None:
            return None
        assert self._gate is not None
        ctx = await self._gate(update)
        if ctx is None or ctx.role is not Role.ADMIN:
            await answer_button(query)
            return None
        return query, ctx

    def audit(self, ctx: RequestContext, action: str, arguments: str, outcome: str) -> None:
        self._events.publish(AdminAction(ctx.user_id, action, arguments, outcome))

    @staticmethod
    async def usage(update: Update, ctx: RequestContext, usage: str) -> str:
        """Answers a malformed admin command with its usage; returns the outcome to audit."""
        await reply(update, t("admin_usage", ctx.language, usage=usage))
        return "usage shown"
