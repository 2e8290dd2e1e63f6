"""Broadcast storage: every statement /broadcast runs. Each method is one
short transaction returning plain values.

A delivery row goes ``pending -> claimed -> sent | blocked | failed``. Rows
are claimed in chunks before their sends and their outcomes written in
batches after, so 3,000 recipients cost about 200 transactions, not 6,000.
A row still ``claimed`` when a broadcast resumes was handed to Telegram (or
was about to be) when the process died: it counts as sent and is never sent
again (at most once, the same policy as the reminders' claim)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, ColumnElement, String, delete, func, literal, select, update

from bot.storage.db import Database
from bot.storage.models import EVAL_USER_MIN, Broadcast, BroadcastDelivery, User, UTCDateTime

DRAFT = "draft"
RUNNING = "running"
DONE = "done"
CANCELLED = "cancelled"

PENDING = "pending"
CLAIMED = "claimed"
SENT = "sent"
BLOCKED = "blocked"
FAILED = "failed"
OUTCOMES = (SENT, BLOCKED, FAILED)


@dataclass(frozen=True)
class BroadcastRecord:
    id: int
    created_by: int
    text: str  # Telegram HTML, exactly as sent
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress_chat_id: int | None
    progress_message_id: int | None
    total: int
    sent: int
    blocked: int
    failed: int


@dataclass(frozen=True)
class StartResult:
    """What a confirmation found: ``started`` is True when this call moved the
    broadcast from draft to running (and created its deliveries)."""

    started: bool
    record: BroadcastRecord | None


def _record(row: Broadcast) -> BroadcastRecord:
    return BroadcastRecord(
        id=row.id,
        created_by=row.created_by,
        text=row.text,
        status=row.status,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress_chat_id=row.progress_chat_id,
        progress_message_id=row.progress_message_id,
        total=row.total,
        sent=row.sent,
        blocked=row.blocked,
        failed=row.failed,
    )


def audience(allow_list: bool = False) -> ColumnElement[bool]:
    """Who gets a broadcast: users who have not blocked the bot (``active``)
    and are not banned. Admins are users too, so they get it as well. In
    allow-list mode, only admitted users and admins: a stranger who wrote
    once and was turned away is no audience."""
    condition = (User.active.is_(True)) & (User.role != "banned") & (User.id < EVAL_USER_MIN)
    if allow_list:
        condition = condition & ((User.allowed.is_(True)) | (User.role == "admin"))
    return condition


class BroadcastRepository:
    def __init__(self, db: Database, *, allow_list: bool = False) -> None:
        self._db = db
        self._allow_list = allow_list

    # --- drafts and their confirmation ------------------------------------------------

    async def audience_size(self) -> int:
        async with self._db.reading() as s:
            return int(await s.scalar(select(func.count()).select_from(User).where(audience(self._allow_list))) or 0)

    async def create_draft(self, created_by: int, text: str, now: datetime) -> BroadcastRecord:
        async with self._db.session() as s:
            row = Broadcast(
                created_by=created_by, text=text, status=DRAFT, created_at=now,
                total=0, sent=0, blocked=0, failed=0,
            )
            s.add(row)
            await s.flush()
            return _record(row)

    async def discard_draft(self, broadcast_id: int) -> None:
        """A draft whose preview could not be shown: nobody can confirm it."""
        async with self._db.session() as s:
            await s.execute(delete(Broadcast).where(Broadcast.id == broadcast_id, Broadcast.status == DRAFT))

    async def set_progress_message(self, broadcast_id: int, chat_id: int, message_id: int) -> None:
        async with self._db.session() as s:
            await s.execute(
                update(Broadcast).where(Broadcast.id == broadcast_id)
                .values(progress_chat_id=chat_id, progress_message_id=message_id)
            )

    async def get(self, broadcast_id: int) -> BroadcastRecord | None:
        async with self._db.reading() as s:
            row = await s.get(Broadcast, broadcast_id)
            return _record(row) if row else None

    async def start(self, broadcast_id: int, now: datetime, drafted_after: datetime) -> StartResult:
        """Draft -> running, with one pending delivery per member of the audience,
        in one transaction. A second press, or a draft older than
        ``drafted_after``, starts nothing."""
        async with self._db.session() as s:
            moved = await s.execute(
                update(Broadcast)
                .where(Broadcast.id == broadcast_id, Broadcast.status == DRAFT, Broadcast.created_at >= drafted_after)
                .values(status=RUNNING, started_at=now)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                row = await s.get(Broadcast, broadcast_id)
                return StartResult(False, _record(row) if row else None)
            recipients = select(
                literal(broadcast_id, BigInteger()), User.id, literal(PENDING, String(16)), literal(now, UTCDateTime())
            ).where(audience(self._allow_list))
            await s.execute(
                BroadcastDelivery.__table__.insert().from_select(
                    ["broadcast_id", "user_id", "status", "updated_at"], recipients
                )
            )
            total = int(await s.scalar(
                select(func.count()).select_from(BroadcastDelivery).where(BroadcastDelivery.broadcast_id == broadcast_id)
            ) or 0)
            await s.execute(update(Broadcast).where(Broadcast.id == broadcast_id).values(total=total))
            row = await s.get(Broadcast, broadcast_id)
            assert row is not None
            return StartResult(True, _record(row))

    async def cancel(self, broadcast_id: int, now: datetime) -> BroadcastRecord | None:
        """Draft or running -> cancelled; returns the broadcast as it was before."""
        async with self._db.session() as s:
            row = await s.get(Broadcast, broadcast_id)
            if row is None:
                return None
            before = _record(row)
            if row.status in (DRAFT, RUNNING):
                row.status = CANCELLED
                row.finished_at = now
            return before

    async def finish(self, broadcast_id: int, now: datetime) -> BroadcastRecord | None:
        """Running -> done (a cancelled one keeps its status)."""
        async with self._db.session() as s:
            row = await s.get(Broadcast, broadcast_id)
            if row is None:
                return None
            if row.status == RUNNING:
                row.status = DONE
                row.finished_at = now
            return _record(row)

    async def running(self) -> list[BroadcastRecord]:
        async with self._db.reading() as s:
            rows = (await s.execute(select(Broadcast).where(Broadcast.status == RUNNING).order_by(Broadcast.id))).scalars()
            return [_record(r) for r in rows]

    async def language_of(self, user_id: int) -> str:
        async with self._db.reading() as s:
            return str(await s.scalar(select(User.language).where(User.id == user_id)) or "en")

    # --- the sender's side -----------------------------------------------------------

    async def recover_claims(self, broadcast_id: int, now: datetime) -> int:
        """Rows left claimed by a crash count as sent (see the module docstring)."""
        async with self._db.session() as s:
            result = await s.execute(
                update(BroadcastDelivery)
                .where(BroadcastDelivery.broadcast_id == broadcast_id, BroadcastDelivery.status == CLAIMED)
                .values(status=SENT, updated_at=now)
            )
            recovered = int(result.rowcount or 0)  # type: ignore[attr-defined]
            if recovered:
                await s.execute(
                    update(Broadcast).where(Broadcast.id == broadcast_id).values(sent=Broadcast.sent + recovered)
                )
            return recovered

    async def claim(self, broadcast_id: int, limit: int, now: datetime) -> list[int]:
        """Take up to ``limit`` pending recipients (lowest user id first) for
        sending; none once the broadcast is no longer running (cancelled)."""
        async with self._db.session() as s:
            status = await s.scalar(select(Broadcast.status).where(Broadcast.id == broadcast_id))
            if status != RUNNING:
                return []
            user_ids = list((await s.execute(
                select(BroadcastDelivery.user_id)
                .where(BroadcastDelivery.broadcast_id == broadcast_id, BroadcastDelivery.status == PENDING)
                .order_by(BroadcastDelivery.user_id)
                .limit(limit)
            )).scalars())
            if user_ids:
                await s.execute(
                    update(BroadcastDelivery)
                    .where(
                        BroadcastDelivery.broadcast_id == broadcast_id,
                        BroadcastDelivery.user_id.in_(user_ids),
                        BroadcastDelivery.status == PENDING,
                    )
                    .values(status=CLAIMED, updated_at=now)
                )
            return user_ids

    async def record(self, broadcast_id: int, outcomes: dict[int, str], now: datetime) -> None:
        """Write a batch of outcomes (user id -> sent / blocked / failed) in one
        transaction: the delivery rows, the broadcast's counters, and
        ``users.active = false`` for everyone who blocked the bot."""
        counted: dict[str, int] = {}
        async with self._db.session() as s:
            for status in OUTCOMES:
                user_ids = [user_id for user_id, outcome in outcomes.items() if outcome == status]
                if not user_ids:
                    continue
                result = await s.execute(
                    update(BroadcastDelivery)
                    .where(
                        BroadcastDelivery.broadcast_id == broadcast_id,
                        BroadcastDelivery.user_id.in_(user_ids),
                        BroadcastDelivery.status == CLAIMED,
                    )
                    .values(status=status, updated_at=now)
                )
                # Counted from the rows really moved, so counters match the rows.
                counted[status] = int(result.rowcount or 0)  # type: ignore[attr-defined]
                if status == BLOCKED:
                    await s.execute(update(User).where(User.id.in_(user_ids)).values(active=False))
            if any(counted.values()):
                await s.execute(
                    update(Broadcast).where(Broadcast.id == broadcast_id).values(
                        sent=Broadcast.sent + counted.get(SENT, 0),
                        blocked=Broadcast.blocked + counted.get(BLOCKED, 0),
                        failed=Broadcast.failed + counted.get(FAILED, 0),
                    )
                )

    async def release_claims(self, broadcast_id: int, keep: Collection[int], now: datetime) -> int:
        """Claimed rows that were never handed to Telegram go back to pending
        (a graceful stop or a cancel); ``keep`` are sends whose fate is unknown."""
        query = update(BroadcastDelivery).where(
            BroadcastDelivery.broadcast_id == broadcast_id, BroadcastDelivery.status == CLAIMED
        )
        if keep:
            query = query.where(BroadcastDelivery.user_id.not_in(list(keep)))
        async with self._db.session() as s:
            result = await s.execute(query.values(status=PENDING, updated_at=now))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def delivery_counts(self, broadcast_id: int) -> dict[str, int]:
        """Deliveries per status (for checks and tests)."""
        async with self._db.reading() as s:
            rows = (await s.execute(
                select(BroadcastDelivery.status, func.count())
                .where(BroadcastDelivery.broadcast_id == broadcast_id)
                .group_by(BroadcastDelivery.status)
            )).all()
            return {str(status): int(count) for status, count in rows}
