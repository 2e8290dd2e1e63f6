"""Running a suite: every task as a fresh eval user, through the real
inbound path (gates, input checks) and conversation (history, memory,
tools, reminders), under one or two configurations (variants A and B),
with bounded concurrency, a time limit and a tool-call cap per task.

An eval user exists only for its task: its data (messages, memories,
reminders, files, the user row) is erased when the task ends, and the
transcript lives on in the task's stored result. While it runs, its id lies
in a range the listings, counts and broadcasts leave out (EVAL_USER_MIN),
and a headless bot writes no usage or tool statistics, so /stats never
sees an evaluation."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.admin.stats import ModelPrice, price_for, prices_from, split_usage_model
from bot.channels.inbound import Arrival
from bot.context import ChatType, RequestContext
from bot.eval.suite import AGENT_CHECK, NEW_CONVERSATION, Expect, Suite, Task
from bot.identity import API, local_chat_id
from bot.llm.types import ChatMessage, ChatRequest
from bot.storage.evals import CheckOutcome, EvalRepository, TaskOutcome
from bot.storage.models import EVAL_USER_MIN, User
from bot.storage.repositories import UserProfile
from bot.storage.tool_events import ToolEventRecord

if TYPE_CHECKING:
    from bot.agents.desk import AgentDesk
    from bot.app import Arium

log = logging.getLogger(__name__)

JUDGE_PROMPT = (
    "You grade an AI assistant's answer against a rubric. Reply with one word, PASS or FAIL, "
    "then a colon and one short sentence of reason.\n\nRubric: {rubric}\n\nConversation:\n{transcript}"
)
EMBEDDER_WAIT = 120.0  # seconds: memory tasks need semantic recall ready
MULTI_AGENT_OFF = "multi-agent mode is off in this variant"


@dataclass
class Variant:
    """One configuration under test: a started headless bot."""

    label: str  # "A" or "B"
    app: Arium
    description: str  # what configured it: the model chain, the config file
    prices: dict[str, ModelPrice] = field(default_factory=dict)

    @classmethod
    def of(cls, label: str, app: Arium, description: str) -> Variant:
        return cls(label, app, description, prices_from(app.settings.model_prices))


@dataclass
class Progress:
    """What a terminal progress line shows."""

    total: int
    done: int = 0
    passed: int = 0

    def line(self) -> str:
        width = 30
        filled = width * self.done // max(self.total, 1)
        return f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}, {self.passed} passed"


class _Sink:
    """A turn's ReplySink that keeps the answer and when its first piece came."""

    def __init__(self, started: float) -> None:
        self._started = started
        self.first_token_ms: int | None = None
        self.text = ""
        self.notice_text: str | None = None

    def _first(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = round((time.monotonic() - self._started) * 1000)

    async def update(self, text: str) -> None:
        self._first()
        self.text = text

    async def finish(self, text: str) -> None:
        self._first()
        self.text = text

    async def notice(self, text: str) -> None:
        self.notice_text = text

    async def progress(self, hint: str) -> None:
        return None


@dataclass
class _Measured:
    transcript: list[tuple[str, str]] = field(default_factory=list)
    agents: list[str | None] = field(default_factory=list)  # one per transcript entry (multi-agent mode)
    first_token_ms: int | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None
    models: list[str] = field(default_factory=list)
    fallbacks: int = 0
    error: str | None = None


class ToolLog:
    """Tool calls per eval user, from the bot's event bus."""

    def __init__(self) -> None:
        self.calls: dict[int, list[ToolEventRecord]] = defaultdict(list)

    def record(self, event: ToolEventRecord) -> None:
        if event.user_id >= EVAL_USER_MIN:
            self.calls[event.user_id].append(event)


class EvalRunner:
    def __init__(
        self,
        repository: EvalRepository,
        variants: list[Variant],
        *,
        concurrency: int = 4,
        on_progress: Callable[[Progress], None] = lambda _: None,
    ) -> None:
        self._repository = repository
        self._variants = variants
        self._concurrency = max(1, concurrency)
        self._on_progress = on_progress
        self._tools: dict[str, ToolLog] = {}
        for variant in variants:
            log_ = ToolLog()
            variant.app.events.subscribe(ToolEventRecord, log_.record)
            self._tools[variant.label] = log_
        self._next_user: int | None = None
        self._user_lock = asyncio.Lock()

    async def run(self, suite: Suite, *, name: str | None = None) -> str:
        """Run every task under every variant; returns the run id."""
        run_id = uuid.uuid4().hex[:12]
        jobs = [(variant, task) for task in suite.tasks for variant in self._variants]
        await self._repository.start_run(
            run_id, suite.name, name, {v.label: v.description for v in self._variants}, len(jobs), self._concurrency
        )
        for variant in self._variants:
            await variant.app.memory.embeddings.wait_ready(EMBEDDER_WAIT)
        progress = Progress(len(jobs))
        self._on_progress(progress)
        slots = asyncio.Semaphore(self._concurrency)

        async def one(variant: Variant, task: Task) -> None:
            async with slots:
                outcome = await self.run_task(suite, variant, task)
            await self._repository.add_result(run_id, outcome)
            progress.done += 1
            progress.passed += outcome.passed
            self._on_progress(progress)

        try:
            await asyncio.gather(*(one(variant, task) for variant, task in jobs))
        except BaseException:
            await self._repository.finish_run(run_id, "failed")
            raise
        await self._repository.finish_run(run_id)
        return run_id

    async def run_task(self, suite: Suite, variant: Variant, task: Task) -> TaskOutcome:
        user_id = await self._new_user_id(variant.app)
        started = time.monotonic()
        measured = _Measured()
        try:
            async with asyncio.timeout(suite.time_limit(task)):
                await self._converse(variant, task, user_id, measured, suite.tool_cap(task))
        except TimeoutError:
            measured.error = f"timed out after {suite.time_limit(task):g} s"
        except Exception as exc:  # one broken task must not end the run
            log.exception("eval task %s failed", task.id)
            measured.error = f"{exc.__class__.__name__}: {str(exc)[:200]}"
        total_ms = round((time.monotonic() - started) * 1000)
        calls = self._tools[variant.label].calls.pop(user_id, [])
        agents = tuple(measured.agents) if any(measured.agents) else ()
        checks = await self._checks(variant, task, measured, calls)
        checks += agent_checks(task.expect, variant.app.agents, agents[-1] if agents else None)
        await self._erase(variant.app, user_id)
        passed = measured.error is None and all(check.passed for check in checks)
        return TaskOutcome(
            task_id=task.id, category=task.category, variant=variant.label, passed=passed, checks=tuple(checks),
            transcript=tuple(measured.transcript), total_ms=total_ms, first_token_ms=measured.first_token_ms,
            tokens_in=measured.tokens_in, tokens_out=measured.tokens_out, cost=measured.cost,
            tools=tuple(call.tool for call in calls), model=measured.models[-1] if measured.models else None,
            fallbacks=measured.fallbacks, error=measured.error, agents=agents,
        )

    # One task's conversation -----------------------------------------------------

    async def _converse(self, variant: Variant, task: Task, user_id: int, measured: _Measured, cap: int) -> None:
        app = variant.app
        profile = UserProfile(user_id, first_name="Eval", language=task.language)
        chat_id = local_chat_id(API, user_id)
        for turn in task.turns:
            text = turn.strip()
            if not text:
                continue
            ctx = await self._admit(app, profile, chat_id)
            if ctx is None:
                measured.error = "refused by the gates (access mode, ban or rate limit)"
                return
            if task.timezone != ctx.timezone:
                await app.reminders.set_timezone(ctx, task.timezone)
                ctx = ctx.model_copy(update={"timezone": task.timezone})
            if text == NEW_CONVERSATION:
                await app.turn_memory.extract_now(user_id)  # what the last conversation taught is stored first
                await app.conversation.new_conversation(ctx)
                continue
            await self._turn(variant, ctx, text, measured)
            if len(self._tools[variant.label].calls.get(user_id, [])) > cap:
                measured.error = f"more than {cap} tool calls"
                return

    async def _admit(self, app: Arium, profile: UserProfile, chat_id: int) -> RequestContext | None:
        arrival = Arrival(profile, chat_id, ChatType.API, datetime.now(timezone.utc), reaches_model=True)

        async def ignore(_: str) -> None:
            return None

        return await app.inbound.admit(arrival, ignore)

    async def _turn(self, variant: Variant, ctx: RequestContext, text: str, measured: _Measured) -> None:
        sink = _Sink(time.monotonic())
        result = await variant.app.inbound.converse(ctx, text, sink)
        answer = sink.text or sink.notice_text or ""
        measured.transcript.append((text, answer))
        measured.agents.append(result.agent if result is not None else None)
        if measured.first_token_ms is None:
            measured.first_token_ms = sink.first_token_ms
        if result is None:
            return  # the input check answered (sink.notice)
        measured.tokens_in += result.tokens_in or 0
        measured.tokens_out += result.tokens_out or 0
        if result.model:
            measured.models.append(result.model)
            measured.fallbacks += self._is_fallback(variant, result.model)
            price = price_for(result.model, variant.prices)
            if price is not None:
                measured.cost = (measured.cost or 0.0) + price.cost(result.tokens_in or 0, result.tokens_out or 0)
        if result.status == "failed":
            measured.error = "no model answered"

    @staticmethod
    def _is_fallback(variant: Variant, model: str) -> bool:
        tier, _ = split_usage_model(model)
        tiers = variant.app.models.tiers()
        return bool(tiers and tier is not None and tier != tiers[0].name)

    # Verdicts -----------------------------------------------------------------------

    async def _checks(
        self, variant: Variant, task: Task, measured: _Measured, calls: list[ToolEventRecord]
    ) -> list[CheckOutcome]:
        answer = measured.transcript[-1][1] if measured.transcript else ""
        checks = text_checks(task.expect, answer) + tool_checks(task.expect, calls)
        if task.expect.rubric:
            checks.append(await self._judge(variant, task.expect.rubric, measured.transcript))
        return checks

    async def _judge(self, variant: Variant, rubric: str, transcript: list[tuple[str, str]]) -> CheckOutcome:
        """A rubric, graded by the variant's own model chain at temperature 0."""
        lines = "\n".join(f"User: {user}\nAssistant: {assistant}" for user, assistant in transcript)
        request = ChatRequest(
            messages=(ChatMessage("user", JUDGE_PROMPT.format(rubric=rubric, transcript=lines)),),
            max_tokens=80, temperature=0,
        )
        try:
            completion = await variant.app.models.complete(request, cache=True)
        except Exception as exc:  # the judge failing is a failed check, not a crashed run
            return CheckOutcome(f"rubric: {rubric[:60]}", False, f"the judge did not answer ({exc.__class__.__name__})")
        verdict = completion.text.strip()
        return CheckOutcome(f"rubric: {rubric[:60]}", verdict.upper().startswith("PASS"), verdict[:200])

    # Eval users ------------------------------------------------------------------------

    async def _new_user_id(self, app: Arium) -> int:
        """The next id in the eval range, above any left by an earlier run."""
        async with self._user_lock:
            if self._next_user is None:
                async with app.db.reading() as s:
                    highest = await s.scalar(select(func.max(User.id)).where(User.id >= EVAL_USER_MIN))
                self._next_user = (highest or EVAL_USER_MIN - 1) + 1
            user_id = self._next_user
            self._next_user += 1
            return user_id

    @staticmethod
    async def _erase(app: Arium, user_id: int) -> None:
        try:
            if app.agents is not None:
                await app.agents.records.flush()  # batched: written now, so the erase finds them
            await app.userdata.erase(user_id)
        except Exception:  # noqa: BLE001 - leftovers stay out of listings anyway (EVAL_USER_MIN)
            log.warning("could not erase eval user %s", user_id, exc_info=True)


def text_checks(expect: Expect, answer: str) -> list[CheckOutcome]:
    """Checks of the final answer; a failed one shows the answer's start."""
    folded = answer.casefold()
    verdicts = [(f"contains: {needle}", needle.casefold() in folded) for needle in expect.contains]
    verdicts += [(f"not_contains: {needle}", needle.casefold() not in folded) for needle in expect.not_contains]
    if expect.regex is not None:
        verdicts.append((f"regex: {expect.regex}", re.search(expect.regex, answer, re.IGNORECASE | re.DOTALL) is not None))
    return [CheckOutcome(name, ok, "" if ok else f"answer: {answer[:200]}") for name, ok in verdicts]


def agent_checks(expect: Expect, desk: AgentDesk | None, answered: str | None) -> list[CheckOutcome]:
    """``expect.agent``: that agent answered the last turn."""
    if expect.agent is None:
        return []
    name = f"{AGENT_CHECK}{expect.agent}"
    if desk is None or not desk.active:
        return [CheckOutcome(name, False, MULTI_AGENT_OFF)]
    if desk.book.get(expect.agent) is None:
        known = ", ".join(profile.name for profile in desk.book)
        return [CheckOutcome(name, False, f"this variant has no agent {expect.agent!r} (it has {known})")]
    passed = answered == expect.agent
    return [CheckOutcome(name, passed, "" if passed else f"answered by: {answered or 'no agent recorded'}")]


def tool_checks(expect: Expect, calls: list[ToolEventRecord]) -> list[CheckOutcome]:
    called = [call.tool for call in calls]
    checks = [
        CheckOutcome(f"tool: {name}", name in called, "" if name in called else f"called: {', '.join(called) or 'none'}")
        for name in expect.tool
    ]
    for name, needles in expect.tool_args.items():
        arguments = [call.arguments or "" for call in calls if call.tool == name]
        for needle in needles:
            hit = any(needle.casefold() in _readable(raw).casefold() for raw in arguments)
            checks.append(
                CheckOutcome(f"tool_args: {name} {needle}", hit, "" if hit else f"arguments: {arguments[:3]}")
            )
    if expect.no_tools:
        checks.append(CheckOutcome("no_tools", not called, f"called: {', '.join(called)}" if called else ""))
    return checks


def _readable(raw: str) -> str:
    """Arguments with JSON escapes undone, so "9:00" and Cyrillic text match as written."""
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False)
    except ValueError:
        return raw
