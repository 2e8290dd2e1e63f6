"""The seam between the scheduler and a channel. The scheduler knows nothing
of Telegram: it hands each due reminder to a Notifier, and the channel's
notifier translates its own errors into the two below."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot.errors import AriumError
from bot.reminders.recurrence import Rule


class DeliveryError(AriumError):
    """A reminder could not be delivered."""


class RecipientBlocked(DeliveryError):
    """The chat will not take messages (the user blocked the bot, or the chat
    is gone): its reminders are paused, never retried."""


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


class Notifier(Protocol):
    async def deliver(self, reminder: DueReminder) -> None:
        """Show the reminder to its chat. Raises RecipientBlocked or DeliveryFailed."""
