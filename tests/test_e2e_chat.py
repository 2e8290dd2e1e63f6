"""End to end: the real python-telegram-bot Application against the fake Bot
API, the real OpenAI/Mistral SDKs against the fake model server, real SQLite."""

from __future__ import annotations

import pytest

from bot.channels.telegram.render import utf16_len
from tests.conftest import BotFactory, eventually, handled_so_far
from tests.fakes.model_server import FakeModelServer, Fault, Reply, StreamFault
from tests.fakes.telegram_server import FakeTelegram
from tests.support.chat import GROUP, PRIVATE, last_user_text


async def test_private_turn_streams_drafts_then_sends_formatted_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(
            chunks=["Here is ", "**the plan**", ":\n\n- buy milk", "\n- call `mom`", "\n\nDone."],
            chunk_delay=0.1,
        )
    )
    await start_bot()
    tg.user_text("what should I do today?", first_name="Ann")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.parse_mode == "HTML"
    assert answer.html is not None and "<b>the plan</b>" in answer.html and "<code>mom</code>" in answer.html
    assert answer.text.startswith("Here is the plan:")
    drafts = tg.drafts(PRIVATE)
    assert drafts, "the answer should stream as drafts while it is generated"
    assert len({d.params["draft_id"] for d in drafts}) == 1
    assert drafts[0].at < tg.calls_of("sendMessage")[-1].at
    assert tg.calls_of("sendChatAction")
    request = model.chat_requests()[0].body
    system = request["messages"][0]
    assert system["role"] == "system" and "Ann" in system["content"] and "UTC" in system["content"]
    assert request["messages"][-1] == {"role": "user", "content": "what should I do today?"}


async def test_group_answers_mentions_and_replies_only(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot()
    tg.user_text("just chatting among ourselves", chat_id=GROUP, user_id=5, chat_title="Family")
    mention = tg.user_text("@arium_test_bot what is 2+2?", chat_id=GROUP, user_id=5, chat_title="Family")
    [answer] = await tg.wait_messages(GROUP, 1)
    assert last_user_text(model) == "Ann: what is 2+2?"  # mention stripped, speaker named
    assert answer.reply_to_message_id == mention["message"]["message_id"]
    assert len(model.chat_requests()) == 1, "chatter must not reach the model"
    assert not tg.drafts(GROUP), "drafts are for private chats; groups preview by editing"

    tg.user_text("and 3+3?", chat_id=GROUP, user_id=6, first_name="Bob", reply_to_message_id=answer.message_id)
    await tg.wait_messages(GROUP, 2)
    assert last_user_text(model) == "Bob: and 3+3?"
    tg.user_text("more chatter", chat_id=GROUP, user_id=6)
    tg.user_text("/help", chat_id=GROUP, user_id=6)
    messages = await tg.wait_messages(GROUP, 3)
    assert "/new" in messages[-1].text
    assert len(model.chat_requests()) == 2


async def test_group_preview_is_edited_into_the_final_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(chunks=["one ", "two ", "three ", "**four**"], chunk_delay=0.15))
    await start_bot()
    tg.user_text("@arium_test_bot count", chat_id=GROUP, user_id=5)
    await tg.wait_for(lambda: any("four" in m.text and m.html and "<b>four</b>" in m.html for m in tg.messages(GROUP)))
    [message] = tg.messages(GROUP)
    assert message.edits, "the preview should have been edited as text arrived"
    assert message.text == "one two three four"


async def test_ten_thousand_character_answer_is_split(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    paragraphs = [f"Part {i}. " + " ".join(f"word{i}x{j}" for j in range(120)) for i in range(10)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 10_000
    model.script(Reply(text=text))
    await start_bot()
    tg.user_text("write a long text")
    await tg.wait_for(lambda: "Part 9." in " ".join(m.text for m in tg.messages(PRIVATE)))
    messages = tg.messages(PRIVATE)
    assert len(messages) >= 3
    assert all(utf16_len(m.text) <= 4096 and m.html and utf16_len(m.html) <= 4096 for m in messages)
    assert " ".join(m.text for m in messages).split() == text.split()


async def test_rejected_html_is_resent_as_plain_text(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="**bold** claim"))
    await start_bot()
    tg.fail_next(
        "sendMessage",
        status=400,
        description="Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
        when=lambda params: params.get("parse_mode") == "HTML",
    )
    tg.user_text("say something bold")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.parse_mode is None and answer.text == "bold claim"
    assert len(tg.calls_of("sendMessage")) == 2


async def test_long_paste_reaches_the_model_as_one_message(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="Got your long text."))
    await start_bot()
    parts = ["a" * 4000, "b" * 4096, "c" * 300]
    for part in parts:
        tg.user_text(part)
    await tg.wait_messages(PRIVATE, 1)
    await handled_so_far(tg, PRIVATE)  # no part was left over for a second answer
    assert len(model.chat_requests()) == 1
    assert last_user_text(model) == "\n".join(parts)
    assert len(tg.messages(PRIVATE)) == 2, "the answer and the /help"


async def test_history_is_carried_and_cleared_by_new(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="Nice to meet you, Ann."), Reply(text="You are Ann."), Reply(text="I don't know."))
    await start_bot()
    tg.user_text("my name is Ann")
    await tg.wait_messages(PRIVATE, 1)
    tg.user_text("what is my name?")
    await tg.wait_messages(PRIVATE, 2)
    second = model.chat_requests()[1].body["messages"]
    assert [(m["role"], m["content"]) for m in second[1:]] == [
        ("user", "my name is Ann"),
        ("assistant", "Nice to meet you, Ann."),
        ("user", "what is my name?"),
    ]
    tg.user_text("/new")
    await tg.wait_messages(PRIVATE, 3)
    tg.user_text("what is my name?")
    await tg.wait_messages(PRIVATE, 4)
    third = model.chat_requests()[2].body["messages"]
    assert [m["role"] for m in third] == ["system", "user"]


async def test_history_survives_a_restart(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="Noted: you like tea."), Reply(text="Tea."))
    first = await start_bot()
    tg.user_text("I like tea")
    await tg.wait_messages(PRIVATE, 1)
    await first.stop()
    await start_bot()
    tg.user_text("what do I like?")
    await tg.wait_messages(PRIVATE, 2)
    contents = [m["content"] for m in model.chat_requests()[1].body["messages"]]
    assert contents[1:] == ["I like tea", "Noted: you like tea.", "what do I like?"]


async def test_chats_run_in_parallel_and_each_chat_in_order(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    slow_chat, fast_chat, ordered_chat = 2001, 2002, 2003

    def responder(request):  # type: ignore[no-untyped-def]
        text = request.last_user_text
        return Reply(text=f"re: {text}", delay=1.0 if text.startswith("slow") else 0.2)

    model.responder = responder
    await start_bot()
    tg.user_text("slow question", chat_id=slow_chat)
    tg.user_text("fast question", chat_id=fast_chat)
    for i in range(3):
        tg.user_text(f"ordered {i}", chat_id=ordered_chat)
    await tg.wait_messages(fast_chat, 1)
    assert not tg.messages(slow_chat), "a slow chat must not hold up another chat"
    await tg.wait_messages(slow_chat, 1)
    answers = await tg.wait_messages(ordered_chat, 3)
    assert [m.text for m in answers] == ["re: ordered 0", "re: ordered 1", "re: ordered 2"]
    ordered = [r for r in model.chat_requests() if r.last_user_text.startswith("ordered")]
    # Each turn of one chat starts only after the previous turn was answered, and sees it in history.
    assert [len(r.messages) for r in ordered] == [2, 4, 6]
    assert model.max_in_flight >= 2


async def test_unsupported_messages_get_a_friendly_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot()
    sticker = {"file_id": "s1", "file_unique_id": "u1", "type": "regular", "width": 512, "height": 512, "is_animated": False, "is_video": False}
    tg.user_message(sticker=sticker)
    tg.user_message(voice={"file_id": "v1", "file_unique_id": "u2", "duration": 3})
    tg.user_message(chat_id=GROUP, user_id=5, sticker=sticker)  # group chatter: ignored
    messages = await tg.wait_messages(PRIVATE, 2)
    assert all("text" in m.text for m in messages)
    assert not model.chat_requests()
    original = tg.user_text("hello")
    await tg.wait_messages(PRIVATE, 3)
    tg.edited_text(original["message"]["message_id"], "hello, edited")
    tg.user_text("still there?")
    await tg.wait_messages(PRIVATE, 4)
    assert [last_user_text(model, i) for i in range(2)] == ["hello", "still there?"]


async def test_commands_speak_the_users_language(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot()
    tg.user_text("/start", chat_id=3001, language_code="ru", first_name="Иван")
    tg.user_text("/start", chat_id=3002, language_code="en", first_name="Ann")
    tg.user_text("/frobnicate now", chat_id=3002)
    tg.user_text("   ", chat_id=3002)
    [ru] = await tg.wait_messages(3001, 1)
    assert ru.text.startswith("Привет, Иван!")
    en = await tg.wait_messages(3002, 3)
    assert en[0].text.startswith("Hi, Ann!")
    assert "/frobnicate" in en[1].text and "/help" in en[1].text
    assert "empty" in en[2].text
    assert not model.chat_requests()
    assert {c.params.get("language_code") for c in tg.calls_of("setMyCommands")} == {None, "ru"}


async def test_model_outage_is_explained_the_message_kept_and_the_admin_told_once(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    admin = 999
    model.script(Fault(503), Fault(503), Reply(text="Back again."))
    await start_bot(bot_admin_ids=str(admin), bot_retry_attempts=1, bot_breaker_failures=10)
    tg.user_text("first question", language_code="ru")
    [notice] = await tg.wait_messages(PRIVATE, 1)
    assert "ИИ сейчас недоступен" in notice.text and "сохранено" in notice.text
    tg.user_text("second question")
    await tg.wait_messages(PRIVATE, 2)
    tg.user_text("third question")
    messages = await tg.wait_messages(PRIVATE, 3)
    assert messages[2].text == "Back again."
    contents = [m["content"] for m in model.chat_requests()[-1].body["messages"][1:]]
    assert contents == ["first question", "second question", "third question"]
    alerts = await tg.wait_messages(admin, 2)
    assert len(alerts) == 2, "one alert per outage, then one when it is over"
    assert "unavailable" in alerts[0].text and "answers again" in alerts[1].text
    assert "test-key" not in alerts[0].text


async def test_stream_that_dies_mid_answer_ends_honestly(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(StreamFault(mode="drop", text_before="The first half of"), Reply(text="ok"))
    app = await start_bot()
    tg.user_text("tell me a story")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.startswith("The first half of")
    assert "cut off" in answer.text
    await eventually(lambda: app.messages.history(PRIVATE, 10_000), lambda h: len(h) == 2)
    history = await app.messages.history(PRIVATE, 10_000)
    assert [(m.role, m.status) for m in history] == [("user", "complete"), ("assistant", "partial")]
    assert history[1].content == "The first half of"  # stored without the note


async def test_mistral_provider_end_to_end(start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer) -> None:
    model.script(Reply(chunks=["Bonjour", " from", " Mistral"], chunk_delay=0.05))
    await start_bot(bot_models="mistral:mistral-small-latest")
    tg.user_text("hi")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "Bonjour from Mistral"
    assert model.chat_requests("mistral")


async def test_banned_user_never_reaches_the_model(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    from bot.storage.models import User

    app = await start_bot()
    tg.user_text("hi")
    await tg.wait_messages(PRIVATE, 1)
    async with app.db.session() as s:
        (await s.get(User, PRIVATE)).role = "banned"  # type: ignore[union-attr]
    tg.user_text("hi again")
    messages = await tg.wait_messages(PRIVATE, 2)
    assert "can't use" in messages[1].text
    assert len(model.chat_requests()) == 1


async def test_commands_for_other_bots_are_left_alone(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot()
    tg.user_text("/new@some_other_bot", chat_id=GROUP, user_id=5)
    tg.user_text("/weather@some_other_bot", chat_id=GROUP, user_id=5)
    tg.user_text("/new@arium_test_bot", chat_id=GROUP, user_id=5)
    [answer] = await tg.wait_messages(GROUP, 1)
    assert "fresh conversation" in answer.text
    await handled_so_far(tg, GROUP, user_id=5)
    assert len(tg.messages(GROUP)) == 2, "the /new answer and the /help"


async def test_pastes_of_different_users_are_not_mixed(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(bot_paste_merge_window=0.3)
    tg.user_text("x" * 3900, chat_id=GROUP, user_id=5)  # not addressed: ignored whole
    tg.user_text("@arium_test_bot short question", chat_id=GROUP, user_id=6)
    await tg.wait_messages(GROUP, 1)
    assert [last_user_text(model)] == ["Ann: short question"]


async def test_typing_shows_only_while_an_answer_takes_time(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer ready before the typing delay needs no "typing…" (it would
    flash and go, and costs a request); one that takes longer gets it before
    the answer. The final message waits for the typing task, so neither can
    come later."""
    model.script(Reply(text="quick"), Reply(text="slow", delay=1.0))
    await start_bot()
    monkeypatch.setattr("bot.channels.telegram.streaming.TYPING_DELAY", 30.0)  # any turn is "quick"
    tg.user_text("answer at once")
    await tg.wait_messages(PRIVATE, 1)
    assert tg.calls_of("sendChatAction") == []
    monkeypatch.setattr("bot.channels.telegram.streaming.TYPING_DELAY", 0.05)
    tg.user_text("take your time")
    await tg.wait_messages(PRIVATE, 2)
    [typing] = tg.calls_of("sendChatAction")
    assert typing.params["action"] == "typing" and typing.at < tg.calls_of("sendMessage")[-1].at
