"""The per-turn tool loop with the real OpenAI and Mistral SDKs against the
fake model server (which checks the tool-message protocol of each API)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from bot.auth import Role
from bot.context import RequestContext
from bot.llm.base import Provider
from bot.llm.mistral_provider import MistralProvider
from bot.llm.openai_provider import OpenAIProvider
from bot.llm.types import ChatMessage, ChatRequest, Completion, TextDelta
from bot.storage.tool_events import ToolEventRecord
from bot.tools.executor import ToolExecutor
from bot.tools.manager import ToolCallManager, ToolLoopConfig, ToolsRunning, tool_call_key
from bot.tools.registry import ToolRegistry
from tests.fakes.model_server import FakeModelServer, Reply, Request, ToolCallSpec
from tests.support.contexts import make_ctx

WAIT = 10.0


@dataclass
class Events:
    records: list[ToolEventRecord] = field(default_factory=list)

    def record(self, event: ToolEventRecord) -> None:
        self.records.append(event)


def build_provider(model: FakeModelServer, dialect: str) -> Provider:
    if dialect == "mistral":
        return MistralProvider(
            "mistral-small-latest", api_key="test-key", server_url=model.mistral_server_url, timeout=10, max_connections=8
        )
    return OpenAIProvider("gpt-4o-mini", api_key="test-key", base_url=model.openai_base_url, timeout=10, max_connections=8)


@dataclass
class Loop:
    manager: ToolCallManager
    registry: ToolRegistry
    events: Events
    model: FakeModelServer

    async def turn(self, ctx: RequestContext, text: str = "hi") -> tuple[Completion, list[Any]]:
        request = ChatRequest(messages=(ChatMessage("system", "be brief"), ChatMessage("user", text)))
        seen: list[Any] = []
        final: Completion | None = None
        async for event in self.manager.stream(ctx, request):
            seen.append(event)
            if isinstance(event, Completion):
                final = event
        assert final is not None
        return final, seen

    def tool_messages(self, request_index: int = -1) -> list[dict[str, Any]]:
        return [m for m in self.model.chat_requests()[request_index].messages if m.get("role") == "tool"]


BOTH = pytest.mark.parametrize("loop", ["openai", "mistral"], indirect=True)


@pytest.fixture
async def loop(request: pytest.FixtureRequest, model: FakeModelServer) -> AsyncIterator[Loop]:
    """OpenAI unless a test asks for both dialects (where the wire shapes matter)."""
    models = build_provider(model, getattr(request, "param", "openai"))
    registry = ToolRegistry()
    executor = ToolExecutor(workers=8, queue_size=8, timeout=5.0, per_user=8)
    events = Events()
    manager = ToolCallManager(
        models=models, registry=registry, executor=executor, events=events, config=ToolLoopConfig(3, 200)
    )
    yield Loop(manager, registry, events, model)
    await executor.shutdown(grace=2.0)
    await models.aclose()


@BOTH
async def test_parallel_calls_overlap_and_every_call_gets_its_answer(loop: Loop) -> None:
    barrier = threading.Barrier(8, timeout=WAIT)

    def meet(ctx: RequestContext, seat: int) -> str:
        """Wait for the others."""
        barrier.wait()
        return f"seat {seat} for user {ctx.user_id}"

    loop.registry.register(meet, hints={"en": "gathering…"})
    loop.model.script(
        Reply(tool_calls=[ToolCallSpec("meet", {"seat": i}) for i in range(8)]), Reply(text="all seated")
    )
    final, seen = await loop.turn(make_ctx(5))
    assert final.text == "all seated"
    running = [e for e in seen if isinstance(e, ToolsRunning)]
    assert running and running[0].hint == "⏳ gathering…"
    answers = loop.tool_messages()
    assert [m["content"] for m in answers] == [f"seat {i} for user 5" for i in range(8)]
    call_ids = [c["id"] for c in loop.model.chat_requests()[-1].messages[-9]["tool_calls"]]
    assert [m["tool_call_id"] for m in answers] == call_ids
    assert [e.status for e in loop.events.records] == ["ok"] * 8


@BOTH
async def test_identical_calls_in_a_turn_run_once(loop: Loop) -> None:
    runs: list[str] = []

    def lookup(word: str) -> str:
        """Look a word up."""
        runs.append(word)
        return f"{word}: a fruit"

    loop.registry.register(lookup)
    loop.model.script(
        Reply(tool_calls=[ToolCallSpec("lookup", {"word": "fig"}), ToolCallSpec("lookup", '{ "word" : "fig" }')]),
        Reply(tool_calls=[ToolCallSpec("lookup", {"word": "fig"}), ToolCallSpec("lookup", {"word": "kiwi"})]),
        Reply(text="done"),
    )
    final, _ = await loop.turn(make_ctx())
    assert final.text == "done"
    assert runs == ["fig", "kiwi"]
    assert [m["content"] for m in loop.tool_messages()] == ["fig: a fruit"] * 3 + ["kiwi: a fruit"]


@BOTH
async def test_the_round_limit_stops_a_looping_model(loop: Loop) -> None:
    def again() -> str:
        """Do it again."""
        return "again"

    loop.registry.register(again)
    loop.model.responder = lambda request: Reply(tool_calls=[ToolCallSpec("again", {"n": len(request.messages)})])
    final, seen = await loop.turn(make_ctx(language="ru"))
    requests = loop.model.chat_requests()
    assert len(requests) == 4  # three rounds of tools, then one that must answer
    assert [r.body.get("tool_choice") for r in requests] == [None, None, None, "none"]
    assert final.finish_reason == "round_limit" and "слишком много шагов" in final.text
    assert sum(isinstance(e, ToolsRunning) for e in seen) == 3


async def test_a_hanging_tool_times_out_and_the_turn_finishes(loop: Loop) -> None:
    release = threading.Event()

    def stuck() -> str:
        """Never answers in time."""
        release.wait(WAIT)
        return "late"

    loop.registry.register(stuck, timeout=0.2)
    loop.model.script(Reply(tool_calls=[ToolCallSpec("stuck")]), Reply(text="the tool was too slow"))
    try:
        final, _ = await loop.turn(make_ctx())
    finally:
        release.set()
    assert final.text == "the tool was too slow"
    [answer] = loop.tool_messages()
    assert json.loads(answer["content"])["error"] == "timeout"
    assert loop.events.records[0].status == "timeout"


@BOTH
async def test_invalid_arguments_go_back_to_the_model_to_correct(loop: Loop) -> None:
    from plugins.calc import calculate

    loop.registry.register(calculate)
    loop.model.script(
        Reply(tool_calls=[ToolCallSpec("calculate", {"expr": "2+2"}), ToolCallSpec("calculate", '{"expression": ')]),
        Reply(tool_calls=[ToolCallSpec("calculate", {"expression": "2+2"})]),
        Reply(text="4"),
    )
    final, _ = await loop.turn(make_ctx())
    assert final.text == "4"
    first = [json.loads(m["content"]) for m in loop.tool_messages(1)]
    assert all(a["error"] == "invalid_arguments" for a in first)
    assert "expression: Field required" in first[0]["detail"] and "expr: Extra inputs" in first[0]["detail"]
    assert "not valid JSON" in first[1]["detail"]
    assert loop.tool_messages(2)[-1]["content"] == "2+2 = 4"
    assert [e.status for e in loop.events.records] == ["invalid", "invalid", "ok"]


async def test_admin_tools_are_invisible_and_refused_to_users(loop: Loop) -> None:
    calls: list[int] = []

    def ban_user(ctx: RequestContext, user_id: int) -> str:
        """Ban a user."""
        calls.append(user_id)
        return "banned"

    def ping() -> str:
        """Ping."""
        return "pong"

    loop.registry.register(ban_user, admin_only=True)
    loop.registry.register(ping)
    loop.model.script(Reply(tool_calls=[ToolCallSpec("ban_user", {"user_id": 2})]), Reply(text="I can't"))
    await loop.turn(make_ctx(role=Role.USER))
    offered = [t["function"]["name"] for t in loop.model.chat_requests()[0].body["tools"]]
    assert offered == ["ping"]
    [answer] = loop.tool_messages()
    refusal = json.loads(answer["content"])
    assert refusal["error"] == "unknown_tool" and "ban_user" not in refusal["detail"].split("tools:")[1]
    assert calls == [] and loop.events.records[0].status == "denied"

    loop.model.script(Reply(tool_calls=[ToolCallSpec("ban_user", {"user_id": 2})]), Reply(text="done"))
    await loop.turn(make_ctx(user_id=1, role=Role.ADMIN))
    assert "ban_user" in [t["function"]["name"] for t in loop.model.chat_requests()[2].body["tools"]]
    assert calls == [2]


async def test_unknown_tools_and_long_results_are_handled(loop: Loop) -> None:
    def essay() -> str:
        """Write a lot."""
        return "x" * 1000

    loop.registry.register(essay)
    loop.model.script(Reply(tool_calls=[ToolCallSpec("essay"), ToolCallSpec("teleport", {"to": "Mars"})]), Reply(text="ok"))
    await loop.turn(make_ctx())
    long, unknown = loop.tool_messages()
    assert long["content"].startswith("x" * 200) and "[truncated: 800 more characters not shown]" in long["content"]
    assert json.loads(unknown["content"])["error"] == "unknown_tool"


async def test_text_streams_through_and_usage_adds_up(loop: Loop) -> None:
    def ping() -> str:
        """Ping."""
        return "pong"

    loop.registry.register(ping)
    loop.model.script(
        Reply(chunks=["Let me ", "check."], tool_calls=[ToolCallSpec("ping")], usage=(10, 3)),
        Reply(chunks=["Pong", " it is."], usage=(20, 4)),
    )
    final, seen = await loop.turn(make_ctx())
    kinds = [type(e).__name__ for e in seen]
    assert kinds.index("ToolsRunning") < len(kinds) - 1
    after = seen[kinds.index("ToolsRunning") + 1 :]
    assert "".join(e.text for e in after if isinstance(e, TextDelta)) == "Pong it is."
    assert final.text == "Pong it is." and (final.usage.prompt_tokens, final.usage.completion_tokens) == (30, 7)


async def test_no_tools_means_a_plain_stream(loop: Loop) -> None:
    loop.model.script(Reply(text="plain"))
    final, seen = await loop.turn(make_ctx())
    assert final.text == "plain" and "tools" not in loop.model.chat_requests()[0].body


async def test_async_tools_are_awaited_with_the_context(loop: Loop) -> None:
    async def remember(ctx: RequestContext, fact: str) -> str:
        """Remember a fact about the user."""
        await asyncio.sleep(0)
        return f"remembered for {ctx.user_id}: {fact}"

    loop.registry.register(remember)
    loop.model.script(Reply(tool_calls=[ToolCallSpec("remember", {"fact": "likes tea"})]), Reply(text="noted"))
    await loop.turn(make_ctx(user_id=77))
    assert loop.tool_messages()[0]["content"] == "remembered for 77: likes tea"


def test_the_fake_refuses_a_broken_tool_conversation() -> None:
    from tests.fakes.model_server import _tool_protocol_problem

    call = {"id": "abcDEF123", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    unanswered: list[dict[str, Any]] = [{"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "user", "content": "?"}]
    stray = [{"role": "tool", "content": "x", "tool_call_id": "nope"}]
    both = [{"role": "assistant", "content": "hi", "tool_calls": [call]}, {"role": "tool", "content": "x", "tool_call_id": "abcDEF123"}]
    assert "did not have response messages" in str(_tool_protocol_problem("openai", unanswered))
    assert "must be a response" in str(_tool_protocol_problem("openai", stray))
    assert _tool_protocol_problem("openai", both) is None
    assert "not both" in str(_tool_protocol_problem("mistral", both))
    bad_id = [{"role": "assistant", "content": "", "tool_calls": [{**call, "id": "call_1"}]}]
    assert "length of 9" in str(_tool_protocol_problem("mistral", bad_id))


def _request_types(requests: list[Request]) -> list[str]:
    return [m.get("role", "?") for m in requests[-1].messages]


async def test_mistral_gets_ids_and_content_in_its_own_shape(model: FakeModelServer) -> None:
    """A history written by OpenAI (call_... ids, text beside the calls) still
    satisfies Mistral's rules after translation."""
    from bot.llm.types import ToolCall

    provider = build_provider(model, "mistral")
    model.script(Reply(text="fine"))
    history = (
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "Let me look.", tool_calls=(ToolCall("call_AbC123xyz789", "ping", "{}"),)),
        ChatMessage("tool", "pong", tool_call_id="call_AbC123xyz789", name="ping"),
    )
    completion = await provider.complete(ChatRequest(history))
    await provider.aclose()
    assert completion.text == "fine"
    sent = model.chat_requests()[0].messages
    assert sent[1]["content"] == "" and sent[1]["tool_calls"][0]["id"] == sent[2]["tool_call_id"]
    assert len(sent[2]["tool_call_id"]) == 9 and sent[2]["name"] == "ping"
    assert _request_types(model.chat_requests()) == ["user", "assistant", "tool"]


async def test_each_call_gets_a_key_the_same_turn_gets_again_for_the_same_call(loop: Loop) -> None:
    """ctx.tool_call_key: the turn's request id and a hash of the name and
    the arguments (as the identical-call cache compares them: key order
    ignored), so the same turn resumed after a crash calling again gets the
    same key, and another turn or other arguments another one."""
    keys: dict[str, list[str | None]] = {}

    def note(ctx: RequestContext, text: str, when: str) -> str:
        """Note something down."""
        keys.setdefault(f"{ctx.request_id}/{text}", []).append(ctx.tool_call_key)
        return "noted"

    loop.registry.register(note)
    turn = make_ctx(5)
    resumed = turn.model_copy(update={"resumed": True})
    other = turn.model_copy(update={"request_id": "req124"})
    a, a_reordered = {"text": "a", "when": "9"}, {"when": "9", "text": "a"}
    for ctx, arguments in ((turn, a), (resumed, a_reordered), (other, a)):
        loop.model.script(
            Reply(tool_calls=[ToolCallSpec("note", arguments), ToolCallSpec("note", {"text": "b", "when": "9"})]),
            Reply(text="noted both"),
        )
        await loop.turn(ctx)
    [first, again] = keys["req123/a"]
    assert first == again and first is not None and first.startswith("req123:") and len(first) <= 64
    [b, b_again] = keys["req123/b"]
    assert b == b_again != first, "other arguments, another key"
    [elsewhere] = keys["req124/a"]
    assert elsewhere == "req124:" + first.removeprefix("req123:"), "another turn, another key"
    assert turn.tool_call_key is None, "the turn's own context is left as it was"


def test_a_long_request_id_still_gives_a_key_that_fits() -> None:
    nested = "tg123456789" + ".d0123abcd.s1" * 6  # delegation steps within steps
    key = tool_call_key(nested, "note\x00{}")
    assert len(key) <= 64 and key != tool_call_key(nested + ".s2", "note\x00{}")
    assert tool_call_key("req", "x\x00{\"t\": \"\ud800\"}"), "lone surrogates from JSON do not break hashing"
