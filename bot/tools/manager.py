"""ToolCallManager: the model/tool loop of one turn.

It wraps the model stream: text of each round streams through as usual; when a
round ends in tool calls, it says so (a ``ToolsRunning`` event the channel
shows as a short hint), runs the calls in parallel, appends the results, and
asks the model again, until a round ends without calls or the round limit is
reached. The caller sees one stream that ends with one Completion."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from bot.context import ChatType, RequestContext
from bot.errors import AriumError
from bot.i18n import t
from bot.llm.types import ChatMessage, ChatRequest, Completion, StreamEvent, ToolCall, Usage
from bot.storage.tool_events import ToolEventRecord
from bot.storage.tool_rounds import RecordedRound
from bot.tools.executor import ToolExecutor, ToolOutcome, ToolStatus, error_content, render_result
from bot.tools.registry import InvalidArguments, Tool, ToolRegistry, parse_arguments
from bot.tools.strings import HINT_PREFIX

log = logging.getLogger(__name__)

MAX_HINTS = 3


@dataclass(frozen=True)
class ToolsRunning:
    """Tools are about to run; ``hint`` is a short, localized progress line."""

    hint: str
    tools: tuple[str, ...]


class StreamingModel(Protocol):
    """The ModelService (the fallback chain), or a single Provider in tests and benchmarks."""

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]: ...


class ToolJournal(Protocol):
    """Where a running turn's tool rounds are kept until it is stored
    (bot/storage/tool_rounds.py), so a turn finished after a crash replays
    them instead of running its tools twice."""

    async def add(self, request_id: str, user_id: int, round_: RecordedRound) -> None: ...

    async def of(self, request_id: str) -> list[RecordedRound]: ...

    async def forget(self, request_id: str) -> None: ...


class ToolEventSink(Protocol):
    def record(self, event: ToolEventRecord) -> None:
        """Take the event without blocking; it is written later."""


@dataclass(frozen=True)
class ToolLoopConfig:
    max_rounds: int = 5
    result_chars: int = 4000


TurnEvent = StreamEvent | ToolsRunning


class CallBudget:
    """A cap on the tool calls of one request and its end in time, shared by
    an orchestrated turn and every step it delegates (a plan cannot loop)."""

    def __init__(self, max_calls: int, seconds: float) -> None:
        self.max_calls = max_calls
        self.used = 0
        self.deadline = time.monotonic() + seconds

    def take(self) -> bool:
        """Count one call; False once the cap is reached (the call is not made)."""
        if self.used >= self.max_calls:
            return False
        self.used += 1
        return True

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class ToolScope:
    """Which tools one turn may use (an agent's): ``allow`` filters the
    registry's, ``extra`` adds tools of this turn alone (an orchestrator's
    create_plan and delegate, which run on the loop, not in the executor),
    and ``budget`` caps the calls."""

    allow: Callable[[Tool], bool] | None = None
    extra: Mapping[str, Tool] = field(default_factory=dict)
    budget: CallBudget | None = None

    def offered(self, registry: ToolRegistry, ctx: RequestContext) -> list[Tool]:
        tools = [tool for tool in registry.visible(ctx) if self.allow is None or self.allow(tool)]
        return [*tools, *self.extra.values()]

    def find(self, registry: ToolRegistry, name: str) -> Tool | None:
        if name in self.extra:
            return self.extra[name]
        tool = registry.get(name)
        return tool if tool is not None and (self.allow is None or self.allow(tool)) else None


EVERY_TOOL = ToolScope()


class ToolCallManager:
    def __init__(
        self,
        *,
        models: StreamingModel,
        registry: ToolRegistry,
        executor: ToolExecutor,
        events: ToolEventSink | None,
        config: ToolLoopConfig,
        journal: ToolJournal | None = None,
    ) -> None:
        self._models = models
        self._registry = registry
        self._executor = executor
        self._events = events
        self._config = config
        self._journal = journal
        self._journaled: set[str] = set()  # request ids with rounds to forget when the turn ends

    async def stream(
        self, ctx: RequestContext, request: ChatRequest, scope: ToolScope = EVERY_TOOL
    ) -> AsyncIterator[TurnEvent]:
        """The turn's events; ``scope`` says which tools it may use (default: every tool the user may use)."""
        specs = tuple(tool.spec() for tool in scope.offered(self._registry, ctx))
        if not specs:
            async for event in self._models.stream(request):
                yield event
            return
        messages = list(request.messages)
        results: dict[str, ToolOutcome] = {}  # per turn: identical calls run once
        usage = Usage()
        done = await self._replay(ctx, messages, results)
        for round_number in range(done, self._config.max_rounds + 1):
            last_round = round_number == self._config.max_rounds
            ask = replace(
                request, messages=tuple(messages), tools=specs, tool_choice="none" if last_round else None
            )
            completion: Completion | None = None
            async for event in self._models.stream(ask):
                if isinstance(event, Completion):
                    completion = event
                else:
                    yield event
            assert completion is not None  # providers end every stream with one
            usage = Usage(
                usage.prompt_tokens + completion.usage.prompt_tokens,
                usage.completion_tokens + completion.usage.completion_tokens,
            )
            if not completion.tool_calls:
                yield replace(completion, usage=usage)
                return
            if last_round:
                # The model ignored tool_choice=none: stop here rather than loop.
                log.warning("tool round limit (%d) reached", self._config.max_rounds)
                text = completion.text or t("tools_round_limit", ctx.language)
                yield replace(completion, text=text, tool_calls=(), usage=usage, finish_reason="round_limit")
                return
            yield ToolsRunning(
                self._hint(ctx, completion.tool_calls, scope), tuple(c.name for c in completion.tool_calls)
            )
            answers = await self.run_calls(ctx, completion.tool_calls, results, scope)
            await self._keep(ctx, RecordedRound(completion.text, completion.tool_calls, tuple(answers)))
            messages.append(ChatMessage("assistant", completion.text, tool_calls=completion.tool_calls))
            messages.extend(
                ChatMessage("tool", content, tool_call_id=call.id, name=call.name)
                for call, content in zip(completion.tool_calls, answers)
            )

    async def _replay(self, ctx: RequestContext, messages: list[ChatMessage], results: dict[str, ToolOutcome]) -> int:
        """A turn finished after a crash: the rounds its tools already ran go
        back to the model as they were (and identical calls reuse their
        answers), so nothing is done twice. Returns how many rounds."""
        if not ctx.resumed or self._journal is None:
            return 0
        rounds = await self._journal.of(ctx.request_id)
        for done in rounds:
            messages.append(ChatMessage("assistant", done.text, tool_calls=done.calls))
            for call, answer in zip(done.calls, done.answers):
                messages.append(ChatMessage("tool", answer, tool_call_id=call.id, name=call.name))
                results[_call_key(call)] = ToolOutcome(ToolStatus.OK, answer)
        if rounds:
            self._journaled.add(ctx.request_id)
            log.info("resumed turn %s after %d tool round(s) already run", ctx.request_id, len(rounds))
        return len(rounds)

    async def _keep(self, ctx: RequestContext, round_: RecordedRound) -> None:
        if self._journal is None or ctx.chat_type is ChatType.API:
            return  # an API turn is not stored, so never resumed: its client holds the conversation
        try:
            await self._journal.add(ctx.request_id, ctx.user_id, round_)
            self._journaled.add(ctx.request_id)
        except AriumError as exc:  # the turn goes on; only a crash now would repeat these calls
            log.warning("could not keep the tool round of %s: %s", ctx.request_id, exc)

    async def turn_ended(self, ctx: RequestContext) -> None:
        """The turn's outcome is stored (an answer, or "unanswered"): its
        rounds will not be replayed and go."""
        if self._journal is not None and ctx.request_id in self._journaled:
            self._journaled.discard(ctx.request_id)
            try:
                await self._journal.forget(ctx.request_id)
            except AriumError as exc:  # leftover rows are only read when this turn is resumed, which it is not
                log.warning("could not forget the tool rounds of %s: %s", ctx.request_id, exc)

    async def run_calls(
        self,
        ctx: RequestContext,
        calls: tuple[ToolCall, ...],
        results: dict[str, ToolOutcome],
        scope: ToolScope = EVERY_TOOL,
    ) -> list[str]:
        """One answer per call, in order. New distinct calls run in parallel;
        a call identical to one already made in this turn reuses its result."""
        keys = [_call_key(call) for call in calls]
        fresh: dict[str, ToolCall] = {}
        for key, call in zip(keys, calls):
            if key not in results and key not in fresh:
                fresh[key] = call
        outcomes = await asyncio.gather(
            *(self._answer(_keyed(ctx, key), call, scope) for key, call in fresh.items())
        )
        results.update(zip(fresh, outcomes))
        # A plan's results are already cut per step (bot/agents/orchestrator.py):
        # the orchestrator composes its answer from all of them.
        return [
            results[key].content if call.name in scope.extra else self._fit(results[key].content)
            for key, call in zip(keys, calls)
        ]

    async def _answer(self, ctx: RequestContext, call: ToolCall, scope: ToolScope) -> ToolOutcome:
        """Every call id must get a result, whatever goes wrong on our side."""
        try:
            return await self._run_one(ctx, call, scope)
        except Exception:
            log.exception("tool call %s could not be run", call.name)
            return ToolOutcome(ToolStatus.ERROR, error_content("error", "the tool could not be run"))

    async def _run_one(self, ctx: RequestContext, call: ToolCall, scope: ToolScope) -> ToolOutcome:
        tool = scope.find(self._registry, call.name)
        if tool is None or not tool.visible_to(ctx):
            # A hidden tool (or one outside this agent's list) answers exactly
            # like a missing one: no existence leak.
            status = "denied" if tool is not None or self._registry.get(call.name) else ToolStatus.UNKNOWN.value
            self._record(ctx, call.name, status, 0.0, None)
            names = ", ".join(t.name for t in scope.offered(self._registry, ctx))
            return ToolOutcome(
                ToolStatus.UNKNOWN, error_content("unknown_tool", f"there is no tool {call.name!r}; tools: {names}")
            )
        try:
            arguments = parse_arguments(tool, call.arguments)
        except InvalidArguments as exc:
            self._record(ctx, tool.name, ToolStatus.INVALID.value, 0.0, str(exc))
            return ToolOutcome(
                ToolStatus.INVALID,
                error_content("invalid_arguments", f"{exc}. Fix the arguments and call {tool.name} again."),
            )
        if scope.budget is not None and not scope.budget.take():
            self._record(ctx, tool.name, "capped", 0.0, None)
            return ToolOutcome(
                ToolStatus.BUSY,
                error_content("call_limit", "this request has used all its tool calls; answer with what you have"),
            )
        if tool.name in scope.extra:
            outcome = await _run_turn_tool(tool, ctx, arguments)
        else:
            outcome = await self._executor.run(
                tool.name,
                ctx.user_id,
                self._registry.bind(tool, ctx, arguments),
                is_async=tool.is_async,
                timeout=tool.timeout,
            )
        self._record(
            ctx, tool.name, outcome.status.value, outcome.duration, None if outcome.ok else outcome.content,
            arguments=call.arguments,
        )
        return outcome

    def _record(
        self, ctx: RequestContext, tool: str, status: str, seconds: float, detail: str | None,
        *, arguments: str | None = None,
    ) -> None:
        if self._events is None:
            return
        self._events.record(
            ToolEventRecord(
                tool=tool[:64],
                status=status,
                duration_ms=round(seconds * 1000),
                user_id=ctx.user_id,
                chat_id=ctx.chat_id,
                request_id=ctx.request_id,
                detail=detail[:300] if detail else None,
                arguments=arguments,
            )
        )

    def _fit(self, content: str) -> str:
        budget = self._config.result_chars
        if len(content) <= budget:
            return content
        return f"{content[:budget]}\n[truncated: {len(content) - budget} more characters not shown]"

    def _hint(self, ctx: RequestContext, calls: tuple[ToolCall, ...], scope: ToolScope) -> str:
        hints: list[str] = []
        for call in calls:
            tool = scope.find(self._registry, call.name)
            hint = tool.hint(ctx.language) if tool is not None and tool.visible_to(ctx) else None
            hint = hint or t("tools_working", ctx.language)
            if hint not in hints:
                hints.append(hint)
        return HINT_PREFIX + ", ".join(hints[:MAX_HINTS])


async def _run_turn_tool(tool: Tool, ctx: RequestContext, arguments: dict[str, object]) -> ToolOutcome:
    """A tool of the turn itself (an orchestrator's): our own async code that
    runs other tools through the executor, so it must not hold one of the
    user's executor slots while it waits for them."""
    started = time.monotonic()
    try:
        value = await asyncio.wait_for(tool.func(ctx, arguments), tool.timeout)
    except TimeoutError:
        return ToolOutcome(ToolStatus.TIMEOUT, error_content("timeout", "the step ran out of time"))
    except Exception:
        log.exception("turn tool %s failed", tool.name)
        return ToolOutcome(ToolStatus.ERROR, error_content("error", "the tool could not be run"))
    return ToolOutcome(ToolStatus.OK, render_result(value), time.monotonic() - started)


# RequestContext.tool_call_key fits the idempotency_key columns (String(64)).
TOOL_CALL_KEY_CHARS = 64
_CALL_DIGEST_CHARS = 16  # 64 bits: collisions need the same turn, so this is plenty


def tool_call_key(request_id: str, call_key: str) -> str:
    """The idempotency key of one tool call: the turn's request id (kept by a
    turn resumed after a crash) and a hash of ``_call_key``, so the same turn
    making the same call again gets the same key, and the per-turn cache and
    the key agree on what "the same call" is. Every turn gets keys, API turns
    too: they are never resumed, so their keys only ever meet calls the cache
    already runs once, and one rule is simpler than an exception."""
    # surrogatepass: JSON arguments may decode to lone surrogates ("\ud800").
    digest = hashlib.sha256(call_key.encode("utf-8", "surrogatepass")).hexdigest()[:_CALL_DIGEST_CHARS]
    if len(request_id) + 1 + len(digest) > TOOL_CALL_KEY_CHARS:
        # Nested delegation steps grow their request ids; hash rather than
        # cut, so two steps never share a prefix and so a key.
        request_id = hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{request_id}:{digest}"


def _keyed(ctx: RequestContext, call_key: str) -> RequestContext:
    """The context one tool call receives: the turn's, with the call's key."""
    return ctx.model_copy(update={"tool_call_key": tool_call_key(ctx.request_id, call_key)})


def _call_key(call: ToolCall) -> str:
    """Same tool and same arguments (as JSON values, key order ignored)."""
    try:
        arguments = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True, ensure_ascii=False)
    except json.JSONDecodeError:
        arguments = call.arguments
    return f"{call.name}\x00{arguments}"
