"""The SQLite dialect that runs each statement in one worker-thread call
(bot/storage/sqlite_driver.py): it must behave exactly like a DBAPI cursor
for everything SQLAlchemy asks of it, and keep its promise of one hop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import IntegrityError

from bot.errors import StorageError
from bot.storage import sqlite_driver
from bot.storage.db import Database
from bot.storage.models import User
from bot.runtime.clock import utcnow


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'arium.db'}")
    await database.migrate()
    yield database
    await database.dispose()


def _user(user_id: int, name: str = "Ann") -> dict[str, object]:
    now = utcnow()
    return {"id": user_id, "first_name": name, "role": "user", "created_at": now, "last_seen_at": now}


async def test_the_sqlite_url_is_served_by_the_one_hop_dialect(db: Database) -> None:
    assert db.engine.dialect.driver == "arium_aiosqlite"
    assert db.dialect == "sqlite"


async def test_rows_rowcount_and_lastrowid_come_back_with_the_statement(db: Database) -> None:
    async with db.session() as s:
        await s.execute(insert(User), [_user(1), _user(2, "Bob"), _user(3, "Вера")])
    async with db.session() as s:
        changed = await s.execute(update(User).where(User.id.in_([1, 2])).values(first_name="X"))
        assert changed.rowcount == 2
        await s.execute(text("CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT)"))
        await s.execute(text("INSERT INTO scratch (v) VALUES ('a')"))
        raw = await s.execute(text("INSERT INTO scratch (v) VALUES ('b')"))
        assert raw.lastrowid == 2
    async with db.reading() as s:
        names = (await s.execute(select(User.first_name).order_by(User.id))).scalars().all()
        assert names == ["X", "X", "Вера"]
        assert (await s.execute(select(User.id).where(User.id == 404))).first() is None
        # fetchone / fetchmany over rows that were all read in the one call
        result = await s.execute(select(User.id).order_by(User.id))
        assert result.fetchone() == (1,)
        assert result.fetchmany(5) == [(2,), (3,)]


async def test_a_failed_write_raises_and_leaves_nothing_behind(db: Database) -> None:
    async with db.session() as s:
        await s.execute(insert(User), [_user(5)])
    with pytest.raises(StorageError) as caught:
        async with db.session() as s:
            await s.execute(insert(User), [_user(6)])
            await s.execute(insert(User), [_user(5)])  # duplicate key
    assert isinstance(caught.value.__cause__, IntegrityError)
    async with db.reading() as s:
        ids = (await s.execute(select(User.id).order_by(User.id))).scalars().all()
    assert ids == [5]  # user 6 was rolled back with the failed transaction


async def test_a_read_session_costs_one_hop_per_statement_and_no_commit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.session() as s:
        await s.execute(insert(User), [_user(1)])
    calls: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    async with db.reading() as s:
        await s.execute(select(User.first_name))
        await s.execute(select(User.id))
    assert calls == ["_run_statement", "_run_statement"]
    calls.clear()
    async with db.session() as s:
        await s.execute(update(User).values(first_name="Bo"))
    assert calls == ["_run_statement", "commit"]  # and no reset rollback after the commit


async def test_other_urls_keep_their_driver() -> None:
    assert sqlite_driver.DRIVER_NAME != "sqlite+aiosqlite"
    memory = Database("sqlite+aiosqlite:///:memory:")
    try:
        assert memory.engine.dialect.driver == "arium_aiosqlite"
    finally:
        await memory.dispose()

