"""Agents end to end (bot/agents/): the real bot against the fake Bot API
and the fake model server. Routing by mention, pin, keyword rule and
classifier; an agent's tools, instructions and model; the orchestrator's
plan with its progress, its cap, and its resumption after a crash; and
single-agent mode sending exactly the requests it always sent."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.app import Arium
from bot.storage.models import AgentPlan, AgentTurn, ChatAgent
from tests.conftest import BotFactory, eventually
from tests.fakes.model_server import FakeModelServer, Reply, Request, ToolCallSpec
from tests.fakes.telegram_server import FakeTelegram
from tests.limits import WAIT_LIMIT
from tests.support.api import ANN, Api, key_for
from tests.support.chat import PRIVATE
from tests.support.processes import Starter, kill_hard, stop
from tests.support.processes import fixture_bot_process  # noqa: F401  (the bot_process fixture)

AGENTS: dict[str, Any] = {
    "coder": {
        "description": "Writes and explains program code.",
        "instructions": "You are a careful programmer. Answer with code first.",
        "tools": ["calculate"],
        "keywords": ["python", "code"],
        "temperature": 0.1,
    },
    "travel": {
        "description": "Plans trips: routes, time zones, packing.",
        "instructions": "You plan trips.",
        "tools": ["current_time"],
    },
}


def system_text(request: Request) -> str:
    return str(request.messages[0]["content"])


def tool_names(request: Request) -> set[str]:
    return {tool["function"]["name"] for tool in request.body.get("tools", [])}


async def test_a_keyword_routes_to_its_agent_with_its_tools_instructions_and_label(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="```python\nprint(1)\n```"))
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi")
    tg.user_text("how do I print in Python?")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.startswith("↳ coder")
    [request] = model.chat_requests()
    assert "You are a careful programmer" in system_text(request)
    assert tool_names(request) == {"calculate"}
    assert request.body["temperature"] == 0.1
    history = await eventually(lambda: app.messages.history(PRIVATE, 10_000), lambda h: len(h) == 2)
    assert history[1].content == "```python\nprint(1)\n```"  # the label is not stored


ROUTING = "You route a user's message"


def is_routing(request: Request) -> bool:
    return ROUTING in system_text(request)


async def test_a_mention_beats_the_pin_and_the_pin_beats_the_rules(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi")
    assert app.agents is not None
    await app.agents.pin(PRIVATE, app.agents.book.get("travel"), by=PRIVATE)  # type: ignore[arg-type]
    tg.user_text("python or code, whatever: @coder help")
    tg.user_text("now some python code please")
    await tg.wait_messages(PRIVATE, 2)
    first, second = model.chat_requests()
    assert "careful programmer" in system_text(first), "the mention wins over the pin"
    assert "You plan trips." in system_text(second), "the pin wins over the keyword rule"
    assert not any(is_routing(r) for r in model.chat_requests()), "no classifier call was needed"
    await app.stop()
    turns = await app.agents.store.usage_since(datetime.now(timezone.utc) - timedelta(minutes=5))
    reasons = await app.agents.store.reasons_since(datetime.now(timezone.utc) - timedelta(minutes=5))
    assert {(u.agent, u.turns, u.switches) for u in turns} == {("coder", 1, 0), ("travel", 1, 1)}
    assert reasons == {("coder", "mention"): 1, ("travel", "pinned"): 1}


async def test_the_classifier_picks_an_agent_once_per_message_and_unsure_means_the_default(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(text="Travel."),  # the classifier's answer
        Reply(text="Take the night train."),
        Reply(text="Take the night train again."),  # the same message: the cached choice, no classifier call
        Reply(text="no idea"),  # the classifier, for a new message: not an agent's name
        Reply(text="Hello!"),
    )
    await start_bot(agents=AGENTS, bot_agents_mode="multi")
    tg.user_text("How do I get from Berlin to Vienna?")
    await tg.wait_messages(PRIVATE, 1)
    tg.user_text("How do I get from Berlin to Vienna?")
    await tg.wait_messages(PRIVATE, 2)
    tg.user_text("hello")
    answers = await tg.wait_messages(PRIVATE, 3)
    assert [a.text for a in answers] == [
        "↳ travel\n\nTake the night train.", "↳ travel\n\nTake the night train again.", "Hello!"
    ]
    requests = model.chat_requests()
    assert [is_routing(r) for r in requests] == [True, False, False, True, False]
    classifier = requests[0]
    assert classifier.body["max_tokens"] <= 16 and classifier.body.get("temperature") == 0
    assert "- coder: Writes and explains program code." in system_text(classifier)
    assert classifier.last_user_text == "How do I get from Berlin to Vienna?"
    assert "You plan trips." not in system_text(requests[4]) and "careful programmer" not in system_text(requests[4])
    assert tool_names(requests[4]) >= {"calculate", "current_time", "remember"}, "the default agent has every tool"


async def test_a_slow_classifier_falls_back_to_the_default_agent(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="travel", delay=3), Reply(text="Here I am."))
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi", bot_agents_route_timeout=0.3)
    tg.user_text("something unclear")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "Here I am."
    await app.stop()
    assert app.agents is not None
    reasons = await app.agents.store.reasons_since(datetime.now(timezone.utc) - timedelta(minutes=5))
    assert reasons == {("assistant", "timeout"): 1}


async def test_a_tool_outside_the_agent_s_list_is_neither_offered_nor_run(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(
        Reply(tool_calls=[ToolCallSpec("current_time", {"timezone": "Tokyo"})]),  # coder may only calculate
        Reply(text="I cannot tell the time."),
    )
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi")
    tg.user_text("python: what time is it in Tokyo?")
    await tg.wait_messages(PRIVATE, 1)
    first, second = model.chat_requests()
    assert tool_names(first) == {"calculate"}
    [told] = [m["content"] for m in second.messages if m.get("role") == "tool"]
    assert json.loads(told)["error"] == "unknown_tool" and "Asia/Tokyo" not in told
    await app.stop()
    stats = await app.tool_events.repository.summary(datetime.now(timezone.utc) - timedelta(minutes=5))
    assert [(s.tool, s.calls, s.failures) for s in stats] == [("current_time", 1, 1)], "recorded as denied"


async def test_an_agent_asks_its_own_tier_first(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    agents = {"coder": dict(AGENTS["coder"], models="mistral:mistral-small-latest")}
    await start_bot(
        agents=agents, bot_agents_mode="multi", bot_models="openai:gpt-4o-mini,mistral:mistral-small-latest"
    )
    tg.user_text("python please")
    await tg.wait_messages(PRIVATE, 1)
    tg.user_text("hello")  # the classifier (no agent fits) and the answer: the chain's own order
    await tg.wait_messages(PRIVATE, 2)
    coder, classifier, default = model.chat_requests()
    assert (coder.dialect, coder.body["model"]) == ("mistral", "mistral-small-latest")
    assert is_routing(classifier) and (default.dialect, default.body["model"]) == ("openai", "gpt-4o-mini")


async def test_single_agent_mode_sends_exactly_the_requests_it_always_sent(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path
) -> None:
    """Agents configured but multi-agent mode off: the same requests, byte
    for byte, as a bot without agents (the local time in the system prompt aside)."""
    conversation = ["hello", "python code for a loop?", "@coder and now?"]

    async def requests_of(**settings: Any) -> list[dict[str, Any]]:
        before, shown = len(model.chat_requests()), len(tg.messages(PRIVATE))
        app = await start_bot(**settings)
        for number, text in enumerate(conversation, start=1):
            tg.user_text(text)
            await tg.wait_messages(PRIVATE, shown + number)
        await app.stop()
        return [_timeless(r.body) for r in model.chat_requests()[before:]]

    plain = await requests_of(bot_data_dir=tmp_path / "plain")
    with_agents = await requests_of(bot_data_dir=tmp_path / "agents", agents=AGENTS, bot_agents_mode="single")
    assert len(plain) == 3 and with_agents == plain


def _timeless(body: dict[str, Any]) -> dict[str, Any]:
    system = body["messages"][0]
    content = re.sub(r"local time is [^\n]*", "local time is …", system["content"])
    return {**body, "messages": [{**system, "content": content}, *body["messages"][1:]]}



async def test_the_http_api_routes_the_same_way_without_the_label(
    start_bot: BotFactory, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi", api_enabled=True, api_port=0)
    key = await key_for(app, ANN, "ann-laptop")
    model.responder = lambda request: Reply(text="for i in range(3): print(i)")
    client = Api(app).sdk(key)
    messages: list[Any] = [{"role": "user", "content": "a python loop, please"}]
    answer = await client.chat.completions.create(model="arium", messages=messages)
    await client.close()
    assert answer.choices[0].message.content == "for i in range(3): print(i)", "no label in an API answer"
    [request] = model.chat_requests()
    assert "careful programmer" in system_text(request) and tool_names(request) == {"calculate"}
    assert request.messages[1:] == messages

# --- The orchestrator ----------------------------------------------------------------

PLANNER = {"description": "Plans requests that have several parts.", "orchestrator": True, "keywords": ["plan"]}
ORCHESTRATING = "You can hand work to specialist assistants"


async def stored_plans(app: Arium) -> list[AgentPlan]:
    async with app.db.reading() as session:
        return list((await session.execute(select(AgentPlan))).scalars())


def tool_messages(request: Request) -> list[str]:
    return [str(m["content"]) for m in request.messages if m.get("role") == "tool"]


def plan_responder(steps: list[dict[str, Any]], *, final: str = "All done.", step_delay: float = 0.0) -> Any:
    """The planner plans ``steps`` then answers ``final``; each specialist
    answers with its name and the task it got."""

    def respond(request: Request) -> Reply:
        system = system_text(request)
        if ORCHESTRATING in system:
            if not tool_messages(request):
                return Reply(tool_calls=[ToolCallSpec("create_plan", {"steps": steps})])
            return Reply(text=final)
        agent = "coder" if "careful programmer" in system else "travel" if "You plan trips." in system else "assistant"
        # A step takes a moment, as a real one would: its progress line is shown meanwhile.
        return Reply(text=f"{agent} did: {request.last_user_text}", delay=step_delay)

    return respond


async def test_the_orchestrator_runs_its_plan_in_order_shows_progress_and_answers_from_the_results(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.responder = plan_responder(
        [{"task": "Write a packing script", "agent": "coder"}, {"task": "Check the time in Tokyo", "agent": "travel"}],
        final="Here is your script and the time.",
        step_delay=1.0,
    )
    app = await start_bot(agents={**AGENTS, "planner": PLANNER}, bot_agents_mode="multi")
    tg.user_text("plan my trip to Tokyo: a packing script and the local time")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "↳ planner\n\nHere is your script and the time."
    planner, coder, travel, final = model.chat_requests()
    assert tool_names(planner) == {"create_plan", "delegate"}, "an orchestrator plans; the specialists do"
    assert "- coder: Writes and explains program code." in system_text(planner)
    assert "careful programmer" in system_text(coder) and tool_names(coder) == {"calculate"}
    assert coder.last_user_text == "Write a packing script"
    assert travel.last_user_text.startswith("Check the time in Tokyo\n\nResult of step 1 (coder, done):\n")
    assert "coder did: Write a packing script" in travel.last_user_text, "a step reads the results it needs"
    [result] = tool_messages(final)
    plan = json.loads(result)["plan"]
    assert [(s["agent"], s["status"], s["result"]) for s in plan] == [
        ("coder", "done", "coder did: Write a packing script"),
        ("travel", "done", f"travel did: {travel.last_user_text}"),
    ]
    progress = [str(d.params.get("text")) for d in tg.drafts(PRIVATE)]
    assert any("step 1 of 2 · coder: Write a packing script" in text for text in progress)
    assert any("step 2 of 2 · travel: Check the time in Tokyo" in text for text in progress)
    assert app.agents is not None
    [stored] = await stored_plans(app)
    assert stored.status == "done" and [s["status"] for s in json.loads(stored.payload)] == ["done", "done"]


async def test_the_orchestrator_stops_at_the_tool_call_cap_and_answers_with_what_it_has(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.responder = plan_responder(
        [{"task": f"part {n}", "agent": "coder"} for n in (1, 2, 3)], final="I did what I could."
    )
    # The cap counts create_plan itself and each step: two calls leave room for one step.
    await start_bot(agents={**AGENTS, "planner": PLANNER}, bot_agents_mode="multi", bot_agents_max_tool_calls=2)
    tg.user_text("plan three parts")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.endswith("I did what I could.")
    planner, step, final = model.chat_requests()
    assert step.last_user_text == "part 1"
    plan = json.loads(tool_messages(final)[0])["plan"]
    assert [s["status"] for s in plan] == ["done", "skipped", "skipped"]
    assert "used all its tool calls" in plan[1]["result"]


async def test_delegate_hands_one_task_over_and_an_unknown_agent_falls_back_to_the_assistant(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    def respond(request: Request) -> Reply:
        if ORCHESTRATING in system_text(request) and not tool_messages(request):
            return Reply(
                tool_calls=[
                    ToolCallSpec("delegate", {"agent": "travel", "task": "Best season for Kyoto?"}),
                    ToolCallSpec("delegate", {"agent": "chef", "task": "A quick dinner idea"}),
                ]
            )
        if ORCHESTRATING in system_text(request):
            return Reply(text="Autumn, and pasta.")
        return Reply(text="autumn" if "You plan trips." in system_text(request) else "pasta")

    model.responder = respond
    await start_bot(agents={**AGENTS, "planner": PLANNER}, bot_agents_mode="multi")
    tg.user_text("plan: Kyoto season and dinner")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.endswith("Autumn, and pasta.")
    travel, chef = (json.loads(text) for text in tool_messages(model.chat_requests()[-1]))
    assert (travel["agent"], travel["status"], travel["result"]) == ("travel", "done", "autumn")
    assert (chef["agent"], chef["result"]) == ("assistant", "pasta") and "no assistant 'chef'" in chef["note"]


# --- A plan survives a crash ----------------------------------------------------------

AGENTS_TOML = """
[agents.coder]
description = "Writes and explains program code."
instructions = "You are a careful programmer. Answer with code first."
tools = ["calculate"]

[agents.travel]
description = "Plans trips: routes, time zones, packing."
instructions = "You plan trips."

[agents.planner]
description = "Plans requests that have several parts."
orchestrator = true
keywords = ["plan"]
"""


async def test_a_plan_cut_short_by_a_crash_resumes_from_the_steps_not_done(
    bot_process: Starter, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path,
) -> None:
    """Killed while the plan's second step waits for the model: after the
    restart the turn is finished once, late and saying so; the first step
    is not run again, the second runs, the plan ends done."""
    question = "plan: write a haiku, then translate it"
    steps = [{"task": "Write a haiku", "agent": "coder"}, {"task": "Translate it", "agent": "travel"}]

    def step_requests(agent_line: str) -> list[Request]:
        return [r for r in model.chat_requests() if agent_line in system_text(r)]

    def respond(request: Request) -> Reply:
        system = system_text(request)
        if ORCHESTRATING in system:
            if tool_messages(request):
                return Reply(text="Here is the haiku, translated.")
            return Reply(tool_calls=[ToolCallSpec("create_plan", {"steps": steps})])
        if "careful programmer" in system:
            return Reply(text="waves fold into foam")
        if len(step_requests("You plan trips.")) == 1:
            return Reply(text="an answer nobody will see", delay=WAIT_LIMIT * 4)  # the crash comes first
        return Reply(text="les vagues se replient")

    model.responder = respond
    config = tmp_path / "arium.toml"
    config.write_text(AGENTS_TOML)
    env = {"BOT_CONFIG": str(config), "BOT_AGENTS_MODE": "multi"}
    process = await bot_process(**env)
    tg.user_text(question, chat_id=PRIVATE)
    await tg.wait_for(lambda: len(step_requests("You plan trips.")) == 1, timeout=WAIT_LIMIT * 3)
    await tg.wait_for(lambda: tg.pending_updates() == 0)  # Telegram will not send the update again
    await kill_hard(process)
    assert tg.messages(PRIVATE) == []

    restarted = await bot_process(**env)
    [answer] = await tg.wait_messages(PRIVATE, 1, timeout=WAIT_LIMIT * 3)
    assert "Sorry for the wait" in answer.text and answer.text.endswith("Here is the haiku, translated."), answer.text
    assert len(step_requests("careful programmer")) == 1, "the finished step is not run again"
    assert len(step_requests("You plan trips.")) == 2
    [final] = [r for r in model.chat_requests() if ORCHESTRATING in system_text(r) and tool_messages(r)]
    plan = json.loads(tool_messages(final)[0])["plan"]
    assert [(s["status"], s["result"]) for s in plan] == [
        ("done", "waves fold into foam"), ("done", "les vagues se replient")
    ]
    await stop(restarted)
    with sqlite3.connect(tmp_path / "data" / "arium.db") as db:
        assert db.execute("SELECT status FROM agent_plans").fetchall() == [("done",)]
        assert db.execute("SELECT COUNT(*) FROM tool_rounds").fetchone() == (0,), "the steps' rounds are gone"


async def test_deleteme_erases_the_user_s_agent_turns_plans_and_pin(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.responder = plan_responder([{"task": "one part", "agent": "coder"}])
    app = await start_bot(agents={**AGENTS, "planner": PLANNER}, bot_agents_mode="multi")
    assert app.agents is not None
    await app.agents.pin(PRIVATE, app.agents.book.get("planner"), by=PRIVATE)  # type: ignore[arg-type]
    tg.user_text("two parts, please")
    await tg.wait_messages(PRIVATE, 1)
    await app.agents.records.flush()
    assert len(await stored_plans(app)) == 1 and await app.agents.store.pins() == {PRIVATE: "planner"}
    await app.userdata.erase(PRIVATE)
    async with app.db.reading() as session:
        left = [
            (await session.execute(select(func.count()).select_from(table))).scalar_one()
            for table in (AgentTurn, AgentPlan, ChatAgent)
        ]
    assert left == [0, 0, 0]
