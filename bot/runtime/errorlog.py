"""The one error handler: every uncaught error of an update handler, a tracked
background task or a scheduler job ends here.

It logs the error with its traceback and the request id, remembers the last
one (``ErrorLog``, for /health and the status file), and alerts the admins
with a short summary: the exception class and the first line of its message,
secrets masked, never the traceback. Alerts are rate limited per kind of
error: at most one per ``window`` seconds; the next one says how many were
held back in between."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from bot.context import SecretMasker, current_request_id

log = logging.getLogger(__name__)

SUMMARY_CHARS = 200
# Failures of the alert itself are logged but never alerted (no loops).
ALERT_TASK = "admin-alert"


class Notifier(Protocol):
    def notify(self, text: str) -> None: ...


@dataclass(frozen=True)
class ErrorEntry:
    """One error as the admins see it: no traceback, secrets masked."""

    at: datetime
    kind: str  # the exception class, e.g. "StorageError"
    summary: str  # "StorageError: database is locked", one line
    where: str  # "update handler", "background task memory-extract", ...
    request_id: str  # "-" outside a turn

    def as_dict(self) -> dict[str, str]:
        return {
            "at": self.at.isoformat(timespec="seconds"),
            "kind": self.kind,
            "summary": self.summary,
            "where": self.where,
            "request_id": self.request_id,
        }


class ErrorLog:
    """The last error and how many there were since start (read by /health)."""

    def __init__(self) -> None:
        self.last: ErrorEntry | None = None
        self.count = 0

    def record(self, entry: ErrorEntry) -> None:
        self.last = entry
        self.count += 1

    def snapshot(self) -> dict[str, object]:
        return {"count": self.count, "last": self.last.as_dict() if self.last else None}


class AlertLimiter:
    """At most one alert per kind per ``window`` seconds, counting the rest."""

    def __init__(self, window: float, now: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._now = now
        self._last_sent: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, kind: str) -> int | None:
        """None: hold this one back. Otherwise send, mentioning the returned
        number of alerts of this kind held back since the last one sent."""
        now = self._now()
        sent = self._last_sent.get(kind)
        if sent is not None and now - sent < self._window:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last_sent[kind] = now
        return self._held.pop(kind, 0)


def summarize(exc: BaseException, mask: SecretMasker) -> str:
    """``Class: first line of the message``, masked and shortened."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else ""
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    text = mask(text)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


class ErrorReporter:
    """``report(exc, where)`` is the ErrorHandler of TaskTracker, the
    scheduler and the periodic tasks; the Telegram channel's error handler
    calls it through ``TaskTracker.report_error``."""

    def __init__(
        self,
        mask: SecretMasker,
        *,
        window: float = 600.0,
        now: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self._mask = mask
        self._limiter = AlertLimiter(window, now)
        self._wall_clock = wall_clock
        self._alerts: Notifier | None = None
        self.log = ErrorLog()

    def connect(self, alerts: Notifier) -> None:
        """Where alerts go (built after the task tracker that reports here)."""
        self._alerts = alerts

    def report(self, exc: BaseException, where: str) -> None:
        request_id = current_request_id.get()
        # The log filter masks secrets in the message and the traceback.
        log.error("unhandled error in %s", where, exc_info=exc, extra={"request_id": request_id})
        entry = ErrorEntry(
            at=self._wall_clock(),
            kind=type(exc).__name__,
            summary=summarize(exc, self._mask),
            where=self._mask(where),
            request_id=request_id,
        )
        self.log.record(entry)
        if where == ALERT_TASK or self._alerts is None:
            return
        held = self._limiter.admit(f"{type(exc).__module__}.{type(exc).__qualname__}")
        if held is not None:
            self._alerts.notify(alert_text(entry, held))


def alert_text(entry: ErrorEntry, held: int) -> str:
    lines = [f"⚠️ Error in {entry.where}: {entry.summary}"]
    if entry.request_id != "-":
        lines.append(f"request id: {entry.request_id} (search the log for it)")
    if held:
        lines.append(f"{held} more {entry.kind} error(s) since the last alert were not sent.")
    return "\n".join(lines)
