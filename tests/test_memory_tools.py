"""The remember / recall / forget tools, called directly as the tool registry
will call them: RequestContext first, then the model's arguments."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.auth import Role
from bot.context import ChatType, RequestContext
from bot.errors import StorageError
from bot.memory.embedder import Embedder
from bot.memory.records import NewMemory
from bot.memory.service import MemoryService
from bot.memory.tools import MemoryTools
from bot.storage.db import Database
from tests.support.memory_service import ANN, BOB, build_service
from tests.support.memory_service import fixture_db  # noqa: F401  (the db fixture)


def context(user_id: int, chat_type: ChatType = ChatType.PRIVATE) -> RequestContext:
    return RequestContext(
        user_id=user_id,
        chat_id=user_id if chat_type is ChatType.PRIVATE else -100123,
        chat_type=chat_type,
        role=Role.USER,
        language="en",
        timezone="UTC",
        user_name="Ann",
        request_id="test",
        received_at=datetime.now(timezone.utc),
    )


@pytest.fixture
async def memory(db: Database, embedder: Embedder, tmp_path: Path) -> AsyncIterator[MemoryService]:
    service = await build_service(db, embedder, tmp_path / "memory")
    yield service
    await service.close()


@pytest.fixture
def tools(memory: MemoryService) -> MemoryTools:
    return MemoryTools(memory)


async def test_remember_then_recall_by_paraphrase(tools: MemoryTools) -> None:
    ann = context(ANN)
    assert await tools.remember(ann, "Works as a nurse at the city hospital") == (
        "Remembered: Works as a nurse at the city hospital"
    )
    assert await tools.remember(ann, "works as a nurse at the city hospital!") == (
        "Already remembered: works as a nurse at the city hospital!"
    )
    answer = await tools.recall(ann, "what is my job")
    assert answer.startswith("Remembered about the user:\n- Works as a nurse at the city hospital (remembered ")
    assert await tools.recall(ann, "favourite football club") == "Nothing remembered matches that."


async def test_explicit_memories_are_the_most_important(tools: MemoryTools, memory: MemoryService) -> None:
    await tools.remember(context(ANN), "Prefers metric units")
    [record], _ = await memory.page(ANN, 0, 10)
    assert (record.importance, record.source) == (5, "explicit")


async def test_forget_deletes_only_clear_matches(tools: MemoryTools, memory: MemoryService) -> None:
    ann = context(ANN)
    for fact in ("Lives in Berlin", "Likes jazz", "Has a cat named Tom"):
        await tools.remember(ann, fact)
    assert await tools.forget(ann, "Berlin address") == "Forgotten:\n- Lives in Berlin"
    assert await tools.forget(ann, "Berlin") == "Nothing remembered matches that, so nothing was forgotten."
    assert await memory.count(ANN) == 2


@pytest.mark.parametrize(
    ("tool", "argument", "answer"),
    [
        ("remember", "", "Nothing was saved: the fact is empty."),
        ("remember", "   \n\t ", "Nothing was saved: the fact is empty."),
        ("remember", "x" * 501, "Nothing was saved: the fact is 501 characters long"),
        ("recall", "", "Say what to look for: the query is empty."),
        ("recall", "?!…", "Nothing remembered matches that."),
        ("forget", "", "Nothing was forgotten: say what to forget."),
        ("forget", "🙂🙂", "Nothing remembered matches that, so nothing was forgotten."),
    ],
)
async def test_bad_arguments_get_a_plain_answer(
    tools: MemoryTools, memory: MemoryService, tool: str, argument: str, answer: str
) -> None:
    await tools.remember(context(ANN), "Likes jazz")
    result = await getattr(tools, tool)(context(ANN), argument)
    assert result.startswith(answer)
    assert await memory.count(ANN) == 1


async def test_tools_never_cross_users(tools: MemoryTools, memory: MemoryService) -> None:
    await tools.remember(context(ANN), "Hides the spare key under the red flowerpot")
    bob = context(BOB)
    assert await tools.recall(bob, "spare key flowerpot") == "Nothing remembered matches that."
    assert await tools.forget(bob, "spare key flowerpot") == (
        "Nothing remembered matches that, so nothing was forgotten."
    )
    assert await memory.count(ANN) == 1


async def test_tools_refuse_in_groups(tools: MemoryTools, memory: MemoryService) -> None:
    group = context(ANN, ChatType.GROUP)
    for name in ("remember", "recall", "forget"):
        assert (await getattr(tools, name)(group, "Likes jazz")).startswith("Memory is only available in a private chat")
    assert await memory.count(ANN) == 0


def test_tools_are_typed_functions_with_the_context_first(tools: MemoryTools) -> None:
    assert [f.__name__ for f in tools.functions()] == ["remember", "recall", "forget"]
    for function in tools.functions():
        parameters = list(inspect.signature(function).parameters.values())
        assert parameters[0].name == "ctx" and len(parameters) == 2
        assert parameters[1].annotation == "str"
        assert inspect.iscoroutinefunction(function) and function.__doc__ and "Args:" in function.__doc__


# --- The same tool call re-run after a crash (RequestContext.tool_call_key) ------


def call_of(user_id: int, request_id: str) -> RequestContext:
    """The context the tool manager hands one remember call of turn ``request_id``."""
    return context(user_id).model_copy(update={"request_id": request_id, "tool_call_key": f"{request_id}:remember"})


async def test_the_same_remember_call_of_the_same_turn_stores_once_and_answers_the_same(
    tools: MemoryTools, memory: MemoryService
) -> None:
    """Killed after the fact was stored, the resumed turn calls again: the
    first run's answer, not "Already remembered", and one row."""
    for _ in range(2):
        assert await tools.remember(call_of(ANN, "tg7"), "Likes jazz") == "Remembered: Likes jazz"
    assert await memory.count(ANN) == 1
    stored = await memory.made_by(ANN, "tg7:remember")
    assert stored is not None and stored.text == "Likes jazz"
    assert await memory.made_by(BOB, "tg7:remember") is None, "looked up per user"


async def test_another_turn_is_not_taken_for_a_re_run(tools: MemoryTools, memory: MemoryService) -> None:
    await tools.remember(call_of(ANN, "tg7"), "Likes jazz")
    assert await tools.remember(call_of(ANN, "tg8"), "Likes jazz") == "Already remembered: Likes jazz"
    assert await tools.remember(call_of(ANN, "tg9"), "Has a cat named Tom") == "Remembered: Has a cat named Tom"
    assert await memory.count(ANN) == 2
    await tools.forget(context(ANN), "jazz")
    assert await tools.remember(call_of(ANN, "tg10"), "Likes jazz") == "Remembered: Likes jazz"
    assert sorted(m.text for m in (await memory.page(ANN, 0, 10))[0]) == ["Has a cat named Tom", "Likes jazz"]


async def test_the_database_refuses_a_second_memory_under_one_key(memory: MemoryService) -> None:
    """The UNIQUE index is the backstop behind the tool's lookup."""
    await memory.add(ANN, [NewMemory("Likes jazz", idempotency_key="tg7:remember")])
    with pytest.raises(StorageError):
        await memory.add(ANN, [NewMemory("Likes jazz a lot", idempotency_key="tg7:remember")])
    assert await memory.count(ANN) == 1


async def test_forget_command_says_when_more_match_than_one_forget_takes(memory: MemoryService) -> None:
    from bot.memory.commands import FORGET_SEARCH, forget_request

    ann = context(ANN)
    await memory.add(ANN, [NewMemory(f"Fact number {n} about gardening") for n in range(FORGET_SEARCH + 3)])
    many = await forget_request(memory, ann, "gardening")
    assert len(many.ids) == FORGET_SEARCH and many.more
    assert "run /forget again for the rest" in many.prompt("en")

    await memory.add(BOB, [NewMemory("Fact about chess")])
    few = await forget_request(memory, context(BOB), "chess")
    assert len(few.ids) == 1 and not few.more
    assert "run /forget again" not in few.prompt("en")
