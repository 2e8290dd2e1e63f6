"""One chat turn, independent of any channel: recall history and memories,
render the prompt, stream the model's answer to a ReplySink, persist both
sides, then let memory learn from the turn in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from bot.context import RequestContext
from bot.runtime.events import EventBus, TurnFinished
from bot.errors import ModelError, ModelUnavailable, NoVisionModel, StreamBrokenError
from bot.i18n import t
from bot.llm.service import ModelService
from bot.llm.types import ChatMessage, ChatRequest, Completion, ImagePart, TextDelta, estimate_tokens
from bot.memory.records import Hit
from bot.memory.summary import HistorySummarizer
from bot.memory.turn import TurnMemory, memory_lines
from bot.prompts import PromptRegistry, PromptTemplate
from bot.storage.repositories import UNANSWERED, MessageRepository, StoredMessage, TurnStart, UnfinishedTurn
from bot.tools.manager import EVERY_TOOL, ToolCallManager, ToolScope, ToolsRunning

if TYPE_CHECKING:  # the agents feature imports this module's ReplySink
    from bot.agents.desk import AgentDesk
    from bot.agents.profiles import AgentProfile
    from bot.agents.router import Route

NO_MEMORIES = "(nothing relevant remembered)"
NO_SUMMARY = "(none: the messages that follow are the whole conversation)"

log = logging.getLogger(__name__)


class ReplySink(Protocol):
    """Where a turn's answer goes; each channel provides one per turn."""

    async def update(self, text: str) -> None:
        """The answer so far (the channel decides how often to show it)."""

    async def finish(self, text: str) -> None:
        """The complete answer, to be delivered in full."""

    async def notice(self, text: str) -> None:
        """A short service message instead of an answer."""

    async def progress(self, hint: str) -> None:
        """A short status while tools run ("checking the time…"); the answer replaces it."""


@dataclass(frozen=True)
class TurnResult:
    text: str
    status: str  # complete | partial | failed
    model: str | None = None
    prompt_version: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    agent: str | None = None  # multi-agent mode: the agent that answered; None: single-agent mode


@dataclass(frozen=True)
class ConversationConfig:
    bot_name: str = "Arium"
    history_tokens: int = 4000
    max_answer_tokens: int = 1500


class Conversation:
    def __init__(
        self,
        *,
        messages: MessageRepository,
        prompts: PromptRegistry,
        models: ModelService,
        config: ConversationConfig,
        tools: ToolCallManager | None = None,
        memory: TurnMemory | None = None,
        summarizer: HistorySummarizer | None = None,
        events: EventBus | None = None,
        agents: AgentDesk | None = None,
    ) -> None:
        self._messages = messages
        self._prompts = prompts
        self._models = models
        self._config = config
        self._tools = tools
        self._memory = memory
        self._summarizer = summarizer
        self._events = events or EventBus()
        # Multi-agent mode (bot/agents/); None or off: every turn is the assistant's, as always.
        self.agents = agents

    async def handle(
        self,
        ctx: RequestContext,
        text: str,
        sink: ReplySink,
        *,
        chat_title: str | None = None,
        images: tuple[ImagePart, ...] = (),
    ) -> TurnResult:
        """One turn. ``images`` (a photo) go to the model with this message
        only; history keeps a note of them, not the bytes."""
        started = time.monotonic()
        if images:
            text = image_note(len(images), text)
        content = text if ctx.is_private else f"{ctx.user_name}: {text}"
        # Recall runs beside the history query; both only read.
        start, hits = await asyncio.gather(
            self._messages.start_turn(
                chat_id=ctx.chat_id,
                chat_type=ctx.chat_type.value,
                chat_title=chat_title,
                user_id=ctx.user_id,
                text=content,
                tokens=estimate_tokens(content),
                request_id=ctx.request_id,
                history_tokens=self._config.history_tokens,
            ),
            self._memory.recall(ctx, text) if self._memory else _no_hits(),
        )
        return await self._answer(ctx, text, content, start, hits, sink, started, images)

    def prefetch_recall(self, user_id: int, text: str) -> None:
        """``text`` is about to reach ``handle`` in ``user_id``'s private chat
        (it is passing the gates): memory may start on its recall now."""
        if self._memory is not None:
            self._memory.prefetch(user_id, text)

    async def note_preview(self, request_id: str, message_ids: tuple[int, ...]) -> None:
        """The channel's messages showing this running turn's answer so far
        (a group's live preview), kept with the turn for a finish after a crash."""
        await self._messages.note_preview(request_id, message_ids)

    async def resume(self, ctx: RequestContext, turn: UnfinishedTurn, sink: ReplySink) -> TurnResult:
        """Answers a user message that is already stored, whose turn a crash
        cut short (bot/recovery.py): the history before it, the same steps
        after."""
        started = time.monotonic()
        budget = self._config.history_tokens
        window = await self._messages.window(turn.conversation_id, budget, before_id=turn.message_id)
        tokens = estimate_tokens(turn.content)
        start = TurnStart(
            turn.conversation_id, turn.message_id, window.history, window.summary, window.overflow,
            window.unsummarized_tokens + tokens,
        )
        hits = await self._memory.recall(ctx, turn.content) if self._memory else []
        return await self._answer(ctx, turn.content, turn.content, start, hits, sink, started)

    async def _answer(
        self,
        ctx: RequestContext,
        text: str,
        content: str,
        start: TurnStart,
        hits: list[Hit],
        sink: ReplySink,
        started: float,
        images: tuple[ImagePart, ...] = (),
    ) -> TurnResult:
        """The model's answer to the stored user message ``start`` names,
        streamed to ``sink`` and stored; the message is marked answered, or
        unanswered when no model answered."""
        route: Route | None = None
        try:
            route = await self._route(ctx, text)
            result = await self._run_turn(ctx, content, start, hits, sink, images, route)
        except Exception:
            # The channel tells the user something went wrong: not a turn to
            # finish after a restart. (A cancelled turn, at a stop that ran
            # out of time, stays pending and is finished at the next start.)
            with contextlib.suppress(Exception):
                await self._messages.settle(start.user_message_id, UNANSWERED)
                if self._tools is not None:
                    await self._tools.turn_ended(ctx)
            raise
        if result.status != "failed":
            await self._messages.add_assistant_message(
                conversation_id=start.conversation_id,
                chat_id=ctx.chat_id,
                user_id=ctx.user_id,
                text=result.text,
                tokens=estimate_tokens(result.text),
                status=result.status,
                request_id=ctx.request_id,
                model=result.model,
                prompt_version=result.prompt_version,
                tokens_in=result.tokens_in,
                tokens_out=result.tokens_out,
                answers=start.user_message_id,
            )
            self._after_turn(ctx, text, start, result)
        else:
            await self._messages.settle(start.user_message_id, UNANSWERED)
        if self._tools is not None:
            await self._tools.turn_ended(ctx)
        return self._finished(ctx, result, started, route)

    async def _route(self, ctx: RequestContext, text: str) -> Route | None:
        """The agent for this turn in multi-agent mode; None in single-agent mode."""
        if self.agents is None or not self.agents.active:
            return None
        return await self.agents.choose(ctx, text)

    async def _run_turn(
        self,
        ctx: RequestContext,
        content: str,
        start: TurnStart,
        hits: list[Hit],
        sink: ReplySink,
        images: tuple[ImagePart, ...] = (),
        route: Route | None = None,
    ) -> TurnResult:
        history, summary = await self._fold_if_needed(start)
        memories, summary_text = memory_lines(hits) or NO_MEMORIES, summary or NO_SUMMARY
        agent = route.agent if route is not None else None
        system, template = self._system_prompt(ctx, memories=memories, summary=summary_text, agent=agent)
        request = ChatRequest(
            messages=(system, *_history_messages(history), ChatMessage("user", content, images=images)),
            max_tokens=self._config.max_answer_tokens,
        )
        if route is None:
            return await self._run_model(ctx, request, sink, template.ref)
        return await self._run_agent(ctx, request, sink, template.ref, route, memories, summary_text)

    async def _run_agent(
        self,
        ctx: RequestContext,
        request: ChatRequest,
        sink: ReplySink,
        prompt_ref: str,
        route: Route,
        memories: str,
        summary: str,
    ) -> TurnResult:
        """The turn as the routed agent (``request``'s system prompt already
        carries its instructions): its tools, model tier and sampling, and
        the label on the answer. ``memories`` and ``summary`` give the
        system prompts of the agents an orchestrator hands steps to."""
        assert self.agents is not None

        def system_for(profile: AgentProfile) -> ChatMessage:
            return self._system_prompt(ctx, memories=memories, summary=summary, agent=profile)[0]

        setup = self.agents.setup(ctx, route, sink, tools=self._tools, system_for=system_for)
        request = replace(
            request,
            max_tokens=setup.max_tokens or request.max_tokens,
            temperature=setup.temperature,
            prefer_tier=setup.prefer_tier,
        )
        return await self._run_model(ctx, request, setup.sink, prompt_ref, setup.scope)

    async def handle_client_history(
        self, ctx: RequestContext, messages: Sequence[ChatMessage], sink: ReplySink
    ) -> TurnResult:
        """A turn whose conversation the client keeps and sends whole (the
        HTTP API): Arium's system prompt with the user's memories goes first,
        then the client's messages as they came. Nothing is stored as chat
        history (the client owns it); usage counts as for any turn, and tools
        (reminders, remember) act for the user as always."""
        started = time.monotonic()
        last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
        hits = await self._memory.recall(ctx, last_user) if self._memory and last_user else []
        memories = memory_lines(hits) or NO_MEMORIES
        route = await self._route(ctx, last_user) if last_user else None
        system, template = self._system_prompt(
            ctx, memories=memories, agent=route.agent if route is not None else None
        )
        request = ChatRequest(messages=(system, *messages), max_tokens=self._config.max_answer_tokens)
        if route is None:
            result = await self._run_model(ctx, request, sink, template.ref)
        else:
            result = await self._run_agent(ctx, request, sink, template.ref, route, memories, NO_SUMMARY)
        return self._finished(ctx, result, started, route)

    def _finished(
        self, ctx: RequestContext, result: TurnResult, started: float, route: Route | None = None
    ) -> TurnResult:
        """Publish the finished turn; returns the result, naming its agent in multi-agent mode."""
        if route is not None and self.agents is not None:
            self.agents.record(ctx, route, result, time.monotonic() - started)
        self._events.publish(
            TurnFinished(
                user_id=ctx.user_id,
                chat_id=ctx.chat_id,
                model=result.model,
                status=result.status,
                tokens_in=result.tokens_in or 0,
                tokens_out=result.tokens_out or 0,
                seconds=time.monotonic() - started,
            )
        )
        return result if route is None else replace(result, agent=route.agent.name)

    async def _fold_if_needed(self, start: TurnStart) -> tuple[list[StoredMessage], str | None]:
        """History and summary for this turn; if messages would fall out of the
        window unsummarized, fold them into the summary first."""
        if not (start.overflow and self._summarizer and await self._summarizer.fold_now(start.conversation_id)):
            return start.history, start.summary
        window = await self._messages.window(
            start.conversation_id, self._config.history_tokens, before_id=start.user_message_id
        )
        return window.history, window.summary

    def _after_turn(self, ctx: RequestContext, text: str, start: TurnStart, result: TurnResult) -> None:
        if self._summarizer:
            self._summarizer.after_turn(start.conversation_id, start.unsummarized_tokens + estimate_tokens(result.text))
        if self._memory and result.status == "complete":
            self._memory.after_turn(ctx, text, result.text, start.user_message_id, start.history)

    async def new_conversation(self, ctx: RequestContext, chat_title: str | None = None) -> None:
        await self._messages.new_conversation(ctx.chat_id, ctx.chat_type.value, chat_title)

    def _system_prompt(
        self,
        ctx: RequestContext,
        *,
        memories: str = NO_MEMORIES,
        summary: str = NO_SUMMARY,
        agent: AgentProfile | None = None,
    ) -> tuple[ChatMessage, PromptTemplate]:
        """The system message; an agent's instructions follow the assistant's own."""
        local = ctx.local_now(ctx.received_at)
        variables: dict[str, object] = {
            "bot_name": self._config.bot_name,
            "user_name": ctx.user_name,
            "language": ctx.language,
            "local_time": local.strftime("%A, %Y-%m-%d %H:%M"),
            "timezone": ctx.timezone,
            "chat_kind": "private chat" if ctx.is_private else "group chat",
            "memories": memories,
            "summary": summary,
        }
        rendered, template = self._prompts.render("system", variables)
        if agent is not None and self.agents is not None:
            extra = self.agents.instructions(agent, variables)
            if extra:
                rendered = f"{rendered}\n\n{extra}"
        return ChatMessage("system", rendered), template

    async def _run_model(
        self, ctx: RequestContext, request: ChatRequest, sink: ReplySink, prompt_ref: str,
        scope: ToolScope = EVERY_TOOL,
    ) -> TurnResult:
        try:
            completion, streamed = await self._stream_answer(ctx, request, sink, scope)
        except StreamBrokenError as exc:
            log.warning("stream broke after %d chars: %s", len(exc.partial_text), exc)
            await sink.finish(f"{exc.partial_text}\n\n{t('stream_broken', ctx.language)}")
            return TurnResult(exc.partial_text, "partial", exc.answered_by or None, prompt_ref)
        except NoVisionModel:
            await sink.notice(t("vision_unavailable", ctx.language))
            return TurnResult("", "failed", None, prompt_ref)
        except ModelError as exc:
            log.error("model failed: %s: %s", exc.__class__.__name__, exc)
            await sink.notice(t("model_failed", ctx.language))
            return TurnResult("", "failed", None, prompt_ref)
        answer = completion.text or streamed
        await sink.finish(answer)
        return TurnResult(
            answer,
            "complete",
            completion.endpoint or completion.model,
            prompt_ref,
            completion.usage.prompt_tokens,
            completion.usage.completion_tokens,
        )

    async def _stream_answer(
        self, ctx: RequestContext, request: ChatRequest, sink: ReplySink, scope: ToolScope = EVERY_TOOL
    ) -> tuple[Completion, str]:
        """Show the answer as it streams (with a hint while tools run); return
        the Completion and the text shown."""
        shown: list[str] = []
        events = self._tools.stream(ctx, request, scope) if self._tools else self._models.stream(request)
        # aclosing: leaving the loop at the Completion closes the stream now,
        # not whenever the generator happens to be collected.
        async with aclosing(events) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    shown.append(event.text)
                    await sink.update("".join(shown))
                elif isinstance(event, ToolsRunning):
                    shown.clear()  # the next round writes the answer afresh
                    await sink.progress(event.hint)
                else:
                    return event, "".join(shown)
        raise ModelUnavailable("the model stream ended without an answer", failures=[])


def image_note(count: int, caption: str) -> str:
    """What history keeps of a photo: that there was one, and its caption.
    Later turns (and a turn finished after a crash) see this note, not the
    image."""
    note = "[The user sent a photo.]" if count == 1 else f"[The user sent {count} photos.]"
    return f"{note}\n{caption}" if caption else note


async def _no_hits() -> list[Hit]:
    return []


def _history_messages(history: list[StoredMessage]) -> list[ChatMessage]:
    return [ChatMessage("assistant" if m.role == "assistant" else "user", m.content) for m in history]
