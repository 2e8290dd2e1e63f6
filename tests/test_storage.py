"""Storage and migrations on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from bot.llm.types import estimate_tokens
from bot.storage.db import Database
from bot.storage.repositories import MessageRepository, UserProfile, UserRepository


async def migrated(url: str) -> Database:
    db = Database(url)
    await db.migrate()
    return db


async def test_migrations_create_the_schema_and_are_idempotent(database_url: str) -> None:
    db = Database(database_url)
    try:
        pending = await db.pending_migrations()  # newest first; features add their own
        assert pending[-1] == "0001" and {"0003_reminders", "0004_tools", "0005_memory"} <= set(pending)
        await db.migrate()
        await db.migrate()
        assert await db.pending_migrations() == []
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        expected = {"users", "chats", "conversations", "messages", "tool_events", "reminders", "memories"}
        assert expected | {"alembic_version"} <= tables
    finally:
        await db.dispose()


async def test_sqlite_runs_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = await migrated(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        async with db.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
        assert mode == "wal"
    finally:
        await db.dispose()


async def test_user_touch_creates_updates_and_keeps_bans(database_url: str) -> None:
    db = await migrated(database_url)
    users = UserRepository(db, default_timezone="Europe/Berlin")
    try:
        first = await users.touch(UserProfile(5, "Ann", username="ann", language="ru"), "user")
        assert (first.timezone, first.language, first.role) == ("Europe/Berlin", "ru", "user")
        renamed = await users.touch(UserProfile(5, "Anna", username="anna"), "user")
        assert (renamed.first_name, renamed.username, renamed.language) == ("Anna", "anna", "ru")
        async with db.session() as s:
            from bot.storage.models import User

            (await s.get(User, 5)).role = "banned"  # type: ignore[union-attr]
        assert (await users.touch(UserProfile(5, "Anna"), "user")).role == "banned"
        assert (await users.touch(UserProfile(5, "Anna"), "admin")).role == "admin"
        assert await users.count() == 1
    finally:
        await db.dispose()


async def test_concurrent_first_contact_does_not_race(database_url: str) -> None:
    db = await migrated(database_url)
    users = UserRepository(db, "UTC")
    messages = MessageRepository(db)
    try:
        await asyncio.gather(*(users.touch(UserProfile(9, "Bo"), "user") for _ in range(8)))
        await asyncio.gather(
            *(
                messages.start_turn(
                    chat_id=9, chat_type="private", chat_title=None, user_id=9, text=f"m{i}",
                    tokens=5, request_id="r", history_tokens=1000,
                )
                for i in range(8)
            )
        )
        assert await users.count() == 1
        assert len(await messages.history(9, 10_000)) == 8
    finally:
        await db.dispose()


async def test_history_respects_the_token_budget_and_new_conversation(database_url: str) -> None:
    db = await migrated(database_url)
    messages = MessageRepository(db)
    try:
        for i in range(6):
            text = f"message {i} " + "x" * 60
            start = await messages.start_turn(
                chat_id=1, chat_type="private", chat_title=None, user_id=1, text=text,
                tokens=estimate_tokens(text), request_id=f"r{i}", history_tokens=10_000,
            )
            await messages.add_assistant_message(
                conversation_id=start.conversation_id, chat_id=1, user_id=1, text=f"answer {i}",
                tokens=estimate_tokens(f"answer {i}"), status="complete", request_id=f"r{i}",
                model="m", prompt_version="system@1", tokens_in=1, tokens_out=1,
            )
        full = await messages.history(1, 10_000)
        assert [m.role for m in full[:2]] == ["user", "assistant"] and len(full) == 12
        budget = sum(m.tokens for m in full[-4:])
        recent = await messages.history(1, budget)
        assert [m.content for m in recent] == [m.content for m in full[-4:]]  # newest kept, order kept
        await messages.new_conversation(1, "private", None)
        assert await messages.history(1, 10_000) == []
    finally:
        await db.dispose()


async def test_history_survives_a_new_database_object(database_url: str) -> None:
    db = await migrated(database_url)
    await MessageRepository(db).start_turn(
        chat_id=3, chat_type="private", chat_title=None, user_id=3, text="remember me",
        tokens=5, request_id="r", history_tokens=100,
    )
    await db.dispose()
    again = await migrated(database_url)
    try:
        assert [m.content for m in await MessageRepository(again).history(3, 100)] == ["remember me"]
    finally:
        await again.dispose()


async def test_the_api_keys_migration_keeps_the_rows_of_the_previous_head(database_url: str) -> None:
    """A database at 0006 (before API keys) with a user and a message upgrades
    to head with both intact, and its users can then hold keys."""
    from alembic import command

    from bot.storage.api_keys import ApiKeyRepository
    from bot.storage.db import alembic_config
    from bot.storage.models import Conversation

    db = Database(database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0006_admin"))
        users = UserRepository(db, "UTC")
        await users.touch(UserProfile(42, "Ann"), "user")
        messages = MessageRepository(db)
        conversation = await messages.new_conversation(42, "private", None)
        assert await db.pending_migrations() == ["0007_api_keys"]
        await db.migrate()
        user = await users.get(42)
        assert user is not None and user.first_name == "Ann"
        async with db.reading() as session:
            assert await session.get(Conversation, conversation) is not None
        record, key = await ApiKeyRepository(db).create("first", 42)
        assert await ApiKeyRepository(db).user_of(key) == 42 and record.user_id == 42
    finally:
        await db.dispose()
