"""HistorySummarizer with in-process fakes at its seams (the message store and
the model service): one fold per conversation at a time, and back-off after a
failure holds for folds that were already waiting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from bot.errors import ModelBadRequest
from bot.llm.types import ChatRequest, Completion
from bot.memory.summary import HistorySummarizer, SummaryConfig
from bot.prompts import PromptRegistry
from bot.storage.repositories import StoredMessage
from bot.runtime.tasks import TaskTracker

CONVERSATION = 7


class Messages:
    """The three queries the summarizer makes, over a list in memory."""

    def __init__(self, count: int, tokens: int = 60) -> None:
        self.rows = [
            StoredMessage(i, "user" if i % 2 else "assistant", f"message {i}", tokens, "complete", 1)
            for i in range(1, count + 1)
        ]
        self.summary: str | None = None
        self.until_id: int | None = None

    async def summary_state(self, conversation_id: int) -> tuple[str | None, int | None]:
        return self.summary, self.until_id

    async def unsummarized(self, conversation_id: int, after_id: int | None, limit: int) -> list[StoredMessage]:
        return [m for m in self.rows if after_id is None or m.id > after_id][-limit:]

    async def save_summary(self, conversation_id: int, summary: str, until_id: int, expected: int | None) -> bool:
        if expected != self.until_id:
            return False
        self.summary, self.until_id = summary, until_id
        return True


class GatedModels:
    """A model service whose answers wait for the test to open a gate; each
    call either refuses (a 400) or answers with a summary."""

    def __init__(self, *, refuse: bool) -> None:
        self.refuse = refuse
        self.calls = 0
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()

    async def complete(self, request: ChatRequest, *, cache: bool = False) -> Completion:
        self.calls += 1
        self.arrived.set()
        await self.gate.wait()
        if self.refuse:
            raise ModelBadRequest("summary refused", endpoint="fake", status=400)
        return Completion(text=f"summary number {self.calls}")


@dataclass
class Rig:
    models: GatedModels
    tasks: TaskTracker
    messages: Messages
    folds: HistorySummarizer


async def fold_in_flight(*, refuse: bool) -> Rig:
    """A conversation of ten messages whose background fold (after the last
    turn) is waiting for the model's answer."""
    models, tasks, messages = GatedModels(refuse=refuse), TaskTracker(), Messages(10)
    folds = HistorySummarizer(
        messages,  # type: ignore[arg-type]
        models,  # type: ignore[arg-type]
        PromptRegistry(),
        tasks,
        SummaryConfig(history_tokens=200),
    )
    folds.after_turn(CONVERSATION, 600)
    await models.arrived.wait()
    return Rig(models, tasks, messages, folds)


async def let_waiting_tasks_run() -> None:
    """Give every ready task its turn; nothing here waits on I/O, so a fixed
    number of loop passes reaches the point where each task blocks."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_fold_waiting_behind_a_failed_one_does_not_call_the_model_again() -> None:
    rig = await fold_in_flight(refuse=True)
    turn = asyncio.ensure_future(rig.folds.fold_now(CONVERSATION))  # the next turn overflows meanwhile
    await let_waiting_tasks_run()
    rig.models.gate.set()
    assert await turn is False
    await rig.tasks.drain(5)
    assert rig.models.calls == 1, "the waiting fold honoured the back-off of the failed one"


async def test_a_turn_does_not_queue_a_second_background_fold_behind_a_running_one() -> None:
    rig = await fold_in_flight(refuse=False)
    rig.folds.after_turn(CONVERSATION, 700)  # another turn ends while the first fold runs
    await let_waiting_tasks_run()
    assert rig.tasks.pending == 1, "nothing queued behind the running fold"
    rig.models.gate.set()
    await rig.tasks.drain(5)
    assert rig.models.calls == 1
    assert rig.messages.summary == "summary number 1"


async def test_after_a_successful_fold_a_waiting_turn_folds_only_what_is_left() -> None:
    rig = await fold_in_flight(refuse=False)
    turn = asyncio.ensure_future(rig.folds.fold_now(CONVERSATION))
    await let_waiting_tasks_run()
    rig.models.gate.set()
    # The first fold kept the newest half of the budget; nothing older is left,
    # so the waiting turn's fold finds no work and makes no call.
    assert await turn is False
    await rig.tasks.drain(5)
    assert rig.models.calls == 1
    assert rig.messages.until_id is not None and rig.messages.until_id < rig.messages.rows[-1].id
