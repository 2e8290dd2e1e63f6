"""What /audit shows: the latest admin actions, newest first, with the
admin's name where the bot knows it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.runtime.events import AdminAction
from bot.storage.admin import AuditRepository
from bot.storage.repositories import UserRecord, UserRepository

MAX_AUDIT_ENTRIES = 50


@dataclass(frozen=True)
class AuditLine:
    at: datetime
    admin_id: int
    admin: UserRecord | None
    action: str
    arguments: str
    outcome: str


class AuditView:
    """The stored entries plus those the audit writer still holds, so an
    action shows up in /audit at once, not after the next flush."""

    def __init__(
        self, log: AuditRepository, pending: Callable[[], Sequence[AdminAction]], users: UserRepository
    ) -> None:
        self._log = log
        self._pending = pending
        self._users = users

    async def latest(self, limit: int) -> list[AuditLine]:
        limit = max(1, min(limit, MAX_AUDIT_ENTRIES))
        # Pending first: if a flush lands between the two reads, an entry is
        # seen twice (and deduplicated) rather than not at all.
        held = [(a.at, a.admin_id, a.action, a.arguments, a.outcome) for a in self._pending()]
        stored = [(r.created_at, r.admin_id, r.action, r.arguments, r.outcome) for r in await self._log.latest(limit)]
        seen: set[tuple[datetime, int, str, str, str]] = set()
        rows: list[tuple[datetime, int, str, str, str]] = []
        for row in [*reversed(held), *stored]:
            key = (row[0], row[1], row[2][:32], row[3], row[4][:300])
            if key not in seen:
                seen.add(key)
                rows.append(row)
        rows = sorted(rows, key=lambda r: r[0], reverse=True)[:limit]
        admins = await self._users.get_many({r[1] for r in rows})
        return [AuditLine(at, admin_id, admins.get(admin_id), action, args, outcome) for at, admin_id, action, args, outcome in rows]
