"""A single process confirms no update to Telegram before it is written
down, and handles at its next start the updates a crash caught between
that write and the turn's own (bot/channels/telegram/inbox.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.recovery import RecoveryReport
from bot.storage.db import Database
from bot.storage.repositories import MessageRepository, UserProfile, UserRepository
from bot.storage.updates import DONE, RECEIVED, UpdateClaims
from tests.conftest import BotFactory, eventually, handled_so_far, reset_postgres
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram

CHAT = 1001


async def inbox_rows(url: str) -> dict[int, tuple[str, bool]]:
    """update id -> (status, whether the update itself is still kept)."""
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(text("SELECT update_id, status, payload IS NOT NULL FROM telegram_updates"))
            return {update_id: (status, bool(kept)) for update_id, status, kept in rows.all()}
    finally:
        await db.dispose()


async def test_an_update_is_confirmed_to_telegram_only_once_it_is_written_down(
    postgres_url: str | None, tg: FakeTelegram, model: FakeModelServer, start_bot: BotFactory
) -> None:
    """While the inbox's table is locked (only it: the turn's own tables are
    free), the message is answered, yet Telegram still holds it unconfirmed;
    once the lock goes, the next long poll confirms it and it is marked done."""
    if postgres_url is None:
        pytest.skip("needs PostgreSQL (TEST_DATABASE_URL): SQLite cannot lock one table")
    await reset_postgres(postgres_url)
    model.responder = lambda request: Reply(text=f"answer to {request.last_user_text}")
    await start_bot(database_url=postgres_url)
    locker = create_async_engine(postgres_url)
    try:
        async with locker.connect() as conn:
            await conn.execute(text("LOCK TABLE telegram_updates IN EXCLUSIVE MODE"))  # until rollback
            update = tg.user_text("are you there?", chat_id=CHAT)
            [answer] = await tg.wait_messages(CHAT, 1)
            assert answer.text == "answer to are you there?"
            assert tg.pending_updates() == 1, "answered, but not confirmed before it was written down"
            await conn.rollback()
        await tg.wait_for(lambda: tg.pending_updates() == 0)
    finally:
        await locker.dispose()
    assert tg.messages(CHAT) == [answer], "nothing answered twice"
    # Marked done, the update itself no longer kept.
    await eventually(lambda: inbox_rows(postgres_url), lambda rows: rows.get(update["update_id"]) == (DONE, False))


async def test_updates_a_crash_caught_before_their_turn_was_stored_are_handled_at_the_next_start_once(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, start_bot: BotFactory
) -> None:
    """What a kill -9 leaves between the inbox's write and the turn's: kept
    updates never handled. One Telegram had confirmed (it will not come
    again), one it had not (the next poll brings it again), and one whose
    turn was stored (turn recovery answers it); and an update whose turn was
    stored while its own write had not committed (the next poll brings it
    again, and its turn is looked up). The restart answers each once, in
    order; a further start repeats nothing."""
    model.responder = lambda request: Reply(text=f"answer to {request.last_user_text}")
    first = await start_bot()
    await first.stop()
    url = first.settings.effective_database_url

    confirmed = tg.user_text("first, confirmed already", chat_id=CHAT)
    stored = tg.user_text("second, its turn stored", chat_id=CHAT)
    tg.confirm_updates(stored["update_id"])
    unconfirmed = tg.user_text("third, not confirmed yet", chat_id=CHAT)
    unwritten = tg.user_text("fourth, stored, never written down", chat_id=CHAT)
    db = Database(url)
    try:
        await UpdateClaims(db).receive(
            [(u["update_id"], json.dumps(u)) for u in (confirmed, stored, unconfirmed)], "single"
        )
        await UserRepository(db, default_timezone="UTC").touch(UserProfile(CHAT, "Ann"), "user")
        for update in (stored, unwritten):
            await MessageRepository(db).start_turn(
                chat_id=CHAT, chat_type="private", chat_title=None, user_id=CHAT, text=update["message"]["text"],
                tokens=5, request_id=f"tg{update['update_id']}", history_tokens=1000,
            )
    finally:
        await db.dispose()

    second = await start_bot()
    questions = [u["message"]["text"] for u in (confirmed, stored, unconfirmed, unwritten)]
    texts = [m.text.split("\n\n")[-1] for m in await tg.wait_messages(CHAT, 4)]
    assert sorted(texts) == sorted(f"answer to {question}" for question in questions)
    assert texts.index("answer to first, confirmed already") < texts.index("answer to third, not confirmed yet")
    assert second.recovery.last == RecoveryReport(answered=2, replayed=2)
    await tg.wait_for(lambda: tg.pending_updates() == 0)
    await handled_so_far(tg, CHAT)
    assert len(tg.messages(CHAT)) == 5, "four answers and /help's: none twice"
    await second.stop()
    assert {status for status, _ in (await inbox_rows(url)).values()} == {DONE}
    asked = [request.last_user_text for request in model.chat_requests()]
    assert sorted(asked) == sorted(questions), "each put to the model once"

    third = await start_bot()
    assert third.recovery.last == RecoveryReport()
    await handled_so_far(tg, CHAT)
    assert len(model.chat_requests()) == 4 and len(tg.messages(CHAT)) == 6, "nothing repeated"
    await eventually(lambda: inbox_rows(url), lambda rows: RECEIVED not in {status for status, _ in rows.values()})
