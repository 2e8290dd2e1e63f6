"""Reminder storage: every statement the reminders feature runs. Each method
is one short transaction returning plain dataclasses; state changes that
race with a firing are conditional UPDATEs on ``revision``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import StorageError
from bot.identity import channel_of_chat
from bot.storage.db import Database, insert_for
from bot.storage.models import Message, Reminder, User

log = logging.getLogger(__name__)

ACTIVE = "active"
PAUSED = "paused"
FIRED = "fired"  # a one-shot that was delivered; snooze and done still apply
DONE = "done"
CANCELLED = "cancelled"
FAILED = "failed"
LISTED = (ACTIVE, PAUSED)
FINISHED = (FIRED, DONE, CANCELLED, FAILED)


class TooManyReminders(Exception):
    """The user already has the maximum number of active reminders."""


@dataclass(frozen=True)
class ReminderRecord:
    id: int
    user_id: int
    chat_id: int
    text: str
    timezone: str
    rule: str | None  # bot.reminders.recurrence.Rule, encoded; None for one-shot
    status: str
    next_fire_at: datetime | None
    revision: int
    attempts: int
    fire_count: int
    last_fired_at: datetime | None
    channel: str = "telegram"  # the channel of chat_id


@dataclass(frozen=True)
class Armable:
    """What the scheduler needs to arm a timer."""

    id: int
    revision: int
    next_fire_at: datetime


@dataclass(frozen=True)
class Claimed:
    """A reminder taken for delivery, with what the message needs to say."""

    record: ReminderRecord
    due_at: datetime
    language: str
    user_name: str
    # The claim's own mark: an outcome is recorded only while the row still
    # holds it, so a scheduler that lost its leadership mid-send cannot
    # record a firing its successor already recovered (the scaled mode).
    claimed_at: datetime


def _record(row: Reminder) -> ReminderRecord:
    return ReminderRecord(
        id=row.id,
        user_id=row.user_id,
        chat_id=row.chat_id,
        text=row.text,
        timezone=row.timezone,
        rule=row.rule,
        status=row.status,
        next_fire_at=row.next_fire_at,
        revision=row.revision,
        attempts=row.attempts,
        fire_count=row.fire_count,
        last_fired_at=row.last_fired_at,
        channel=row.channel,
    )


def _bump(row: Reminder, now: datetime) -> None:
    row.revision += 1
    row.updated_at = now


class ReminderRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- creating and reading ---------------------------------------------------

    async def add(
        self,
        *,
        user_id: int,
        chat_id: int,
        text: str,
        timezone: str,
        rule: str | None,
        first: datetime,
        now: datetime,
        max_active: int,
        idempotency_key: str | None = None,
    ) -> ReminderRecord:
        """A new active reminder. With ``idempotency_key`` (a tool call's,
        RequestContext.tool_call_key) a reminder already made under that key
        is returned instead, and nothing is added: the same call re-run after
        a crash. Checked before the limit, so that re-run is never refused."""
        async with self._db.session() as s:
            if idempotency_key is not None:
                made = await self._made_by(s, idempotency_key, user_id)
                if made is not None:
                    return _record(made)
            active = await s.scalar(
                select(func.count()).select_from(Reminder).where(
                    Reminder.user_id == user_id, Reminder.status.in_(LISTED)
                )
            )
            if int(active or 0) >= max_active:
                raise TooManyReminders(max_active)
            # ON CONFLICT DO NOTHING: a concurrent insert under the same key
            # (which would have to be the same turn twice) yields to the first
            # instead of failing; NULL keys never conflict.
            statement = (
                insert_for(s)(Reminder)
                .values(
                    user_id=user_id, chat_id=chat_id, channel=channel_of_chat(chat_id), text=text,
                    timezone=timezone, rule=rule, status=ACTIVE, next_fire_at=first, revision=0, attempts=0,
                    fire_count=0, created_at=now, updated_at=now, idempotency_key=idempotency_key,
                )
                .on_conflict_do_nothing(index_elements=[Reminder.idempotency_key])
                .returning(Reminder)
            )
            row = (await s.scalars(statement)).one_or_none()
            if row is None and idempotency_key is not None:
                row = await self._made_by(s, idempotency_key, user_id)
            if row is None:  # the key is another user's: request ids are unique, so never
                raise StorageError("a reminder with this idempotency key belongs to another user")
            return _record(row)

    @staticmethod
    async def _made_by(s: AsyncSession, key: str, user_id: int) -> Reminder | None:
        return await s.scalar(select(Reminder).where(Reminder.idempotency_key == key, Reminder.user_id == user_id))

    async def get(self, reminder_id: int) -> ReminderRecord | None:
        async with self._db.session() as s:
            row = await s.get(Reminder, reminder_id)
            return _record(row) if row else None

    async def listed(self, user_id: int, chat_id: int | None = None) -> list[ReminderRecord]:
        """Active and paused reminders of a user (in one chat, when given), soonest first."""
        query = select(Reminder).where(Reminder.user_id == user_id, Reminder.status.in_(LISTED))
        if chat_id is not None:
            query = query.where(Reminder.chat_id == chat_id)
        async with self._db.session() as s:
            rows = (await s.execute(query.order_by(Reminder.next_fire_at, Reminder.id))).scalars()
            return [_record(r) for r in rows]

    # --- user actions -------------------------------------------------------------

    async def cancel(self, reminder_id: int, user_id: int, now: datetime) -> ReminderRecord | None:
        async with self._db.session() as s:
            row = await self._owned(s, reminder_id, user_id)
            if row is None or row.status not in LISTED:
                return None
            row.status, row.next_fire_at, row.claimed_at = CANCELLED, None, None
            _bump(row, now)
            return _record(row)

    async def reschedule(self, reminder_id: int, user_id: int, until: datetime, now: datetime) -> ReminderRecord | None:
        """Snooze a one-shot reminder: it becomes active again at ``until``."""
        async with self._db.session() as s:
            row = await self._owned(s, reminder_id, user_id)
            if row is None or row.rule is not None or row.status not in (ACTIVE, FIRED, PAUSED):
                return None
            row.status, row.next_fire_at, row.claimed_at, row.attempts = ACTIVE, until, None, 0
            _bump(row, now)
            return _record(row)

    async def mark_done(self, reminder_id: int, user_id: int, now: datetime) -> ReminderRecord | None:
        async with self._db.session() as s:
            row = await self._owned(s, reminder_id, user_id)
            if row is None:
                return None
            if row.rule is None and row.status == FIRED:
                row.status = DONE
                _bump(row, now)
            return _record(row)

    async def resume_paused(self, user_id: int, chat_id: int | None, now: datetime) -> list[ReminderRecord]:
        query = select(Reminder).where(Reminder.user_id == user_id, Reminder.status == PAUSED)
        if chat_id is not None:
            query = query.where(Reminder.chat_id == chat_id)
        async with self._db.session() as s:
            rows = list((await s.execute(query)).scalars())
            for row in rows:
                row.status, row.attempts = ACTIVE, 0
                _bump(row, now)
            return [_record(r) for r in rows]

    async def set_user_timezone(
        self, user_id: int, timezone: str, moved: dict[int, datetime], now: datetime
    ) -> list[ReminderRecord]:
        """Set the user's zone and, in the same transaction, move their
        recurring reminders to it (``moved``: id -> next firing in the new zone)."""
        async with self._db.session() as s:
            await s.execute(update(User).where(User.id == user_id).values(timezone=timezone))
            changed: list[ReminderRecord] = []
            if moved:
                rows = (await s.execute(select(Reminder).where(
                    Reminder.id.in_(list(moved)), Reminder.user_id == user_id,
                    Reminder.status.in_(LISTED), Reminder.claimed_at.is_(None),
                ))).scalars()
                for row in rows:
                    row.timezone, row.next_fire_at = timezone, moved[row.id]
                    _bump(row, now)
                    changed.append(_record(row))
            return changed

    @staticmethod
    async def _owned(s, reminder_id: int, user_id: int) -> Reminder | None:  # type: ignore[no-untyped-def]
        row = await s.get(Reminder, reminder_id)
        return row if row is not None and row.user_id == user_id else None

    # --- the scheduler's side -------------------------------------------------------

    async def due_before(self, until: datetime, limit: int) -> list[Armable]:
        """Active reminders due by ``until`` (overdue ones first), for arming timers."""
        query = (
            select(Reminder.id, Reminder.revision, Reminder.next_fire_at)
            .where(Reminder.status == ACTIVE, Reminder.next_fire_at <= until, Reminder.claimed_at.is_(None))
            .order_by(Reminder.next_fire_at)
            .limit(limit)
        )
        async with self._db.session() as s:
            return [Armable(i, r, at) for i, r, at in (await s.execute(query)).all()]

    async def claim(self, reminder_id: int, revision: int, now: datetime) -> Claimed | None:
        """Take a reminder for delivery; None when it changed since the timer was armed."""
        async with self._db.session() as s:
            taken = await s.execute(
                update(Reminder)
                .where(
                    Reminder.id == reminder_id, Reminder.revision == revision,
                    Reminder.status == ACTIVE, Reminder.claimed_at.is_(None),
                )
                .values(claimed_at=now)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return None
            row, language, first_name = (await s.execute(_with_user(reminder_id))).one()
            assert row.next_fire_at is not None
            return Claimed(_record(row), row.next_fire_at, language or "en", first_name or "", now)

    async def delivered(
        self, reminder_id: int, claimed_at: datetime, now: datetime, next_fire_at: datetime | None
    ) -> ReminderRecord | None:
        """Record a firing: a one-shot is now FIRED, a recurring one moves on.
        None when the row no longer holds that claim (recorded by another)."""
        return await self._finish(reminder_id, claimed_at, now, next_fire_at, FIRED)

    async def delivered_many(
        self, firings: dict[int, tuple[datetime, datetime | None]], now: datetime
    ) -> list[ReminderRecord]:
        """Record several firings (id -> the claim's mark, the next firing)
        in one transaction; a row no longer holding that claim is left as it is."""
        async with self._db.session() as s:
            rows = (await s.execute(select(Reminder).where(Reminder.id.in_(list(firings))))).scalars()
            records = []
            for row in rows:
                claimed_at, next_fire_at = firings[row.id]
                if _holds(row, claimed_at):
                    _record_firing(row, now, next_fire_at, FIRED)
                    records.append(row)
            await s.flush()
            return [_record(r) for r in records]

    async def gave_up(
        self, reminder_id: int, claimed_at: datetime, now: datetime, next_fire_at: datetime | None
    ) -> ReminderRecord | None:
        """Delivery failed for good: a one-shot is FAILED, a recurring one moves on."""
        return await self._finish(reminder_id, claimed_at, now, next_fire_at, FAILED)

    async def _finish(
        self, reminder_id: int, claimed_at: datetime, now: datetime, next_fire_at: datetime | None,
        one_shot_status: str,
    ) -> ReminderRecord | None:
        async with self._db.session() as s:
            row = await s.get(Reminder, reminder_id)
            if row is None or not _holds(row, claimed_at):
                return None
            _record_firing(row, now, next_fire_at, one_shot_status)
            return _record(row)

    async def release(self, reminder_id: int, claimed_at: datetime, now: datetime, max_attempts: int) -> int:
        """A send failed for a transient reason: count the attempt, and unclaim
        it for a retry unless that was the last attempt (then the claim stays
        for ``gave_up``). 0 when the row no longer holds that claim: not ours."""
        async with self._db.session() as s:
            row = await s.get(Reminder, reminder_id)
            if row is None or not _holds(row, claimed_at):
                return 0
            row.attempts += 1
            if row.attempts < max_attempts:
                row.claimed_at = None
            row.updated_at = now  # the revision stays: the armed retry must still match
            return row.attempts

    async def pause_chat(self, chat_id: int, now: datetime) -> list[int]:
        """The chat blocked the bot (or is gone): pause every active reminder for it."""
        async with self._db.session() as s:
            rows = list((await s.execute(select(Reminder).where(
                Reminder.chat_id == chat_id, Reminder.status == ACTIVE
            ))).scalars())
            for row in rows:
                row.status, row.claimed_at = PAUSED, None
                _bump(row, now)
            return [r.id for r in rows]

    async def stale_claims(self, claimed_before: datetime) -> list[Claimed]:
        """Rows claimed before ``claimed_before`` whose outcome was never recorded."""
        query = (
            select(Reminder, User.language, User.first_name)
            .join(User, User.id == Reminder.user_id)
            .where(Reminder.claimed_at.is_not(None), Reminder.claimed_at < claimed_before)
        )
        async with self._db.session() as s:
            return [
                Claimed(_record(row), row.next_fire_at or row.updated_at, lang or "en", name or "", row.claimed_at)
                for row, lang, name in (await s.execute(query)).all()
                if row.claimed_at is not None  # the query's own condition
            ]

    # --- housekeeping -----------------------------------------------------------------

    async def prune_finished(self, updated_before: datetime) -> int:
        async with self._db.session() as s:
            result = await s.execute(
                delete(Reminder).where(Reminder.status.in_(FINISHED), Reminder.updated_at < updated_before)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def prune_messages(self, created_before: datetime) -> int:
        """Conversation messages past the retention period (their conversations stay)."""
        async with self._db.session() as s:
            result = await s.execute(delete(Message).where(Message.created_at < created_before))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def counts(self, overdue_before: datetime) -> dict[str, int]:
        """Reminders per status, plus active ones overdue by ``overdue_before``."""
        async with self._db.reading() as s:
            by_status = dict((await s.execute(
                select(Reminder.status, func.count()).group_by(Reminder.status)
            )).all())
            overdue = await s.scalar(select(func.count()).select_from(Reminder).where(and_(
                Reminder.status == ACTIVE, Reminder.next_fire_at < overdue_before
            )))
        counts = {str(k): int(v) for k, v in by_status.items()}
        counts["overdue"] = int(overdue or 0)
        return counts


def _holds(row: Reminder, claimed_at: datetime) -> bool:
    """Whether the row still holds this claim (no other scheduler recorded its outcome)."""
    if row.claimed_at == claimed_at:
        return True
    log.warning("reminder %s: its claim was recorded by another scheduler; leaving it as it is", row.id)
    return False


def _record_firing(row: Reminder, now: datetime, next_fire_at: datetime | None, one_shot_status: str) -> None:
    if row.status == ACTIVE:  # cancelled or paused meanwhile: keep that
        row.status = ACTIVE if (row.rule and next_fire_at) else one_shot_status
        row.next_fire_at = next_fire_at if row.rule else None
    if one_shot_status == FIRED:
        row.fire_count += 1
        row.last_fired_at = now
    row.claimed_at, row.attempts = None, 0
    _bump(row, now)


def _with_user(reminder_id: int) -> Select[tuple[Reminder, str, str]]:
    return (
        select(Reminder, User.language, User.first_name)
        .join(User, User.id == Reminder.user_id)
        .where(Reminder.id == reminder_id)
    )
