"""/broadcast: one text to every active user, within Telegram's limits.

The admin's text becomes a *draft*; nothing is sent until it is confirmed.
Confirming moves it to *running* and creates one delivery row per member of
the audience (active, not banned; admins included) in one transaction. A run
then has three kinds of task:

- a feeder claims pending rows in chunks of ``batch`` (one transaction each)
  and queues them, at most about two chunks ahead of the sends;
- ``workers`` senders take a permit from the shared bulk Pacer (~30 msg/s
  for the whole bot, reminders included) and hand one message to the Sender.
  Flood control (429) pauses the Pacer for its retry-after and the same user
  is tried again; a blocked bot (403) marks the user inactive; other errors
  are retried a bounded number of times, except where a retry could deliver
  twice (a request that may have reached Telegram);
- a recorder writes outcomes in batches (one transaction per ``batch`` or per
  second), and a progress task edits one message at most every
  ``progress_interval`` seconds.

At most once, across crashes: a row is claimed before its send and keeps that
status until its outcome is written, and a broadcast resuming at start counts
rows still claimed as sent (the reminders' policy). A hard crash can thus
skip the rows that were claimed but not yet sent - at most one chunk queued,
one chunk being queued, and one row per worker waiting for its permit
(``2 * batch + workers``, about 2 s of sending) - and never sends anyone the
text twice. (Outcomes not yet written at a crash also read as sent, so a user
who blocked the bot in that last second stays active until the next try.)
A graceful stop (``stop``) loses nothing: sends in flight finish, and rows
claimed but not sent go back to pending. Cancel stops the same way and
leaves the unsent rows pending under a cancelled broadcast; the feeder also
claims nothing for a broadcast the table no longer calls running, so a
cancel that races a confirmation still stops it.

The Sender is the channel's side (Telegram's lives in
bot/channels/telegram/broadcast_handlers.py); it raises the errors below."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from bot.errors import AriumError, RecipientBlocked, SendError
from bot.runtime.pacing import Pacer
from bot.storage.broadcasts import (
    BLOCKED,
    CANCELLED,
    DONE,
    DRAFT,
    FAILED,
    RUNNING,
    SENT,
    BroadcastRecord,
    BroadcastRepository,
)
from bot.runtime.clock import utcnow
from bot.runtime.tasks import TaskTracker

log = logging.getLogger(__name__)


# --- the seam to a channel ----------------------------------------------------------------


class BroadcastSendError(SendError):
    """A broadcast message could not be delivered to one recipient (besides
    RecipientBlocked, shared with reminders)."""


class FloodControl(BroadcastSendError):
    """Telegram's 429: no bulk send for ``retry_after`` seconds, then retry."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SendFailed(BroadcastSendError):
    """Any other failure. ``retryable`` is False when a retry cannot help
    (chat not found) or could deliver twice (the request may have arrived)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class State(StrEnum):
    SENDING = "sending"
    PAUSED = "paused"  # the bot is stopping; the broadcast resumes at the next start
    DONE = "done"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProgressView:
    """What the progress message shows; the channel renders it."""

    broadcast_id: int
    language: str
    state: State
    total: int
    sent: int
    blocked: int
    failed: int
    rate: float | None  # messages per second over the last few seconds
    eta_seconds: float | None
    elapsed_seconds: float

    @property
    def done(self) -> int:
        return self.sent + self.blocked + self.failed


class Sender(Protocol):
    max_text_length: int

    async def send(self, user_id: int, text: str) -> None:
        """Deliver ``text`` (the stored broadcast text) to the user's private
        chat. Raises RecipientBlocked, FloodControl or SendFailed."""

    async def show_progress(self, chat_id: int, message_id: int, view: ProgressView) -> None:
        """Edit the progress message. Raises FloodControl; other failures are
        the channel's to log (progress is never worth stopping a broadcast)."""


# --- configuration and results ------------------------------------------------------------


@dataclass(frozen=True)
class BroadcastConfig:
    batch: int = 30  # rows claimed, and outcomes written, per transaction
    workers: int = 8  # sends in flight at once (the Pacer sets the rate)
    progress_interval: float = 2.0  # seconds between edits of the progress message
    max_attempts: int = 3  # tries of a send failing for a reason other than 403/429
    retry_delay: float = 2.0  # seconds, times the attempt number
    record_interval: float = 1.0  # outcomes are written at least this often
    draft_ttl: timedelta = timedelta(hours=1)  # a preview older than this cannot be confirmed
    stop_timeout: float = 5.0  # how long a stop waits for sends in flight


class BroadcastTextError(AriumError):
    """The text cannot be broadcast; ``code`` is "empty" or "too_long"."""

    def __init__(self, code: str, **values: int) -> None:
        super().__init__(code)
        self.code = code
        self.values = values


class Confirmed(StrEnum):
    STARTED = "started"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class Cancelled(StrEnum):
    DRAFT = "draft"  # nothing had been sent
    STOPPING = "stopping"  # sending stops; the progress message gets the summary
    UNKNOWN = "unknown"
    ALREADY_DONE = "already_done"
    ALREADY_CANCELLED = "already_cancelled"


@dataclass(frozen=True)
class Draft:
    record: BroadcastRecord
    audience: int


def utf16_length(text: str) -> int:
    """Telegram (and most chat APIs) count message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


# --- one running broadcast ------------------------------------------------------------------


@dataclass
class _Run:
    record: BroadcastRecord
    language: str
    workers: int
    batch: int
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    flood_waits: int = 0
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False  # the admin pressed cancel (else a halt is a stop)
    interrupted: bool = False  # the feeder failed (database): resume at next start
    senders_done: bool = False  # every sender has returned: the recorder writes what is left and ends
    outcomes: dict[int, str] = field(default_factory=dict)  # not yet written
    batch_ready: asyncio.Event = field(default_factory=asyncio.Event)
    uncertain: set[int] = field(default_factory=set)  # cut off mid-send at a stop
    started: float = field(default_factory=time.monotonic)
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))
    last_shown: float = float("-inf")
    shown: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        self.sent, self.blocked, self.failed = self.record.sent, self.record.blocked, self.record.failed
        self.queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=self.batch)
        self.sending: list[int | None] = [None] * self.workers

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def done(self) -> int:
        return self.sent + self.blocked + self.failed

    def count(self, user_id: int, outcome: str) -> None:
        if outcome == SENT:
            self.sent += 1
        elif outcome == BLOCKED:
            self.blocked += 1
        else:
            self.failed += 1
        self.outcomes[user_id] = outcome
        if len(self.outcomes) >= self.batch:
            self.batch_ready.set()


RATE_WINDOW = 10.0  # seconds of samples behind the shown rate


class Broadcaster:
    def __init__(
        self,
        repo: BroadcastRepository,
        sender: Sender,
        *,
        pacer: Pacer,
        tasks: TaskTracker,
        config: BroadcastConfig = BroadcastConfig(),
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repo = repo
        self._sender = sender
        self._pacer = pacer
        self._tasks = tasks
        self.config = config
        self._now = now
        self._runs: dict[int, _Run] = {}
        self._drivers: dict[int, asyncio.Task[None]] = {}
        self._stopping = False

    # --- the admin's side ---------------------------------------------------------------

    async def prepare(self, admin_id: int, text: str, visible: str) -> Draft:
        """A draft of ``text`` (the channel's markup; ``visible`` is what the
        reader sees, which is what the length limit counts)."""
        shown = visible.strip()
        if not shown:
            raise BroadcastTextError("empty")
        length, limit = utf16_length(shown), self._sender.max_text_length
        if length > limit:
            raise BroadcastTextError("too_long", length=length, limit=limit)
        record = await self._repo.create_draft(admin_id, text.strip(), self._now())
        return Draft(record, await self._repo.audience_size())

    async def attach_progress(self, broadcast_id: int, chat_id: int, message_id: int) -> None:
        """The message that asks for confirmation later shows the progress."""
        await self._repo.set_progress_message(broadcast_id, chat_id, message_id)

    async def discard(self, broadcast_id: int) -> None:
        await self._repo.discard_draft(broadcast_id)

    async def confirm(self, broadcast_id: int) -> tuple[Confirmed, BroadcastRecord | None]:
        now = self._now()
        result = await self._repo.start(broadcast_id, now, now - self.config.draft_ttl)
        record = result.record
        if result.started and record is not None:
            log.info("broadcast %s confirmed: %d recipients", record.id, record.total)
            await self._launch(record)
            return Confirmed.STARTED, record
        if record is None:
            return Confirmed.UNKNOWN, None
        status = {DRAFT: Confirmed.EXPIRED, RUNNING: Confirmed.RUNNING, DONE: Confirmed.DONE}
        return status.get(record.status, Confirmed.CANCELLED), record

    async def cancel(self, broadcast_id: int) -> tuple[Cancelled, BroadcastRecord | None]:
        before = await self._repo.cancel(broadcast_id, self._now())
        if before is None:
            return Cancelled.UNKNOWN, None
        if before.status == DRAFT:
            return Cancelled.DRAFT, before
        if before.status == RUNNING:
            run = self._runs.get(broadcast_id)
            if run is not None:
                run.cancelled = True
                run.halt.set()
            log.info("broadcast %s cancelled while sending", broadcast_id)
            return Cancelled.STOPPING, before
        if before.status == DONE:
            return Cancelled.ALREADY_DONE, before
        return Cancelled.ALREADY_CANCELLED, before

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every broadcast that was running when the bot stopped."""
        for record in await self._repo.running():
            recovered = await self._repo.recover_claims(record.id, self._now())
            if recovered:
                log.warning(
                    "broadcast %s: %d deliveries were in flight when the bot stopped; "
                    "counting them as sent, not sending them again", record.id, recovered,
                )
            fresh = await self._repo.get(record.id)
            if fresh is not None and fresh.status == RUNNING:
                log.info("broadcast %s resumes: %d of %d done", fresh.id, fresh.sent + fresh.blocked + fresh.failed, fresh.total)
                await self._launch(fresh)

    async def stop(self) -> None:
        """Stop sending: sends in flight finish (bounded by ``stop_timeout``),
        outcomes are written, unsent claims go back to pending."""
        self._stopping = True
        for run in self._runs.values():
            run.halt.set()
        drivers = list(self._drivers.values())
        if drivers:
            # The drivers bound their own waits; this is a last guard.
            _, late = await asyncio.wait(drivers, timeout=self.config.stop_timeout + 10)
            for task in late:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)

    @property
    def active(self) -> list[int]:
        """Ids of broadcasts being sent by this process."""
        return sorted(self._runs)

    async def _launch(self, record: BroadcastRecord) -> None:
        if self._stopping or record.id in self._runs:
            return  # a stopping bot leaves it running in the table: the next start resumes it
        language = await self._repo.language_of(record.created_by)
        run = _Run(record, language, self.config.workers, self.config.batch)
        self._runs[record.id] = run
        try:
            self._drivers[record.id] = self._tasks.spawn(self._drive(run), f"broadcast-{record.id}")
        except RuntimeError:
            del self._runs[record.id]

    # --- a run ------------------------------------------------------------------------------

    async def _drive(self, run: _Run) -> None:
        try:
            await self._show(run, State.SENDING)
            feeder = self._tasks.spawn(self._feed(run), f"broadcast-{run.id}-feeder")
            workers = [
                self._tasks.spawn(self._work(run, slot), f"broadcast-{run.id}-sender-{slot}")
                for slot in range(self.config.workers)
            ]
            recorder = self._tasks.spawn(self._record_loop(run), f"broadcast-{run.id}-recorder")
            progress = self._tasks.spawn(self._progress_loop(run), f"broadcast-{run.id}-progress")
            halter = self._tasks.spawn(self._halt_when_asked(run, feeder, workers), f"broadcast-{run.id}-halter")
            await asyncio.wait(workers)
            for task in (halter, feeder, progress):
                task.cancel()
            # The recorder is told, not cancelled: a cancel can be lost while
            # it wakes (asyncio.wait_for on 3.11), and it is mid-write anyway.
            run.senders_done = True
            run.batch_ready.set()
            _, stuck = await asyncio.wait({recorder}, timeout=self.config.stop_timeout)
            for task in stuck:
                task.cancel()
            await asyncio.gather(feeder, recorder, progress, halter, return_exceptions=True)
            await self._finish(run)
        finally:
            self._runs.pop(run.id, None)
            self._drivers.pop(run.id, None)

    async def _feed(self, run: _Run) -> None:
        try:
            while not run.halt.is_set():
                user_ids = await self._repo.claim(run.id, self.config.batch, self._now())
                if not user_ids:
                    break
                for user_id in user_ids:
                    # The queue holds one chunk: the next chunk is claimed while
                    # this one is sent, so at most about two chunks are claimed
                    # and not yet sent at any moment.
                    await run.queue.put(user_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database failed: stop this run; it stays running in the table
            # and resumes at the next start.
            run.interrupted = True
            run.halt.set()
            raise
        for _ in range(self.config.workers):
            await run.queue.put(None)

    async def _work(self, run: _Run, slot: int) -> None:
        while not run.halt.is_set():
            user_id = await run.queue.get()
            if user_id is None:
                return
            outcome = await self._deliver(run, slot, user_id)
            if outcome is None:
                return  # halted before the send; the row goes back to pending
            run.count(user_id, outcome)

    async def _deliver(self, run: _Run, slot: int, user_id: int) -> str | None:
        attempts = 0
        while not run.halt.is_set():
            await self._pacer.acquire()
            if run.halt.is_set():
                return None
            error = await self._attempt(run, slot, user_id)
            if error is None:
                return SENT
            if isinstance(error, RecipientBlocked):
                log.info("broadcast %s: user %s does not take messages (%s); marked inactive", run.id, user_id, error)
                return BLOCKED
            if isinstance(error, FloodControl):
                run.flood_waits += 1
                log.warning("broadcast %s: flood control, pausing bulk sends for %.0f s", run.id, error.retry_after)
                self._pacer.pause(error.retry_after)
                continue  # the same user, after the pause
            attempts += 1
            retryable = isinstance(error, SendFailed) and error.retryable
            if not retryable or attempts >= self.config.max_attempts:
                log.warning("broadcast %s: user %s not reached after %d attempt(s): %s", run.id, user_id, attempts, error)
                return FAILED
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.retry_delay * attempts):
                    await run.halt.wait()
        return None

    async def _attempt(self, run: _Run, slot: int, user_id: int) -> SendError | None:
        """One send; ``sending[slot]`` marks it as in flight, so a stop lets it finish."""
        run.sending[slot] = user_id
        try:
            await self._sender.send(user_id, run.record.text)
        except SendError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a sender bug: count it failed, never resend
            self._tasks.report_error(exc, f"broadcast {run.id} sender")
            return SendFailed(f"{exc.__class__.__name__}: {exc}", retryable=False)
        finally:
            run.sending[slot] = None
        return None

    async def _halt_when_asked(self, run: _Run, feeder: asyncio.Task[None], workers: list[asyncio.Task[None]]) -> None:
        await run.halt.wait()
        feeder.cancel()
        # Idle senders (waiting for a row, a permit or a retry) stop at once;
        # a send in flight is let finish, so its outcome is known.
        for slot, task in enumerate(workers):
            if run.sending[slot] is None:
                task.cancel()
        busy = [task for task in workers if not task.done()]
        if not busy:
            return
        _, late = await asyncio.wait(busy, timeout=self.config.stop_timeout)
        for slot, task in enumerate(workers):
            if task in late:
                user_id = run.sending[slot]
                if user_id is not None:
                    run.uncertain.add(user_id)  # may have arrived: stays claimed, counted as sent later
                task.cancel()

    async def _record_loop(self, run: _Run) -> None:
        while not run.senders_done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.record_interval):
                    await run.batch_ready.wait()
            run.batch_ready.clear()
            try:
                await self._flush(run)
            except Exception as exc:  # noqa: BLE001 - kept for the next flush; the rows stay claimed meanwhile
                self._tasks.report_error(exc, f"broadcast {run.id}: recording deliveries")
                await asyncio.sleep(self.config.record_interval)

    async def _flush(self, run: _Run) -> None:
        if not run.outcomes:
            return
        batch, run.outcomes = run.outcomes, {}
        try:
            await self._repo.record(run.id, batch, self._now())
        except BaseException:
            run.outcomes = {**batch, **run.outcomes}
            raise

    async def _finish(self, run: _Run) -> None:
        try:
            await self._flush(run)
            released = await self._repo.release_claims(run.id, run.uncertain, self._now())
        except Exception as exc:  # noqa: BLE001 - rows stay claimed: counted as sent on resume
            self._tasks.report_error(exc, f"broadcast {run.id}: final write")
            released = 0
        if not run.halt.is_set():
            # Out of rows: every recipient has an outcome, or the broadcast was
            # cancelled before this run could hear of it (claims stop then).
            final = await self._repo.finish(run.id, self._now())
            run.cancelled = final is not None and final.status == CANCELLED
        if run.cancelled:
            log.info("broadcast %s cancelled: %d of %d done, %d left unsent", run.id, run.done, run.record.total, released)
            await self._show(run, State.CANCELLED, spaced=True)
        elif run.halt.is_set():
            log.info("broadcast %s paused at %d of %d; resumes at the next start", run.id, run.done, run.record.total)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):  # a stop must not wait out a long flood pause
                    await self._show(run, State.PAUSED)
        else:
            log.info(
                "broadcast %s done: %d sent, %d blocked, %d failed of %d (%d flood waits)",
                run.id, run.sent, run.blocked, run.failed, run.record.total, run.flood_waits,
            )
            await self._show(run, State.DONE, spaced=True)

    # --- progress -------------------------------------------------------------------------

    async def _progress_loop(self, run: _Run) -> None:
        while True:
            await asyncio.sleep(self.config.progress_interval)
            if (run.sent, run.blocked, run.failed) != run.shown:
                await self._show(run, State.SENDING)

    async def _show(self, run: _Run, state: State, *, spaced: bool = False) -> None:
        record = run.record
        if record.progress_chat_id is None or record.progress_message_id is None:
            return
        if spaced:
            # "At most every progress_interval", the final summary included.
            wait = run.last_shown + self.config.progress_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        view = self._view(run, state)
        await self._pacer.acquire()  # an edit counts against the bot's flood limit too
        try:
            await self._sender.show_progress(record.progress_chat_id, record.progress_message_id, view)
        except FloodControl as exc:
            self._pacer.pause(exc.retry_after)
        except Exception as exc:  # noqa: BLE001 - a progress message is never worth stopping for
            self._tasks.report_error(exc, f"broadcast {run.id} progress")
        run.last_shown = time.monotonic()
        run.shown = (view.sent, view.blocked, view.failed)

    def _view(self, run: _Run, state: State) -> ProgressView:
        now = time.monotonic()
        run.samples.append((now, run.done))
        while len(run.samples) > 2 and run.samples[1][0] <= now - RATE_WINDOW:
            run.samples.popleft()
        rate: float | None = None
        first_at, first_done = run.samples[0]
        if now - first_at >= 0.5 and run.done > first_done:
            rate = (run.done - first_done) / (now - first_at)
        left = max(0, run.record.total - run.done)
        eta = left / rate if rate else None
        # Since the confirmation, a restart's downtime included.
        began = run.record.started_at
        elapsed = (self._now() - began).total_seconds() if began else now - run.started
        return ProgressView(
            broadcast_id=run.id, language=run.language, state=state, total=run.record.total,
            sent=run.sent, blocked=run.blocked, failed=run.failed,
            rate=rate, eta_seconds=eta, elapsed_seconds=max(0.0, elapsed),
        )
