"""Features working together through the real bot: the model reaching
reminders through the tool loop."""

from __future__ import annotations

import json

from sqlalchemy import select

from bot.storage.models import Reminder
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Reply, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram

PRIVATE = 1001


async def test_the_model_sets_a_reminder_through_the_tool_loop(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(tool_calls=[ToolCallSpec("create_reminder", {"text": "call mom", "when": "tomorrow at 9"})]),
        Reply(text="Done: I'll remind you tomorrow at 09:00."),
    )
    app = await start_bot()
    tg.user_text("remind me to call mom tomorrow at 9")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.startswith("Done")
    offered = {t["function"]["name"] for t in model.chat_requests()[0].body["tools"]}
    assert {"create_reminder", "list_reminders", "cancel_reminder"} <= offered
    result = json.loads(model.chat_requests()[1].messages[-1]["content"])
    assert result["text"] == "call mom" and result["timezone"] == "UTC"
    assert result["fires_at"].endswith(" 09:00") and result["repeats"] is None
    async with app.db.reading() as s:
        stored = (await s.execute(select(Reminder))).scalars().all()
    assert [(r.user_id, r.text) for r in stored] == [(PRIVATE, "call mom")]
