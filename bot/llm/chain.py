"""The fallback chain: ordered tiers of endpoints. A request goes to the least
busy healthy endpoint of the first tier; transient failures are retried there
(tenacity, the only retry layer) within a time budget; then the next endpoint
or tier answers. Failover happens only before the first streamed token."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from bot.errors import (
    ContextLengthError,
    ModelAuthError,
    ModelBadRequest,
    ModelConnectError,
    ModelError,
    ModelNotFoundError,
    ModelRateLimited,
    ModelTransientError,
    ModelUnavailable,
    NoVisionModel,
    StreamBrokenError,
)
from bot.llm.base import Provider
from bot.llm.breaker import BreakerState, CircuitBreaker
from bot.llm.cache import ResponseCache
from bot.llm.stats import EndpointStats
from bot.llm.types import ChatRequest, Completion, StreamEvent, TextDelta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainPolicy:
    max_attempts: int = 3  # per endpoint, the first try included
    retry_budget: float = 8.0  # seconds one endpoint may spend on retries
    backoff_initial: float = 0.25
    backoff_max: float = 4.0
    retry_after_cap: float = 10.0  # a longer Retry-After falls through instead of waiting
    first_token_timeout: float = 30.0
    idle_timeout: float = 30.0
    total_timeout: float = 120.0


class ChainObserver(Protocol):
    """Told when the whole chain fails and when it answers again (admin alerts)."""

    def chain_unavailable(self, error: ModelUnavailable) -> None: ...

    def chain_recovered(self) -> None: ...


class Endpoint:
    def __init__(
        self, provider: Provider, breaker: CircuitBreaker, *, tier: str, weight: float = 1.0, vision: bool = False
    ) -> None:
        self.provider = provider
        self.breaker = breaker
        self.tier = tier
        self.weight = weight
        self.vision = vision  # takes image parts in user messages
        self.in_flight = 0
        self.stats = EndpointStats()
        # (wall-clock time, error class) of the latest failure, for /models.
        # The class only: a server's message may echo part of a key.
        self.last_error: tuple[float, str] | None = None

    @property
    def name(self) -> str:
        return self.provider.endpoint

    def load(self) -> float:
        return self.in_flight / self.weight

    def snapshot(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "endpoint": self.name,
            "model": self.provider.name,
            "breaker": self.breaker.state.value,
            "in_flight": self.in_flight,
            **self.stats.snapshot(),
        }


@dataclass
class Tier:
    name: str
    endpoints: list[Endpoint]
    context_window: int | None = None
    # What identifies the tier across restarts and configuration edits: its
    # endpoints (provider:model@host, never a key), not its position. The
    # chain makes keys unique.
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            self.key = " + ".join(sorted(e.name for e in self.endpoints))

    def candidates(self) -> list[Endpoint]:
        """Least requests in flight per unit of weight first; ties broken at random
        so equal endpoints share the load."""
        return sorted(self.endpoints, key=lambda e: (e.load(), random.random()))


def trim_history(request: ChatRequest) -> ChatRequest | None:
    """Drop the older half of the conversation (system prompt and the newest
    turn stay), starting the remainder at a user message so tool calls keep
    their results. None when there is nothing left to drop."""
    system = [m for m in request.messages if m.role == "system"]
    rest = [m for m in request.messages if m.role != "system"]
    if len(rest) <= 1:
        return None
    kept = rest[len(rest) // 2 :]
    while len(kept) > 1 and kept[0].role != "user":
        kept = kept[1:]
    if len(kept) == len(rest):
        kept = rest[-1:]
    return dataclasses.replace(request, messages=(*system, *kept))


class FallbackChain:
    def __init__(
        self,
        tiers: list[Tier],
        policy: ChainPolicy,
        *,
        observer: ChainObserver | None = None,
        cache: ResponseCache | None = None,
        cache_chat: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not tiers or not all(t.endpoints for t in tiers):
            raise ValueError("the chain needs at least one tier, each with an endpoint")
        _unique_keys(tiers)
        # The run-time layout: every configured tier in the order the admin
        # chose, and the keys of the disabled ones. Changed only by ``arrange``,
        # which assigns new objects, so a request keeps the plan it started with.
        self.tiers: list[Tier] = list(tiers)
        self.disabled: frozenset[str] = frozenset()
        self._plan: tuple[Tier, ...] = tuple(tiers)
        self._policy = policy
        self._observer = observer
        self._cache = cache
        self._cache_chat = cache_chat
        self._sleep = sleep
        self._clock = clock
        self._failing = False
        # Exponential with jitter, so many chats retrying at once do not hit the endpoint in step.
        self._backoff = wait_exponential_jitter(
            multiplier=policy.backoff_initial, max=policy.backoff_max, jitter=policy.backoff_initial
        )

    def set_observer(self, observer: ChainObserver) -> None:
        self._observer = observer

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for tier in self.tiers for e in tier.endpoints]

    def snapshot(self) -> list[dict[str, object]]:
        return [e.snapshot() for e in self.endpoints]

    def arrange(self, order: Sequence[str], disabled: Collection[str] = ()) -> None:
        """Set the order of the tiers (every tier's key, once) and which are
        disabled, for requests that start from now on. Raises ValueError if
        the order is not a permutation of the tiers or nothing stays enabled."""
        by_key = {tier.key: tier for tier in self.tiers}
        if sorted(order) != sorted(by_key):
            raise ValueError("the order must name every tier exactly once")
        off = frozenset(disabled)
        unknown = off - by_key.keys()
        if unknown:
            raise ValueError(f"no tier with key {sorted(unknown)[0]!r}")
        plan = tuple(by_key[key] for key in order if key not in off)
        if not plan:
            raise ValueError("at least one tier must stay enabled")
        # No await between these: no request sees half of the change.
        self.tiers = [by_key[key] for key in order]
        self.disabled = off
        self._plan = plan
        log.info("model chain arranged: %s", " > ".join(t.name + (" (off)" if t.key in off else "") for t in self.tiers))

    # The public calls ---------------------------------------------------------

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Yield TextDelta pieces and one Completion from the first endpoint that
        answers. Raises StreamBrokenError if an answer dies after text was
        yielded, ModelUnavailable if nothing answered. For a user's turn: its
        failure to reach any endpoint is what the admins are alerted to."""
        return self._stream(request, user_facing=True)

    async def _stream(self, request: ChatRequest, *, user_facing: bool) -> AsyncIterator[StreamEvent]:
        cached = self._cached(request, chat=True)
        if cached is not None:
            if cached.text:
                yield TextDelta(cached.text)
            yield cached
            return
        deadline = self._clock() + self._policy.total_timeout
        failures: list[ModelError] = []
        for tier, endpoint in self._route(self._plan_for(request)):
            try:
                async for event in self._from_endpoint(endpoint, request, deadline):
                    if isinstance(event, Completion):
                        # Bookkeeping before the yield: a consumer may stop
                        # iterating once it has the Completion.
                        event = dataclasses.replace(event, endpoint=f"{tier.name}/{endpoint.provider.name}")
                        self._remember(request, event, chat=True)
                        self._answered()
                    yield event
                return
            except StreamBrokenError as exc:
                exc.answered_by = f"{tier.name}/{endpoint.provider.name}"
                raise
            except ModelError as exc:
                log.warning("model endpoint %s failed: %s: %s", endpoint.name, type(exc).__name__, exc)
                failures.append(exc)
            if self._clock() >= deadline:
                break
        raise self._unavailable(failures, user_facing=user_facing)

    def _plan_for(self, request: ChatRequest) -> Sequence[Tier]:
        """The enabled tiers; for a request with images, only their endpoints
        that can see (the others would refuse the images or ignore them)."""
        plan = _preferred_first(self._plan, request.prefer_tier)
        if not request.has_images:
            return plan
        seeing = [
            Tier(tier.name, [e for e in tier.endpoints if e.vision], tier.context_window, key=tier.key)
            for tier in plan
            if any(e.vision for e in tier.endpoints)
        ]
        if not seeing:
            raise NoVisionModel("no enabled model endpoint takes images (set vision = true on one)")
        return seeing

    def can_see(self) -> bool:
        """Whether an enabled endpoint takes images (checked before a photo's turn)."""
        return any(e.vision for tier in self._plan for e in tier.endpoints)

    def _route(self, plan: Sequence[Tier]) -> Iterator[tuple[Tier, Endpoint]]:
        """The endpoints of the enabled tiers to try, in order: open breakers
        are skipped at no cost. If every breaker is open, the one whose
        cool-down ends first is tried anyway: failing without asking anyone
        would turn a blip into an outage as long as the cool-down, most of all
        with a single endpoint."""
        skipped: list[tuple[Tier, Endpoint]] = []
        for tier in plan:
            for endpoint in tier.candidates():
                if endpoint.breaker.allow_request():
                    yield tier, endpoint
                else:
                    skipped.append((tier, endpoint))
        if skipped and len(skipped) == sum(len(tier.endpoints) for tier in plan):
            yield min(skipped, key=lambda pair: pair[1].breaker.open_until)

    async def complete(self, request: ChatRequest, *, cache: bool = False) -> Completion:
        """The whole answer at once, for internal calls (extraction, summaries).
        ``cache`` reuses an identical earlier answer when temperature is 0.
        Their failures never alert the admins: no user waits for them, and a
        user's turn hitting the same outage raises the alert itself."""
        if cache:
            hit = self._cached(request, chat=False)
            if hit is not None:
                return hit
        async with aclosing(self._stream(request, user_facing=False)) as stream:
            async for event in stream:
                if isinstance(event, Completion):
                    if cache:
                        self._remember(request, event, chat=False)
                    return event
        raise ModelUnavailable("the chain ended without an answer", failures=[])

    # One endpoint -------------------------------------------------------------

    async def _from_endpoint(
        self, endpoint: Endpoint, request: ChatRequest, deadline: float
    ) -> AsyncIterator[StreamEvent]:
        endpoint.in_flight += 1
        started = self._clock()
        try:
            stream, first = await self._open_with_retries(endpoint, request, deadline)
            endpoint.stats.first_token(self._clock() - started)
            async for event in self._rest_of_stream(endpoint, stream, first, deadline):
                if isinstance(event, Completion):
                    endpoint.stats.success(self._clock() - started, event.usage)
                    endpoint.breaker.record_success()
                yield event
        except ModelError as exc:
            endpoint.stats.error(exc)
            endpoint.last_error = (time.time(), type(exc).__name__)
            raise
        finally:
            endpoint.in_flight -= 1
            if endpoint.breaker.state is BreakerState.HALF_OPEN:
                endpoint.breaker.release_probe()

    async def _open_with_retries(
        self, endpoint: Endpoint, request: ChatRequest, deadline: float
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        """Start a stream and wait for its first event, retrying transient
        failures. A context-length error trims the history once and tries again."""
        trimmed = False
        while True:
            try:
                return await self._retrying_open(endpoint, request, deadline)
            except ContextLengthError:
                smaller = None if trimmed else trim_history(request)
                if smaller is None:
                    raise
                log.info("prompt too long for %s; retrying with older history trimmed", endpoint.name)
                request, trimmed = smaller, True
            except (ModelAuthError, ModelNotFoundError):
                endpoint.breaker.record_failure(hard=True)
                raise

    async def _retrying_open(
        self, endpoint: Endpoint, request: ChatRequest, deadline: float
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        policy = self._policy
        budget = max(0.0, min(policy.retry_budget, deadline - self._clock()))
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ModelTransientError),
            stop=stop_after_attempt(policy.max_attempts)
            | stop_before_delay(budget)
            | self._stop_if_hopeless(endpoint),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=lambda state: self._note_retry(endpoint, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._open(endpoint, request, deadline)
        except ModelTransientError:
            # One failed request is one failure, however many attempts it took:
            # counting attempts would let a single unlucky request open the breaker.
            endpoint.breaker.record_failure()
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, ModelRateLimited) and error.retry_after is not None:
            return error.retry_after
        return float(self._backoff(state))

    def _stop_if_hopeless(self, endpoint: Endpoint) -> Callable[[RetryCallState], bool]:
        """Stop retrying when the breaker opened or the server asked for a longer wait than we allow."""

        def hopeless(state: RetryCallState) -> bool:
            if endpoint.breaker.state is BreakerState.OPEN:
                return True
            error = state.outcome.exception() if state.outcome else None
            if isinstance(error, ModelConnectError) and state.attempt_number >= 2:
                return True  # refused twice: the server is down, not busy; move on
            return (
                isinstance(error, ModelRateLimited)
                and error.retry_after is not None
                and error.retry_after > self._policy.retry_after_cap
            )

        return hopeless

    def _note_retry(self, endpoint: Endpoint, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        endpoint.stats.retry()
        log.info("retrying %s after %s (attempt %d)", endpoint.name, type(error).__name__, state.attempt_number)

    async def _open(
        self, endpoint: Endpoint, request: ChatRequest, deadline: float
    ) -> tuple[AsyncIterator[StreamEvent], StreamEvent]:
        stream = aiter(endpoint.provider.stream(request))
        timeout = self._remaining(deadline, self._policy.first_token_timeout)
        try:
            async with asyncio.timeout(timeout):
                first = await anext(stream)
        except TimeoutError:
            await _close(stream)
            raise ModelTransientError(
                f"{endpoint.name}: no first token within {timeout:.1f} s", endpoint=endpoint.name
            ) from None
        except StopAsyncIteration:
            raise ModelTransientError(f"{endpoint.name}: empty stream", endpoint=endpoint.name) from None
        except BaseException:
            await _close(stream)
            raise
        return stream, first

    async def _rest_of_stream(
        self, endpoint: Endpoint, stream: AsyncIterator[StreamEvent], first: StreamEvent, deadline: float
    ) -> AsyncIterator[StreamEvent]:
        shown: list[str] = []
        event: StreamEvent = first
        try:
            while True:
                if isinstance(event, TextDelta):
                    shown.append(event.text)
                yield event
                if isinstance(event, Completion):
                    return
                timeout = self._remaining(deadline, self._policy.idle_timeout)
                try:
                    async with asyncio.timeout(timeout):
                        event = await anext(stream)
                except TimeoutError:
                    raise StreamBrokenError(
                        f"{endpoint.name}: stream stalled for {timeout:.1f} s",
                        endpoint=endpoint.name,
                        partial_text="".join(shown),
                    ) from None
                except StopAsyncIteration:
                    raise StreamBrokenError(
                        f"{endpoint.name}: stream ended without finishing",
                        endpoint=endpoint.name,
                        partial_text="".join(shown),
                    ) from None
        finally:
            await _close(stream)

    # Bookkeeping --------------------------------------------------------------

    def _remaining(self, deadline: float, limit: float) -> float:
        return max(0.01, min(limit, deadline - self._clock()))

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("the model chain answers again")
            if self._observer:
                self._observer.chain_recovered()

    def _unavailable(self, failures: list[ModelError], *, user_facing: bool) -> ModelUnavailable:
        summary = "; ".join(f"{type(f).__name__} at {f.endpoint or '?'}" for f in failures) or "every endpoint is paused by its circuit breaker"
        error = ModelUnavailable(f"no model endpoint answered: {summary}", failures=failures)
        if user_facing and is_outage(failures) and not self._failing:
            self._failing = True
            if self._observer:
                self._observer.chain_unavailable(error)
        return error

    def _cached(self, request: ChatRequest, *, chat: bool) -> Completion | None:
        if self._cache is None or (chat and not self._cache_chat) or request.temperature != 0:
            return None
        return self._cache.get(request)

    def _remember(self, request: ChatRequest, completion: Completion, *, chat: bool) -> None:
        if self._cache is None or (chat and not self._cache_chat) or request.temperature != 0:
            return
        self._cache.put(request, completion)


# Answers about the request, not the endpoint: the server is up and refused
# this payload (or its size), and would serve the next one.
REQUEST_REFUSALS: tuple[type[ModelError], ...] = (ModelBadRequest, ContextLengthError)


def _preferred_first(plan: tuple[Tier, ...], name: str | None) -> Sequence[Tier]:
    """The enabled tiers with the one named ``name`` first (an agent's model);
    unchanged when there is none by that name or it is disabled."""
    if name is None or not plan or plan[0].name == name:
        return plan
    first = [tier for tier in plan if tier.name == name]
    return [*first, *(tier for tier in plan if tier.name != name)] if first else plan


def is_outage(failures: Sequence[ModelError]) -> bool:
    """Whether a chain failure means users cannot be answered: no endpoint
    answered at all. An endpoint that refused the request itself is up."""
    return not any(isinstance(failure, REQUEST_REFUSALS) for failure in failures)


def _unique_keys(tiers: list[Tier]) -> None:
    """Two tiers with the same endpoints (a configuration may repeat one as a
    last resort) get ``#2``, ``#3``... so each can be moved on its own."""
    seen: dict[str, int] = {}
    for tier in tiers:
        count = seen.get(tier.key, 0) + 1
        seen[tier.key] = count
        if count > 1:
            tier.key = f"{tier.key} #{count}"


async def _close(stream: AsyncIterator[StreamEvent]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a broken stream must not hide the real error
            log.debug("error while closing a model stream", exc_info=True)
