"""History summarization: older turns of a long conversation are folded into
a running summary instead of being silently dropped."""

from __future__ import annotations

import pytest

from bot.app import Arium
from tests.conftest import BotFactory
from tests.fakes.model_server import Fault, FakeModelServer, Reply, Request, Step
from tests.fakes.telegram_server import FakeTelegram
from tests.support.chat import system_prompt
from tests.support.memory_bot import ANN, Brain, requests_of, settle

# ~60 tokens each by the bot's estimate (the echoed answer a little more): a
# 200-token budget holds three messages, so the fourth pushes the first out.
TOPICS = ["Lisbon", "Porto", "Madrid", "Seville", "Valencia", "Granada"]


def line(topic: str) -> str:
    return (
        f"Let us plan the {topic} part of the trip: the trains from the airport, hotels near the old town, "
        "which museums are worth the queue, and where to eat late."
    )


def chat_history(request: Request) -> list[str]:
    return [str(m["content"]) for m in request.messages[1:]]


async def turn(tg: FakeTelegram, index: int) -> None:
    tg.user_text(line(TOPICS[index]))
    await tg.wait_messages(ANN, index + 1)


async def test_older_turns_are_folded_into_a_summary(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    brain = Brain()
    brain.summary = lambda r: Reply(text="They planned Lisbon and Porto: trains, old-town hotels, museums.")
    model.responder = brain
    app: Arium = await start_bot(bot_history_tokens=200)
    await turn(tg, 0)
    await turn(tg, 1)
    await settle(app, model, 3)  # chat, chat, then the background fold
    [summary_request] = requests_of(model, "summary")
    assert line("Lisbon") in system_prompt(summary_request)
    assert "(none yet)" in system_prompt(summary_request)

    await turn(tg, 2)
    latest = requests_of(model, "chat")[-1]
    assert "They planned Lisbon and Porto" in system_prompt(latest)
    assert line("Lisbon") not in chat_history(latest), "folded turns are not sent again"
    assert chat_history(latest)[-1] == line("Madrid")

    # The summary keeps rolling: the next fold starts from it.
    for i in (3, 4):
        await turn(tg, i)
    await settle(app, model, len(model.chat_requests()))
    assert "They planned Lisbon and Porto" in system_prompt(requests_of(model, "summary")[-1])


async def test_a_turn_folds_first_when_messages_would_fall_out_unsummarized(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    # The first fold gets nothing usable back (an empty answer), so the messages
    # are still unsummarized when the third turn would push them out.
    outcomes: list[Step] = [Reply(text=""), Reply(text="Earlier: Lisbon and Porto were planned.")]
    brain = Brain()
    brain.summary = lambda r: outcomes.pop(0) if outcomes else Reply(text="Earlier: Lisbon, Porto, Madrid.")
    model.responder = brain
    app: Arium = await start_bot(bot_history_tokens=200)
    await turn(tg, 0)
    await turn(tg, 1)
    await settle(app, model, 3)  # the background fold got an empty answer
    await turn(tg, 2)
    kinds = [r for r in model.chat_requests()]
    third_chat = requests_of(model, "chat")[2]
    assert kinds.index(third_chat) > kinds.index(requests_of(model, "summary")[1]), "folded before answering"
    assert "Earlier: Lisbon and Porto were planned." in system_prompt(third_chat)
    assert line("Lisbon") not in chat_history(third_chat)


async def test_replies_go_on_when_summaries_keep_failing_and_failures_back_off(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    brain = Brain()
    # A refusal of the summary request itself (a 4xx: the chain neither retries
    # it nor counts it against the endpoint, which keeps serving the chat).
    brain.summary = lambda r: Fault(400, "summary refused")
    model.responder = brain
    app: Arium = await start_bot(bot_history_tokens=200, bot_admin_ids="4242")
    for i in range(4):
        await turn(tg, i)
        assert tg.messages(ANN)[-1].text == f"echo: {line(TOPICS[i])}"
    await settle(app, model, len(model.chat_requests()))
    assert "(none: the messages that follow are the whole conversation)" in system_prompt(
        requests_of(model, "chat")[-1]
    )
    # One failed summary, then a pause: turns neither wait for nor repeat failing calls.
    assert len(requests_of(model, "summary")) == 1
    # The endpoint kept answering the chat: a refused summary is no outage.
    assert "admin alert" not in caplog.text
