"""Memory end to end: the real bot against the fake Telegram and model
servers, the real embedder, FAISS and SQLite. The fake model tells the
bot's request kinds apart by the prompts' opening lines."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import event

from bot.app import Arium
from bot.memory.embedder import Embedder
from bot.memory.records import NewMemory
from bot.storage.repositories import UserProfile
from bot.memory.turn import MAX_BATCH_EXCHANGES
from tests.conftest import BotFactory, eventually, fake_settings, stop_bot
from tests.fakes.model_server import Fault, FakeModelServer, Reply, Request, Step, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram, SentMessage
from tests.support.chat import system_prompt
from tests.support.memory_bot import ANN, BOB, Brain, facts, kind_of, requests_of, settle

GROUP = -100555
T = TypeVar("T")


def waiting_batches(app: Arium) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return app.turn_memory.waiting

    return count


async def texts(app: Arium, user_id: int) -> list[str]:
    items, _ = await app.memory.page(user_id, 0, 100)
    return sorted(m.text for m in items)


async def seed(app: Arium, user_id: int, *items: str) -> list[int]:
    await app.users.touch(UserProfile(user_id, "X"), "user")
    return [r.id for r in await app.memory.add(user_id, [NewMemory(text) for text in items])]


# --- Writing: extraction after the reply -----------------------------------------


async def test_a_move_updates_the_city_instead_of_keeping_both(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    brain = Brain()
    brain.extract = lambda r: facts(
        {"text": "Lives in Paris", "kind": "profile", "importance": 4}
        if "Paris" in system_prompt(r)
        else {"text": "Lives in Berlin", "kind": "profile", "importance": 4}
    )
    brain.update = lambda r: Reply(
        text=json.dumps({"decisions": [{"fact": "F1", "action": "update", "memory": "M1", "text": "Lives in Paris"}]})
    )
    model.responder = brain
    app = await start_bot(bot_memory_extraction=True)

    tg.user_text("Hi! I live in Berlin, by the way.")
    await tg.wait_messages(ANN, 1)
    assert await eventually(lambda: texts(app, ANN), lambda v: v == ["Lives in Berlin"])

    tg.user_text("Big news: I moved from Berlin to Paris last month.")
    await tg.wait_messages(ANN, 2)
    await settle(app, model, 5)  # chat, extract, chat, extract, update
    assert await texts(app, ANN) == ["Lives in Paris"], "updated in place, not duplicated"
    [update] = requests_of(model, "update")
    assert "M1: Lives in Berlin" in system_prompt(update) and "F1: Lives in Paris" in system_prompt(update)

    tg.user_text("Where do I live?")
    await tg.wait_messages(ANN, 3)
    assert "- Lives in Paris" in system_prompt(requests_of(model, "chat")[-1])


async def test_extraction_runs_after_the_reply_and_skips_small_talk(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    brain = Brain()
    brain.extract = lambda r: facts("Has a daughter, Lisa, aged seven")
    model.responder = brain
    app = await start_bot(bot_memory_extraction=True)
    tg.user_text("My daughter Lisa turned seven today!")
    await tg.wait_messages(ANN, 1)
    await settle(app, model, 2)
    [extract] = requests_of(model, "extract")
    sent = tg.calls_of("sendMessage")[-1]
    assert sent.at < extract.at, "the reply goes out before extraction starts"
    assert "My daughter Lisa turned seven today!" in system_prompt(extract)
    assert await texts(app, ANN) == ["Has a daughter, Lisa, aged seven"]

    tg.user_text("thanks!")
    await tg.wait_messages(ANN, 2)
    tg.user_text("My son Tom is three")
    await tg.wait_messages(ANN, 3)
    await settle(app, model, 5)  # chat, extract, chat (no extract for "thanks!"), chat, extract
    assert [kind_of(r) for r in model.chat_requests()] == ["chat", "extract", "chat", "chat", "extract"]


async def learning_bot(start_bot: BotFactory, model: FakeModelServer, quiet: float, *learned: str) -> Arium:
    """A bot that extracts after ``quiet`` seconds; the fake model finds ``learned``."""
    brain = Brain()
    brain.extract = lambda r: facts(*learned)
    model.responder = brain
    return await start_bot(bot_memory_extraction=True, bot_memory_extract_after=quiet)


async def test_a_quiet_spell_extracts_the_whole_conversation_in_one_request(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await learning_bot(start_bot, model, 0.5, "Has a daughter, Lisa", "Lisa plays the violin")
    said = ["My daughter is called Lisa.", "thanks!", "She plays the violin, badly but happily."]
    for i, text in enumerate(said, 1):
        tg.user_text(text)
        await tg.wait_messages(ANN, i)
    assert app.turn_memory.waiting == 1 and requests_of(model, "extract") == []
    await settle(app, model, 4)  # three chats, then one extraction
    [extract] = requests_of(model, "extract")
    assert all(text in system_prompt(extract) for text in said)
    assert extract.at > tg.calls_of("sendMessage")[-1].at
    assert await texts(app, ANN) == ["Has a daughter, Lisa", "Lisa plays the violin"]


async def test_small_talk_alone_starts_no_batch(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await learning_bot(start_bot, model, 0.2)
    tg.user_text("ok thanks!")
    await tg.wait_messages(ANN, 1)
    tg.user_text("cool")  # this chat's updates go in order: the first turn is done when this one is
    await tg.wait_messages(ANN, 2)
    assert app.turn_memory.waiting == 0


async def test_a_long_conversation_goes_in_batches_without_waiting(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await learning_bot(start_bot, model, 600)
    for i in range(1, MAX_BATCH_EXCHANGES + 2):
        tg.user_text(f"Fact number {i}: I keep bees in the garden")
        await tg.wait_messages(ANN, i)
    # The eighth exchange filled a batch; the ninth waits for its quiet spell.
    await settle(app, model, MAX_BATCH_EXCHANGES + 2)
    [extract] = requests_of(model, "extract")
    prompt = system_prompt(extract)
    assert "Fact number 1:" in prompt and f"Fact number {MAX_BATCH_EXCHANGES}:" in prompt
    assert f"Fact number {MAX_BATCH_EXCHANGES + 1}:" not in prompt
    await eventually(waiting_batches(app), lambda n: n == 1)  # the last turn's, once its reply is stored


async def test_what_waits_is_dropped_when_the_user_forgets(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await learning_bot(start_bot, model, 600, "Card PIN is 4321")
    await seed(app, ANN, "Likes jazz")
    tg.user_text("My card PIN is 4321, keep it safe.")
    await tg.wait_messages(ANN, 1)
    await eventually(waiting_batches(app), lambda n: n == 1)
    tg.user_text("/forget all")
    [*_, confirm] = await tg.wait_messages(ANN, 2)
    tg.callback_query(button(confirm, "Yes, forget"), message_id=confirm.message_id)
    await tg.wait_for(lambda: "forgot everything" in tg.messages(ANN)[-1].text)
    app.turn_memory.flush_all()  # what a shutdown or the quiet spell would do
    await settle(app, model, 1)
    assert requests_of(model, "extract") == []
    assert await texts(app, ANN) == []


async def test_stopping_the_bot_extracts_what_waits(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await learning_bot(start_bot, model, 600, "Works as a nurse")
    tg.user_text("I work as a nurse at the city hospital.")
    await tg.wait_messages(ANN, 1)
    await stop_bot(app)
    assert len(requests_of(model, "extract")) == 1
    again = await start_bot(bot_memory_extraction=True)
    assert await texts(again, ANN) == ["Works as a nurse"]


async def test_extraction_failure_never_affects_the_reply(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    answers: list[Step] = [
        Reply(text="Sure! Here are the facts: [not json at all"),
        Reply(text='{"facts": "oops"}'),
        Reply(text='{"facts": [42, null, {"kind": "profile"}, {"text": ""}]}'),
        Reply(text=""),
        Fault(400, "extraction refused"),  # last: a model error pauses extraction for a while
    ]
    brain = Brain()
    brain.extract = lambda r: answers.pop(0)
    model.responder = brain
    app = await start_bot(bot_memory_extraction=True)
    for i in range(5):
        tg.user_text(f"Message number {i}: I collect vintage stamps from Norway")
        [*_, answer] = await tg.wait_messages(ANN, i + 1)
        assert answer.text == f"echo: Message number {i}: I collect vintage stamps from Norway"
        await settle(app, model, 2 * (i + 1))
    assert len(requests_of(model, "extract")) == 5
    assert await texts(app, ANN) == []
    # The model error paused extraction: the next turn is answered without one.
    tg.user_text("I also collect old coins from Sweden")
    await tg.wait_messages(ANN, 6)
    await settle(app, model, 11)
    assert len(requests_of(model, "extract")) == 5


async def test_memories_are_never_learned_or_recalled_in_groups(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    brain = Brain()
    brain.extract = lambda r: facts("Works as a nurse")
    model.responder = brain
    app = await start_bot(bot_memory_extraction=True)
    await seed(app, 5, "Has a secret diagnosis")
    tg.user_text("@arium_test_bot I work as a nurse. Any diagnosis tips?", chat_id=GROUP, user_id=5)
    await tg.wait_messages(GROUP, 1)
    await settle(app, model, 1)
    assert requests_of(model, "extract") == []
    assert "secret diagnosis" not in system_prompt(requests_of(model, "chat")[-1])


# --- Recall ------------------------------------------------------------------------


async def test_recall_puts_relevant_memories_into_the_system_prompt(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    await seed(app, ANN, "Works as a nurse at the city hospital", "Allergic to peanuts", "Сестра Катя живёт в Казани")
    await seed(app, BOB, "Works as a pilot")
    # Relevance is the point here, not a cold start: with the index loaded,
    # a turn's bounded wait for the dense half (1 s) cannot run out on a
    # loaded machine (the restart case has its own test).
    await app.memory.search(ANN, "warm up", 1)
    tg.user_text("Can you suggest a snack? Remember my allergy.")
    await tg.wait_messages(ANN, 1)
    prompt = system_prompt(model.chat_requests()[-1])
    assert "- Allergic to peanuts" in prompt and "pilot" not in prompt
    tg.user_text("Как дела у сестры в Казани?", language_code="ru")
    await tg.wait_messages(ANN, 2)
    assert "- Сестра Катя живёт в Казани" in system_prompt(model.chat_requests()[-1])
    tg.user_text("ok")
    await tg.wait_messages(ANN, 3)
    assert "(nothing relevant remembered)" in system_prompt(model.chat_requests()[-1])


async def test_a_new_users_first_message_reads_no_memories(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    """Nothing can be remembered about a user their own message just
    created: that turn skips recall (no keyword query, no index load); the
    next one recalls as always."""
    app = await start_bot()
    await app.memory.search(BOB, "warm up", 1)  # lazy first-use work is not the turn's
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(app.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        tg.user_text("Can you suggest a snack for a hike?")
        await tg.wait_messages(ANN, 1)
        first_turn = [s for s in statements if "memories" in s]
        await seed(app, ANN, "Allergic to peanuts")
        statements.clear()
        tg.user_text("And one without peanuts?")
        await tg.wait_messages(ANN, 2)
        second_turn = [s for s in statements if "memories" in s]
    finally:
        event.remove(app.db.engine.sync_engine, "before_cursor_execute", record)
    assert first_turn == []
    assert second_turn, "the second message recalls"
    assert "- Allergic to peanuts" in system_prompt(model.chat_requests()[-1])


async def test_a_known_chats_question_is_embedded_once_starting_before_the_gates(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query embedding starts when the message arrives (its chat's last
    message was admitted) and recall takes that result: one encode per
    question. A refused message forgets the chat: the next one is not
    embedded before it passes the gates."""
    from bot.storage.models import User

    app = await start_bot()
    await seed(app, ANN, "Allergic to peanuts")
    tg.user_text("Can you suggest a snack for the trip?")  # admits the chat; recall loads the index
    await tg.wait_messages(ANN, 1)
    embeddings = app.memory.embeddings
    encoded: list[str] = []
    prefetched: list[str] = []
    submit, prefetch = embeddings._submit, embeddings.prefetch  # noqa: SLF001

    def counting_submit(embedder: Embedder, batch: Any) -> Any:
        encoded.extend(batch)
        return submit(embedder, batch)

    def noting_prefetch(text: str) -> None:
        prefetched.append(text)
        prefetch(text)

    monkeypatch.setattr(embeddings, "_submit", counting_submit)
    monkeypatch.setattr(embeddings, "prefetch", noting_prefetch)
    tg.user_text("What about my  peanut allergy?")
    await tg.wait_messages(ANN, 2)
    assert "- Allergic to peanuts" in system_prompt(model.chat_requests()[-1])
    assert prefetched == ["What about my peanut allergy?"]
    assert encoded.count("What about my peanut allergy?") == 1
    assert not embeddings._early  # noqa: SLF001 - claimed by the recall

    async with app.db.session() as s:
        (await s.get(User, ANN)).role = "banned"  # type: ignore[union-attr]
    tg.user_text("Is peanut butter fine?")  # still embedded early: the chat's last message was admitted
    await tg.wait_messages(ANN, 3)
    tg.user_text("And peanut oil?")  # refused in silence (one notice per interval)

    async def refused() -> int:
        return sum(app.gates.refusals.values())

    await eventually(refused, lambda n: n == 2)
    assert prefetched == ["What about my peanut allergy?", "Is peanut butter fine?"]
    assert len(model.chat_requests()) == 2


async def test_the_bot_answers_before_the_embedder_is_loaded(
    tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()

    def slow_model(name: str | None, **options: object) -> Embedder:
        released.wait(30)
        return embedder

    monkeypatch.setattr("bot.app.load_embedder", slow_model)
    app = Arium(fake_settings(tmp_path / "data", tg, model))
    await app.start()
    try:
        await seed(app, ANN, "Allergic to peanuts")
        assert not app.memory.embeddings.ready
        tg.user_text("what about my peanut allergy?")
        [answer] = await tg.wait_messages(ANN, 1)
        assert answer.text.startswith("echo:")
        assert "- Allergic to peanuts" in system_prompt(model.chat_requests()[-1]), "keyword recall works meanwhile"
        assert not app.memory.embeddings.ready
    finally:
        released.set()
        await app.stop()


async def test_right_after_a_restart_recall_waits_for_the_embedder(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fact stored through the remember tool; the bot restarts; the first
    question shares no word with the fact (only the embedder can find it)
    and arrives while the model is still loading. The turn waits for the
    model and the user's index (within BOT_MEMORY_RECALL_WAIT) instead of
    going on with keyword hits alone, and the fact reaches the prompt."""
    fact = "Drives a blue Toyota Corolla"
    brain = Brain()

    def chat(request: Request) -> Step:
        if any(m.get("role") == "tool" for m in request.messages):
            return Reply(text="Noted.")
        if request.last_user_text.startswith("Please remember"):
            return Reply(tool_calls=[ToolCallSpec("remember", {"fact": fact})])
        return Reply(text=f"echo: {request.last_user_text}")

    brain.chat = chat
    model.responder = brain
    first = await start_bot()
    await seed(first, ANN, "Allergic to peanuts", "Sister Emma lives in Toronto", "Works as a nurse")
    tg.user_text("Please remember: my car is a blue Toyota Corolla")
    assert (await tg.wait_messages(ANN, 1))[0].text == "Noted."
    assert fact in await texts(first, ANN)
    await first.stop()

    released = threading.Event()

    def loading_model(name: str | None, **options: object) -> Embedder:
        released.wait(30)
        return embedder

    monkeypatch.setattr("bot.app.load_embedder", loading_model)
    app = Arium(fake_settings(tmp_path / "data", tg, model, bot_memory_recall_wait=30))
    await app.start()
    try:
        tg.user_text("What kind of car do I have?")
        await tg.wait_for(lambda: tg.pending_updates() == 0)  # the bot has the question
        assert not app.memory.embeddings.ready
        released.set()
        await tg.wait_messages(ANN, 2)
        assert f"- {fact}" in system_prompt(model.chat_requests()[-1])
    finally:
        released.set()
        await app.stop()


# --- Commands ----------------------------------------------------------------------


def buttons(message: SentMessage) -> list[tuple[str, str]]:
    markup = message.reply_markup or {}
    return [(b["text"], b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]


def button(message: SentMessage, label: str) -> str:
    return next(data for text, data in buttons(message) if text == label)


async def test_memory_list_pages_and_deletes_with_buttons(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    await seed(app, ANN, *[f"Fact number {i}" for i in range(10)])
    tg.user_text("/memory")
    [listing] = await tg.wait_messages(ANN, 1)
    assert "(10), page 1 of 2" in listing.text and "Fact number 9" in listing.text
    assert [t for t, _ in buttons(listing)] == [f"🗑 {n}" for n in range(1, 9)] + ["▶"]

    tg.callback_query(button(listing, "▶"), message_id=listing.message_id)
    await tg.wait_for(lambda: "page 2 of 2" in tg.messages(ANN)[0].text)
    page_two = tg.messages(ANN)[0]
    assert "Fact number 0" in page_two.text and "Fact number 9" not in page_two.text

    tg.callback_query(button(page_two, "🗑 2"), message_id=listing.message_id)
    await tg.wait_for(lambda: "(9)" in tg.messages(ANN)[0].text)
    assert "Fact number 0" not in await texts(app, ANN)
    answered = tg.calls_of("answerCallbackQuery")[-1]
    assert answered.params.get("text") == "Forgotten."
    assert len(tg.messages(ANN)) == 1, "the list is edited in place"


async def test_forget_words_confirms_then_deletes_only_matches(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    await seed(app, ANN, "Lives in Berlin", "Works in Berlin at a bakery", "Likes jazz")
    tg.user_text("/forget")
    [usage] = await tg.wait_messages(ANN, 1)
    assert "/forget Berlin" in usage.text
    tg.user_text("/forget zebra")
    [_, none] = await tg.wait_messages(ANN, 2)
    assert "nothing was deleted" in none.text

    tg.user_text("/forget Berlin")
    [*_, confirm] = await tg.wait_messages(ANN, 3)
    assert "Forget these 2?" in confirm.text and "Likes jazz" not in confirm.text
    tg.callback_query(button(confirm, "No, keep"), message_id=confirm.message_id)
    await tg.wait_for(lambda: tg.messages(ANN)[-1].text.startswith("Cancelled"))
    assert len(await texts(app, ANN)) == 3

    tg.user_text("/forget Berlin")
    [*_, confirm] = await tg.wait_messages(ANN, 4)
    tg.callback_query(button(confirm, "Yes, forget"), message_id=confirm.message_id)
    await tg.wait_for(lambda: tg.messages(ANN)[-1].text == "Forgotten: 2.")
    assert await texts(app, ANN) == ["Likes jazz"]


async def test_forget_all_after_confirmation(start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer) -> None:
    app = await start_bot()
    tg.user_text("/forget all")
    [empty] = await tg.wait_messages(ANN, 1)
    assert "don't remember anything" in empty.text
    await seed(app, ANN, "Likes jazz", "Has a cat")
    await seed(app, BOB, "Has a dog")
    tg.user_text("/forget all")
    [_, confirm] = await tg.wait_messages(ANN, 2)
    assert "all 2 things" in confirm.text
    tg.callback_query(button(confirm, "Yes, forget"), message_id=confirm.message_id)
    await tg.wait_for(lambda: "forgot everything" in tg.messages(ANN)[-1].text)
    assert await texts(app, ANN) == []
    assert await texts(app, BOB) == ["Has a dog"]


async def test_bad_buttons_get_a_friendly_answer_and_change_nothing(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    await seed(app, ANN, "Likes jazz")
    tg.user_text("/memory")
    [listing] = await tg.wait_messages(ANN, 1)
    for data in ("mem:", "mem:del:", "mem:del:zz!:0", "mem:fgt:", "mem:fgt:,,", "mem:page:x", "mem:explode", "mem:del:-5:0"):
        tg.callback_query(data, message_id=listing.message_id)
    await tg.wait_for(lambda: len([c for c in tg.calls_of("answerCallbackQuery") if c.status == 200]) == 8)
    assert {c.params.get("text") for c in tg.calls_of("answerCallbackQuery")} == {
        "This button is no longer valid. Run the command again."
    }
    assert await texts(app, ANN) == ["Likes jazz"]


async def test_user_b_can_never_reach_user_a_memories(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    [secret] = await seed(app, ANN, "Hides the spare key under the red flowerpot")
    tg.user_text("/memory", chat_id=BOB)
    [listing] = await tg.wait_messages(BOB, 1)
    assert "don't remember anything" in listing.text
    tg.user_text("/forget flowerpot", chat_id=BOB)
    await tg.wait_messages(BOB, 2)
    assert "nothing was deleted" in tg.messages(BOB)[-1].text
    # A forged button naming Ann's memory, pressed by Bob in his chat.
    from bot.channels.telegram.memory_handlers import _base36

    tg.callback_query(f"mem:del:{_base36(secret)}:0", chat_id=BOB, message_id=listing.message_id)
    tg.callback_query(f"mem:fgt:{_base36(secret)}", chat_id=BOB, message_id=listing.message_id)
    await tg.wait_for(lambda: len([c for c in tg.calls_of("answerCallbackQuery") if c.status == 200]) == 2)
    tg.user_text("where is the spare key?", chat_id=BOB)
    await tg.wait_messages(BOB, 3)
    assert "flowerpot" not in system_prompt(model.chat_requests()[-1])
    tg.user_text("/export", chat_id=BOB)
    await tg.wait_for(lambda: any(m.document for m in tg.messages(BOB)))
    export = next(m for m in tg.messages(BOB) if m.document)
    assert export.file is not None and b"flowerpot" not in export.file.data
    assert await texts(app, ANN) == ["Hides the spare key under the red flowerpot"]


async def test_export_sends_profile_memories_reminders_files_and_history_as_json(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    tg.user_text("Hello there, I love hiking")
    await tg.wait_messages(ANN, 1)
    tg.user_text("/remind call mom tomorrow at 9")
    await tg.wait_messages(ANN, 2)
    await seed(app, ANN, "Loves hiking")
    await asyncio.to_thread(app.files.write, ANN, "trips/alps.md", "Zermatt in July")
    tg.user_text("/export")
    await tg.wait_for(lambda: any(m.document for m in tg.messages(ANN)))
    sent = next(m for m in tg.messages(ANN) if m.document)
    assert sent.document and sent.document["file_name"].endswith(".json") and sent.file is not None
    document = json.loads(sent.file.data)
    assert document["format"] == "arium-export/1" and document["user_id"] == ANN
    assert document["profile"]["first_name"] == "Ann"
    assert [m["text"] for m in document["memories"]] == ["Loves hiking"]
    assert [(m["role"], m["text"]) for m in document["history"]["messages"]] == [
        ("user", "Hello there, I love hiking"),
        ("assistant", "echo: Hello there, I love hiking"),
    ]
    assert [(r["text"], r["status"]) for r in document["reminders"]] == [("call mom", "active")]
    assert document["files"] == [{"path": "trips/alps.md", "content": "Zermatt in July"}]
    assert "embedding" not in json.dumps(document)
    assert "Your data" in sent.text


async def test_deleteme_erases_everything_after_confirmation(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    tg.user_text("I love hiking in the Alps")
    await tg.wait_messages(ANN, 1)
    tg.user_text("/remind call mom tomorrow at 9")
    await tg.wait_messages(ANN, 2)
    await asyncio.to_thread(app.files.write, ANN, "notes.md", "private notes")
    await seed(app, ANN, "Loves hiking in the Alps")
    await seed(app, BOB, "Loves sailing")
    # A recall loads Ann's index (her first message recalled nothing: she was new), which saves its file.
    assert [hit.memory.text for hit in await app.memory.search(ANN, "hiking in the Alps", 5)] == [
        "Loves hiking in the Alps"
    ]
    index_file = app.settings.bot_data_dir.resolve() / "memory" / f"{ANN}.faiss"
    await eventually(lambda: _async(index_file.exists()), bool)

    tg.user_text("/deleteme")
    [*_, confirm] = await tg.wait_messages(ANN, 3)
    tg.callback_query(button(confirm, "No, keep"), message_id=confirm.message_id)
    await tg.wait_for(lambda: tg.messages(ANN)[-1].text.startswith("Cancelled"))
    assert await texts(app, ANN) == ["Loves hiking in the Alps"]

    tg.user_text("/deleteme")
    [*_, confirm] = await tg.wait_messages(ANN, 4)
    tg.callback_query(button(confirm, "Yes, erase everything"), message_id=confirm.message_id)
    await tg.wait_for(lambda: tg.messages(ANN)[-1].text.startswith("Done: everything"))
    assert "1 memories, 2 messages" in tg.messages(ANN)[-1].text
    assert await texts(app, ANN) == []
    assert await app.users.get(ANN) is None
    assert await app.messages.history(ANN, 10_000) == []
    assert not index_file.exists()
    leftover = await app.userdata.export(ANN)
    assert {k: v for k, v in leftover.items() if k not in ("format", "exported_at", "user_id")} == {
        "profile": None,
        "memories": [],
        "history": {"messages": [], "conversation_summaries": []},
        "reminders": [],
        "files": [],
    }
    assert not app.files.user_root(ANN).exists()
    assert await texts(app, BOB) == ["Loves sailing"]


async def test_memory_tools_are_registered_for_the_model(start_bot: BotFactory) -> None:
    app = await start_bot()
    for name, argument in (("remember", "fact"), ("recall", "query"), ("forget", "query")):
        tool = app.tool_registry.get(name)
        assert tool is not None and tool.plugin == "memory"
        assert list(tool.arguments.model_json_schema()["properties"]) == [argument]


async def test_memory_commands_in_a_group_point_to_the_private_chat(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot()
    for command in ("/memory", "/forget all", "/export", "/deleteme"):
        tg.user_text(command, chat_id=GROUP, user_id=5)
    messages = await tg.wait_messages(GROUP, 4)
    assert all("private chat" in m.text for m in messages)
    assert not any(m.document for m in messages)


async def test_help_lists_the_memory_commands(start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer) -> None:
    await start_bot()
    tg.user_text("/help")
    [help_message] = await tg.wait_messages(ANN, 1)
    for command in ("/memory", "/forget", "/export", "/deleteme"):
        assert command in help_message.text
    assert "/forget <words>" in help_message.text


async def _async(value: T) -> T:
    return value


async def test_a_broken_embedding_model_leaves_keyword_memory_working(
    tg: FakeTelegram, model: FakeModelServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = Arium(fake_settings(tmp_path / "data", tg, model, embedding_model=str(tmp_path / "no-such-model")))
    await app.start()
    try:
        assert not await app.memory.embeddings.wait_ready(30)
        assert app.memory.embeddings.failed
        await seed(app, ANN, "Allergic to peanuts")
        tg.user_text("any peanut ideas?")
        [answer] = await tg.wait_messages(ANN, 1)
        assert answer.text == "echo: any peanut ideas?"
        assert "- Allergic to peanuts" in system_prompt(model.chat_requests()[-1])
        assert "keyword search only" in caplog.text
    finally:
        await app.stop()
