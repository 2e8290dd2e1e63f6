"""Alerts to the admins' chats: one per outage, not one per message."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.runtime.errorlog import ALERT_TASK
from bot.errors import ModelUnavailable
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]


class AdminAlerts:
    """Implements the chain's observer: the first failure of an outage alerts,
    the first answer after it says so; everything in between stays quiet."""

    def __init__(self, tasks: TaskTracker) -> None:
        self._tasks = tasks
        self._send: Send | None = None

    def connect(self, send: Send) -> None:
        """The channel provides how to reach the admins."""
        self._send = send

    def chain_unavailable(self, error: ModelUnavailable) -> None:
        causes = sorted({f"{type(f).__name__} ({f.endpoint})" for f in error.failures}) or ["all circuit breakers open"]
        self._notify("⚠️ The AI is unavailable: no model endpoint answered.\n" + "\n".join(f"• {c}" for c in causes))

    def chain_recovered(self) -> None:
        self._notify("✅ The AI answers again.")

    def notify(self, text: str) -> None:
        """Send ``text`` to the admins in the background (the error reporter's alerts)."""
        self._notify(text)

    def _notify(self, text: str) -> None:
        log.warning("admin alert: %s", text.replace("\n", " "))
        if self._send is None:
            return
        coro = self._send(text)
        try:
            self._tasks.spawn(coro, ALERT_TASK)
        except RuntimeError:  # shutting down: the log line above is all we can do
            log.info("shutting down; the alert was not sent")
