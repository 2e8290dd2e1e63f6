"""A Notifier (bot/reminders/notifier.py's protocol) that records the
reminders it was given instead of sending them, and fails on request: for
the reminder scheduler's tests, which need neither Telegram nor a bot."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.reminders.notifier import DueReminder


@dataclass
class RecordingNotifier:
    """Our own Notifier protocol, recording what it was given."""

    delivered: list[DueReminder] = field(default_factory=list)
    failures: dict[int, list[Exception]] = field(default_factory=dict)  # chat id -> errors to raise, in order
    attempts: int = 0

    async def deliver(self, reminder: DueReminder) -> None:
        self.attempts += 1
        queued = self.failures.get(reminder.chat_id)
        if queued:
            raise queued.pop(0)
        self.delivered.append(reminder)
