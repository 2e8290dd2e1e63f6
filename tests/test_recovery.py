"""Nothing a user sent is lost to a crash: `python -m bot run` as a real
process against the fake Bot API and the fake model server, killed with
SIGKILL while a turn is in flight, then started again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bot.app import Arium
from bot.memory.embedder import Embedder
from bot.recovery import RecoveryReport
from bot.storage.repositories import UserProfile
from tests.conftest import BotFactory, fake_settings
from tests.fakes.model_server import Fault, FakeModelServer, Reply, Request, StreamFault, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram
from tests.limits import WAIT_LIMIT
from tests.support.memory_bot import Brain, facts, requests_of, settle
from tests.support.processes import Starter, kill_hard, stop
from tests.support.processes import fixture_bot_process  # noqa: F401  (the bot_process fixture)

CHAT = 1001
GROUP_CHAT, ANN_IN_GROUP = -100555, 3003
REMINDER = "Remind me to call mom tomorrow at 9"


async def crash_during_a_turn(
    bot_process: Starter, tg: FakeTelegram, model: FakeModelServer, question: str, *, after_requests: int = 1
) -> None:
    """``question`` arrives, Telegram has it confirmed, the model is still
    thinking about it (the responder keeps its ``after_requests``-th request
    waiting): the process is killed."""
    process = await bot_process()
    tg.user_text(question, chat_id=CHAT)

    def asked() -> bool:
        return sum(request.last_user_text == question for request in model.chat_requests()) >= after_requests

    await tg.wait_for(asked, timeout=WAIT_LIMIT * 3)  # start-up loads the embedder: generous
    # The next long poll confirms the update: Telegram will not send it again.
    await tg.wait_for(lambda: tg.pending_updates() == 0)
    await kill_hard(process)


async def ready(tg: FakeTelegram) -> list[str]:
    """Waits until the bot answers /help (it takes messages only after
    recovery), then returns what the chat got since the last call."""
    before = len(tg.messages(CHAT))
    tg.user_text("/help", chat_id=CHAT)

    def help_at() -> int | None:
        texts = [m.text for m in tg.messages(CHAT)]
        return next((i for i in range(before, len(texts)) if texts[i].startswith("What I understand")), None)

    await tg.wait_for(lambda: help_at() is not None, timeout=WAIT_LIMIT * 3)
    return [m.text for m in tg.messages(CHAT)[before : help_at()]]


async def test_turns_killed_in_flight_are_finished_once_after_a_restart(
    bot_process: Starter, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    """Killed after the create_reminder tool ran, while the model writes the
    answer; killed again while the restart was finishing that turn: the
    next restart answers the question once, late and saying so, and the
    reminder exists once (the tool's round is replayed to the model, not run
    again). Killed once more on the next question, and restarted after the
    recovery window: one note, no model request, nothing repeated."""

    def reminder_requests() -> int:
        return sum(request.last_user_text == REMINDER for request in model.chat_requests())

    def responder(request: Request) -> Reply:
        told = any(message.get("role") == "tool" for message in request.messages)
        if request.last_user_text == REMINDER and not told:
            return Reply(tool_calls=[ToolCallSpec("create_reminder", {"text": "call mom", "when": "tomorrow at 9"})])
        if request.last_user_text == REMINDER and reminder_requests() > 3:  # the third start's
            return Reply(text="I will remind you to call mom tomorrow at 9.")
        return Reply(text="an answer nobody will see", delay=WAIT_LIMIT * 4)

    model.responder = responder
    await crash_during_a_turn(bot_process, tg, model, REMINDER, after_requests=2)
    # The restart is killed while it finishes that turn (its request to the model hangs).
    restarted = await bot_process()
    await tg.wait_for(lambda: reminder_requests() == 3, timeout=WAIT_LIMIT * 3)
    await kill_hard(restarted)
    assert tg.messages(CHAT) == [], "the user heard nothing yet"

    # The restart before the next crash finishes the first question.
    await crash_during_a_turn(bot_process, tg, model, "And what about Friday?")
    [late] = [m.text for m in tg.messages(CHAT)]
    note, answer = late.split("\n\n")
    assert "Sorry for the wait" in note and "restarting" in note, late
    assert answer == "I will remind you to call mom tomorrow at 9.", late
    for resumed in model.chat_requests()[2:4]:
        roles = [m["role"] for m in resumed.messages]
        assert resumed.last_user_text == REMINDER and roles[-2:] == ["assistant", "tool"], "replayed, not run again"

    last = await bot_process(BOT_RECOVERY_WINDOW="0")
    [missed] = await ready(tg)
    assert "could not answer it then" in missed and "send it again" in missed, missed
    assert len(model.chat_requests()) == 5, "an old question is not put to the model again"
    assert sum(text.endswith("tomorrow at 9.") for text in (m.text for m in tg.messages(CHAT))) == 1, "answered once"
    await stop(last)
    with sqlite3.connect(tmp_path / "data" / "arium.db") as db:
        assert db.execute("SELECT text FROM reminders").fetchall() == [("call mom",)], "one reminder, not two"
        assert db.execute("SELECT COUNT(*) FROM tool_rounds").fetchone() == (0,), "kept only while the turn ran"


async def test_a_group_preview_a_crash_left_is_replaced_by_the_late_answer_not_left_beside_it(
    bot_process: Starter, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    """In a group the answer streams into a preview message. Killed while
    the preview shows half an answer: the restart edits that message into
    the late answer, instead of leaving the half answer above a second one."""
    question = "@arium_test_bot what is for dinner?"

    def responder(request: Request) -> Reply | StreamFault:
        if len(model.chat_requests()) == 1:  # the first run: half an answer, then the stream stalls
            return StreamFault("stall", text_before="Pasta ", seconds=WAIT_LIMIT * 4)
        return Reply(text="Pasta with tomatoes.")

    model.responder = responder
    process = await bot_process(BOT_EDIT_INTERVAL="0.05")
    tg.user_text(question, chat_id=GROUP_CHAT, chat_type="group", user_id=ANN_IN_GROUP, chat_title="Family")

    def preview_kept() -> bool:
        with sqlite3.connect(tmp_path / "data" / "arium.db") as db:
            row = db.execute("SELECT preview_message_ids FROM messages WHERE role = 'user'").fetchone()
        return row is not None and row[0] is not None

    await tg.wait_for(
        lambda: [m.text[:5] for m in tg.messages(GROUP_CHAT)] == ["Pasta"], timeout=WAIT_LIMIT * 3
    )
    await tg.wait_for(preview_kept)
    [preview] = tg.messages(GROUP_CHAT)
    await kill_hard(process)

    restarted = await bot_process(BOT_EDIT_INTERVAL="0.05")
    await tg.wait_for(lambda: tg.messages(GROUP_CHAT)[0].text.endswith("Pasta with tomatoes."), timeout=WAIT_LIMIT * 3)
    [late] = tg.messages(GROUP_CHAT)
    assert late.message_id == preview.message_id, "the preview became the answer"
    assert late.text.startswith("Sorry for the wait"), late.text
    await stop(restarted)


# --- In process: what a crash leaves, and what a restart does with it --------------

ANN, GROUP = 2002, -100777


async def test_each_chat_s_unfinished_turns_are_finished_in_order_and_failed_ones_are_left_alone(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, start_bot: BotFactory
) -> None:
    """A crash leaves the user messages of its turns pending (what
    start_turn stored); a turn whose model failed was answered with an
    apology and is settled. The next start answers the pending ones, each
    chat in its order (a group's in the group), and nothing else; /health
    says how many."""
    settings = fake_settings(tmp_path / "data", tg, model, bot_admin_ids=str(ANN))
    first = Arium(settings, embedder=embedder)
    await first.start()
    model.responder = lambda request: Fault(401)  # no model answers: the user is told
    tg.user_text("will this fail?", chat_id=CHAT)
    [apology] = await tg.wait_messages(CHAT, 1)
    assert "unavailable" in apology.text
    await first.users.touch(UserProfile(ANN, "Ann"), "user")
    # What a crash leaves behind: stored questions whose turns never ended.
    for chat, chat_type, user, text in (
        (CHAT, "private", CHAT, "first question"),
        (GROUP, "group", ANN, "Ann: what is for dinner?"),
        (CHAT, "private", CHAT, "second question"),
    ):
        await first.messages.start_turn(
            chat_id=chat, chat_type=chat_type, chat_title="Family" if chat < 0 else None, user_id=user,
            text=text, tokens=5, request_id="lost", history_tokens=1000,
        )
    await first.stop()

    model.responder = lambda request: Reply(text=f"answer to {request.last_user_text}")
    second = await start_bot(bot_admin_ids=str(ANN))
    assert second.recovery.last == RecoveryReport(answered=3)
    private = [m.text.split("\n\n")[-1] for m in tg.messages(CHAT)[1:]]
    assert private == ["answer to first question", "answer to second question"], "in order, once each"
    [group] = tg.messages(GROUP)
    assert group.text.endswith("answer to Ann: what is for dinner?") and group.text.startswith("Sorry for the wait")
    asked = [request.last_user_text for request in model.chat_requests()]
    assert "will this fail?" not in asked[-3:], "a turn the user was told about is not run again"
    # The admin hears of it, once, and /health says it.
    [alert] = [m.text for m in tg.messages(ANN) if "interrupted turn" in m.text]
    assert "3 interrupted turn(s) finished" in alert and "(3 answered late" in alert
    before = len(tg.messages(ANN))
    tg.user_text("/health", chat_id=ANN, user_id=ANN)
    health = (await tg.wait_messages(ANN, before + 1))[before]
    assert "finished at this start: 3 turns (3 answered late" in health.text


async def test_exchanges_extraction_never_read_are_read_at_the_next_start(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, start_bot: BotFactory
) -> None:
    """What a crash leaves when extraction waited for a quiet spell: stored
    exchanges past the user's extraction cursor. The next start reads them
    (one extraction, the facts remembered) and moves the cursor, so a
    further start reads nothing again; a user who deleted memories since
    gets nothing back."""
    brain = Brain()
    brain.extract = lambda request: facts("Has a cat called Tom")
    model.responder = brain
    settings = fake_settings(
        tmp_path / "data", tg, model, bot_memory_extraction=True, bot_memory_extract_after=3600,
    )
    first = Arium(settings, embedder=embedder)
    await first.start()
    for user in (CHAT, ANN):
        await first.users.touch(UserProfile(user, f"User{user}"), "user")
        start = await first.messages.start_turn(
            chat_id=user, chat_type="private", chat_title=None, user_id=user,
            text="My cat is called Tom and he loves tuna", tokens=9, request_id=f"r{user}", history_tokens=1000,
        )
        await first.messages.add_assistant_message(
            conversation_id=start.conversation_id, chat_id=user, user_id=user, text="What a lovely name!",
            tokens=4, status="complete", request_id=f"r{user}", model="m", prompt_version="system@1",
            tokens_in=1, tokens_out=1, answers=start.user_message_id,
        )
    await first.memory.delete_all(ANN)  # Ann deleted her memories after saying it
    await first.stop()
    assert requests_of(model, "extract") == []

    second = await start_bot(bot_memory_extraction=True, bot_memory_extract_after=3600)
    await settle(second, model, 1)
    [extraction] = requests_of(model, "extract")
    assert "cat is called Tom" in str(extraction.messages) and "User" in str(extraction.messages)
    assert [m.text for m in (await second.memory.page(CHAT, 0, 10))[0]] == ["Has a cat called Tom"]
    assert await second.memory.count(ANN) == 0, "what she deleted does not come back"
    await second.stop()

    third = await start_bot(bot_memory_extraction=True, bot_memory_extract_after=3600)
    await settle(third, model, 1)
    assert len(requests_of(model, "extract")) == 1, "read once"


# --- Killed while a tool runs: its side effect stored, its round not kept ---------

HOLD_PLUGIN = '''
import time

from bot.context import RequestContext


def hold(ctx: RequestContext) -> str:
    """Take a moment."""
    time.sleep(300)  # the test kills the process meanwhile
    return "held"


def register_tools(register):
    register(hold, timeout=600)
'''


def install_hold_plugin(folder: Path) -> None:
    """A test-only plugin, installed the documented way (an ``arium.plugins``
    entry point): its ``hold`` tool sleeps until the process is killed.
    ``folder`` is the bot's working directory, which ``python -m`` puts on
    sys.path."""
    (folder / "arium_hold.py").write_text(HOLD_PLUGIN)
    dist = folder / "arium_hold-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: arium-hold\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[arium.plugins]\nhold = arium_hold\n")


def stored(database: Path, query: str) -> list[tuple[object, ...]]:
    """Rows of the bot's SQLite database, read-only ([] before it exists)."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return db.execute(query).fetchall()
    except sqlite3.OperationalError:  # not created or not migrated yet
        return []


async def test_a_tool_call_cut_short_after_its_effect_is_not_repeated_by_the_resumed_turn(
    bot_process: Starter, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    """The model calls create_reminder and hold in one round. The reminder
    is stored; hold still runs, so the round is not kept: killed there. The
    restart finishes the turn with nothing to replay, the model calls
    create_reminder again with the same arguments, and the call's key
    (the turn's request id and the call) finds the first reminder: one
    reminder, one late answer."""
    install_hold_plugin(tmp_path)
    database = tmp_path / "data" / "arium.db"
    create = ToolCallSpec("create_reminder", {"text": "call mom", "when": "tomorrow at 9"})
    first_asks: list[Request] = []

    def responder(request: Request) -> Reply:
        if any(message.get("role") == "tool" for message in request.messages):
            return Reply(text="I will remind you to call mom tomorrow at 9.")
        first_asks.append(request)
        if len(first_asks) == 1:
            return Reply(tool_calls=[create, ToolCallSpec("hold")])
        return Reply(tool_calls=[create])  # the resumed turn asks again, and the model calls again

    model.responder = responder
    process = await bot_process()
    tg.user_text(REMINDER, chat_id=CHAT)
    await tg.wait_for(lambda: len(stored(database, "SELECT id FROM reminders")) == 1, timeout=WAIT_LIMIT * 3)
    await tg.wait_for(lambda: tg.pending_updates() == 0)  # confirmed: Telegram will not send it again
    await kill_hard(process)
    assert stored(database, "SELECT COUNT(*) FROM tool_rounds") == [(0,)], "killed before the round was kept"

    restarted = await bot_process()
    [late] = await ready(tg)
    note, answer = late.split("\n\n")
    assert "Sorry for the wait" in note and answer == "I will remind you to call mom tomorrow at 9.", late
    assert len(first_asks) == 2 and first_asks[1].last_user_text == REMINDER, "the tool really was called again"
    await stop(restarted)
    reminders = stored(database, "SELECT text, idempotency_key FROM reminders")
    assert len(reminders) == 1, f"one reminder, not {len(reminders)}: {reminders}"
    [(text, key)] = reminders
    assert text == "call mom" and str(key).startswith("tg"), "made under the call's key"
    assert sum(m.text.endswith("call mom tomorrow at 9.") for m in tg.messages(CHAT)) == 1, "answered once"
