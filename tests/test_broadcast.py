"""/broadcast end to end: the real bot against the fake Bot API, with fake
users seeded in the database, blocked chats (403), flood control (429),
cancel before and during sending, and a restart in the middle."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from bot.admin.broadcast import BroadcastConfig, Broadcaster, BroadcastTextError, ProgressView, State
from bot.app import Arium
from bot.runtime.pacing import Pacer
from bot.storage.broadcasts import BroadcastRepository
from bot.storage.db import Database
from bot.storage.models import Broadcast, BroadcastDelivery, User
from bot.runtime.tasks import TaskTracker
from tests.conftest import BotFactory
from tests.fakes.telegram_server import FakeTelegram, SentMessage
from tests.limits import WAIT_LIMIT

ADMIN = 1001
STRANGER = 2002
FIRST_USER = 5001
TEXT = "Maintenance tonight at 22:00"


def settings(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "bot_admin_ids": str(ADMIN),
        "reminder_send_rate": 400.0,  # quick tests; the flood limit is P3's business
        "broadcast_batch": 7,  # several chunks even for a few users
        "broadcast_progress_interval": 0.1,
        "broadcast_retry_delay": 0.01,
    }
    values.update(overrides)
    return values


async def seed_users(app: Arium, count: int, *, first: int = FIRST_USER, **columns: Any) -> list[int]:
    now = datetime.now(timezone.utc)
    ids = list(range(first, first + count))
    rows = [
        {"id": i, "first_name": f"User {i}", "language": "en", "timezone": "UTC", "role": "user",
         "created_at": now, "last_seen_at": now, "active": True, **columns}
        for i in ids
    ]
    async with app.db.session() as s:
        await s.execute(insert(User), rows)
    return ids


async def ask(tg: FakeTelegram, text: str, *, chat_id: int = ADMIN, replies: int = 1, **kwargs: Any) -> list[SentMessage]:
    before = len(tg.messages(chat_id))
    tg.user_text(text, chat_id=chat_id, **kwargs)
    messages = await tg.wait_messages(chat_id, before + replies)
    return messages[before:]


async def draft(tg: FakeTelegram, text: str = TEXT, **kwargs: Any) -> tuple[SentMessage, SentMessage]:
    """/broadcast: the preview, then the message with the buttons."""
    preview, control = await ask(tg, f"/broadcast {text}", replies=2, **kwargs)
    return preview, control


def buttons(message: SentMessage) -> list[tuple[str, str]]:
    if message.reply_markup is None:
        return []
    return [(b["text"], b["callback_data"]) for row in message.reply_markup["inline_keyboard"] for b in row]


async def press(tg: FakeTelegram, message: SentMessage, data: str, *, user_id: int | None = None) -> str | None:
    """Press a button; returns the toast the bot answered with."""
    before = len(tg.calls_of("answerCallbackQuery"))
    tg.callback_query(data, chat_id=message.chat_id, message_id=message.message_id, user_id=user_id)
    await tg.wait_for(lambda: len(tg.calls_of("answerCallbackQuery")) > before)
    return tg.calls_of("answerCallbackQuery")[before].params.get("text")


def current(tg: FakeTelegram, message: SentMessage) -> SentMessage:
    return next(m for m in tg.messages(message.chat_id) if m.message_id == message.message_id)


async def until_final(tg: FakeTelegram, control: SentMessage, prefix: str, timeout: float = WAIT_LIMIT) -> SentMessage:
    await tg.wait_for(lambda: current(tg, control).text.startswith(prefix), timeout)
    return current(tg, control)


def received(tg: FakeTelegram, user_ids: list[int], text: str = TEXT) -> Counter[int]:
    """How many copies of the broadcast each user got."""
    return Counter({u: sum(1 for m in tg.messages(u) if m.text == text) for u in user_ids})


def attempts(tg: FakeTelegram, chat_id: int) -> list[int]:
    return [c.status for c in tg.calls_of("sendMessage") if c.params.get("chat_id") == chat_id]


async def active_flags(app: Arium, ids: list[int]) -> dict[int, bool]:
    async with app.db.reading() as s:
        return dict((await s.execute(select(User.id, User.active).where(User.id.in_(ids)))).all())


def broadcast_id(control: SentMessage) -> int:
    return int(buttons(control)[0][1].rsplit(":", 1)[1])


# --- access -----------------------------------------------------------------------------


async def test_non_admins_are_refused_without_learning_anything(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    users = await seed_users(app, 3)
    [answer] = await ask(tg, f"/broadcast {TEXT}", chat_id=STRANGER)
    [unknown] = await ask(tg, "/nosuchcommand", chat_id=STRANGER)
    assert answer.text == unknown.text.replace("/nosuchcommand", "/broadcast")
    # A real draft by the admin; the stranger forges its buttons in their own chat.
    _, control = await draft(tg)
    bid = broadcast_id(control)
    for data in (f"bc:send:{bid}", f"bc:cancel:{bid}", "bc:send:999"):
        assert await press(tg, answer, data, user_id=STRANGER) is None
    assert (await app.broadcaster._repo.get(bid)).status == "draft"  # noqa: SLF001
    assert sum(received(tg, users).values()) == 0
    assert len(tg.messages(STRANGER)) == 2  # the two unknown-command answers, nothing else


# --- the whole flow -----------------------------------------------------------------------


async def test_confirmed_broadcast_reaches_every_active_user_once(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    users = await seed_users(app, 12)
    inactive = await seed_users(app, 2, first=6001, active=False)
    banned = await seed_users(app, 1, first=7001, role="banned")
    bold = {"type": "bold", "offset": len("/broadcast "), "length": len("Maintenance")}
    command = {"type": "bot_command", "offset": 0, "length": len("/broadcast")}
    preview, control = await draft(tg, entities=[command, bold])
    # The preview is the broadcast itself, formatting kept; the admin is in the audience.
    assert preview.text == TEXT and preview.html == f"<b>Maintenance</b>{TEXT[len('Maintenance'):]}"
    assert "Send it to 13 active users?" in control.text
    assert [label for label, _ in buttons(control)] == ["✅ Send to 13", "✖️ Cancel"]
    assert sum(received(tg, users).values()) == 0  # nothing before the confirmation

    bid = broadcast_id(control)
    assert await press(tg, control, f"bc:send:{bid}") == "Sending to 13 users…"
    final = await until_final(tg, control, "✅")
    assert final.text.startswith(f"✅ Broadcast #{bid} finished in ")
    assert final.text.endswith("Sent 13 of 13 · blocked the bot 0 · failed 0")
    assert final.reply_markup is None
    assert any(edit.startswith(f"📣 Broadcast #{bid}: sending…") for edit in final.edits)

    copies = received(tg, users)
    assert set(copies.values()) == {1}
    assert [m for m in tg.messages(users[0]) if m.text == TEXT][0].entities == [
        {"type": "bold", "offset": 0, "length": len("Maintenance")}
    ]
    assert sum(received(tg, inactive + banned).values()) == 0
    assert [m.text for m in tg.messages(ADMIN)].count(TEXT) == 2  # the preview and the admin's copy
    repo = BroadcastRepository(app.db)
    assert await repo.delivery_counts(bid) == {"sent": 13}
    record = await repo.get(bid)
    assert (record.status, record.total, record.sent) == ("done", 13, 13)

    assert await press(tg, current(tg, control), f"bc:send:{bid}") == "This broadcast has already been sent."
    assert await press(tg, current(tg, control), f"bc:cancel:{bid}") == "This broadcast has already been sent."
    await app.audit_writer.flush()
    actions = [(e.action, e.outcome) for e in await app.audit_log.latest()]
    assert ("broadcast", f"draft #{bid} for 13 users") in actions
    assert ("broadcast_confirm", "started for 13 users") in actions


async def test_russian_admin_gets_russian_controls(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    await seed_users(app, 2)
    _, control = await draft(tg, "Привет всем", language_code="ru")
    assert "Отправить его 3 активным пользователям?" in control.text
    await press(tg, control, f"bc:send:{broadcast_id(control)}")
    final = await until_final(tg, control, "✅")
    assert "Отправлено 3 из 3" in final.text


# --- cancelling -------------------------------------------------------------------------


async def test_cancel_before_confirming_sends_nothing(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    users = await seed_users(app, 5)
    _, control = await draft(tg)
    bid = broadcast_id(control)
    assert await press(tg, control, f"bc:cancel:{bid}") == "Cancelled. Nothing was sent."
    assert current(tg, control).text == "Cancelled. Nothing was sent." and current(tg, control).reply_markup is None
    # The old buttons, pressed again, and forged ones, get a sensible answer.
    assert await press(tg, control, f"bc:send:{bid}") == "This broadcast was cancelled."
    assert await press(tg, control, "bc:send:424242") == "This button is no longer valid."
    assert await press(tg, control, "bc:launch:1") == "This button is no longer valid."
    assert await press(tg, control, "bc:send:") == "This button is no longer valid."
    assert sum(received(tg, users).values()) == 0
    assert (await BroadcastRepository(app.db).get(bid)).status == "cancelled"


async def test_a_stale_preview_cannot_be_confirmed(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    users = await seed_users(app, 3)
    _, control = await draft(tg)
    bid = broadcast_id(control)
    async with app.db.session() as s:
        await s.execute(update(Broadcast).where(Broadcast.id == bid).values(
            created_at=datetime.now(timezone.utc) - timedelta(hours=2)))
    assert await press(tg, control, f"bc:send:{bid}") == "This preview has expired. Send /broadcast again."
    assert current(tg, control).reply_markup is None
    assert sum(received(tg, users).values()) == 0


async def test_cancel_while_sending_stops_promptly(start_bot: BotFactory, tg: FakeTelegram) -> None:
    # Slow enough (4 s for everyone) that the stop lands mid-way even on a busy machine.
    app = await start_bot(**settings(reminder_send_rate=10.0))
    users = await seed_users(app, 40)
    _, control = await draft(tg)
    bid = broadcast_id(control)
    await press(tg, control, f"bc:send:{bid}")
    await tg.wait_for(lambda: sum(received(tg, users).values()) >= 5)
    stop = next(data for label, data in buttons(current(tg, control)) if label == "⛔ Stop sending")
    assert await press(tg, control, stop) == "Stopping…"
    final = await until_final(tg, control, "⛔")
    copies = received(tg, users)
    assert set(copies.values()) <= {0, 1}
    sent = sum(copies.values()) + [m.text for m in tg.messages(ADMIN)].count(TEXT) - 1  # minus the preview
    assert 5 <= sent < 41
    assert final.text.startswith(f"⛔ Broadcast #{bid} cancelled; {41 - sent} users did not get it.")
    assert f"Sent {sent} of 41" in final.text
    repo = BroadcastRepository(app.db)
    counts = await repo.delivery_counts(bid)
    assert "claimed" not in counts  # unsent claims went back to pending
    assert (counts["sent"], counts["pending"]) == (sent, 41 - sent)
    assert (await repo.get(bid)).status == "cancelled"
    assert app.broadcaster.active == []  # nothing left that could send


# --- Telegram's refusals ------------------------------------------------------------------


async def test_blocked_users_flood_control_and_failures(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    users = await seed_users(app, 40)
    blocked = users[3:8]
    for user_id in blocked:
        tg.block_bot(user_id)
    tg.block_bot(users[9], "Forbidden: user is deactivated")
    flooded = [users[12], users[30]]
    for user_id in flooded:
        tg.fail_next("sendMessage", status=429, retry_after=1, when=lambda p, u=user_id: p.get("chat_id") == u)
    gone = users[20]
    tg.fail_next("sendMessage", status=400, description="Bad Request: chat not found",
                 when=lambda p: p.get("chat_id") == gone)
    flaky = users[25]
    tg.fail_next("sendMessage", status=500, when=lambda p: p.get("chat_id") == flaky)

    _, control = await draft(tg)
    bid = broadcast_id(control)
    await press(tg, control, f"bc:send:{bid}")
    final = await until_final(tg, control, "✅")

    copies = received(tg, users)
    refused = set(blocked) | {users[9], gone}
    assert {u for u, n in copies.items() if n == 1} == set(users) - refused
    assert all(copies[u] == 0 for u in refused)
    assert max(copies.values()) == 1  # nobody twice, the flooded and the flaky included
    for user_id in [*blocked, users[9], gone]:
        assert len(attempts(tg, user_id)) == 1  # 403 and "chat not found" are not retried
    assert all(attempts(tg, u) == [429, 200] for u in flooded)
    assert attempts(tg, flaky) == [500, 200]
    flags = await active_flags(app, users)
    assert {u for u, active in flags.items() if not active} == set(blocked) | {users[9]}
    assert final.text.endswith("Sent 34 of 41 · blocked the bot 6 · failed 1")
    assert await BroadcastRepository(app.db).delivery_counts(bid) == {"sent": 34, "blocked": 6, "failed": 1}
    # The progress was shown while sending, in the one message.
    assert any("Sent" in edit and "of 41" in edit for edit in final.edits[:-1])
    assert len([m for m in tg.messages(ADMIN) if m.text.startswith("📣")]) == 0


async def test_failures_are_retried_a_bounded_number_of_times(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings(broadcast_max_attempts=3))
    users = await seed_users(app, 3)
    broken = users[1]
    tg.fail_next("sendMessage", status=502, when=lambda p: p.get("chat_id") == broken, times=10)
    _, control = await draft(tg)
    await press(tg, control, f"bc:send:{broadcast_id(control)}")
    final = await until_final(tg, control, "✅")
    assert attempts(tg, broken) == [502, 502, 502]
    assert final.text.endswith("Sent 3 of 4 · blocked the bot 0 · failed 1")
    assert (await active_flags(app, [broken]))[broken] is True  # failing is not blocking


# --- restarts -------------------------------------------------------------------------------


async def test_a_restart_mid_broadcast_resumes_without_duplicates(start_bot: BotFactory, tg: FakeTelegram) -> None:
    first = await start_bot(**settings(reminder_send_rate=10.0))  # 4 s for everyone: the stop lands mid-way
    users = await seed_users(first, 40)
    _, control = await draft(tg)
    bid = broadcast_id(control)
    await press(tg, control, f"bc:send:{bid}")
    await tg.wait_for(lambda: sum(received(tg, users).values()) >= 8)
    await first.stop()  # graceful: sends in flight finish, unsent claims go back to pending
    paused = current(tg, control)
    assert paused.text.startswith(f"⏸ Broadcast #{bid} paused")
    before = sum(received(tg, users).values())
    assert before < 40
    db = Database(first.settings.effective_database_url)
    counts = await BroadcastRepository(db).delivery_counts(bid)
    await db.dispose()
    # Nothing left claimed, and the table knows exactly who has it (the admin came first).
    assert counts == {"sent": before + 1, "pending": 40 - before}

    second = await start_bot(**settings())
    repo = BroadcastRepository(second.db)
    final = await until_final(tg, control, "✅")
    copies = received(tg, users)
    assert set(copies.values()) == {1}  # everyone exactly once, across the restart
    assert final.text.endswith("Sent 41 of 41 · blocked the bot 0 · failed 0")
    assert await repo.delivery_counts(bid) == {"sent": 41}
    assert [m.text for m in tg.messages(ADMIN)].count(TEXT) == 2


async def test_deliveries_claimed_when_the_bot_crashed_count_as_sent(start_bot: BotFactory, tg: FakeTelegram) -> None:
    """At most once: a row still claimed after a crash may have reached the
    user, so it is recorded as sent and never sent again. The price is that a
    claimed row whose send had not started yet is lost (documented)."""
    first = await start_bot(**settings())
    users = await seed_users(first, 20)
    _, control = await draft(tg)
    bid = broadcast_id(control)
    await first.stop()
    # What a crash mid-broadcast leaves behind: running, some rows sent, some
    # claimed (in flight when the process died), the rest pending.
    now = datetime.now(timezone.utc)
    db = Database(first.settings.effective_database_url)
    recipients = [ADMIN, *users]
    statuses = {u: "sent" for u in recipients[:5]} | {u: "claimed" for u in recipients[5:9]}
    async with db.session() as s:
        await s.execute(update(Broadcast).where(Broadcast.id == bid).values(
            status="running", started_at=now, total=len(recipients), sent=5))
        await s.execute(insert(BroadcastDelivery), [
            {"broadcast_id": bid, "user_id": u, "status": statuses.get(u, "pending"), "updated_at": now}
            for u in recipients
        ])
    await db.dispose()

    second = await start_bot(**settings())
    final = await until_final(tg, control, "✅")
    copies = received(tg, users)
    claimed = set(recipients[5:9])
    assert {u for u, n in copies.items() if n} == set(recipients[9:])  # pending ones only
    assert all(copies[u] == 0 for u in claimed if u != ADMIN)
    assert final.text.endswith("Sent 21 of 21 · blocked the bot 0 · failed 0")
    assert await BroadcastRepository(second.db).delivery_counts(bid) == {"sent": 21}


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/broadcast", "Usage: /broadcast <text>"),
        ("/broadcast    \n  ", "Usage: /broadcast <text>"),
        ("/broadcast " + "x" * 4097, "too long for one Telegram message: 4097 characters, the limit is 4096"),
        ("/broadcast " + "😀" * 2049, "4098 characters, the limit is 4096"),
    ],
)
async def test_bad_input_gets_a_clear_answer(start_bot: BotFactory, tg: FakeTelegram, text: str, expected: str) -> None:
    app = await start_bot(**settings())
    await seed_users(app, 2)
    [answer] = await ask(tg, text)
    assert expected in answer.text
    async with app.db.reading() as s:
        assert (await s.execute(select(Broadcast))).first() is None


async def test_a_text_of_exactly_4096_characters_is_accepted(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings())
    await seed_users(app, 1)
    preview, control = await draft(tg, "y" * 4096)
    assert len(preview.text) == 4096 and "Send it to 2 active users?" in control.text


async def test_broadcast_is_refused_in_a_group(start_bot: BotFactory, tg: FakeTelegram) -> None:
    await start_bot(**settings())
    [answer] = await ask(tg, f"/broadcast {TEXT}", chat_id=-100777, user_id=ADMIN)
    assert "private chat" in answer.text


# --- the parts ------------------------------------------------------------------------------


async def test_fake_telegram_refuses_chats_that_blocked_the_bot(tg: FakeTelegram) -> None:
    from telegram import Bot
    from telegram.error import Forbidden

    tg.block_bot(77, "Forbidden: user is deactivated")
    async with Bot(tg.token, base_url=tg.base_url) as bot:
        with pytest.raises(Forbidden, match="user is deactivated"):
            await bot.send_message(77, "hi")
        await bot.send_message(78, "hi")
        tg.unblock_bot(77)
        await bot.send_message(77, "hi again")
    assert [m.text for m in tg.messages(77)] == ["hi again"]


async def test_pacer_pause_holds_every_permit() -> None:
    clock = {"now": 100.0}

    async def sleep(seconds: float) -> None:
        clock["now"] += seconds
        await asyncio.sleep(0)

    pacer = Pacer(10, monotonic=lambda: clock["now"], sleep=sleep)
    await pacer.acquire()
    pacer.pause(3.0)
    await pacer.acquire()
    assert clock["now"] == pytest.approx(103.0)
    await pacer.acquire()
    assert clock["now"] == pytest.approx(103.1)


async def test_pacer_keeps_its_rate_when_every_wake_up_is_late() -> None:
    """A busy machine wakes each sleeper a few ms late; the rate must not
    drift down by that much per permit, nor exceed the limit in any second."""
    clock = {"now": 100.0}

    async def late_sleep(seconds: float) -> None:
        clock["now"] += seconds + 0.003
        await asyncio.sleep(0)

    pacer = Pacer(28, monotonic=lambda: clock["now"], sleep=late_sleep)
    granted: list[float] = []
    for _ in range(281):
        await pacer.acquire()
        granted.append(clock["now"])
    assert granted[-1] - granted[0] == pytest.approx(280 / 28, abs=0.01)  # 10 s, not 10.8
    in_any_second = max(sum(1 for t in granted if start <= t < start + 1.0) for start in granted)
    assert in_any_second <= 29


async def test_repository_claims_records_and_recovers(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    try:
        now = datetime.now(timezone.utc)
        async with db.session() as s:
            await s.execute(insert(User), [
                {"id": i, "first_name": "U", "language": "en", "timezone": "UTC", "role": role,
                 "created_at": now, "last_seen_at": now, "active": active}
                for i, role, active in [(1, "user", True), (2, "user", True), (3, "banned", True),
                                        (4, "user", False), (5, "admin", True), (6, "user", True)]
            ])
        repo = BroadcastRepository(db)
        assert await repo.audience_size() == 4
        draft_record = await repo.create_draft(5, "<b>hi</b>", now)
        started = await repo.start(draft_record.id, now, now - timedelta(hours=1))
        assert started.started and started.record is not None and started.record.total == 4
        again = await repo.start(draft_record.id, now, now - timedelta(hours=1))
        assert not again.started and again.record is not None and again.record.status == "running"

        assert await repo.claim(draft_record.id, 3, now) == [1, 2, 5]
        await repo.record(draft_record.id, {1: "sent", 2: "blocked"}, now)
        await repo.record(draft_record.id, {1: "sent"}, now)  # a repeated write changes nothing
        assert await repo.release_claims(draft_record.id, keep={5}, now=now) == 0
        assert await repo.claim(draft_record.id, 3, now) == [6]
        assert await repo.release_claims(draft_record.id, keep=(), now=now) == 2  # 5 and 6
        assert await repo.delivery_counts(draft_record.id) == {"sent": 1, "blocked": 1, "pending": 2}
        assert await repo.claim(draft_record.id, 10, now) == [5, 6]
        assert await repo.recover_claims(draft_record.id, now) == 2
        record = await repo.get(draft_record.id)
        assert record is not None and (record.sent, record.blocked, record.failed) == (3, 1, 0)
        async with db.reading() as s:
            assert (await s.execute(select(User.active).where(User.id == 2))).scalar_one() is False
        assert await repo.finish(draft_record.id, now) is not None
        assert (await repo.cancel(draft_record.id, now)).status == "done"  # type: ignore[union-attr]
        assert [r.id for r in await repo.running()] == []
    finally:
        await db.dispose()


class RecordingSender:
    max_text_length = 50

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.views: list[ProgressView] = []

    async def send(self, user_id: int, text: str) -> None:
        self.sent.append(user_id)

    async def show_progress(self, chat_id: int, message_id: int, view: ProgressView) -> None:
        self.views.append(view)


async def test_text_checks_use_the_senders_limit(tmp_path: Any) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    await db.migrate()
    try:
        broadcaster = Broadcaster(BroadcastRepository(db), RecordingSender(), pacer=Pacer(1000), tasks=TaskTracker(),
                                  config=BroadcastConfig())
        with pytest.raises(BroadcastTextError) as empty:
            await broadcaster.prepare(1, "<b> </b>", "  \n ")
        assert empty.value.code == "empty"
        with pytest.raises(BroadcastTextError) as long:
            await broadcaster.prepare(1, "z" * 51, "z" * 51)
        assert (long.value.code, long.value.values) == ("too_long", {"length": 51, "limit": 50})
        assert (await broadcaster.prepare(1, "ok", "ok")).audience == 0
    finally:
        await db.dispose()


async def test_a_cancel_the_run_did_not_hear_of_still_stops_it(tmp_path: Any) -> None:
    """Cancelled in the table (a press racing the confirmation, or another
    process): the feeder claims no more, and the run ends as cancelled."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}")
    await db.migrate()
    tasks = TaskTracker()
    try:
        now = datetime.now(timezone.utc)
        async with db.session() as s:
            await s.execute(insert(User), [
                {"id": i, "first_name": "U", "language": "en", "timezone": "UTC", "role": "user",
                 "created_at": now, "last_seen_at": now, "active": True} for i in range(1, 201)
            ])
        sender = RecordingSender()
        repo = BroadcastRepository(db)
        broadcaster = Broadcaster(repo, sender, pacer=Pacer(100), tasks=tasks,
                                  config=BroadcastConfig(batch=10, workers=2, progress_interval=0.05))
        draft_record = (await broadcaster.prepare(1, "hello", "hello")).record
        await broadcaster.attach_progress(draft_record.id, 1, 1)
        await broadcaster.confirm(draft_record.id)
        while len(sender.sent) < 15:
            await asyncio.sleep(0.01)
        await repo.cancel(draft_record.id, datetime.now(timezone.utc))  # behind the broadcaster's back
        while broadcaster.active:
            await asyncio.sleep(0.01)
        assert 15 <= len(sender.sent) <= 15 + 2 * 10 + 2  # what was claimed already, no more
        assert len(set(sender.sent)) == len(sender.sent)
        assert sender.views[-1].state is State.CANCELLED
        counts = await repo.delivery_counts(draft_record.id)
        assert counts == {"sent": len(sender.sent), "pending": 200 - len(sender.sent)}
    finally:
        await tasks.drain(1)
        await db.dispose()


def test_the_text_after_the_command_keeps_its_formatting() -> None:
    from telegram import Chat, Message, MessageEntity

    from bot.channels.telegram.broadcast_handlers import text_after_command

    text = "/broadcast@arium_test_bot \n 😀 <b> & <i>News</i>: see docs "
    command = len("/broadcast@arium_test_bot")
    emoji_at = command + 3  # after " \n "
    link_at = emoji_at + 2 + len(" <b> & <i>News</i>: see ")  # the emoji is two UTF-16 units
    message = Message(
        1, datetime.now(timezone.utc), Chat(1001, "private"), text=text,
        entities=[
            MessageEntity("bot_command", 0, command),
            MessageEntity("bold", 0, command + 8),  # the command and " \n 😀 <b": clipped to "😀 <b"
            MessageEntity("text_link", link_at, 4, url="https://example.com/docs"),
        ],
    )
    html, visible = text_after_command(message)
    assert visible == "😀 <b> & <i>News</i>: see docs"
    assert html == '<b>😀 &lt;b</b>&gt; &amp; &lt;i&gt;News&lt;/i&gt;: see <a href="https://example.com/docs">docs</a>'


def test_progress_text_shows_rate_and_eta() -> None:
    from bot.channels.telegram.broadcast_handlers import progress_keyboard, progress_text

    view = ProgressView(broadcast_id=3, language="en", state=State.SENDING, total=3000, sent=1200, blocked=30,
                        failed=2, rate=28.04, eta_seconds=63.6, elapsed_seconds=44)
    assert progress_text(view) == (
        "📣 Broadcast #3: sending…\nSent 1200 of 3000 · blocked the bot 30 · failed 2\n28.0 msg/s · about 1 min 04 s left"
    )
    keyboard = progress_keyboard(view)
    assert keyboard is not None and keyboard.inline_keyboard[0][0].callback_data == "bc:cancel:3"
    done = ProgressView(3, "ru", State.DONE, 3000, 2968, 30, 2, None, None, 107)
    assert progress_text(done) == (
        "✅ Рассылка №3 завершена за 1 мин 47 с.\nОтправлено 2968 из 3000 · заблокировали бота 30 · ошибки 2"
    )
    assert progress_keyboard(done) is None


async def test_in_allow_list_mode_only_admitted_users_and_admins_get_it(start_bot: BotFactory, tg: FakeTelegram) -> None:
    app = await start_bot(**settings(bot_access_mode="allowlist"))
    admitted = await seed_users(app, 3, allowed=True)
    strangers = await seed_users(app, 4, first=8001)  # wrote once, were turned away
    _, control = await draft(tg)
    assert "Send it to 4 active users?" in control.text  # three admitted users and the admin
    bid = broadcast_id(control)
    await press(tg, control, f"bc:send:{bid}")
    await until_final(tg, control, "✅")
    assert set(received(tg, admitted).values()) == {1}
    assert sum(received(tg, strangers).values()) == 0
