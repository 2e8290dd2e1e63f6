"""SQL of the HTTP API's keys. A key is ``ak-`` and 43 URL-safe characters
(256 random bits); only its SHA-256 is stored, so a leaked database does not
leak working keys, and a lookup is one indexed read."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bot.errors import StorageError
from bot.storage.db import Database
from bot.storage.models import ApiKey
from bot.runtime.clock import utcnow

KEY_PREFIX = "ak-"
NAME_MAX = 64


class ApiKeyNameTaken(Exception):
    """Another key already has that name."""


@dataclass(frozen=True)
class ApiKeyRecord:
    id: int
    name: str
    user_id: int
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(row.id, row.name, row.user_id, row.created_at, row.last_used_at, row.revoked_at)


class ApiKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, user_id: int) -> tuple[ApiKeyRecord, str]:
        """A new key for ``user_id`` (who must exist): the record and the key,
        which is not kept anywhere and cannot be shown again. A revoked key's
        name can be given again: the revoked row goes (its key stays refused)."""
        key = new_key()
        try:
            async with self._db.session() as s:
                await s.execute(delete(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_not(None)))
                row = ApiKey(name=name, user_id=user_id, key_hash=hash_key(key), created_at=utcnow())
                s.add(row)
                await s.flush()
                return _record(row), key
        except StorageError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # the name is unique (the hash is, by chance, too)
                raise ApiKeyNameTaken(name) from exc
            raise

    async def user_of(self, key: str) -> int | None:
        """The user a live key belongs to; None for an unknown or revoked key."""
        async with self._db.reading() as s:
            row = (await s.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))).scalar_one_or_none()
            if row is None or row.revoked_at is not None:
                return None
            return row.user_id

    async def listed(self) -> list[ApiKeyRecord]:
        async with self._db.reading() as s:
            rows = (await s.execute(select(ApiKey).order_by(ApiKey.id))).scalars()
            return [_record(r) for r in rows]

    async def revoke(self, name: str) -> bool:
        """Revoke the live key named ``name``; False when there is none."""
        async with self._db.session() as s:
            result = await s.execute(
                update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]
