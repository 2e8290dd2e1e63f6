"""The one path every channel's message takes into the core (DESIGN.md
section 2): the RequestContext, the gates (banned, allow-list, rate limit,
daily quota), the input checks (empty, too long), then the conversation.
Telegram, the console and later the HTTP API call it; each only says how to
show a notice and supplies a ReplySink for the answer."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from bot.gates.chain import GateChain, GateRequest, GateResult
from bot.context import ChatType, ContextMiddleware, RequestContext
from bot.conversation import Conversation, ReplySink, TurnResult
from bot.i18n import t
from bot.storage.repositories import UserProfile

# How a channel shows a short notice (a refusal, "your message is empty").
Say = Callable[[str], Awaitable[None]]

DEFAULT_MAX_INPUT_CHARS = 40_000
# Private chats whose last message passed the gates, remembered for starting
# the next message's recall early (~100 bytes each).
MAX_ADMITTED_CHATS = 100_000


@dataclass(frozen=True)
class Arrival:
    """What a channel knows about a message when it arrives."""

    profile: UserProfile
    chat_id: int
    chat_type: ChatType | str
    received_at: datetime | None = None
    # The message goes to the model (text, a document): the daily quota applies.
    reaches_model: bool = False
    # The argument of /start (a deep link's payload: an invite code).
    start_payload: str | None = None
    # The turn's request id when the channel derives one from its own message
    # id (Telegram's update id: a redelivered update finds its stored turn).
    request_id: str | None = None
    # A private chat's text as the conversation will read it (None for
    # anything else): its recall may start while the gates run.
    text: str | None = None


class InboundPath:
    def __init__(
        self,
        middleware: ContextMiddleware,
        gates: GateChain,
        conversation: Conversation,
        *,
        max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
    ) -> None:
        self._middleware = middleware
        self._gates = gates
        self.conversation = conversation
        self.max_input_chars = max_input_chars
        # Private chat -> the user its last admitted message came from.
        self._admitted: OrderedDict[int, int] = OrderedDict()

    async def admit(self, arrival: Arrival, say: Say) -> RequestContext | None:
        """The context for a message the bot should act on, else None. A
        gate's notice (at most once per interval, so a flood is not answered
        message by message) is shown through ``say``."""
        self._start_recall(arrival)
        ctx, result = await self.check(arrival)
        self._note_admission(arrival, ctx, result.passed)
        for notice in result.notices:
            await say(notice)
        return ctx if result.passed else None

    def _start_recall(self, arrival: Arrival) -> None:
        """The query embedding is the longest step before the model request:
        for a private text from a chat whose last message was admitted, it
        starts before the gates and the user's row are read. A refused
        message forgets the chat, so a refused flood costs one embedding."""
        if arrival.text is None:
            return
        user_id = self._admitted.get(arrival.chat_id)
        if user_id is not None:
            self.conversation.prefetch_recall(user_id, arrival.text)

    def _note_admission(self, arrival: Arrival, ctx: RequestContext, passed: bool) -> None:
        if not (passed and ctx.chat_type is ChatType.PRIVATE):
            self._admitted.pop(arrival.chat_id, None)
            return
        self._admitted[arrival.chat_id] = ctx.user_id
        self._admitted.move_to_end(arrival.chat_id)
        if len(self._admitted) > MAX_ADMITTED_CHATS:
            self._admitted.popitem(last=False)

    async def check(self, arrival: Arrival) -> tuple[RequestContext, GateResult]:
        """The context and the gates' verdict, for channels that answer a
        refusal in their own terms (the HTTP API's status codes)."""
        ctx = await self._middleware.build(
            arrival.profile,
            chat_id=arrival.chat_id,
            chat_type=arrival.chat_type,
            received_at=arrival.received_at,
            request_id=arrival.request_id,
        )
        return ctx, await self._gates.check(GateRequest(ctx, arrival.reaches_model, arrival.start_payload))

    def input_problem(self, ctx: RequestContext, text: str) -> str | None:
        """Why ``text`` (already stripped) cannot go to the model, in the
        user's language; None when it can."""
        if not text:
            return t("empty_message", ctx.language)
        if len(text) > self.max_input_chars:
            return t("too_long", ctx.language, length=len(text), limit=self.max_input_chars)
        return None

    async def converse(
        self, ctx: RequestContext, text: str, sink: ReplySink, *, chat_title: str | None = None
    ) -> TurnResult | None:
        """One turn for an admitted message; None when the input check refused
        it (the sink got the notice)."""
        problem = self.input_problem(ctx, text.strip())
        if problem is not None:
            await sink.notice(problem)
            return None
        return await self.conversation.handle(ctx, text.strip(), sink, chat_title=chat_title)
