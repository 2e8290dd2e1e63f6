"""ToolCallManager: the model/tool loop of one turn.

It wraps the model stream: text of each round streams through as usual; when a
round ends in tool calls, it says so (a ``ToolsRunning`` event the channel
shows as a short hint), runs the calls in parallel, appends the results, and
asks the model again, until a round ends without calls or the round limit is
reached. The caller sees one stream that ends with one Completion."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Protocol

from bot.context import ChatType, RequestContext
from bot.errors import AriumError
from bot.i18n import t
from bot.llm.types import ChatMessage, ChatRequest, Completion, StreamEvent, ToolCall, Usage
from bot.storage.tool_events import ToolEventRecord
from bot.storage.tool_rounds import RecordedRound
from bot.tools.executor import ToolExecutor, ToolOutcome, ToolStatus, error_content
from bot.tools.registry import InvalidArguments, ToolRegistry, parse_arguments
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

    async def stream(self, ctx: RequestContext, request: ChatRequest) -> AsyncIterator[TurnEvent]:
        specs = self._registry.specs_for(ctx)
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
            yield ToolsRunning(self._hint(ctx, completion.tool_calls), tuple(c.name for c in completion.tool_calls))
            answers = await self.run_calls(ctx, completion.tool_calls, results)
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
        self, ctx: RequestContext, calls: tuple[ToolCall, ...], results: dict[str, ToolOutcome]
    ) -> list[str]:
        """One answer per call, in order. New distinct calls run in parallel;
        a call identical to one already made in this turn reuses its result."""
        keys = [_call_key(call) for call in calls]
        fresh: dict[str, ToolCall] = {}
        for key, call in zip(keys, calls):
            if key not in results and key not in fresh:
                fresh[key] = call
        outcomes = await asyncio.gather(*(self._answer(ctx, call) for call in fresh.values()))
        results.update(zip(fresh, outcomes))
        return [self._fit(results[key].content) for key in keys]

    async def _answer(self, ctx: RequestContext, call: ToolCall) -> ToolOutcome:
        """Every call id must get a result, whatever goes wrong on our side."""
        try:
            return await self._run_one(ctx, call)
        except Exception:
            log.exception("tool call %s could not be run", call.name)
            return ToolOutcome(ToolStatus.ERROR, error_content("error", "the tool could not be run"))

    async def _run_one(self, ctx: RequestContext, call: ToolCall) -> ToolOutcome:
        tool = self._registry.get(call.name)
        if tool is None or not tool.visible_to(ctx):
            # A hidden tool answers exactly like a missing one: no existence leak.
            status = "denied" if tool is not None else ToolStatus.UNKNOWN.value
            self._record(ctx, call.name, status, 0.0, None)
            names = ", ".join(t.name for t in self._registry.visible(ctx))
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

    def _hint(self, ctx: RequestContext, calls: tuple[ToolCall, ...]) -> str:
        hints: list[str] = []
        for call in calls:
            tool = self._registry.get(call.name)
            hint = tool.hint(ctx.language) if tool is not None and tool.visible_to(ctx) else None
            hint = hint or t("tools_working", ctx.language)
            if hint not in hints:
                hints.append(hint)
        return HINT_PREFIX + ", ".join(hints[:MAX_HINTS])


def _call_key(call: ToolCall) -> str:
    """Same tool and same arguments (as JSON values, key order ignored)."""
    try:
        arguments = json.dumps(json.loads(call.arguments or "{}"), sort_keys=True, ensure_ascii=False)
    except json.JSONDecodeError:
        arguments = call.arguments
    return f"{call.name}\x00{arguments}"
