"""Nothing a user sent is met with silence after a crash.

A turn stores the user's message as pending and marks it answered with the
answer (or unanswered when the model failed and the user was told). A
message still pending at start belongs to a turn a crash (kill -9, OOM, power
cut) cut short: the update was already confirmed to Telegram, so nobody
would ever pick it up again. At start, before the channels take new
messages, each such turn is claimed in the database and finished, chat by
chat in the original order:

- within the recovery window (BOT_RECOVERY_WINDOW, 15 minutes) it runs again
  and the answer comes after a one-line apology for the delay;
- older, the user gets one short note that their message of HH:MM was
  missed and may be sent again.

A turn whose chat belongs to a channel this process does not run (a console
that is not open) waits for that channel's next start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

import pytz

from bot.auth import Role
from bot.context import ChatType, ContextMiddleware
from bot.conversation import Conversation, ReplySink
from bot.i18n import add_strings, t
from bot.identity import channel_of_chat
from bot.reminders.clock import Clock
from bot.storage.repositories import MISSED, MessageRepository, UnfinishedTurn, UserProfile, UserRepository

log = logging.getLogger(__name__)

# Chats recovered side by side; each chat's turns run one after another.
PARALLEL_CHATS = 8

class AnswerSource(Protocol):
    """A channel, as recovery sees it (bot/channels/base.py)."""

    name: str

    def sink_for(self, chat_id: int, chat_type: str, *, shown: Sequence[int] = ()) -> ReplySink | None: ...


@dataclass(frozen=True)
class RecoveryReport:
    answered: int = 0  # ran again, answered late
    noted: int = 0  # too old: the user got a note
    failed: int = 0  # ran again, but no model answered (the user was told)
    # Received but never stored before the crash (the Telegram inbox), handled at start.
    replayed: int = 0

    @property
    def total(self) -> int:
        return self.answered + self.noted + self.failed + self.replayed


class TurnRecovery:
    def __init__(
        self,
        messages: MessageRepository,
        users: UserRepository,
        middleware: ContextMiddleware,
        conversation: Conversation,
        clock: Clock,
        *,
        window: timedelta,
    ) -> None:
        self._messages = messages
        self._users = users
        self._middleware = middleware
        self._conversation = conversation
        self._clock = clock
        self._window = window
        self.last: RecoveryReport | None = None  # of this start, for /health

    async def run(self, sources: Sequence[AnswerSource]) -> RecoveryReport:
        """Finishes every unfinished turn of the given channels' chats."""
        channels = {source.name: source for source in sources}
        turns = await self._messages.unfinished_turns(list(channels))
        by_chat: dict[int, list[UnfinishedTurn]] = {}
        for turn in turns:
            by_chat.setdefault(turn.chat_id, []).append(turn)
        slots = asyncio.Semaphore(PARALLEL_CHATS)
        outcomes: list[str] = []

        async def one_chat(chat_turns: list[UnfinishedTurn]) -> None:
            async with slots:
                for turn in chat_turns:
                    channel = channels[channel_of_chat(turn.chat_id)]
                    sink = channel.sink_for(turn.chat_id, turn.chat_type, shown=turn.preview_message_ids)
                    if sink is None or not await self._messages.claim_unfinished(turn.message_id):
                        continue
                    try:
                        outcomes.append(await self._finish(turn, sink))
                    except Exception:  # noqa: BLE001 - one turn must not keep the bot from starting
                        # Left claimed: the next start tries again.
                        log.exception("could not finish the cut-short turn of message %s", turn.message_id)
                        outcomes.append("failed")

        await asyncio.gather(*(one_chat(chat_turns) for chat_turns in by_chat.values()))
        self.last = RecoveryReport(outcomes.count("answered"), outcomes.count("noted"), outcomes.count("failed"))
        if self.last.total:
            log.warning(
                "finished %d turn(s) a crash had cut short: %d answered late, %d too old (noted), %d failed",
                self.last.total, self.last.answered, self.last.noted, self.last.failed,
            )
        return self.last

    def add_replayed(self, count: int) -> RecoveryReport:
        """Counts the updates the Telegram inbox handled at this start."""
        self.last = replace(self.last or RecoveryReport(), replayed=count)
        return self.last

    async def finish_one(self, turn: UnfinishedTurn, sink: ReplySink) -> str:
        """Finishes one cut-short turn now, if it can still be claimed (the
        scaled mode: a worker that died mid-turn, its update delivered again
        to another): "answered", "noted", "failed", or "taken" when another
        claim came first."""
        if not await self._messages.claim_unfinished(turn.message_id):
            return "taken"
        return await self._finish(turn, sink)

    async def _finish(self, turn: UnfinishedTurn, sink: ReplySink) -> str:
        user = await self._users.get(turn.user_id)
        if user is None:  # erased since (/deleteme): nothing to answer
            await self._messages.settle(turn.message_id, MISSED)
            return "noted"
        profile = UserProfile(user.id, user.first_name, user.last_name, user.username, user.language)
        ctx = await self._middleware.build(profile, chat_id=turn.chat_id, chat_type=ChatType(turn.chat_type))
        # The original turn's request id: its tool rounds are replayed, not run again.
        ctx = ctx.model_copy(update={"request_id": turn.request_id or ctx.request_id, "resumed": True})
        if ctx.role is Role.BANNED:
            await self._messages.settle(turn.message_id, MISSED)
            return "noted"
        sent_at = _local_time(turn.created_at, ctx.timezone)
        if self._clock.now() - turn.created_at > self._window:
            await sink.notice(t("recovery_missed", ctx.language, time=sent_at))
            await self._messages.settle(turn.message_id, MISSED)
            return "noted"
        late = LateAnswer(sink, t("recovery_late", ctx.language, time=sent_at))
        result = await self._conversation.resume(ctx, turn, late)
        return "failed" if result.status == "failed" else "answered"


class LateAnswer:
    """The answer, opened by one line that says why it comes late (shown,
    not stored: the history keeps the model's answer as it was)."""

    def __init__(self, sink: ReplySink, note: str) -> None:
        self._sink = sink
        self._note = note

    async def update(self, text: str) -> None:
        await self._sink.update(self._opened(text))

    async def finish(self, text: str) -> None:
        await self._sink.finish(self._opened(text))

    async def notice(self, text: str) -> None:
        await self._sink.notice(text)

    async def progress(self, hint: str) -> None:
        await self._sink.progress(hint)

    def _opened(self, text: str) -> str:
        return f"{self._note}\n\n{text}"


def _local_time(moment: datetime, zone: str) -> str:
    return moment.astimezone(pytz.timezone(zone)).strftime("%H:%M")


add_strings(
    {
        "en": {
            "recovery_late": "Sorry for the wait: I was restarting when your message of {time} came in. Here is my answer.",
            "recovery_missed": (
                "I was restarting when your message of {time} came in, and could not answer it then. "
                "Please send it again if it still matters."
            ),
        },
        "ru": {
            "recovery_late": "Простите за задержку: я перезапускался, когда пришло ваше сообщение в {time}. Вот ответ.",
            "recovery_missed": (
                "Я перезапускался, когда пришло ваше сообщение в {time}, и не смог на него ответить. "
                "Если оно ещё актуально, пришлите его снова."
            ),
        },
    }
)
