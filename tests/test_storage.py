"""Storage and migrations on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import asyncio

import pytest
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
        assert (first.timezone, first.language, first.role, first.first_contact) == ("Europe/Berlin", "ru", "user", True)
        renamed = await users.touch(UserProfile(5, "Anna", "K.", username="anna"), "user")
        assert (renamed.first_name, renamed.last_name, renamed.username, renamed.language) == ("Anna", "K.", "anna", "ru")
        assert not renamed.first_contact
        # A channel that knows no name or language keeps the stored ones; the rest is what it says.
        nameless = await users.touch(UserProfile(5, "", None, None, None), "user")
        assert (nameless.first_name, nameless.last_name, nameless.username, nameless.language) == ("Anna", None, None, "ru")
        assert nameless.last_seen_at >= renamed.last_seen_at and nameless.active
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


async def at_revision(url: str, revision: str) -> Database:
    """A database migrated up to ``revision`` only (an older head)."""
    from alembic import command

    from bot.storage.db import alembic_config

    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), revision))
    return db


async def insert_rows(db: Database, *statements: str) -> None:
    """Rows written as that revision's schema has them: plain SQL, not
    today's models (which know columns an older head does not have)."""
    async with db.engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)


def user_row(user_id: int, name: str) -> str:
    return (
        "INSERT INTO users (id, first_name, language, timezone, role, created_at, last_seen_at, allowed, active) "
        f"VALUES ({user_id}, '{name}', 'en', 'UTC', 'user', '2026-11-01 10:00:00', '2026-11-01 10:00:00', "
        "false, true)"
    )


def chat_row(chat_id: int, kind: str) -> str:
    return f"INSERT INTO chats (id, type, created_at) VALUES ({chat_id}, '{kind}', '2026-11-01 10:00:00')"


async def test_the_api_keys_migration_keeps_the_rows_of_the_previous_head(database_url: str) -> None:
    """A database at 0006 (before API keys) with a user and a chat upgrades
    to head with both intact, and its users can then hold keys."""
    from bot.storage.api_keys import ApiKeyRepository

    db = await at_revision(database_url, "0006_admin")
    try:
        await insert_rows(db, user_row(42, "Ann"), chat_row(42, "private"))
        assert (await db.pending_migrations())[-1] == "0007_api_keys"
        await db.migrate()
        user = await UserRepository(db, "UTC").get(42)
        assert user is not None and user.first_name == "Ann"
        assert await MessageRepository(db).history(42, 100) == []  # the chat row reads at head
        record, key = await ApiKeyRepository(db).create("first", 42)
        assert await ApiKeyRepository(db).user_of(key) == 42 and record.user_id == 42
    finally:
        await db.dispose()


async def test_the_identities_migration_keeps_every_row_valid(database_url: str) -> None:
    """A database at 0007 with a Telegram user (private chat, a group, a
    reminder) and a console-only user upgrades: chats and reminders are
    Telegram's, the Telegram user's identity is recorded, and their next
    message reaches the same user; the console user gets no Telegram identity."""
    from sqlalchemy import select

    from bot.storage.identities import IdentityRepository
    from bot.storage.models import Chat, Reminder
    from bot.storage.reminders import ReminderRepository

    db = await at_revision(database_url, "0007_api_keys")
    try:
        await insert_rows(
            db,
            user_row(42, "Ann"), user_row(7, "Owner"),
            chat_row(42, "private"), chat_row(-100123, "supergroup"), chat_row(7, "console"),
            "INSERT INTO reminders (user_id, chat_id, text, timezone, status, next_fire_at, revision, attempts, "
            "fire_count, created_at, updated_at) VALUES (42, 42, 'call mom', 'UTC', 'active', "
            "'2027-01-01 09:00:00', 0, 0, 0, '2026-11-01 10:00:00', '2026-11-01 10:00:00')",
        )
        assert (await db.pending_migrations())[-1] == "0008_identities"
        await db.migrate()
        identities = IdentityRepository(db)
        assert await identities.channels_of(42) == {"telegram": "42"}
        assert await identities.channels_of(7) == {}
        async with db.reading() as session:
            chats = {c.id: (c.channel, c.external_id) for c in (await session.execute(select(Chat))).scalars()}
            reminder = (await session.execute(select(Reminder))).scalar_one()
        assert chats == {42: ("telegram", "42"), -100123: ("telegram", "-100123"), 7: ("telegram", "7")}
        assert reminder.channel == "telegram" and reminder.chat_id == 42
        assert [r.channel for r in await ReminderRepository(db).listed(42)] == ["telegram"]
        users = UserRepository(db, "UTC")
        again = await users.visit(UserProfile(42, "Ann"), lambda stored: "user", channel="telegram")
        assert again.id == 42 and again.first_name == "Ann"
    finally:
        await db.dispose()


async def test_merging_two_users_moves_what_follows_a_person(database_url: str) -> None:
    """/link's one transaction, on SQLite and PostgreSQL: memories, reminders,
    API keys, identities and messages of the absorbed user move; the user
    row goes; a code is taken once, and never after it expired."""
    from datetime import timedelta

    from sqlalchemy import func, select

    from bot.runtime.clock import utcnow
    from bot.storage.api_keys import ApiKeyRepository
    from bot.storage.identities import IdentityRepository
    from bot.storage.models import Memory, Message, Reminder

    db = await migrated(database_url)
    try:
        users = UserRepository(db, "UTC")
        await users.visit(UserProfile(42, "Ann"), lambda stored: "user", channel="telegram")
        await users.visit(UserProfile(7, "Owner"), lambda stored: "user", channel="console")
        await MessageRepository(db).start_turn(
            chat_id=-(2**62) - 14, chat_type="console", chat_title=None, user_id=7, text="hello from the console",
            tokens=5, request_id="r", history_tokens=100,
        )
        now = utcnow()
        async with db.session() as s:
            s.add(Memory(user_id=7, text="grows tomatoes", created_at=now, updated_at=now))
            s.add(Reminder(user_id=7, chat_id=-(2**62) - 14, text="water them", timezone="UTC", status="active",
                           next_fire_at=now + timedelta(days=1), created_at=now, updated_at=now))
        _, key = await ApiKeyRepository(db).create("script", 7)
        identities = IdentityRepository(db)
        await identities.add_code("ABCDEFGHJK", 42, "telegram", now + timedelta(minutes=10))
        await identities.add_code("OLDOLDOLD2", 7, "console", now - timedelta(seconds=1))

        assert await identities.take_code("OLDOLDOLD2", now) is None, "expired"
        issued = await identities.take_code("ABCDEFGHJK", now)
        assert issued is not None and (issued.user_id, issued.channel) == (42, "telegram")
        assert await identities.take_code("ABCDEFGHJK", now) is None, "used"

        merged = await identities.merge(absorbed=7, survivor=42)
        assert (merged.memories, merged.reminders) == (1, 1)
        assert await users.get(7) is None
        assert await identities.channels_of(42) == {"telegram": "42", "console": "7"}
        assert await ApiKeyRepository(db).user_of(key) == 42
        async with db.reading() as s:
            for model in (Memory, Reminder, Message):
                owners = set((await s.execute(select(model.user_id))).scalars())
                assert owners == {42}, model.__name__
            assert (await s.execute(select(func.count()).select_from(Memory))).scalar_one() == 1
        # The console's identity now reaches Ann.
        again = await users.visit(UserProfile(7, "Owner"), lambda stored: "user", channel="console")
        assert again.id == 42 and again.first_name == "Ann", "names come from Telegram, not the console"
    finally:
        await db.dispose()


async def test_the_tool_rounds_migration_keeps_the_rows_of_the_previous_head(database_url: str) -> None:
    """A database at 0008 with a user, a chat and a pending question upgrades
    with them intact; the question is found unfinished, and a running turn's
    tool rounds can be kept, read back in order and forgotten."""
    from bot.llm.types import ToolCall
    from bot.storage.tool_rounds import RecordedRound, ToolRoundRepository
    from bot.storage.userdata import UserDataRepository

    db = await at_revision(database_url, "0008_identities")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), chat_row(42, "private"),
            "INSERT INTO conversations (id, chat_id, started_at) VALUES (1, 42, '2026-12-01 10:00:00')",
            "INSERT INTO messages (conversation_id, chat_id, user_id, role, content, tokens, status, request_id, "
            "created_at) VALUES (1, 42, 42, 'user', 'remind me at 9', 4, 'pending', 'req1', '2026-12-01 10:00:00')",
        )
        assert (await db.pending_migrations())[-1] == "0009_tool_rounds"
        await db.migrate()
        [turn] = await MessageRepository(db).unfinished_turns(["telegram"])
        assert (turn.user_id, turn.content, turn.request_id) == (42, "remind me at 9", "req1")
        # What was said before the upgrade counts as read by memory extraction: no burst.
        async with db.reading() as session:
            from bot.storage.models import User

            assert (await session.get(User, 42)).memory_extracted_until == turn.message_id  # type: ignore[union-attr]
        rounds = ToolRoundRepository(db)
        first = RecordedRound("", (ToolCall("c1", "create_reminder", '{"text": "x"}'),), ("created #1",))
        second = RecordedRound("and", (ToolCall("c2", "list_reminders", "{}"),), ("#1 x",))
        await rounds.add("req1", 42, first)
        await rounds.add("req1", 42, second)
        await rounds.add("other", 7, second)
        assert await rounds.of("req1") == [first, second]
        await rounds.forget("req1")
        assert await rounds.of("req1") == [] and await rounds.of("other") == [second]
        # /deleteme takes a user's rounds with the rest of their history, and no one else's.
        await rounds.add("req2", 42, first)
        await UserDataRepository(db).delete_history(42)
        assert await rounds.of("req2") == [] and await rounds.of("other") == [second]
    finally:
        await db.dispose()


async def test_the_memory_stems_migration_indexes_old_rows_by_their_stems(database_url: str) -> None:
    """A database at 0009 holding memories in English and Russian upgrades:
    the old rows are found by inflected forms of their words (stems, not
    prefixes), on SQLite and PostgreSQL alike, and rows written afterwards,
    changed or deleted keep the index in step."""
    from bot.memory.records import NewMemory
    from bot.memory.repository import MemoryRepository

    db = await at_revision(database_url, "0009_tool_rounds")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), user_row(7, "Bob"),
            *(
                "INSERT INTO memories (user_id, text, kind, importance, source, created_at, updated_at) "
                f"VALUES ({owner}, '{text}', 'fact', 3, 'extracted', '2026-12-01 10:00:00', '2026-12-01 10:00:00')"
                for owner, text in (
                    (42, "Сестра Катя живёт в Казани"), (42, "Has two sisters and a brother"),
                    (42, "Любит котлеты"), (7, "Сестра Бориса живёт в Омске"),
                )
            ),
        )
        await db.migrate()
        memories = MemoryRepository(db)

        async def found(query: str, user_id: int = 42) -> list[str]:
            return [r.text for r in await memories.keyword_records(user_id, query, 10)]

        assert await found("Что подарить сестре?") == ["Сестра Катя живёт в Казани"]
        assert await found("where does my sister live") == ["Has two sisters and a brother"]
        assert await found("Как зовут моего кота?") == [], "a shared prefix is not a shared stem"
        assert await found("сестрой", user_id=7) == ["Сестра Бориса живёт в Омске"]
        [cat] = (await memories.add(42, [NewMemory("Кота зовут Барсик")], [None], None)).value
        assert await found("Как зовут моего кота?") == ["Кота зовут Барсик"]
        await memories.update(42, cat.id, text_="Собаку зовут Рекс", embedding=None, model=None)
        assert await found("кот") == [] and await found("собака") == ["Собаку зовут Рекс"]
        await memories.delete(42, [cat.id])
        assert await found("собака") == []
    finally:
        await db.dispose()


async def test_the_eval_migration_keeps_the_rows_of_the_previous_head(database_url: str) -> None:
    """A database at 0010 with a user and a message upgrades with both
    intact; runs and results can then be stored and read back, and the
    downgrade removes only the evaluation tables."""
    from bot.storage.evals import CheckOutcome, EvalRepository, TaskOutcome

    db = await at_revision(database_url, "0010_memory_stems")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), chat_row(42, "private"),
            "INSERT INTO conversations (id, chat_id, started_at) VALUES (1, 42, '2026-12-01 10:00:00')",
            "INSERT INTO messages (conversation_id, chat_id, user_id, role, content, tokens, status, request_id, "
            "created_at) VALUES (1, 42, 42, 'user', 'hello', 1, 'answered', 'req1', '2026-12-01 10:00:00')",
        )
        assert (await db.pending_migrations())[-1] == "0011_eval"
        await db.migrate()
        async with db.engine.connect() as conn:
            kept = (await conn.exec_driver_sql("SELECT content FROM messages WHERE user_id = 42")).scalars().all()
            users = (await conn.exec_driver_sql("SELECT first_name FROM users")).scalars().all()
        assert (list(kept), list(users)) == (["hello"], ["Ann"])
        evals = EvalRepository(db)
        await evals.start_run("r1", "smoke", None, {"A": "chain"}, 1, 2)
        outcome = TaskOutcome(
            "greet", "chat", "A", True, (CheckOutcome("contains: hi", True),), (("hi", "hello, Привет"),), 120,
            first_token_ms=40, tokens_in=10, tokens_out=3, cost=0.001, tools=("calculate",), model="m",
        )
        await evals.add_result("r1", outcome)
        await evals.finish_run("r1")
        record = await evals.run("r1")
        assert record is not None and record.status == "finished" and record.results == [outcome]
        from alembic import command

        from bot.storage.db import alembic_config

        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0010_memory_stems"))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "eval_runs" not in tables and "eval_results" not in tables and "messages" in tables
    finally:
        await db.dispose()


async def test_the_agents_migration_keeps_the_rows_of_the_previous_head(database_url: str) -> None:
    """A database at 0011 (before agents) with a user, a chat, a message and
    a runtime setting upgrades to head with all of them intact; pins, agent
    turns and plans can then be stored and read back, and the downgrade
    removes only the agents' tables."""
    from datetime import datetime, timedelta, timezone

    from alembic import command

    from bot.storage.agents import AgentRepository, AgentTurnRecord
    from bot.storage.db import alembic_config

    db = await at_revision(database_url, "0011_eval")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), chat_row(42, "private"),
            "INSERT INTO conversations (id, chat_id, started_at) VALUES (1, 42, '2026-12-01 10:00:00')",
            "INSERT INTO messages (conversation_id, chat_id, user_id, role, content, tokens, status, request_id, "
            "created_at) VALUES (1, 42, 42, 'user', 'hello', 1, 'answered', 'req1', '2026-12-01 10:00:00')",
            "INSERT INTO runtime_settings (key, value, updated_at) VALUES ('tools_off', '[]', '2026-12-01 10:00:00')",
        )
        await db.migrate()
        assert await db.pending_migrations() == []
        async with db.engine.connect() as conn:
            kept = (await conn.exec_driver_sql("SELECT content FROM messages WHERE user_id = 42")).scalars().all()
            settings = (await conn.exec_driver_sql("SELECT key FROM runtime_settings")).scalars().all()
        assert (list(kept), list(settings)) == (["hello"], ["tools_off"])
        agents = AgentRepository(db)
        await agents.pin(42, "coder", by=42)
        await agents.pin(42, "travel", by=42)  # a second pin replaces the first
        assert await agents.pins() == {42: "travel"}
        await agents.add_turns(
            [AgentTurnRecord("req1", 42, 42, "coder", "rule", False, "complete", 1200, 30, 10, "t/openai:m")]
        )
        [usage] = await agents.usage_since(datetime.now(timezone.utc) - timedelta(minutes=1))
        assert (usage.agent, usage.turns, usage.latency_ms_total, usage.tokens_in) == ("coder", 1, 1200, 30)
        steps = [{"n": 1, "task": "Привет", "agent": "coder", "after": [], "status": "done", "result": "ok"}]
        await agents.save_plan("req1", user_id=42, chat_id=42, steps=steps, status="running")
        await agents.save_plan("req1", user_id=42, chat_id=42, steps=steps, status="done")
        plan = await agents.plan("req1")
        assert plan is not None and (plan.steps, plan.status) == (steps, "done")
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0011_eval"))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert not tables & {"agent_turns", "agent_plans", "chat_agents"}
        assert {"messages", "eval_runs", "runtime_settings"} <= tables
    finally:
        await db.dispose()


async def test_the_memory_version_migration_keeps_the_rows_of_the_previous_head(database_url: str) -> None:
    """A database at 0012 (before memory versions) with two users and a
    memory upgrades to head with all of them intact and every user at
    version 0; each change to a user's memories then bumps that user's
    version alone; the downgrade drops the column and nothing else."""
    from alembic import command

    from bot.memory.records import NewMemory
    from bot.memory.repository import MemoryRepository
    from bot.storage.db import alembic_config

    db = await at_revision(database_url, "0012_agents")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), user_row(7, "Bob"),
            "INSERT INTO memories (user_id, text, kind, importance, source, created_at, updated_at, search_terms) "
            "VALUES (42, 'Likes green tea', 'fact', 3, 'extracted', '2026-12-01 10:00:00', '2026-12-01 10:00:00', "
            "'green tea')",
        )
        await db.migrate()
        assert await db.pending_migrations() == []
        memories = MemoryRepository(db)
        assert (await memories.version(42), await memories.version(7), await memories.version(99)) == (0, 0, None)
        assert [m.text for m in await memories.all(42)] == ["Likes green tea"]
        added = await memories.add(42, [NewMemory("Plays jazz piano")], [None], None)
        deleted = await memories.delete(42, [added.value[0].id])
        nothing = await memories.delete(42, [added.value[0].id])
        assert (added.version, deleted.version, nothing.version) == (1, 2, None)
        assert (await memories.version(42), await memories.version(7)) == (2, 0)
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0012_agents"))
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("users")})
            users = (await conn.exec_driver_sql("SELECT first_name FROM users ORDER BY id")).scalars().all()
            texts = (await conn.exec_driver_sql("SELECT text FROM memories")).scalars().all()
        assert "memory_version" not in columns and "memory_extracted_until" in columns
        assert (list(users), list(texts)) == (["Bob", "Ann"], ["Likes green tea"])
    finally:
        await db.dispose()


async def test_the_telegram_updates_migration_keeps_rows_and_claims_each_update_once(database_url: str) -> None:
    """A database at 0013 with a user's message upgrades with it intact;
    then an update is claimed once (a second claim sees who took it and how
    far), marked done, and claims older than the cut-off are pruned; the
    downgrade removes only the claims' table and index."""
    from datetime import datetime, timedelta, timezone

    from alembic import command

    from bot.storage.db import alembic_config
    from bot.storage.updates import DONE, STARTED, UpdateClaims

    db = await at_revision(database_url, "0013_memory_version")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), chat_row(42, "private"),
            "INSERT INTO conversations (id, chat_id, started_at) VALUES (1, 42, '2026-12-01 10:00:00')",
            "INSERT INTO messages (conversation_id, chat_id, user_id, role, content, tokens, status, request_id, "
            "created_at) VALUES (1, 42, 42, 'user', 'hello', 1, 'pending', 'tg77', '2026-12-01 10:00:00')",
        )
        await db.migrate()
        found = await MessageRepository(db).turn_of_request("tg77")
        assert found is not None and found[0] == "pending" and found[1].content == "hello"
        assert await MessageRepository(db).turn_of_request("tg78") is None
        claims = UpdateClaims(db)
        assert await claims.claim(77, "w1") is None, "new: now w1's"
        assert await claims.claim(77, "w2") == (STARTED, "w1")
        await claims.done(77)
        assert await claims.claim(77, "w2") == (DONE, "w1")
        assert await claims.prune(datetime.now(timezone.utc) - timedelta(days=2)) == 0
        assert await claims.prune(datetime.now(timezone.utc) + timedelta(seconds=1)) == 1
        assert await claims.claim(77, "w3") is None, "pruned: taken afresh"
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0013_memory_version"))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("messages")})
        assert "telegram_updates" not in tables and "messages" in tables
        assert "ix_messages_request_id" not in indexes
    finally:
        await db.dispose()


async def test_the_crash_safety_migration_keeps_rows_and_adds_unique_keys(database_url: str) -> None:
    """A database at 0014 with a reminder, a memory, a pending message and a
    claimed update upgrades with all of them intact and their new columns
    empty; a key then holds one reminder and one memory only, a kept update
    comes back until settled, and a preview's ids are noted on its turn.
    The downgrade drops only the new columns."""
    from alembic import command
    from sqlalchemy.exc import IntegrityError

    from bot.storage.db import alembic_config
    from bot.storage.updates import UpdateClaims

    db = await at_revision(database_url, "0014_telegram_updates")
    try:
        await insert_rows(
            db, user_row(42, "Ann"), chat_row(-100123, "supergroup"),
            "INSERT INTO reminders (user_id, chat_id, text, timezone, status, next_fire_at, revision, attempts, "
            "fire_count, created_at, updated_at) VALUES (42, 42, 'call mom', 'UTC', 'active', "
            "'2027-01-01 09:00:00', 0, 0, 0, '2026-11-01 10:00:00', '2026-11-01 10:00:00')",
            "INSERT INTO memories (user_id, text, kind, importance, source, created_at, updated_at, search_terms) "
            "VALUES (42, 'Likes green tea', 'fact', 3, 'extracted', '2026-12-01 10:00:00', '2026-12-01 10:00:00', "
            "'green tea')",
            "INSERT INTO conversations (id, chat_id, started_at) VALUES (1, -100123, '2026-12-01 10:00:00')",
            "INSERT INTO messages (conversation_id, chat_id, user_id, role, content, tokens, status, request_id, "
            "created_at) VALUES (1, -100123, 42, 'user', 'Ann: dinner?', 1, 'pending', 'tg77', '2026-12-01 10:00:00')",
            "INSERT INTO telegram_updates (update_id, status, worker, claimed_at) "
            "VALUES (76, 'done', 'w1', '2026-12-01 10:00:00')",
        )
        await db.migrate()
        async with db.engine.connect() as conn:
            keys = (await conn.exec_driver_sql(
                "SELECT (SELECT idempotency_key FROM reminders), (SELECT idempotency_key FROM memories), "
                "(SELECT preview_message_ids FROM messages), (SELECT payload FROM telegram_updates)"
            )).one()
        assert tuple(keys) == (None, None, None, None)

        for table, columns in (
            ("reminders", "user_id, chat_id, text, timezone, status, revision, attempts, fire_count, created_at, "
                          "updated_at, idempotency_key) VALUES (42, 42, 'x', 'UTC', 'active', 0, 0, 0, "
                          "'2026-12-02 10:00:00', '2026-12-02 10:00:00', 'tg9:abc')"),
            ("memories", "user_id, text, kind, importance, source, created_at, updated_at, search_terms, "
                         "idempotency_key) VALUES (42, 'x', 'fact', 3, 'explicit', '2026-12-02 10:00:00', "
                         "'2026-12-02 10:00:00', 'x', 'tg9:abc')"),
        ):
            await insert_rows(db, f"INSERT INTO {table} ({columns}")
            with pytest.raises(IntegrityError):
                await insert_rows(db, f"INSERT INTO {table} ({columns}")

        claims = UpdateClaims(db)
        await claims.receive([(78, '{"update_id": 78}'), (76, '{"update_id": 76}')], "single")
        assert await claims.received_not_done() == [(78, '{"update_id": 78}')], "a handled id stays handled"
        assert await claims.highest() == 78
        await claims.receive([], "single", settled=[78])
        assert await claims.received_not_done() == []
        messages = MessageRepository(db)
        await messages.note_preview("tg77", [501, 502])
        found = await messages.turn_of_request("tg77")
        assert found is not None and found[1].preview_message_ids == (501, 502)

        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0014_telegram_updates"))
            columns = await conn.run_sync(
                lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)}
                           for t in ("reminders", "memories", "messages", "telegram_updates")}
            )
            kept = (await conn.exec_driver_sql("SELECT COUNT(*) FROM reminders")).scalar_one()
        assert "idempotency_key" not in columns["reminders"] | columns["memories"]
        assert "preview_message_ids" not in columns["messages"] and "payload" not in columns["telegram_updates"]
        assert kept == 2
    finally:
        await db.dispose()


async def test_text_with_nul_characters_is_stored_without_them(database_url: str) -> None:
    """PostgreSQL's text type refuses NUL; a console line, an API request or a
    reminder carrying one must not fail its write. Both databases store the
    same text: the NULs go, every other character stays."""
    from datetime import datetime, timedelta, timezone

    from bot.memory.records import NewMemory
    from bot.memory.repository import MemoryRepository
    from bot.storage.reminders import ReminderRepository

    db = await migrated(database_url)
    try:
        await UserRepository(db, "UTC").touch(UserProfile(42, "Ann"), "user")
        messages = MessageRepository(db)
        await messages.start_turn(
            chat_id=42, chat_type="private", chat_title=None, user_id=42, text="a\x00b\x00 c",
            tokens=3, request_id="nul-1", history_tokens=1000,
        )
        assert [m.content for m in await messages.history(42, 1000)] == ["ab c"]
        now = datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc)
        reminder = await ReminderRepository(db).add(
            user_id=42, chat_id=42, text="call\x00 mom", timezone="UTC", rule=None,
            first=now + timedelta(hours=1), now=now, max_active=10,
        )
        stored = await ReminderRepository(db).get(reminder.id)
        assert stored is not None and stored.text == "call mom"
        memories = MemoryRepository(db)
        [memory] = (await memories.add(42, [NewMemory("likes\x00 tea")], [None], None)).value
        assert [r.text for r in await memories.keyword_records(42, "tea", 10)] == ["likes tea"]
    finally:
        await db.dispose()
