"""SQL of the updates workers took (see TelegramUpdate)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update

from bot.runtime.clock import utcnow
from bot.storage.db import Database, insert_for
from bot.storage.models import TelegramUpdate

STARTED, DONE = "started", "done"


class UpdateClaims:
    def __init__(self, db: Database) -> None:
        self._db = db

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

    async def prune(self, before: datetime) -> int:
        async with self._db.session() as s:
            result = await s.execute(delete(TelegramUpdate).where(TelegramUpdate.claimed_at < before))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
