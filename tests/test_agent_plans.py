"""The orchestrator's plan, in process, with steps of our own: independent
steps run at once and a step waits for the ones it needs; the call cap and
the time budget stop a plan; a resumed turn carries on from its stored plan;
bad plans get an answer the model can act on."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

from bot.agents.orchestrator import Orchestration
from bot.agents.profiles import AgentBook, AgentProfile
from bot.context import ChatType, RequestContext, Role
from bot.storage.agents import StoredPlan
from bot.tools.manager import CallBudget

BOOK = AgentBook(
    [
        AgentProfile("coder", "Writes code."),
        AgentProfile("travel", "Plans trips."),
        AgentProfile("planner", "Plans.", orchestrator=True),
    ]
)


def context(*, resumed: bool = False) -> RequestContext:
    return RequestContext(
        user_id=7, chat_id=7, chat_type=ChatType.PRIVATE, role=Role.USER, language="en", timezone="UTC",
        user_name="Ann", request_id="req123", received_at=datetime.now(timezone.utc), resumed=resumed,
    )


class Plans:
    """The plan store, in memory; keeps every version saved."""

    def __init__(self, stored: StoredPlan | None = None) -> None:
        self.saved: list[tuple[str, list[dict[str, Any]]]] = []
        self.stored = stored

    async def plan(self, request_id: str) -> StoredPlan | None:
        return self.stored

    async def save_plan(
        self, request_id: str, *, user_id: int, chat_id: int, steps: list[dict[str, Any]], status: str
    ) -> None:
        self.saved.append((status, json.loads(json.dumps(steps))))


class Meeting:
    """Steps whose first two only finish once both have started: run one
    after the other, they would wait for each other forever (the test's
    time limit turns that into a failure)."""

    def __init__(self, together: int = 2) -> None:
        self.started: list[tuple[str, str, str]] = []
        self._together = together
        self._met = asyncio.Event()

    async def run(self, ctx: RequestContext, profile: AgentProfile, task: str, budget: CallBudget) -> str:
        self.started.append((ctx.request_id, profile.name, task))
        if len(self.started) >= self._together:
            self._met.set()
        await asyncio.wait_for(self._met.wait(), 10)
        return f"{profile.name}: {task.splitlines()[0]}"


def orchestration(runner: Any, store: Plans, *, calls: int = 20, seconds: float = 60) -> Orchestration:
    progress: list[str] = []

    async def show(line: str) -> None:
        progress.append(line)

    made = Orchestration(
        book=BOOK, store=store, runner=runner, budget=CallBudget(calls, seconds), progress=show, language="en"
    )
    made.shown = progress  # type: ignore[attr-defined]
    return made


async def test_independent_steps_run_at_once_and_a_dependent_step_gets_their_results() -> None:
    runner, store = Meeting(), Plans()
    plan = orchestration(runner, store)
    steps = [
        {"task": "write the script", "agent": "coder"},
        {"task": "find the train", "agent": "travel", "after": []},
        {"task": "sum it up", "after": [1, 2]},
    ]
    answer = json.loads(await plan.create_plan(context(), {"steps": steps}))
    assert [(s["agent"], s["status"]) for s in answer["plan"]] == [
        ("coder", "done"), ("travel", "done"), ("assistant", "done")
    ]
    assert {task for _, _, task in runner.started[:2]} == {"write the script", "find the train"}
    request_id, agent, task = runner.started[2]
    assert (request_id, agent) == ("req123.s3", "assistant")
    assert "Result of step 1 (coder, done):\ncoder: write the script" in task
    assert "Result of step 2 (travel, done):\ntravel: find the train" in task
    assert store.saved[0][0] == "running" and store.saved[-1][0] == "done"
    assert [line.split(" · ")[0] for line in plan.shown[:2]] == ["⏳ step 1 of 3", "⏳ step 2 of 3"]  # type: ignore[attr-defined]


async def test_steps_past_the_call_cap_are_skipped_not_run() -> None:
    runner, store = Meeting(together=1), Plans()
    plan = orchestration(runner, store, calls=2)
    steps = [{"task": f"part {n}", "agent": "coder"} for n in (1, 2, 3)]
    answer = json.loads(await plan.create_plan(context(), {"steps": steps}))
    assert [s["status"] for s in answer["plan"]] == ["done", "done", "skipped"]
    assert len(runner.started) == 2
    assert store.saved[-1][0] == "stopped"


async def test_steps_past_the_time_budget_are_stopped() -> None:
    class Slow:
        async def run(self, ctx: RequestContext, profile: AgentProfile, task: str, budget: CallBudget) -> str:
            await asyncio.sleep(30)
            return "never"

    plan = orchestration(Slow(), Plans(), seconds=0.2)
    answer = json.loads(await plan.create_plan(context(), {"steps": [{"task": "a"}, {"task": "b"}]}))
    assert [(s["status"], s["result"]) for s in answer["plan"]] == [
        ("skipped", "stopped: the request's time budget ran out"),
        ("skipped", "not run: the request's time budget ran out"),
    ]


async def test_a_resumed_turn_carries_on_from_its_stored_plan() -> None:
    stored = StoredPlan(
        "req123",
        [
            {"n": 1, "task": "write", "agent": "coder", "after": [], "status": "done", "result": "code"},
            {"n": 2, "task": "check", "agent": "travel", "after": [1], "status": "running", "result": ""},
        ],
        "running",
    )
    runner = Meeting(together=1)
    answer = json.loads(
        await orchestration(runner, Plans(stored)).create_plan(
            context(resumed=True), {"steps": [{"task": "something else entirely"}]}
        )
    )
    assert [(s["task"], s["status"]) for s in answer["plan"]] == [("write", "done"), ("check", "done")]
    assert [(agent, task.splitlines()[0]) for _, agent, task in runner.started] == [("travel", "check")]


async def test_bad_plans_and_unknown_agents_get_answers_the_model_can_act_on() -> None:
    runner = Meeting(together=1)
    plan = orchestration(runner, Plans())
    assert json.loads(await plan.create_plan(context(), {"steps": []}))["error"] == "bad_plan"
    assert json.loads(await plan.create_plan(context(), {"steps": [{"task": "  "}]}))["error"] == "bad_plan"
    answer = json.loads(await plan.create_plan(context(), {"steps": [{"task": "x", "agent": "planner"}]}))
    [step] = answer["plan"]
    assert step["agent"] == "assistant" and "no assistant 'planner'" in step["note"], "no plan within a plan"
    steps = [{"task": "one"}, {"task": "two", "after": [2, 3, "1"]}]  # itself, a later step, not a number
    answer = json.loads(await plan.create_plan(context(), {"steps": steps}))
    assert [s["status"] for s in answer["plan"]] == ["done", "done"]
    assert json.loads(await plan.delegate(context(), {"agent": "coder", "task": ""}))["error"] == "empty_task"
