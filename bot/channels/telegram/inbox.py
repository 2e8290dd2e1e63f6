"""A single process's inbox: no update is confirmed to Telegram before it is
written down.

Long polling confirms the updates of one getUpdates call by asking for the
next ones (the offset). python-telegram-bot asks at once, while the handlers
of the updates just received are still starting, so a kill -9 in those few
milliseconds lost the message: Telegram would not send it again, and its
turn was never stored. Webhook mode had the same gap (200 was answered once
the update was on PTB's queue).

Now every update is written to ``telegram_updates`` (with its JSON) before
the next getUpdates request may leave (``InboxFirstRequest``) and before a
webhook delivery is answered. The write runs beside the handler, so a turn
does not wait for it: the next long poll does. An update is marked done
when its handlers returned (its turn is stored by then): a command's mark at
once, a chat turn's with the next update's write. At the next start, after
turn recovery and before new updates, those received and never done are
handled (``TelegramChannel.handle_kept_updates``): one whose turn was stored
was finished by turn recovery already and is only marked; the rest are
handled as if they had just arrived.

The scaled mode needs none of this: the gateway answers Telegram only after
the broker confirmed, and workers claim each delivery (bot/scale/worker.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

from telegram import Update
from telegram.error import NetworkError
from telegram.request import HTTPXRequest

from bot.channels.telegram.inbound import TELEGRAM_REQUEST_PREFIX, update_id_of, update_request_id
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker
from bot.storage.updates import UpdateClaims

log = logging.getLogger(__name__)

RECEIVER = "single"  # the worker column of rows a single process keeps
KEPT = timedelta(days=2)  # handled updates' ids are kept this long (Telegram redelivers for a day at most)
RECENT_IDS = 10_000  # update ids remembered in memory, against a webhook delivered twice
RETRY_PAUSES = (0.2, 1.0, 5.0)  # between attempts to write while the database fails
# Turns read at start to find the newest update an earlier run stored a turn
# of (turns of concurrent chats are stored a little out of update order).
NEWEST_TURNS_READ = 200
SETTLE_WITHIN = 1.0  # a chat turn's done mark is written this soon at the latest
CONFIRM_WAIT = 10.0  # longest a getUpdates request waits for the writes; then it fails and PTB retries


class StoredTurns(Protocol):
    """The messages' storage, as the inbox reads it (MessageRepository)."""

    async def turn_of_request(self, request_id: str) -> object | None: ...

    async def newest_request_ids(self, prefix: str, limit: int) -> list[str]: ...


class UpdateInbox:
    def __init__(self, claims: UpdateClaims, turns: StoredTurns, tasks: TaskTracker) -> None:
        self._claims = claims
        self._turns = turns
        self._tasks = tasks
        self._turns_up_to: int | None = None  # the highest update id an earlier run stored a turn of
        self._to_write: list[tuple[int, str]] = []
        self._to_settle: list[int] = []
        self._noted = 0  # updates given to note(), ever
        self._written = 0  # of those, the ones committed
        self._progress = asyncio.Condition()
        self._wake = asyncio.Event()
        self._settle_timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._before: int | None = None  # ids up to this one were received by an earlier run
        self._recent: deque[int] = deque(maxlen=RECENT_IDS)
        self._recent_set: set[int] = set()
        self.opened = False  # open() ran: the writer is there

    async def open(self) -> list[dict[str, Any]]:
        """Starts the writer; returns the updates an earlier run received and
        never handled, oldest first (to be handled before new ones)."""
        self._before = await self._claims.highest()
        newest = await self._turns.newest_request_ids(TELEGRAM_REQUEST_PREFIX, NEWEST_TURNS_READ)
        self._turns_up_to = max((i for i in map(update_id_of, newest) if i is not None), default=None)
        waiting = await self._claims.received_not_done()
        await self._claims.prune(utcnow() - KEPT)
        self._writer = self._tasks.spawn(self._write_forever(), "telegram-inbox")
        self.opened = True
        updates = []
        for update_id, payload in waiting:
            try:
                updates.append(json.loads(payload))
            except ValueError:
                log.error("update %s was kept unreadable; dropping it", update_id)
                self.settle([update_id], urgent=True)
        return updates

    async def seen_before(self, update_id: int) -> bool:
        """Whether this update was received before (_first_time), or its turn
        was stored by an earlier run whose write of the update itself had
        not committed at a crash (Telegram sends it again: it was not
        confirmed). Only an update no newer than the newest turn an
        earlier run stored is looked up: after a start, a few at most."""
        if not self._first_time(update_id):
            return True
        if self._turns_up_to is not None and update_id <= self._turns_up_to:
            return await self.turn_stored(update_request_id(update_id))
        return False

    async def turn_stored(self, request_id: str) -> bool:
        """Whether a turn of this request id was stored (by any run)."""
        return await self._turns.turn_of_request(request_id) is not None

    def _first_time(self, update_id: int) -> bool:
        """False for an update this bot received before: at or below the
        high-water mark of the last run (Telegram sends it again when the
        crash came before the confirm), or seen in this run (a webhook
        delivered twice). True remembers it as seen."""
        if self._before is not None and update_id <= self._before:
            return False
        if update_id in self._recent_set:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(update_id)
        self._recent_set.add(update_id)
        return True

    def note(self, update_id: int, data: dict[str, Any]) -> None:
        """Keep this update; written in the background (``written`` waits for it)."""
        self._to_write.append((update_id, json.dumps(data, ensure_ascii=False, separators=(",", ":"))))
        self._noted += 1
        # A turn later, so that the update's handler (PTB creates its task
        # when the queue wakes it) starts before the write's ~0.7 ms of CPU
        # on the loop: only the next poll waits for the write.
        asyncio.get_running_loop().call_soon(self._wake.set)

    def settle(self, update_ids: Sequence[int], *, urgent: bool) -> None:
        """Handled. ``urgent``: a command or button, written at once (handled
        again at the next start, it would act twice). Otherwise (a chat turn,
        whose stored turn the next start finds anyway, or chatter) the mark
        goes with the next update's write, or within SETTLE_WITHIN: one
        transaction per turn instead of two."""
        self._to_settle.extend(update_ids)
        if urgent:
            self._wake.set()
        elif self._settle_timer is None:
            self._settle_timer = asyncio.get_running_loop().call_later(SETTLE_WITHIN, self._wake_for_marks)

    def _wake_for_marks(self) -> None:
        self._settle_timer = None
        self._wake.set()

    async def written(self, timeout: float | None = None) -> bool:
        """Waits until every update noted so far is committed; False when
        that took longer than ``timeout``."""
        target = self._noted

        async def caught_up() -> None:
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target)

        if self._written >= target:
            return True
        try:
            await asyncio.wait_for(caught_up(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stops the writer and writes what is left (the done marks of the
        last turns), once: what fails now is found again at the next start."""
        if self._writer is None:
            return
        self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        self._writer = None
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        receipts, settled = self._take()
        try:
            await self._write(receipts, settled)
        except Exception as exc:  # noqa: BLE001 - stopping: the next start reads the updates again
            log.warning("could not write the last received updates at stop: %s", exc)

    def _take(self) -> tuple[list[tuple[int, str]], list[int]]:
        receipts, self._to_write = self._to_write, []
        settled, self._to_settle = self._to_settle, []
        return receipts, settled

    def _put_back(self, receipts: list[tuple[int, str]], settled: list[int]) -> None:
        self._to_write[:0] = receipts
        self._to_settle[:0] = settled

    async def _write(self, receipts: list[tuple[int, str]], settled: list[int]) -> None:
        # One transaction; receipts first: an update handled very fast may be settled in the same batch.
        await self._claims.receive(receipts, RECEIVER, settled=settled)
        async with self._progress:
            self._written += len(receipts)
            self._progress.notify_all()

    async def _write_forever(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            receipts, settled = self._take()
            try:
                await self._write(receipts, settled)
            except asyncio.CancelledError:
                self._put_back(receipts, settled)
                raise
            except Exception as exc:  # noqa: BLE001 - keep them and try again: the next poll waits meanwhile
                self._put_back(receipts, settled)
                pause = RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)]
                attempt += 1
                log.warning("could not write received updates (%s); trying again in %.1f s", exc, pause)
                await asyncio.sleep(pause)
                self._wake.set()
                continue
            attempt = 0


class InboxQueue(asyncio.Queue[object]):
    """PTB's update queue: each new update is noted in the inbox as the
    poller puts it there; one received before is dropped."""

    def __init__(self, inbox: UpdateInbox) -> None:
        super().__init__()
        self._inbox = inbox

    async def put(self, item: object) -> None:
        if isinstance(item, Update):
            if await self._inbox.seen_before(item.update_id):
                log.info("update %s was received before (handled at start); not again", item.update_id)
                return
            await super().put(item)
            self._inbox.note(item.update_id, item.to_dict())
            return
        await super().put(item)


class InboxFirstRequest(HTTPXRequest):
    """The getUpdates connection: a request (which confirms the updates
    before its offset) leaves only once they are written down. While the
    database cannot take them it fails, and PTB's polling loop retries."""

    def __init__(self, inbox: UpdateInbox, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._inbox = inbox

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        if not await self._inbox.written(CONFIRM_WAIT):
            raise NetworkError("received updates are not written down yet; not confirming them")
        return await super().do_request(*args, **kwargs)
