"""/agents (admins) and /agent (everyone) in Telegram. The decisions and the
texts live in bot/agents/commands.py; this module only wires them to the
chat. Both commands exist even when no agents are configured, so an admin
learns how to define them; /agent joins the command menu and /help only
when there are agents to choose from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.agents.commands import agent_command, agents_command
from bot.channels.telegram.admin_base import AdminCommands, Gate, reply
from bot.channels.telegram.inbound import NEW_MESSAGES
from bot.context import RequestContext
from bot.runtime.events import EventBus

if TYPE_CHECKING:
    from bot.agents.desk import AgentDesk


class AgentCommands(AdminCommands):
    def __init__(self, events: EventBus, desk: AgentDesk | None) -> None:
        super().__init__(events)
        self._desk = desk
        # User commands this feature adds to the menu and /help (see TelegramChannel).
        self.user_command_names: tuple[str, ...] = ("agent",) if desk is not None else ()

    def register(self, application: Application, gate: Gate) -> None:  # type: ignore[type-arg]
        super().register(application, gate)
        application.add_handler(CommandHandler("agent", self._on_agent, filters=NEW_MESSAGES))

    def register_admin(self, application: Application) -> None:  # type: ignore[type-arg]
        self.command(application, "agents", self._on_agents)

    async def _on_agents(
        self, update: Update, _: ContextTypes.DEFAULT_TYPE, ctx: RequestContext, args: list[str]
    ) -> str:
        answer = await agents_command(self._desk, ctx, args)
        await reply(update, answer.text, html=True)
        return answer.outcome

    async def _on_agent(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert self._gate is not None
        ctx = await self._gate(update)
        if ctx is None:
            return
        answer = await agent_command(self._desk, ctx, list(context.args or []))
        await reply(update, answer.text, html=True)
