"""SQL of identities (who a person is in each channel) and /link codes,
and the one transaction that joins two users into one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from bot.storage import memory_versions
from bot.storage.db import Database
from bot.storage.models import ApiKey, Identity, LinkCode, Memory, Message, Reminder, ToolRound, User
from bot.runtime.clock import utcnow


def hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedCode:
    user_id: int
    channel: str  # where it was shown


@dataclass(frozen=True)
class Merged:
    """What moved from the absorbed user to the survivor."""

    memories: int
    reminders: int


class IdentityRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def channels_of(self, user_id: int) -> dict[str, str]:
        """The user's identities: channel -> their id there (the first of a channel)."""
        async with self._db.reading() as s:
            rows = await s.execute(
                select(Identity.channel, Identity.external_id).where(Identity.user_id == user_id).order_by(Identity.id)
            )
            found: dict[str, str] = {}
            for channel, external_id in rows:
                found.setdefault(channel, external_id)
            return found

    async def add_code(self, code: str, user_id: int, channel: str, expires_at: datetime) -> None:
        """Stores a new code; the user's earlier codes stop working (one live code each)."""
        async with self._db.session() as s:
            await s.execute(delete(LinkCode).where(LinkCode.user_id == user_id))
            s.add(LinkCode(code_hash=hash_code(code), user_id=user_id, channel=channel,
                           created_at=utcnow(), expires_at=expires_at))

    async def take_code(self, code: str, now: datetime, *, taker: int | None = None) -> IssuedCode | None:
        """The code's owner, consuming the code; None when unknown or expired.
        Expired codes are swept on the way. The owner entering their own code
        (``taker``) does not consume it: they mistook the place, and the code
        is still for the other one."""
        async with self._db.session() as s:
            await s.execute(delete(LinkCode).where(LinkCode.expires_at <= now))
            row = await s.get(LinkCode, hash_code(code))
            if row is None:
                return None
            issued = IssuedCode(row.user_id, row.channel)
            if row.user_id == taker:
                return issued
            # Whoever deletes the row owns the code: two people entering it at
            # once (another process, on PostgreSQL) cannot both use it.
            taken = await s.execute(delete(LinkCode).where(LinkCode.code_hash == row.code_hash))
            return issued if taken.rowcount == 1 else None  # type: ignore[attr-defined]

    async def merge(self, absorbed: int, survivor: int) -> Merged:
        """Moves everything of ``absorbed`` that follows a person (identities,
        memories, reminders, API keys, their messages) to ``survivor``, then
        deletes the absorbed user. One transaction: all of it or nothing."""
        async with self._db.session() as s:
            moved: dict[str, int] = {}
            for name, model in (("memories", Memory), ("reminders", Reminder)):
                result = await s.execute(update(model).where(model.user_id == absorbed).values(user_id=survivor))
                moved[name] = int(result.rowcount)  # type: ignore[attr-defined]
            if moved["memories"]:
                # Other processes' cached indexes of the survivor are stale now.
                await memory_versions.bump_one(s, survivor)
            for model in (ApiKey, Identity, Message, ToolRound):
                await s.execute(update(model).where(model.user_id == absorbed).values(user_id=survivor))
            await s.execute(delete(LinkCode).where(LinkCode.user_id == absorbed))
            gone = await s.get(User, absorbed)
            kept = await s.get(User, survivor)
            if gone is not None and kept is not None:
                # Admission in allow-list mode carries over; so does an own budget.
                kept.allowed = kept.allowed or gone.allowed
                if kept.token_budget is None:
                    kept.token_budget = gone.token_budget
                await s.delete(gone)
            return Merged(moved["memories"], moved["reminders"])
