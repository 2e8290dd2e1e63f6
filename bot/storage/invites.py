"""One-time invite codes for allow-list mode (t.me/<bot>?start=<code>)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import or_, update

from bot.storage.db import Database
from bot.storage.models import Invite, User


class Redemption(StrEnum):
    ADMITTED = "admitted"
    USED = "used"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class InviteRecord:
    code: str
    created_by: int
    created_at: datetime
    expires_at: datetime | None
    used_by: int | None
    used_at: datetime | None


class InviteRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, code: str, created_by: int, *, now: datetime, expires_at: datetime | None) -> InviteRecord:
        async with self._db.session() as s:
            invite = Invite(code=code, created_by=created_by, created_at=now, expires_at=expires_at)
            s.add(invite)
            await s.flush()
            return _record(invite)

    async def get(self, code: str) -> InviteRecord | None:
        async with self._db.reading() as s:
            invite = await s.get(Invite, code)
            return _record(invite) if invite else None

    async def redeem(self, code: str, user_id: int, *, now: datetime) -> Redemption:
        """Marks the invite used by ``user_id`` and admits them, in one
        transaction. The conditional UPDATE is what makes a code single-use:
        of two people redeeming it at once, exactly one changes the row."""
        claim = (
            update(Invite)
            .where(
                Invite.code == code,
                Invite.used_by.is_(None),
                or_(Invite.expires_at.is_(None), Invite.expires_at > now),
            )
            .values(used_by=user_id, used_at=now)
        )
        async with self._db.session() as s:
            claimed = (await s.execute(claim)).rowcount == 1
            if claimed:
                await s.execute(update(User).where(User.id == user_id).values(allowed=True))
                return Redemption.ADMITTED
            invite = await s.get(Invite, code)
        if invite is None:
            return Redemption.UNKNOWN
        if invite.used_by is not None:
            return Redemption.USED
        return Redemption.EXPIRED


def _record(invite: Invite) -> InviteRecord:
    return InviteRecord(
        invite.code, invite.created_by, invite.created_at, invite.expires_at, invite.used_by, invite.used_at
    )
