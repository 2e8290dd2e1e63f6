"""Tools end to end: the real bot against the fake Bot API and the fake model
server; progress hints, documents into the sandbox, events for /stats."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.conftest import BotFactory, eventually
from tests.fakes.model_server import FakeModelServer, Reply, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram
from tests.support.chat import GROUP, PRIVATE, last_user_text, tool_results


async def test_a_tool_turn_shows_a_hint_then_the_answer_and_is_recorded(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(tool_calls=[ToolCallSpec("current_time", {"timezone": "Tokyo"})], delay=0.1),
        Reply(chunks=["In Tokyo it is ", "evening."], chunk_delay=0.15),
    )
    app = await start_bot()
    tg.user_text("what time is it in Tokyo?", language_code="ru")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "In Tokyo it is evening."
    assert any(d.params.get("text") == "⏳ смотрю время…" for d in tg.drafts(PRIVATE))
    first, second = model.chat_requests()
    assert {t["function"]["name"] for t in first.body["tools"]} >= {"current_time", "calculate", "write_file"}
    assert "Asia/Tokyo" in tool_results(model)[0]
    await eventually(lambda: app.messages.history(PRIVATE, 10_000), lambda h: len(h) == 2)
    assert (await app.messages.history(PRIVATE, 10_000))[1].content == "In Tokyo it is evening."
    await app.stop()  # flushes the events
    stats = await app.tool_events.repository.summary(datetime.now(timezone.utc) - timedelta(minutes=5))
    assert [(s.tool, s.calls, s.failures) for s in stats] == [("current_time", 1, 0)]


async def test_in_groups_the_hint_is_edited_into_the_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(tool_calls=[ToolCallSpec("calculate", {"expression": "12 * 7"})]),
        Reply(text="It's **84**.", delay=0.3),
    )
    await start_bot()
    tg.user_text("@arium_test_bot 12 times 7?", chat_id=GROUP, user_id=5)
    await tg.wait_for(lambda: any("84" in m.text for m in tg.messages(GROUP)))
    [message] = tg.messages(GROUP)
    [sent] = [c for c in tg.calls_of("sendMessage") if c.params["chat_id"] == GROUP]
    assert sent.params["text"] == "⏳ calculating…"  # the preview message starts as the hint...
    assert message.edits[-1] == "It's 84." and message.text == "It's 84."  # ...and becomes the answer
    assert tool_results(model) == ["12 * 7 = 84"]


async def test_a_sent_document_is_saved_and_the_model_is_told(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    notes = "# Trip\n- passport\n- charger\n"
    model.script(
        Reply(tool_calls=[ToolCallSpec("read_file", {"path": "packing list.md"})]),
        Reply(text="You need a passport and a charger."),
    )
    app = await start_bot()
    tg.user_document("packing list.md", notes.encode(), mime_type="text/markdown", caption="what do I need?")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "You need a passport and a charger."
    told = last_user_text(model, 0)
    assert told.startswith('[The user sent the file "packing list.md"') and told.endswith("\nwhat do I need?")
    assert tool_results(model) == [notes]
    assert app.files.read(PRIVATE, "packing list.md") == notes
    assert tg.downloads == ["documents/file_000001"]


async def test_documents_the_bot_cannot_keep_get_a_friendly_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_files_max_file_kb=1)
    tg.user_document("report.pdf", b"%PDF-1.7 binary", mime_type="application/pdf")
    tg.user_document("big.csv", b"a,b\n" * 1000, mime_type="text/csv")
    tg.user_document("sneaky.txt", b"a,b\n" * 1000, mime_type="text/plain", declare_size=False)
    tg.user_document("binary.txt", b"\xff\xfe\x00\x01garbage", mime_type="text/plain")
    tg.user_document(None, b"", mime_type="text/plain")
    tg.user_document(None, b"nameless", mime_type="text/plain")
    tg.user_document("chatter.txt", b"not for the bot", chat_id=GROUP, user_id=5)
    replies = await tg.wait_messages(PRIVATE, 6)
    assert "damaged, or it isn't really a PDF" in replies[0].text
    # Text over the per-file limit is kept in part, and the model is told so.
    for reply, name in ((replies[1], "big.csv"), (replies[2], "sneaky.txt")):
        assert reply.text.startswith(f'echo: [The user sent the file "{name}" (text, 3.9 KB)')
        assert "more text than one saved file may hold (1.0 KB)" in reply.text
        assert app.files.read(PRIVATE, name) == "a,b\n" * 256
    assert "doesn't look like text" in replies[3].text
    assert "empty (0 bytes)" in replies[4].text
    assert replies[5].text.startswith('echo: [The user sent the file "document.txt"')
    assert [e.name for e in app.files.list(PRIVATE)] == ["big.csv", "document.txt", "sneaky.txt"]
    assert len(model.chat_requests()) == 3 and not tg.messages(GROUP)


async def test_each_user_reaches_only_their_own_files(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    alice, bob = 3101, 3102
    model.script(
        Reply(tool_calls=[ToolCallSpec("write_file", {"path": "diary.md", "content": "dear diary"})]),
        Reply(text="saved"),
        Reply(tool_calls=[ToolCallSpec("read_file", {"path": "diary.md"}), ToolCallSpec("list_files")]),
        Reply(text="nothing there"),
    )
    await start_bot()
    tg.user_text("keep my diary", chat_id=alice)
    await tg.wait_messages(alice, 1)
    tg.user_text("read alice's diary", chat_id=bob)
    await tg.wait_messages(bob, 1)
    read, listing = tool_results(model)
    # Both calls run in parallel, so Bob's (empty) folder may or may not exist yet.
    assert json.loads(read)["error"] == "error" and "no file" in json.loads(read)["detail"]
    assert listing == "no files here yet"
