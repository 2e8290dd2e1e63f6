"""Run-time control from the chat: /models (order, disable, enable; buttons),
/prompts (versions, activation) and /reload (prompts/ and plugins/), against
the real bot, the fake Telegram and the fake model server; persistence across
a restart on the same data directory; and the pieces underneath (the chain's
layout, the runtime settings table, prompt and plugin reloads) on their own."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.admin.runtime import MODELS_KEY, ModelControl, ModelsAction
from bot.app import Arium
from bot.errors import PromptError
from bot.llm.breaker import CircuitBreaker
from bot.llm.chain import ChainPolicy, Endpoint, FallbackChain, Tier
from bot.llm.openai_provider import OpenAIProvider
from bot.llm.service import ModelService
from bot.llm.types import ChatMessage, ChatRequest, Completion
from bot.memory.embedder import Embedder
from bot.prompts import PROMPTS_DIR, PromptRegistry
from bot.storage.db import Database
from bot.storage.models import Message
from bot.storage.runtime import RuntimeSettingsRepository
from bot.tools.plugins import load_plugins, reload_plugins
from bot.tools.registry import ToolRegistry
from bot.tools.sandbox import FileSandbox, SandboxLimits
from tests.conftest import eventually, fake_settings
from tests.fakes.model_server import FakeModelServer, StreamFault
from tests.fakes.telegram_server import FakeTelegram, SentMessage

ADMIN, USER = 999, 1001
TWO_TIERS = "openai:gpt-4o-mini,mistral:mistral-small-latest"
_packages = itertools.count()

SHOUT = '''
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()

def register_tools(register):
    register(shout)
'''
WHISPER = '''
def whisper(text: str) -> str:
    """Say it softly."""
    return text.lower()

def register_tools(register):
    register(whisper)
'''


# --- the bot with its own prompts folder and plugin package ------------------------


@pytest.fixture
def plugin_package(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A fresh importable package (a unique name, so import caches never mix tests)."""
    name = f"runtime_plugins_{next(_packages)}"
    package = tmp_path / "pkgs" / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(package.parent))
    yield package, name
    sys.path.remove(str(package.parent))
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    """A copy of the shipped templates that a test may edit."""
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, folder)
    return folder


Start = Callable[..., Awaitable[Arium]]


@pytest.fixture
async def bot(
    tmp_path: Path,
    tg: FakeTelegram,
    model: FakeModelServer,
    embedder: Embedder,
    prompts_dir: Path,
    plugin_package: tuple[Path, str],
) -> AsyncIterator[Start]:
    """Starts Arium with two tiers on the fake model server, an admin, the
    test's prompts folder and plugin package; stops every bot at teardown."""
    running: list[Arium] = []

    async def start(**overrides: Any) -> Arium:
        values: dict[str, Any] = {"bot_models": TWO_TIERS, "bot_admin_ids": str(ADMIN), **overrides}
        app = Arium(
            fake_settings(tmp_path / "data", tg, model, **values),
            embedder=embedder,
            plugin_packages=(plugin_package[1],),
            prompts_dir=prompts_dir,
        )
        await app.start()
        running.append(app)
        return app

    yield start
    for app in reversed(running):
        if app._started:
            await app.stop()


async def say(tg: FakeTelegram, text: str, chat: int = ADMIN) -> SentMessage:
    """Send ``text`` from ``chat``'s user; the bot's next message there."""
    before = len(tg.messages(chat))
    tg.user_text(text, chat_id=chat)
    return (await tg.wait_messages(chat, before + 1))[before]


async def chat_turn(tg: FakeTelegram, model: FakeModelServer, text: str) -> Any:
    """A user's chat turn; the chat request the model server received for it."""
    asked = len(model.chat_requests())
    reply = await say(tg, text, USER)
    assert reply.text == f"echo: {text}"
    return model.chat_requests()[asked]


def system_version(request: Any) -> int:
    """Which shipped system prompt a request carried: v2 adds memories and the summary."""
    return 2 if "Summary of the earlier part of this conversation" in request.messages[0]["content"] else 1


def tool_names(request: Any) -> set[str]:
    return {tool["function"]["name"] for tool in request.body.get("tools", [])}


def tier_order(text: str) -> list[str]:
    """Tier names from a /models answer, in the order shown."""
    return [line.split(". ", 1)[1].split(" — ")[0] for line in text.splitlines() if line[:2] in ("1.", "2.")]


# --- access ------------------------------------------------------------------------


async def test_non_admins_are_refused_and_learn_nothing(bot: Start, tg: FakeTelegram, model: FakeModelServer) -> None:
    app = await bot()
    shown = await say(tg, "/models")  # the admin's view, with buttons a user might forge
    version = app.runtime.models.view().version
    for command in ("/models", "/models disable 1", "/models order 2,1", "/prompts", "/prompts use system 1", "/reload"):
        answer = await say(tg, command, USER)
        name = command.split()[0]
        assert answer.text == f"I don't know the command {name}. /help lists the ones I understand."
        assert answer.reply_markup is None
    tg.callback_query(f"rt:disable:1:{version}", chat_id=ADMIN, user_id=USER, message_id=shown.message_id)
    await tg.wait_for(lambda: any(c.method == "answerCallbackQuery" for c in tg.calls))
    assert [t.enabled for t in app.runtime.models.view().tiers] == [True, True]
    assert app.prompts.get("system").version == 2 and app.prompts.pinned() == {}
    assert tg.messages(ADMIN)[-1].text == shown.text  # the admin's message was not edited
    assert (await chat_turn(tg, model, "still fine")).dialect == "openai"


# --- /models -----------------------------------------------------------------------


async def test_models_shows_the_chain_without_secrets(bot: Start, tg: FakeTelegram, model: FakeModelServer) -> None:
    # Credentials in the URL: the SDK sends them instead of the key, so the
    # fake refuses openai (an error to show) and mistral answers.
    await bot(openai_base_url=model.openai_base_url.replace("http://", "http://user:s3cret@"))
    await chat_turn(tg, model, "first")
    shown = await say(tg, "/models")
    assert tier_order(shown.text) == ["openai:gpt-4o-mini", "mistral:mistral-small-latest"]
    first, second = shown.text.split("\n\n2. ")
    assert "weight 1 · breaker open · 1 requests · errors: ModelAuthError ×1 · last ModelAuthError" in first
    assert "weight 1 · breaker closed · 1 requests" in second and "no errors" in second
    assert "127.0.0.1" in shown.text and "/openai/v1" in shown.text
    for secret in ("s3cret", "user:", "test-key"):
        assert secret not in (shown.html or "")
    buttons = [b["callback_data"] for row in shown.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    version = buttons[0].rsplit(":", 1)[1]
    assert buttons == [f"rt:down:1:{version}", f"rt:disable:1:{version}", f"rt:up:2:{version}", f"rt:disable:2:{version}"]


async def test_reorder_and_disable_apply_at_once_and_survive_a_restart(
    bot: Start, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await bot()
    assert (await chat_turn(tg, model, "one")).dialect == "openai"

    moved = await say(tg, "/models down 1")
    assert moved.text.startswith("Moved openai:gpt-4o-mini to position 2.")
    assert tier_order(moved.text) == ["mistral:mistral-small-latest", "openai:gpt-4o-mini"]
    assert (await chat_turn(tg, model, "two")).dialect == "mistral"

    off = await say(tg, "/models disable 1")
    assert off.text.startswith("Disabled mistral:mistral-small-latest: new requests skip it.")
    assert "⏸ disabled" in off.text
    assert (await chat_turn(tg, model, "three")).dialect == "openai"

    refused = await say(tg, "/models disable 2")
    assert "openai:gpt-4o-mini is the only enabled tier" in refused.text
    assert (await chat_turn(tg, model, "four")).dialect == "openai"

    await app.stop()
    app = await bot()
    view = app.runtime.models.view()
    assert [(t.name, t.enabled) for t in view.tiers] == [
        ("mistral:mistral-small-latest", False),
        ("openai:gpt-4o-mini", True),
    ]
    assert (await chat_turn(tg, model, "after restart")).dialect == "openai"

    await say(tg, "/models enable 1")
    assert (await chat_turn(tg, model, "five")).dialect == "mistral"
    ordered = await say(tg, "/models order 2,1")
    assert ordered.text.startswith("New order: openai:gpt-4o-mini > mistral:mistral-small-latest.")
    assert (await chat_turn(tg, model, "six")).dialect == "openai"
    await app.audit_writer.flush()
    audited = [(e.admin_id, e.action, e.arguments, e.outcome) for e in await app.audit_log.latest(10)]
    assert (ADMIN, "models", "order 2,1", "rt_models_ordered") in audited
    assert (ADMIN, "models", "disable 2", "refused: rt_last_tier") in audited


async def test_buttons_move_tiers_and_a_stale_button_changes_nothing(
    bot: Start, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await bot()
    shown = await say(tg, "/models")
    old = app.runtime.models.view().version
    tg.callback_query(f"rt:down:1:{old}", chat_id=ADMIN, message_id=shown.message_id)
    await tg.wait_for(lambda: bool(tg.messages(ADMIN)[-1].edits))
    edited = tg.messages(ADMIN)[-1]
    assert edited.text.startswith("Moved openai:gpt-4o-mini to position 2.")
    assert tier_order(edited.text) == ["mistral:mistral-small-latest", "openai:gpt-4o-mini"]
    assert (await chat_turn(tg, model, "hi")).dialect == "mistral"

    # The first message's buttons still carry the old layout: pressing one again must not act.
    tg.callback_query(f"rt:disable:1:{old}", chat_id=ADMIN, message_id=shown.message_id)
    await tg.wait_for(lambda: len(tg.messages(ADMIN)[-1].edits) >= 2)
    assert tg.messages(ADMIN)[-1].text.startswith("The chain changed since that message; here it is now.")
    assert [t.enabled for t in app.runtime.models.view().tiers] == [True, True]

    forged = app.runtime.models.view().version
    for data in ("rt:disable:9:" + forged, "rt:order:1:" + forged, "rt:nonsense", "rt:up:x:" + forged):
        tg.callback_query(data, chat_id=ADMIN, message_id=shown.message_id)
    await tg.wait_for(lambda: len(tg.calls_of("answerCallbackQuery")) >= 6)
    assert [t.name for t in app.runtime.models.view().tiers] == ["mistral:mistral-small-latest", "openai:gpt-4o-mini"]


async def test_bad_arguments_get_usage_or_a_clear_answer(bot: Start, tg: FakeTelegram) -> None:
    await bot()
    usage = {
        "/models sideways": "Usage: /models, /models up N",
        "/models up": "Usage: /models, /models up N",
        "/models up x": "Usage: /models, /models up N",
        "/models up 1 2": "Usage: /models, /models up N",
        "/models order": "Usage: /models, /models up N",
        "/prompts list": "Usage: /prompts, /prompts use <name> <version>",
        "/prompts use system": "Usage: /prompts, /prompts use <name> <version>",
        "/reload now": "Usage: /reload (no arguments)",
    }
    for command, expected in usage.items():
        assert (await say(tg, command)).text.startswith(expected), command
    answers = {
        "/models up 7": "There is no tier 7: the chain has 2.",
        "/models up 0": "There is no tier 0: the chain has 2.",
        "/models order 1,1": "Name each of the 2 tiers once, for example: /models order 2,1",
        "/models order 1,2,3": "Name each of the 2 tiers once",
        "/models up 1": "openai:gpt-4o-mini is already first.",
        "/models enable 2": "mistral:mistral-small-latest is already enabled.",
        "/prompts use nope 1": "There is no template named nope. Templates: agent_route, history_summary",
        "/prompts use system 9": "system has no version 9; it has 1, 2.",
        "/prompts use system x": "x is not a version: write a number such as 2, or latest.",
    }
    for command, expected in answers.items():
        assert (await say(tg, command)).text.startswith(expected), command
    before = len(tg.messages(ADMIN))
    tg.user_text("/models up 7", chat_id=ADMIN, language_code="ru")
    tg.user_text("/models", chat_id=ADMIN, language_code="ru")
    refused, shown = (await tg.wait_messages(ADMIN, before + 2))[before:]
    assert refused.text == "Уровня 7 нет: в цепочке их 2."
    assert shown.text.startswith("Цепочка моделей: запрос идёт на первый включённый уровень")


# --- /prompts ----------------------------------------------------------------------


async def test_prompts_use_switches_the_system_prompt_and_persists(
    bot: Start, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await bot()
    listed = await say(tg, "/prompts")
    assert "system: v1, v2 ✓ (newest)" in listed.text
    assert "memory_extract: v1 ✓ (newest)" in listed.text
    assert system_version(await chat_turn(tg, model, "before")) == 2

    used = await say(tg, "/prompts use system v1")
    assert used.text == "system@1 is now active for new turns."
    assert system_version(await chat_turn(tg, model, "after")) == 1
    assert "system: v1 ✓, v2 (pinned)" in (await say(tg, "/prompts")).text

    await app.stop()
    app = await bot()
    assert system_version(await chat_turn(tg, model, "after restart")) == 1
    async def recorded() -> list[str | None]:
        async with app.db.reading() as s:
            query = select(Message.prompt_version).where(Message.role == "assistant").order_by(Message.id)
            return list((await s.execute(query)).scalars())

    # The answer is stored just after it is sent.
    versions = await eventually(recorded, lambda found: len(found) == 3)
    assert versions == ["system@2", "system@1", "system@1"]

    latest = await say(tg, "/prompts use system latest")
    assert latest.text == "system follows its newest version again (now system@2)."
    assert system_version(await chat_turn(tg, model, "latest")) == 2


# --- /reload -----------------------------------------------------------------------


async def test_reload_picks_up_a_new_prompt_version_and_a_new_plugin_tool(
    bot: Start, tg: FakeTelegram, model: FakeModelServer, prompts_dir: Path, plugin_package: tuple[Path, str]
) -> None:
    await bot()
    before = await chat_turn(tg, model, "before")
    assert "shout" not in tool_names(before)
    v2 = (prompts_dir / "system.v2.md").read_text()
    (prompts_dir / "system.v3.md").write_text(
        v2.replace("version = 2", "version = 3").replace("You are $bot_name", "VERSION THREE. You are $bot_name")
    )
    package, _ = plugin_package
    (package / "shout.py").write_text(SHOUT)

    report = await say(tg, "/reload")
    assert "Prompts: added system@3" in report.text
    assert "Tools: added shout" in report.text
    after = await chat_turn(tg, model, "after")
    assert after.messages[0]["content"].startswith("VERSION THREE.")
    assert tool_names(after) == tool_names(before) | {"shout"}
    assert {"remember", "create_reminder", "calculate", "write_file"} <= tool_names(after)

    (package / "shout.py").unlink()
    again = await say(tg, "/reload")
    assert "Prompts: no changes" in again.text and "Tools: removed shout" in again.text
    assert tool_names(await chat_turn(tg, model, "later")) == tool_names(before)


async def test_broken_template_or_plugin_is_reported_and_chat_goes_on(
    bot: Start, tg: FakeTelegram, model: FakeModelServer, prompts_dir: Path, plugin_package: tuple[Path, str]
) -> None:
    app = await bot()
    package, _ = plugin_package
    (package / "shout.py").write_text(SHOUT)
    await say(tg, "/reload")
    assert system_version(await chat_turn(tg, model, "first")) == 2

    (prompts_dir / "broken.v1.md").write_text("no front matter here")
    (prompts_dir / "system.v3.md").write_text("+++\nname = \"system\"\nversion = 3\n+++\nnew\n")
    (package / "shout.py").write_text("def register_tools(register:\n")  # a typo in a working plugin
    (package / "syntax.py").write_text("x = = 1\n")
    (package / "whisper.py").write_text(WHISPER)
    report = await say(tg, "/reload")
    assert "Prompts were NOT reloaded; the previous templates stay in use:" in report.text
    assert "broken.v1.md: must start with a '+++' front matter line" in report.text
    assert "Tools: added whisper" in report.text
    assert f"Plugin {plugin_package[1]}.syntax failed: SyntaxError" in report.text
    assert f"Plugin {plugin_package[1]}.shout failed: SyntaxError" in report.text
    assert "its previous tools stay: shout" in report.text
    assert app.prompts.names()["system"] == [1, 2]
    turn = await chat_turn(tg, model, "still talking")
    assert system_version(turn) == 2 and {"shout", "whisper"} <= tool_names(turn)

    # A template the bot would render without its variables is refused the same way.
    (prompts_dir / "broken.v1.md").unlink()
    (prompts_dir / "system.v3.md").write_text(
        '+++\nname = "system"\nversion = 3\nvariables = ["mood"]\n+++\nYou feel $mood.\n'
    )
    refused = await say(tg, "/reload")
    assert "system.v3.md: declares variables the bot does not supply: mood" in refused.text
    assert system_version(await chat_turn(tg, model, "and on")) == 2


# --- the pieces underneath ---------------------------------------------------------


def _service(*names: str) -> ModelService:
    """A chain whose endpoints are never called: enough to arrange tiers."""
    tiers = []
    for name in names:
        provider = OpenAIProvider(name, api_key="k", base_url="http://127.0.0.1:9/v1", timeout=1, max_connections=1)
        breaker = CircuitBreaker(failure_threshold=3, window=60, cooldown=30, hard_cooldown=300)
        tiers.append(Tier(name, [Endpoint(provider, breaker, tier=name)]))
    return ModelService(FallbackChain(tiers, ChainPolicy()))


async def test_saved_layout_applies_what_still_matches_the_configuration(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    await db.migrate()
    store = RuntimeSettingsRepository(db)
    old = _service("a", "b", "c")
    control = ModelControl(old, store)
    await control.apply(ModelsAction("order", (3, 1, 2)), by=ADMIN)
    await control.apply(ModelsAction("disable", (2,)), by=ADMIN)  # "a"
    saved = await store.get(MODELS_KEY)
    assert [k.split("@")[0] for k in saved["order"]] == ["openai:c", "openai:a", "openai:b"]

    # The configuration changed: "c" is gone, "d" is new.
    new = _service("a", "b", "d")
    with caplog.at_level(logging.WARNING, logger="bot.admin.runtime"):
        await ModelControl(new, store).restore()
    assert [(t.name, t.key in new.disabled_tiers()) for t in new.tiers()] == [("a", True), ("b", False), ("d", False)]
    assert "openai:c@127.0.0.1:9/v1" in caplog.text and "no longer configured" in caplog.text
    assert "openai:d@127.0.0.1:9/v1" in caplog.text and "not in the saved layout" in caplog.text

    # Only "a" survives, and it was disabled: everything is enabled instead of nothing.
    lonely = _service("a")
    await ModelControl(lonely, store).restore()
    assert lonely.disabled_tiers() == frozenset()
    await store.set(MODELS_KEY, {"order": "not a list"})
    untouched = _service("a", "b")
    await ModelControl(untouched, store).restore()
    assert [t.name for t in untouched.tiers()] == ["a", "b"]
    for service in (old, new, lonely, untouched):
        await service.aclose()
    await db.dispose()


async def test_runtime_settings_round_trip(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    store = RuntimeSettingsRepository(db)
    assert await store.get("nothing") is None
    await store.set("prompts.pinned", {"system": 1, "ünï": [1, 2]}, by=ADMIN)
    await store.set("prompts.pinned", {"system": 2}, by=ADMIN)
    assert await store.get("prompts.pinned") == {"system": 2}
    with pytest.raises(ValueError):
        await store.set("x" * 65, 1)
    await db.dispose()


async def test_arrange_validates_and_disambiguates_repeated_tiers() -> None:
    service = _service("a", "b", "a")
    keys = [t.key for t in service.tiers()]
    assert len(set(keys)) == 3 and keys[2].endswith(" #2")
    with pytest.raises(ValueError, match="every tier exactly once"):
        service.arrange_tiers(keys[:2])
    with pytest.raises(ValueError, match="stay enabled"):
        service.arrange_tiers(keys, disabled=keys)
    with pytest.raises(ValueError, match="no tier"):
        service.arrange_tiers(keys, disabled=["zzz"])
    await service.aclose()


async def test_a_request_in_flight_keeps_its_plan(model: FakeModelServer) -> None:
    """The first request waits on a stalled openai; meanwhile the admin puts
    mistral first and disables it. The waiting request still falls back to
    mistral (its plan); the next request goes to openai only."""
    from bot.llm.mistral_provider import MistralProvider

    def endpoint(provider: Any, tier: str) -> Endpoint:
        return Endpoint(provider, CircuitBreaker(failure_threshold=3, window=60, cooldown=30, hard_cooldown=300), tier=tier)

    openai = OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=model.openai_base_url, timeout=5, max_connections=4)
    mistral = MistralProvider("mistral-small-latest", api_key="test-key", server_url=model.mistral_server_url, timeout=5, max_connections=4)
    chain = FallbackChain(
        [Tier("openai", [endpoint(openai, "openai")]), Tier("mistral", [endpoint(mistral, "mistral")])],
        ChainPolicy(max_attempts=1, first_token_timeout=0.5),
    )
    model.script(StreamFault("stall", seconds=2), dialect="openai")
    request = ChatRequest(messages=(ChatMessage("user", "hello"),))

    async def first() -> Completion:
        async with aclosing(chain.stream(request)) as stream:
            async for event in stream:
                if isinstance(event, Completion):
                    return event
        raise AssertionError("no answer")

    waiting = asyncio.create_task(first())
    await model.wait_requests(1, dialect="openai")
    openai_key, mistral_key = (t.key for t in chain.tiers)
    chain.arrange([mistral_key, openai_key], disabled=[mistral_key])
    assert (await waiting).endpoint == "mistral/mistral:mistral-small-latest"
    second = await chain.complete(request)
    assert second.endpoint == "openai/openai:gpt-4o-mini"
    assert [r.dialect for r in model.chat_requests()] == ["openai", "mistral", "openai"]
    await openai.aclose()
    await mistral.aclose()


def test_prompt_reload_reports_changes_and_keeps_pins(tmp_path: Path) -> None:
    def write(name: str, version: int, body: str) -> None:
        (tmp_path / f"{name}.v{version}.md").write_text(f'+++\nname = "{name}"\nversion = {version}\n+++\n{body}\n')

    write("s", 1, "one")
    write("s", 2, "two")
    write("t", 1, "tee")
    registry = PromptRegistry(tmp_path)
    registry.activate("s", 1)
    registry.activate("t", 1)
    write("s", 3, "three")
    write("s", 2, "two, edited")
    (tmp_path / "t.v1.md").unlink()
    write("t", 2, "tee two")
    changes = registry.reload()
    assert (changes.added, changes.changed, changes.removed) == (("s@3", "t@2"), ("s@2",), ("t@1",))
    assert changes.unpinned == ("t@1",)
    assert registry.get("s").version == 1 and registry.get("t").version == 2
    (tmp_path / "u.v1.md").write_text("broken")
    (tmp_path / "v.v1.md").write_text("also broken")
    with pytest.raises(PromptError, match=r"u\.v1\.md(.|\n)*v\.v1\.md"):
        registry.reload()
    assert registry.names() == {"s": [1, 2, 3], "t": [2]}


def test_plugin_reload_keeps_core_tools_and_a_broken_plugins_previous_tools(
    tmp_path: Path, plugin_package: tuple[Path, str]
) -> None:
    package, name = plugin_package
    (package / "shout.py").write_text(SHOUT)

    def remember(fact: str) -> str:
        """Remember a fact."""
        return fact

    registry = ToolRegistry({FileSandbox: FileSandbox(tmp_path / "files", SandboxLimits())}, disabled={"files"})
    plugins = load_plugins(registry, (name,), entry_points=False)
    registry.register(remember, plugin="memory")
    tools_before = {t.name for t in registry.tools()}
    assert {"shout", "remember", "calculate"} <= tools_before

    (package / "shout.py").write_text(SHOUT.replace("Say it louder.", "Say it much louder."))
    (package / "whisper.py").write_text(WHISPER)
    result = reload_plugins(registry, plugins, (name,), entry_points=False)
    assert (result.added, result.removed, result.changed) == (("whisper",), (), ("shout",))
    assert {t.name for t in registry.tools()} == tools_before  # not serving until swapped in
    registry.replace_tools(result.registry)
    assert registry.get("shout").description == "Say it much louder."  # type: ignore[union-attr]
    assert registry.get("remember") is not None and "write_file" not in {t.name for t in registry.tools()}

    (package / "shout.py").write_text("def register_tools(register:\n")
    (package / "whisper.py").unlink()
    broken = reload_plugins(registry, result.plugins, (name,), entry_points=False)
    registry.replace_tools(broken.registry)
    failed = {info.name: info for info in broken.failed}
    assert failed[f"{name}.shout"].kept and failed[f"{name}.shout"].tools == ["shout"]
    assert "SyntaxError" in str(failed[f"{name}.shout"].error)
    assert broken.removed == ("whisper",)
    assert registry.get("shout").description == "Say it much louder."  # type: ignore[union-attr]
    assert registry.skipped.count("write_file") == 1  # disabled names are not listed twice


def test_plugin_reload_imports_entry_point_plugins_again(
    tmp_path: Path, plugin_package: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a server: imports leave .pyc files
    package, name = plugin_package
    (package / "external.py").write_text(WHISPER)
    dist = package.parent / "arium_runtime_whisper-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: arium-runtime-whisper\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[arium.plugins]\nwhisper = {name}.external\n")
    registry = ToolRegistry({FileSandbox: FileSandbox(tmp_path / "files", SandboxLimits())})
    plugins = load_plugins(registry, (), entry_points=True)
    # Same length, most likely within the same second: the cached bytecode
    # would pass its mtime-and-size check, so the reload must not use it.
    (package / "external.py").write_text(WHISPER.replace("Say it softly.", "Say it SOFTLY."))
    result = reload_plugins(registry, plugins, (), entry_points=True)
    assert result.changed == ("whisper",) and not result.failed
    assert result.registry.get("whisper").description == "Say it SOFTLY."  # type: ignore[union-attr]
