"""The orchestrator agent's tools: ``create_plan(steps)`` runs a plan of
subtasks, each by the agent it names, in order (at once where the plan says
a step needs no earlier result), with progress shown to the user; and
``delegate(agent, task)`` hands one subtask over. Both share the turn's
call budget (bot/tools/manager.py CallBudget): each step is one call, and
so is every tool call a step makes; past the cap or the time budget the
remaining steps are skipped and the orchestrator answers from what it has.

The plan is stored per turn (agent_plans) as each step finishes. A turn
resumed after a crash finds it and carries on from the steps not done; a
step's own tool rounds are journaled under the step's id, so a step cut
short does not repeat its side effects either."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

import bot.agents.strings  # noqa: F401  (the progress lines)
from bot.agents.profiles import AgentBook, AgentProfile
from bot.context import RequestContext
from bot.errors import AriumError, ModelError
from bot.i18n import t
from bot.llm.types import ChatMessage, ChatRequest, Completion
from bot.storage.agents import StoredPlan
from bot.tools.manager import CallBudget, ToolScope
from bot.tools.registry import Tool
from bot.tools.strings import HINT_PREFIX

log = logging.getLogger(__name__)

MAX_STEPS = 8
STEP_RESULT_CHARS = 4000  # of each step's answer, in what the orchestrator reads
TASK_CHARS = 2000

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "steps": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_STEPS,
            "description": "The subtasks, in order.",
            "items": {
                "type": "object",
                "properties": {
                    "task": {"type": "string", "description": "What to do, self-contained: the assistant sees only this and earlier results."},
                    "agent": {"type": "string", "description": "The assistant that does it (default: assistant)."},
                    "after": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "description": "Numbers of the earlier steps whose results it needs; omit to run after the previous step, [] to need none.",
                    },
                },
                "required": ["task"],
            },
        }
    },
    "required": ["steps"],
}

DELEGATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "agent": {"type": "string", "description": "The assistant to hand the task to."},
        "task": {"type": "string", "description": "What to do, self-contained."},
    },
    "required": ["agent", "task"],
}


class PlanStore(Protocol):
    async def plan(self, request_id: str) -> StoredPlan | None: ...

    async def save_plan(
        self, request_id: str, *, user_id: int, chat_id: int, steps: list[dict[str, Any]], status: str
    ) -> None: ...


class StepTools(Protocol):
    """The turn's tool loop (ToolCallManager): a step is a small turn of its own."""

    def stream(self, ctx: RequestContext, request: ChatRequest, scope: ToolScope) -> Any: ...

    async def turn_ended(self, ctx: RequestContext) -> None: ...


SystemFor = Callable[[AgentProfile], ChatMessage]
Progress = Callable[[str], Awaitable[None]]


class Steps(Protocol):
    """Runs one subtask as an agent (StepRunner; tests plug in their own)."""

    async def run(self, ctx: RequestContext, profile: AgentProfile, task: str, budget: CallBudget) -> str: ...


@dataclass(frozen=True)
class StepRunner:
    """Runs one subtask as the agent it names: that agent's system prompt,
    tools and model, the task as the user's message."""

    tools: StepTools
    system_for: SystemFor
    max_answer_tokens: int

    async def run(self, ctx: RequestContext, profile: AgentProfile, task: str, budget: CallBudget) -> str:
        request = ChatRequest(
            messages=(self.system_for(profile), ChatMessage("user", task)),
            max_tokens=profile.max_tokens or self.max_answer_tokens,
            temperature=profile.temperature,
            prefer_tier=profile.tier,
        )
        scope = ToolScope(allow=profile.allows, budget=budget)
        try:
            async with aclosing(self.tools.stream(ctx, request, scope)) as events:
                async for event in events:
                    if isinstance(event, Completion):
                        return event.text
        finally:
            await self.tools.turn_ended(ctx)  # the step's outcome goes into the plan; its rounds are not needed
        raise ModelError("the step's model stream ended without an answer")


class _NoArguments(BaseModel):
    pass


class Orchestration:
    """One orchestrated turn: its tools, bound to the turn's context, budget and progress line."""

    def __init__(
        self,
        *,
        book: AgentBook,
        store: PlanStore,
        runner: Steps,
        budget: CallBudget,
        progress: Progress,
        language: str,
    ) -> None:
        self._book = book
        self._store = store
        self._runner = runner
        self._budget = budget
        self._progress = progress
        self._language = language
        self._saving = asyncio.Lock()

    def tools(self) -> dict[str, Tool]:
        timeout = max(self._budget.remaining(), 1.0) + 5.0  # the steps stop themselves at the budget
        return {
            "create_plan": _turn_tool(
                "create_plan",
                "Plan a request with several parts as steps, each done by a specialist assistant; "
                "runs the plan and returns each step's result.",
                self.create_plan,
                PLAN_SCHEMA,
                timeout,
            ),
            "delegate": _turn_tool(
                "delegate",
                "Hand one self-contained task to a specialist assistant and get its answer.",
                self.delegate,
                DELEGATE_SCHEMA,
                timeout,
            ),
        }

    # delegate -------------------------------------------------------------

    async def delegate(self, ctx: RequestContext, arguments: dict[str, Any]) -> str:
        profile, note = self._agent(str(arguments.get("agent", "")))
        task = str(arguments.get("task", "")).strip()[:TASK_CHARS]
        if not task:
            return json.dumps({"error": "empty_task", "detail": "give the task to delegate"})
        await self._progress(HINT_PREFIX + t("agents_delegating", self._language, agent=profile.name))
        digest = hashlib.sha256(f"{profile.name}\x00{task}".encode()).hexdigest()[:8]
        step_ctx = ctx.model_copy(update={"request_id": f"{ctx.request_id}.d{digest}"})
        try:
            text = await asyncio.wait_for(
                self._runner.run(step_ctx, profile, task, self._budget), max(self._budget.remaining(), 0.01)
            )
        except TimeoutError:
            return json.dumps({"agent": profile.name, "status": "stopped", "detail": "the time budget ran out"})
        except ModelError as exc:
            log.warning("delegated task to %s failed: %s", profile.name, exc)
            return json.dumps({"agent": profile.name, "status": "failed", "detail": "the assistant did not answer"})
        answer: dict[str, Any] = {"agent": profile.name, "status": "done", "result": text[:STEP_RESULT_CHARS]}
        if note:
            answer["note"] = note
        return json.dumps(answer, ensure_ascii=False)

    # create_plan ----------------------------------------------------------

    async def create_plan(self, ctx: RequestContext, arguments: dict[str, Any]) -> str:
        steps = await self._steps_for(ctx, arguments)
        if not steps or not all(step["task"] for step in steps):
            return json.dumps({"error": "bad_plan", "detail": "give at least one step, each with a task"})
        await self._save(ctx, steps, "running")
        await self._run_plan(ctx, steps)
        stopped = any(step["status"] == "skipped" for step in steps)
        await self._save(ctx, steps, "stopped" if stopped else "done")
        return json.dumps({"plan": [_step_view(step) for step in steps]}, ensure_ascii=False)

    async def _steps_for(self, ctx: RequestContext, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        """The plan to run: the one stored for this turn when it is being
        resumed after a crash (its finished steps stay finished), else the
        model's, checked."""
        if ctx.resumed:
            try:
                stored = await self._store.plan(ctx.request_id)
            except AriumError as exc:
                log.warning("could not read the stored plan of %s: %s", ctx.request_id, exc)
                stored = None
            if stored is not None and stored.status == "running":
                done = sum(1 for step in stored.steps if step["status"] == "done")
                log.info("resuming the plan of %s: %d of %d steps done", ctx.request_id, done, len(stored.steps))
                return [
                    dict(step, status="pending") if step["status"] == "running" else dict(step)
                    for step in stored.steps
                ]
        raw = arguments.get("steps")
        return self._checked(raw if isinstance(raw, list) else [])

    def _checked(self, raw: list[Any]) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        for number, item in enumerate(raw[:MAX_STEPS], start=1):
            item = item if isinstance(item, dict) else {"task": str(item)}
            profile, note = self._agent(str(item.get("agent") or ""))
            after = item.get("after")
            if isinstance(after, list):
                # Only earlier steps: a plan cannot wait on itself or on a later step.
                needs = sorted({n for n in after if isinstance(n, int) and 1 <= n < number})
            else:
                needs = [number - 1] if number > 1 else []
            step: dict[str, Any] = {
                "n": number,
                "task": str(item.get("task", "")).strip()[:TASK_CHARS],
                "agent": profile.name,
                "after": needs,
                "status": "pending",
                "result": "",
            }
            if note:
                step["note"] = note
            steps.append(step)
        return steps

    def _agent(self, name: str) -> tuple[AgentProfile, str]:
        """The delegate a step names; the default agent (with a note saying
        so) for an unknown name or another orchestrator."""
        profile = self._book.get(name) if name else self._book.default
        if profile is None or profile.orchestrator:
            names = ", ".join(p.name for p in self._book.delegates())
            return self._book.default, f"no assistant {name!r} to delegate to (assistants: {names}); assistant did it"
        return profile, ""

    async def _run_plan(self, ctx: RequestContext, steps: list[dict[str, Any]]) -> None:
        """Waves of the steps whose inputs are finished, each wave at once."""
        by_number = {step["n"]: step for step in steps}
        while pending := [step for step in steps if step["status"] == "pending"]:
            ready = [step for step in pending if all(by_number[n]["status"] != "pending" for n in step["after"])]
            await asyncio.gather(*(self._run_step(ctx, step, steps) for step in ready))

    async def _run_step(self, ctx: RequestContext, step: dict[str, Any], steps: list[dict[str, Any]]) -> None:
        if self._budget.remaining() <= 0:
            return await self._finish(ctx, steps, step, "skipped", "not run: the request's time budget ran out")
        if not self._budget.take():
            return await self._finish(ctx, steps, step, "skipped", "not run: the request used all its tool calls")
        profile = self._book.get(step["agent"]) or self._book.default
        hint = t("agents_step", self._language, n=step["n"], total=len(steps), agent=profile.name,
                 task=_short(step["task"]))
        await self._progress(HINT_PREFIX + hint)
        step["status"] = "running"
        step_ctx = ctx.model_copy(update={"request_id": f"{ctx.request_id}.s{step['n']}"})
        task = _task_with_inputs(step, {s["n"]: s for s in steps})
        try:
            text = await asyncio.wait_for(
                self._runner.run(step_ctx, profile, task, self._budget), max(self._budget.remaining(), 0.01)
            )
        except TimeoutError:
            return await self._finish(ctx, steps, step, "skipped", "stopped: the request's time budget ran out")
        except ModelError as exc:
            log.warning("plan step %s (%s) failed: %s", step["n"], profile.name, exc)
            return await self._finish(ctx, steps, step, "failed", "the assistant did not answer")
        await self._finish(ctx, steps, step, "done", text[:STEP_RESULT_CHARS])

    async def _finish(
        self, ctx: RequestContext, steps: list[dict[str, Any]], step: dict[str, Any], status: str, result: str
    ) -> None:
        step["status"], step["result"] = status, result
        await self._save(ctx, steps, "running")

    async def _save(self, ctx: RequestContext, steps: list[dict[str, Any]], status: str) -> None:
        """Keep the plan as it stands (one write at a time: parallel steps
        finish together). A failed write only costs a resume its progress."""
        async with self._saving:
            try:
                await self._store.save_plan(
                    ctx.request_id, user_id=ctx.user_id, chat_id=ctx.chat_id, steps=steps, status=status
                )
            except AriumError as exc:
                log.warning("could not store the plan of %s: %s", ctx.request_id, exc)


def _task_with_inputs(step: dict[str, Any], by_number: dict[int, dict[str, Any]]) -> str:
    """The step's task, followed by the results of the steps it needs."""
    inputs = [
        f"Result of step {n} ({by_number[n]['agent']}, {by_number[n]['status']}):\n{by_number[n]['result']}"
        for n in step["after"]
    ]
    return "\n\n".join([step["task"], *inputs]) if inputs else step["task"]


def _step_view(step: dict[str, Any]) -> dict[str, Any]:
    view = {key: step[key] for key in ("n", "agent", "task", "status", "result")}
    if step.get("note"):
        view["note"] = step["note"]
    return view


def _short(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _turn_tool(
    name: str,
    description: str,
    func: Callable[[RequestContext, dict[str, Any]], Awaitable[str]],
    schema: dict[str, Any],
    timeout: float,
) -> Tool:
    return Tool(
        name=name,
        description=description,
        func=func,
        arguments=_NoArguments,
        injected={},
        is_async=True,
        timeout=timeout,
        input_schema=schema,
    )
