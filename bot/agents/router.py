"""Which agent answers a message in multi-agent mode.

An explicit choice wins: a mention ("@coder ...") in the message, then the
agent the chat pinned (/agent NAME). Otherwise the agents' keywords decide
when exactly one agent's match; otherwise one short model call with the
agents' descriptions picks, cached per message and bounded in time. Any
doubt (no answer in time, an unknown name, a failed call) means the
default agent."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from bot.agents.profiles import AgentBook, AgentProfile
from bot.errors import ModelError
from bot.llm.types import ChatMessage, ChatRequest, Completion
from bot.prompts import PromptRegistry

log = logging.getLogger(__name__)

MENTION = re.compile(r"(?<![\w@])@([a-z][a-z0-9_-]{0,23})\b", re.IGNORECASE)
CLASSIFIED_CHARS = 1500  # of the message, for the classifier: enough to tell its topic
_ANSWER_NAME = re.compile(r"[a-z][a-z0-9_-]*")


class Completer(Protocol):
    async def complete(self, request: ChatRequest, *, cache: bool = False) -> Completion: ...


@dataclass(frozen=True)
class Route:
    agent: AgentProfile
    # mention | pinned | rule | classifier | default | unsure | timeout | error
    reason: str


@dataclass(frozen=True)
class RouterConfig:
    timeout: float = 4.0
    tier: str | None = None  # the tier the classifier asks first
    cache_size: int = 2048
    cache_seconds: float = 600.0


class AgentRouter:
    def __init__(self, book: AgentBook, models: Completer, prompts: PromptRegistry, config: RouterConfig) -> None:
        self._book = book
        self._models = models
        self._prompts = prompts
        self._config = config
        self._keywords = _keyword_patterns(book)
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def route(self, text: str, pinned: str | None = None) -> Route:
        mentioned = self.mentioned(text)
        if mentioned is not None:
            return Route(mentioned, "mention")
        if pinned is not None and (profile := self._book.get(pinned)) is not None:
            return Route(profile, "pinned")
        by_rule = self._by_keywords(text)
        if by_rule is not None:
            return Route(by_rule, "rule")
        return await self._classify(text)

    def mentioned(self, text: str) -> AgentProfile | None:
        """The first agent the message names with @ (the default agent too: "@assistant")."""
        for match in MENTION.finditer(text):
            profile = self._book.get(match.group(1))
            if profile is not None:
                return profile
        return None

    def _by_keywords(self, text: str) -> AgentProfile | None:
        folded = text.casefold()
        matched = [profile for profile, pattern in self._keywords if pattern.search(folded)]
        return matched[0] if len(matched) == 1 else None

    async def _classify(self, text: str) -> Route:
        if not self._book.specialists():
            return Route(self._book.default, "default")
        key = hashlib.sha256(" ".join(text.casefold().split())[:CLASSIFIED_CHARS].encode()).hexdigest()
        cached = self._cached(key)
        if cached is not None:
            return self._route_named(cached, "classifier")
        try:
            answer = await asyncio.wait_for(self._ask(text), self._config.timeout)
        except TimeoutError:
            log.warning("agent router: the classifier did not answer within %.1f s", self._config.timeout)
            return Route(self._book.default, "timeout")
        except ModelError as exc:
            log.warning("agent router: the classifier failed: %s: %s", type(exc).__name__, exc)
            return Route(self._book.default, "error")
        name = _first_name(answer)
        self._store(key, name)
        return self._route_named(name, "classifier")

    def _route_named(self, name: str, reason: str) -> Route:
        profile = self._book.get(name) if name else None
        if profile is None or profile.is_default:
            return Route(self._book.default, "unsure" if profile is None else "default")
        return Route(profile, reason)

    async def _ask(self, text: str) -> str:
        agents = "\n".join(f"- {p.name}: {p.description}" for p in self._book)
        system, _ = self._prompts.render("agent_route", {"agents": agents})
        request = ChatRequest(
            messages=(ChatMessage("system", system), ChatMessage("user", text[:CLASSIFIED_CHARS])),
            max_tokens=12,
            temperature=0.0,
            prefer_tier=self._config.tier,
        )
        completion = await self._models.complete(request)
        return completion.text

    def _cached(self, key: str) -> str | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        name, expires = entry
        if time.monotonic() >= expires:
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return name

    def _store(self, key: str, name: str) -> None:
        self._cache[key] = (name, time.monotonic() + self._config.cache_seconds)
        self._cache.move_to_end(key)
        while len(self._cache) > self._config.cache_size:
            self._cache.popitem(last=False)


def _first_name(answer: str) -> str:
    """The agent name in the classifier's answer: its first word, without
    quotes, @ or punctuation ("Coder." -> "coder")."""
    match = _ANSWER_NAME.search(answer.strip().lower())
    return match.group(0) if match else ""


def _keyword_patterns(book: AgentBook) -> list[tuple[AgentProfile, re.Pattern[str]]]:
    patterns = []
    for profile in book.specialists():
        if profile.keywords:
            words = "|".join(re.escape(word) for word in sorted(profile.keywords, key=len, reverse=True))
            patterns.append((profile, re.compile(rf"(?<!\w)(?:{words})(?!\w)")))
    return patterns
