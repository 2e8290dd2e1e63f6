"""SQL of the Telegram updates the bot took (see TelegramUpdate): the
scaled mode's workers claim each delivery; a single process keeps each
update it received until it is handled (its inbox)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, update

from bot.runtime.clock import utcnow
from bot.storage.db import Database, dialect_insert, insert_for
from bot.storage.models import TelegramUpdate, table_of

RECEIVED, STARTED, DONE = "received", "started", "done"
_UPDATES = table_of(TelegramUpdate)
# The inbox writes with every update (a single process): built once.
_SETTLE = (
    update(_UPDATES)
    .where(_UPDATES.c.update_id.in_(bindparam("ids", expanding=True)))
    .values(status=DONE, payload=None)
)


class UpdateClaims:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Telegram sends an update again when its confirmation was lost: the first copy is kept.
        self._keep = dialect_insert(db.dialect)(_UPDATES).on_conflict_do_nothing(index_elements=["update_id"])

    async def claim(self, update_id: int, worker: str) -> tuple[str, str] | None:
        """Take an update: None when it is new (now ours), else the status
        of the earlier claim (started: a worker took it and may have died
        mid-way; done: it was handled) and the worker that made it."""
        async with self._db.session() as s:
            inserted = await s.execute(
                insert_for(s)(TelegramUpdate)
                .values(update_id=update_id, status=STARTED, worker=worker[:64], claimed_at=utcnow())
                .on_conflict_do_nothing(index_elements=["update_id"])
                .returning(TelegramUpdate.update_id)
            )
            if inserted.first() is not None:
                return None
            earlier = await s.execute(
                select(TelegramUpdate.status, TelegramUpdate.worker).where(TelegramUpdate.update_id == update_id)
            )
            status, by = earlier.one()
            return status, by

    async def retake(self, update_id: int, worker: str) -> None:
        async with self._db.session() as s:
            await s.execute(
                update(TelegramUpdate)
                .where(TelegramUpdate.update_id == update_id)
                .values(worker=worker[:64], claimed_at=utcnow())
            )

    async def done(self, update_id: int) -> None:
        async with self._db.session() as s:
            await s.execute(update(TelegramUpdate).where(TelegramUpdate.update_id == update_id).values(status=DONE))

    # The single process's inbox -------------------------------------------

    async def receive(
        self, updates: Sequence[tuple[int, str]], receiver: str, *, settled: Sequence[int] = ()
    ) -> None:
        """Keeps updates (id, JSON) until they are handled, and marks
        ``settled`` ones handled, in one transaction. An update kept already
        (Telegram sent it again) stays as it was; a handled one keeps its id
        (for the high-water mark) until pruned, not its JSON."""
        if not updates and not settled:
            return
        now = utcnow()
        async with self._db.writing() as conn:
            if updates:
                rows = [
                    {"update_id": update_id, "status": RECEIVED, "worker": receiver[:64], "claimed_at": now,
                     "payload": data}
                    for update_id, data in updates
                ]
                await conn.execute(self._keep, rows)
            if settled:
                await conn.execute(_SETTLE, {"ids": list(settled)})

    async def received_not_done(self) -> list[tuple[int, str]]:
        """The kept updates that were never handled, oldest first."""
        async with self._db.session() as s:
            rows = await s.execute(
                select(TelegramUpdate.update_id, TelegramUpdate.payload)
                .where(TelegramUpdate.status == RECEIVED, TelegramUpdate.payload.is_not(None))
                .order_by(TelegramUpdate.update_id)
            )
            return [(update_id, payload) for update_id, payload in rows.all() if payload is not None]

    async def highest(self) -> int | None:
        """The newest update id on record: Telegram numbers updates in
        increasing order, so one at or below it was received before."""
        async with self._db.session() as s:
            return (await s.execute(select(func.max(TelegramUpdate.update_id)))).scalar_one_or_none()

    async def prune(self, before: datetime) -> int:
        async with self._db.session() as s:
            result = await s.execute(delete(TelegramUpdate).where(TelegramUpdate.claimed_at < before))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
