"""The webhook half of the fake Bot API (tests/fakes/telegram_server.py):
while a webhook is set, Telegram POSTs each update to it as JSON, with the
secret in X-Telegram-Bot-Api-Secret-Token, and keeps an update until the
webhook answers 2xx.

Telegram may deliver up to max_connections updates at once; this fake sends
one at a time, in order, which is the strictest case for the receiver (it
must answer quickly, or every chat waits). A failed delivery (non-2xx, no
connection, timeout) is retried after a growing pause while later updates
wait, and each attempt is recorded so tests can see the 401s and 503s."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

JsonDict = dict[str, Any]

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@dataclass
class Webhook:
    """What setWebhook set."""

    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    last_error_date: int | None = None
    last_error_message: str | None = None

    def info(self, pending: int) -> JsonDict:
        """getWebhookInfo's WebhookInfo while this webhook is set."""
        result: JsonDict = {
            "url": self.url,
            "has_custom_certificate": False,
            "pending_update_count": pending,
            "max_connections": self.max_connections,
        }
        if self.allowed_updates is not None:
            result["allowed_updates"] = list(self.allowed_updates)
        if self.last_error_date is not None:
            result["last_error_date"] = self.last_error_date
            result["last_error_message"] = self.last_error_message
        return result


@dataclass
class WebhookDelivery:
    """One POST of an update to the webhook."""

    update_id: int
    status: int  # the webhook's HTTP status; 0 when there was no answer
    error: str | None  # why it failed (a status line or a connection error)
    at: float


class WebhookPusher:
    """Delivers the fake's queued updates to ``webhook``, oldest first.

    ``next_update`` gives the oldest undelivered update (or None),
    ``delivered(update_id)`` drops it from the queue, ``changed()`` is the
    event set when updates are added, ``record`` receives every attempt."""

    def __init__(
        self,
        webhook: Webhook,
        *,
        next_update: Callable[[], JsonDict | None],
        delivered: Callable[[int], None],
        changed: Callable[[], asyncio.Event],
        record: Callable[[WebhookDelivery], None],
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        self.webhook = webhook
        self._next_update = next_update
        self._delivered = delivered
        self._changed = changed
        self._record = record
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fake-telegram-webhook")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            delay = self._backoff
            while True:
                changed = self._changed()  # grab before looking, so no addition is missed
                update = self._next_update()
                if update is None:
                    await changed.wait()
                    continue
                if await self._post(session, update):
                    self._delivered(update["update_id"])
                    delay = self._backoff
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_backoff)

    async def _post(self, session: aiohttp.ClientSession, update: JsonDict) -> bool:
        headers = {SECRET_HEADER: self.webhook.secret_token} if self.webhook.secret_token else {}
        status, error = 0, None
        try:
            async with session.post(self.webhook.url, json=update, headers=headers) as response:
                await response.read()
                status = response.status
                if not 200 <= status < 300:
                    error = f"Wrong response from the webhook: {status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"Connection failed: {exc!r}"
        if error is not None:
            self.webhook.last_error_date = int(time.time())
            self.webhook.last_error_message = error
        self._record(WebhookDelivery(update["update_id"], status, error, time.monotonic()))
        return error is None
