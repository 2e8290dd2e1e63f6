"""The agent desk: multi-agent mode on or off (kept across restarts), the
agent each chat pinned, the choice of agent for a turn, what that agent
changes in the turn (instructions, tools, model, sampling, the orchestrator's
tools), and a record per turn for /stats and the eval harness."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.agents.orchestrator import MAX_STEPS, Orchestration, StepRunner, StepTools
from bot.agents.profiles import AgentBook, AgentProfile
from bot.agents.router import AgentRouter, Route
from bot.context import ChatType, RequestContext
from bot.llm.types import ChatMessage
from bot.prompts import PromptRegistry
from bot.runtime.events import BatchWriter
from bot.runtime.tasks import TaskTracker
from bot.storage.agents import AgentRepository, AgentTurnRecord
from bot.storage.runtime import RuntimeSettingsRepository
from bot.tools.manager import EVERY_TOOL, CallBudget, ToolScope

if TYPE_CHECKING:
    from bot.conversation import ReplySink, TurnResult

log = logging.getLogger(__name__)

MODE_KEY = "agents_mode"
RECENT_CHATS = 20_000  # chats whose last agent is remembered, to count switches


@dataclass(frozen=True)
class DeskConfig:
    multi_at_start: bool = False
    max_tool_calls: int = 16
    plan_seconds: float = 180.0
    max_answer_tokens: int = 1500


@dataclass(frozen=True)
class AgentTurnSetup:
    """What the chosen agent changes in one turn."""

    scope: ToolScope
    sink: ReplySink
    max_tokens: int | None
    temperature: float | None
    prefer_tier: str | None


class AgentDesk:
    def __init__(
        self,
        book: AgentBook,
        router: AgentRouter,
        store: AgentRepository,
        settings: RuntimeSettingsRepository,
        prompts: PromptRegistry,
        tasks: TaskTracker,
        config: DeskConfig,
    ) -> None:
        self.book = book
        self.router = router
        self.store = store
        self._settings = settings
        self._prompts = prompts
        self._config = config
        self.multi = config.multi_at_start
        self._pins: dict[int, str] = {}
        self._last: OrderedDict[int, str] = OrderedDict()
        self.records = BatchWriter(store.add_turns, tasks, name="agent turns")

    @property
    def active(self) -> bool:
        """Multi-agent mode is on and there is an agent besides the default one."""
        return self.multi and bool(self.book.specialists())

    async def restore(self) -> None:
        """The mode an admin chose with /agents, and the chats' pins, as they were before the restart."""
        saved = await self._settings.get(MODE_KEY)
        if isinstance(saved, str) and saved in ("single", "multi"):
            self.multi = saved == "multi"
        elif saved is not None:
            log.error("saved agents mode %r is malformed; using the configured one", saved)
        pins = await self.store.pins()
        self._pins = {chat: name for chat, name in pins.items() if self.book.get(name) is not None}
        if len(self._pins) < len(pins):
            gone = len(pins) - len(self._pins)
            log.warning("%d chats pinned agents that are no longer configured; they are routed again", gone)

    # Admin and chat commands ------------------------------------------------

    async def set_mode(self, multi: bool, *, by: int) -> None:
        await self._settings.set(MODE_KEY, "multi" if multi else "single", by=by)  # stored first
        self.multi = multi
        log.info("multi-agent mode %s by %s", "on" if multi else "off", by)

    def pinned(self, chat_id: int) -> AgentProfile | None:
        name = self._pins.get(chat_id)
        return self.book.get(name) if name is not None else None

    async def pin(self, chat_id: int, profile: AgentProfile, *, by: int) -> None:
        await self.store.pin(chat_id, profile.name, by=by)
        self._pins[chat_id] = profile.name

    async def unpin(self, chat_id: int) -> None:
        await self.store.unpin(chat_id)
        self._pins.pop(chat_id, None)

    # A turn -----------------------------------------------------------------

    async def choose(self, ctx: RequestContext, text: str) -> Route:
        try:
            route = await self.router.route(text, self._pins.get(ctx.chat_id))
        except Exception:  # a routing bug must not cost the user the answer: the assistant takes it
            log.exception("turn %s: routing failed; the default agent answers", ctx.request_id)
            return Route(self.book.default, "error")
        log.info("turn %s: agent %s (%s)", ctx.request_id, route.agent.name, route.reason)
        return route

    def instructions(self, profile: AgentProfile, variables: Mapping[str, object]) -> str:
        """What ``profile`` adds to the system prompt (an orchestrator also
        gets how to plan and whom it can delegate to)."""
        parts = [profile.instruction_text(self._prompts, variables)]
        if profile.orchestrator:
            agents = "\n".join(f"- {p.name}: {p.description}" for p in self.book.delegates())
            guide, _ = self._prompts.render("orchestrator", {"agents": agents, "max_steps": MAX_STEPS})
            parts.append(guide)
        return "\n\n".join(part for part in parts if part)

    def setup(
        self,
        ctx: RequestContext,
        route: Route,
        sink: ReplySink,
        *,
        tools: StepTools | None,
        system_for: Callable[[AgentProfile], ChatMessage],
    ) -> AgentTurnSetup:
        profile = route.agent
        scope = EVERY_TOOL if profile.tools is None else ToolScope(allow=profile.allows)
        if profile.orchestrator and tools is not None:
            budget = CallBudget(self._config.max_tool_calls, self._config.plan_seconds)
            orchestration = Orchestration(
                book=self.book,
                store=self.store,
                runner=StepRunner(tools, system_for, self._config.max_answer_tokens),
                budget=budget,
                progress=sink.progress,
                language=ctx.language,
            )
            scope = ToolScope(allow=profile.allows, extra=orchestration.tools(), budget=budget)
        shown = sink if profile.is_default or ctx.chat_type is ChatType.API else LabelledSink(sink, profile.name)
        return AgentTurnSetup(scope, shown, profile.max_tokens, profile.temperature, profile.tier)

    def record(self, ctx: RequestContext, route: Route, result: TurnResult, seconds: float) -> None:
        """The turn's agent, why, and how it went (written in batches)."""
        name = route.agent.name
        previous = self._last.get(ctx.chat_id)
        self._last[ctx.chat_id] = name
        self._last.move_to_end(ctx.chat_id)
        while len(self._last) > RECENT_CHATS:
            self._last.popitem(last=False)
        self.records.record(
            AgentTurnRecord(
                request_id=ctx.request_id[:32],
                user_id=ctx.user_id,
                chat_id=ctx.chat_id,
                agent=name,
                reason=route.reason,
                switched=previous is not None and previous != name,
                status=result.status,
                latency_ms=round(seconds * 1000),
                tokens_in=result.tokens_in or 0,
                tokens_out=result.tokens_out or 0,
                model=result.model,
            )
        )


class LabelledSink:
    """Shows which agent answers, in one discreet line above the answer. The
    stored answer (and so the history the model reads) has no label."""

    def __init__(self, sink: ReplySink, agent: str) -> None:
        self._sink = sink
        self._label = f"*↳ {agent}*\n\n"

    async def update(self, text: str) -> None:
        await self._sink.update(self._label + text)

    async def finish(self, text: str) -> None:
        await self._sink.finish(self._label + text)

    async def notice(self, text: str) -> None:
        await self._sink.notice(text)

    async def progress(self, hint: str) -> None:
        await self._sink.progress(hint)
