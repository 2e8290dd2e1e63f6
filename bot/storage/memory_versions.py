"""users.memory_version: one number per user that every change to the user's
memories bumps, in the same transaction. Each process caches FAISS indexes
of users' memories (bot/memory/service.py) and remembers the version each
reflects; comparing it with this number tells whether another process (a
worker of the scaled mode) changed the memories since.

Here, not in bot/memory/, because writes outside memory (joining two users
by /link) move memories too and must bump the same number."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.storage.models import User


async def bump(s: AsyncSession, user_ids: Collection[int]) -> dict[int, int]:
    """Call after the change, in its transaction; returns the new versions
    (users without a row are left out). The row lock the UPDATE takes lasts
    until commit, so concurrent writers of one user get consecutive numbers
    in commit order: version n is the state after the n-th committed change."""
    if not user_ids:
        return {}
    rows = await s.execute(
        update(User)
        .where(User.id.in_(sorted(user_ids)))  # one lock order for several users: no deadlock
        .values(memory_version=User.memory_version + 1)
        .returning(User.id, User.memory_version)
        .execution_options(synchronize_session=False)
    )
    return {int(user_id): int(version) for user_id, version in rows}


async def bump_one(s: AsyncSession, user_id: int) -> int | None:
    return (await bump(s, (user_id,))).get(user_id)


# Built once: building a select costs about as much CPU as running it.
_READ = select(User.memory_version).where(User.id == bindparam("user_id"))


async def read(s: AsyncSession | AsyncConnection, user_id: int) -> int | None:
    """The user's version; None when the user has no row (and so no memories)."""
    found = await s.execute(_READ, {"user_id": user_id})
    return found.scalar_one_or_none()
