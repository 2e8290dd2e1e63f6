"""/agents (admins) and /agent (everyone) end to end: the real bot against
the fake Bot API and the fake model server. Listing, switching multi-agent
mode (audited, kept across a restart), pinning an agent to a chat and what
that does to the next answer, groups, bad arguments, a bot without agents,
and /agent in the console."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

from bot.agents.commands import AgentChoice, agents_overview, parse_agent_args, parse_agents_args
from bot.agents.profiles import AgentBook, AgentProfile
from bot.app import Arium
from bot.channels.console import ConsoleChannel
from bot.identity import CONSOLE, local_chat_id
from bot.memory.embedder import Embedder
from bot.storage.repositories import UserProfile
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Request
from tests.fakes.telegram_server import FakeTelegram, SentMessage

ADMIN, USER, MEMBER = 999, 1001, 5
GROUP = -100777
UNKNOWN = "I don't know the command /agents. /help lists the ones I understand."
AGENTS: dict[str, Any] = {
    "coder": {
        "description": "Writes and explains program code.",
        "instructions": "You are a careful programmer.",
        "tools": ["calculate"],
        "keywords": ["python", "code"],
        "models": "openai:gpt-4o-mini",
    },
    "travel": {
        "description": "Plans trips: routes, time zones, packing.",
        "instructions": "You plan trips.",
    },
    "planner": {
        "description": "Breaks big requests into steps.",
        "tools": [],
        "keywords": ["plan"],
        "orchestrator": True,
    },
}


async def say(tg: FakeTelegram, text: str, chat: int = USER, user: int | None = None) -> SentMessage:
    """Send ``text`` in ``chat``; the bot's next message there."""
    before = len(tg.messages(chat))
    tg.user_text(text, chat_id=chat, user_id=user)
    return (await tg.wait_messages(chat, before + 1))[before]


def system_text(request: Request) -> str:
    return str(request.messages[0]["content"])


def listed(text: str) -> set[str]:
    return {line.split(" — ")[0].lstrip("/") for line in text.splitlines() if line.startswith("/")}


def menus(tg: FakeTelegram) -> dict[str, set[str]]:
    """The command menus the bot registered, by scope (default or an admin's chat), English only."""
    found: dict[str, set[str]] = {}
    for call in tg.calls_of("setMyCommands"):
        if call.params.get("language_code"):
            continue
        scope = call.params.get("scope")
        scope = json.loads(scope) if isinstance(scope, str) else scope
        commands = call.params["commands"]
        commands = json.loads(commands) if isinstance(commands, str) else commands
        found["admin" if scope else "default"] = {c["command"] for c in commands}
    return found


# --- /agents (admins) ----------------------------------------------------------------


async def test_admins_see_every_agent_and_switch_the_mode_which_survives_a_restart(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    config = {"agents": AGENTS, "bot_agents_mode": "single", "bot_admin_ids": str(ADMIN)}
    app = await start_bot(**config)
    shown = (await say(tg, "/agents", ADMIN)).text
    assert shown.startswith("Agents — multi-agent mode is off")
    assert shown.index("assistant (default) — General assistant") < shown.index("coder — Writes and explains")
    coder = shown.split("coder — ", 1)[1].splitlines()[1]
    assert coder.strip() == "model tier: openai:gpt-4o-mini · tools: calculate · keywords: python, code"
    assert "tools: all" in shown.split("coder — ")[0], "the default agent may use every tool"
    assert "travel — Plans trips: routes, time zones, packing.\n   tools: all" in shown
    assert "planner — Breaks big requests into steps.\n   tools: none · keywords: plan · orchestrator" in shown
    assert shown.rstrip().endswith("/agents on · /agents off switches multi-agent mode.")

    on = await say(tg, "/agents on", ADMIN)
    assert on.text == "Multi-agent mode is on: each message goes to the agent that fits it best."
    assert app.agents is not None and app.agents.multi
    assert (await say(tg, "/agents ON", ADMIN)).text == "Multi-agent mode is already on."
    await app.audit_writer.flush()
    audited = [(e.admin_id, e.action, e.arguments, e.outcome) for e in await app.audit_log.latest(10)]
    assert (ADMIN, "agents", "on", "on") in audited and (ADMIN, "agents", "ON", "unchanged: on") in audited
    await app.stop()

    again = await start_bot(**config)  # the configuration still says single
    assert again.agents is not None and again.agents.multi, "the admin's choice outlives the restart"
    assert (await say(tg, "/agents", ADMIN)).text.startswith("Agents — multi-agent mode is on")
    off = await say(tg, "/agents off", ADMIN)
    assert off.text == "Multi-agent mode is off: the default assistant answers every message."
    assert not again.agents.multi


async def test_non_admins_cannot_use_agents_but_see_agent_in_help_and_menu(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="single", bot_admin_ids=str(ADMIN))
    for command in ("/agents", "/agents on"):
        assert (await say(tg, command, USER)).text == UNKNOWN
    assert app.agents is not None and not app.agents.multi
    await app.audit_writer.flush()
    assert not [e for e in await app.audit_log.latest(10) if e.action == "agents"]
    user_help = listed((await say(tg, "/help", USER)).text)
    assert "agent" in user_help and "agents" not in user_help
    admin_help = listed((await say(tg, "/help", ADMIN)).text)
    assert {"agent", "agents"} <= admin_help
    menu = menus(tg)
    assert "agent" in menu["default"] and "agents" not in menu["default"]
    assert {"agent", "agents"} <= menu["admin"]


async def test_without_agents_both_commands_say_so_and_agent_is_not_offered(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    assert app.agents is None
    assert (await say(tg, "/agent", USER)).text == "There are no agents in this bot."
    assert (await say(tg, "/agent coder", USER)).text == "There are no agents in this bot."
    how = (
        "No agents are configured. Define them as [agents.NAME] tables (description, instructions, "
        "tools, models) in the TOML file named by BOT_CONFIG, then restart the bot."
    )
    assert (await say(tg, "/agents", ADMIN)).text == how
    assert (await say(tg, "/agents on", ADMIN)).text == how
    assert "agent" not in listed((await say(tg, "/help", USER)).text)
    assert "agents" in listed((await say(tg, "/help", ADMIN)).text), "the admin learns the feature exists"
    menu = menus(tg)
    assert "agent" not in menu["default"] and "agent" not in menu["admin"]
    await app.audit_writer.flush()
    outcomes = [e.outcome for e in await app.audit_log.latest(10) if e.action == "agents"]
    assert sorted(outcomes) == ["refused: no agents", "shown"]


# --- /agent --------------------------------------------------------------------------


async def test_a_pinned_agent_answers_until_auto_returns_the_chat_to_routing(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi", bot_admin_ids=str(ADMIN))
    assert app.agents is not None
    listing = (await say(tg, "/agent")).text
    assert listing.startswith("Agents (multi-agent mode is on)")
    assert "• assistant — General assistant" in listing
    assert "• coder — Writes and explains program code." in listing
    assert "📌" not in listing and "No agent is pinned here: I choose one for each message." in listing

    pinned = await say(tg, "/agent Travel")
    assert pinned.text == "Pinned travel to this chat: it answers every message here until /agent auto."
    assert "• travel — Plans trips: routes, time zones, packing.  📌 pinned here" in (await say(tg, "/agent")).text
    assert await app.agents.store.pins() == {USER: "travel"}

    answer = await say(tg, "some python code please")  # the pin beats coder's keywords
    assert answer.text.startswith("↳ travel")
    assert "You plan trips." in system_text(model.chat_requests()[-1])

    auto = await say(tg, "/agent auto")
    assert auto.text == "Back to automatic: I choose the agent for each message in this chat."
    assert app.agents.pinned(USER) is None and await app.agents.store.pins() == {}
    answer = await say(tg, "more python code please")
    assert answer.text.startswith("↳ coder")
    assert "careful programmer" in system_text(model.chat_requests()[-1])


async def test_with_multi_agent_mode_off_a_pin_is_kept_but_the_assistant_answers(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="single")
    assert app.agents is not None
    pinned = await say(tg, "/agent @coder")
    assert pinned.text == (
        "Pinned coder to this chat. Multi-agent mode is off, though, so the default assistant answers "
        "until an admin runs /agents on."
    )
    pin = app.agents.pinned(USER)
    assert pin is not None and pin.name == "coder"
    listing = (await say(tg, "/agent")).text
    assert listing.startswith("Agents (multi-agent mode is off)") and "coder — Writes and explains program code.  📌" in listing
    assert "the default assistant answers every message until an admin runs /agents on" in listing
    answer = await say(tg, "hello there")
    assert answer.text == "echo: hello there", "no agent label: the assistant answered"
    assert "careful programmer" not in system_text(model.chat_requests()[-1])
    unpinned = await say(tg, "/agent auto")
    assert "No agent is pinned in this chat now. Multi-agent mode is off" in unpinned.text


async def test_unknown_names_and_bad_arguments_get_a_clear_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi", bot_admin_ids=str(ADMIN))
    assert app.agents is not None
    unknown = await say(tg, "/agent <nobody>")
    assert unknown.text == "There is no agent named <nobody>. Agents: assistant, coder, travel, planner."
    usage = "Usage: /agent lists the agents, /agent NAME pins one to this chat, /agent auto lets me choose."
    assert (await say(tg, "/agent coder travel")).text == usage
    for bad in ("/agents maybe", "/agents on now"):
        assert (await say(tg, bad, ADMIN)).text == "Usage: /agents, /agents on, /agents off"
    assert app.agents.pinned(USER) is None and app.agents.multi
    assert not model.chat_requests(), "no command reached the model"


async def test_in_a_group_only_admins_pin_and_everyone_may_list(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi", bot_admin_ids=str(ADMIN))
    assert app.agents is not None
    refusal = "In a group, only the bot's admins can choose the agent. /agent lists them."
    assert (await say(tg, "/agent coder", GROUP, MEMBER)).text == refusal
    assert app.agents.pinned(GROUP) is None
    assert "• coder — Writes" in (await say(tg, "/agent", GROUP, MEMBER)).text

    assert (await say(tg, "/agent travel", GROUP, ADMIN)).text.startswith("Pinned travel to this chat")
    assert (await say(tg, "/agent auto", GROUP, MEMBER)).text == refusal
    pin = app.agents.pinned(GROUP)
    assert pin is not None and pin.name == "travel", "a member's /agent auto changed nothing"
    assert app.agents.pinned(MEMBER) is None, "the pin belongs to the group, not to a private chat"

    await say(tg, "@arium_test_bot what about python?", GROUP, MEMBER)
    assert "You plan trips." in system_text(model.chat_requests()[-1])


# --- the console ---------------------------------------------------------------------


async def test_agent_works_in_the_console_as_plain_text(
    start_bot: BotFactory, embedder: Embedder
) -> None:
    owner = 4242
    app = await start_bot(agents=AGENTS, bot_agents_mode="multi", bot_console_user_id=owner)
    output = io.StringIO()
    console = ConsoleChannel(
        UserProfile(owner, "Owner"), reader=io.StringIO("/agent\n/agent coder\n/agent nobody\n/help\n"),
        writer=output, interactive=False,
    )
    await Arium(app.settings, console=console, embedder=embedder).run_console()
    out = output.getvalue()
    assert "<b>" not in out and "Traceback" not in out
    assert "Agents (multi-agent mode is on)" in out and "• coder — Writes and explains program code." in out
    assert "Pinned coder to this chat: it answers every message here until /agent auto." in out
    assert "There is no agent named nobody." in out
    assert "/agent — choose the agent that answers in this chat" in out
    assert app.agents is not None
    assert await app.agents.store.pins() == {local_chat_id(CONSOLE, owner): "coder"}


# --- the pieces ----------------------------------------------------------------------


def test_arguments_are_parsed_strictly() -> None:
    assert parse_agents_args([]) == "show" and parse_agents_args(["Off"]) == "off"
    assert parse_agents_args(["on", "now"]) is None and parse_agents_args(["toggle"]) is None
    assert parse_agent_args([]) == AgentChoice("show")
    assert parse_agent_args(["AUTO"]) == AgentChoice("auto")
    assert parse_agent_args(["@coder"]) == AgentChoice("pin", "coder")
    assert parse_agent_args(["@"]) is None and parse_agent_args(["a", "b"]) is None


def test_a_long_list_of_agents_still_fits_one_message() -> None:
    book = AgentBook(
        AgentProfile(f"agent{n}", "d" * 300, tools=frozenset({"calculate"}), keywords=("k",)) for n in range(40)
    )
    desk: Any = SimpleNamespace(book=book, multi=True)
    text = agents_overview(desk, "en")
    assert len(text) < 4000
    assert text.startswith("<b>Agents</b>") and "… and " in text and "more" in text
    assert text.rstrip().endswith("/agents on · /agents off switches multi-agent mode.")
