"""The seam between the scheduler and a channel. The scheduler knows nothing
of Telegram: it hands each due reminder to a Notifier, and the channel's
notifier translates its own errors into two: ``bot.errors.RecipientBlocked``
(shared with broadcasts) and ``DeliveryFailed`` below."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from bot.errors import SendError
from bot.identity import TELEGRAM
from bot.reminders.recurrence import Rule


class DeliveryError(SendError):
    """A reminder could not be delivered."""


class DeliveryFailed(DeliveryError):
    """A transient failure (network, server, flood control): worth a retry."""


@dataclass(frozen=True)
class DueReminder:
    id: int
    user_id: int
    chat_id: int
    text: str
    timezone: str
    language: str
    user_name: str
    due_at: datetime  # the time it was meant to fire (aware UTC)
    late: bool  # fell due while the bot was down (or far behind): say so
    rule: Rule | None
    next_at: datetime | None  # the next firing of a recurring reminder
    channel: str = TELEGRAM  # the channel of chat_id (bot/identity.py)


class Notifier(Protocol):
    async def deliver(self, reminder: DueReminder) -> None:
        """Show the reminder to its chat. Raises RecipientBlocked or DeliveryFailed."""


class ReminderRouter:
    """The scheduler's Notifier in a bot with several channels: each reminder
    goes out through the channel that owns its chat. Where that channel is
    not running in this process, or cannot send on its own (the HTTP API
    only answers requests), it goes to its owner's private Telegram chat, if
    the owner has one (after /link, say)."""

    def __init__(self, telegram_chat_of: Callable[[int], Awaitable[int | None]]) -> None:
        self._routes: dict[str, Notifier] = {}
        self._telegram_chat_of = telegram_chat_of
        self._last_resort: Notifier | None = None

    def add(self, channel: str, notifier: Notifier, *, last_resort: bool = False) -> None:
        """``last_resort``: this channel also shows reminders no other route
        reaches (a console serving alone: the owner at the terminal is the
        only one there is to tell)."""
        self._routes[channel] = notifier
        if last_resort:
            self._last_resort = notifier

    async def deliver(self, reminder: DueReminder) -> None:
        own = self._routes.get(reminder.channel)
        if own is not None:
            await own.deliver(reminder)
            return
        telegram = self._routes.get(TELEGRAM)
        chat = await self._telegram_chat_of(reminder.user_id) if telegram is not None else None
        if telegram is not None and chat is not None:
            await telegram.deliver(replace(reminder, chat_id=chat, channel=TELEGRAM))
        elif self._last_resort is not None:
            await self._last_resort.deliver(reminder)
        else:
            raise DeliveryFailed(f"no running channel reaches the {reminder.channel} chat of user {reminder.user_id}")
