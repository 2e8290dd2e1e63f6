"""Writing memories after a turn, in the background (anchor: mem0).

1. The extraction prompt turns the latest exchange into short facts.
2. Each fact is compared with its nearest stored memories (hybrid search):
   a near-duplicate is dropped, a fact with no neighbour is added.
3. Facts that resemble stored memories go to the update prompt, which
   decides add / update / delete / nothing, so "I moved from Berlin to Paris"
   rewrites the city instead of keeping both.

The model only ever sees short labels (F1, M2) that map back to this user's
memory ids, so a confused or hostile answer cannot reach another user's rows.
Any failure (model down, garbage JSON) skips the turn's extraction: it is
cheap, optional, and never touches the chat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.errors import AriumError, ModelError
from bot.llm.service import ModelService
from bot.llm.types import ChatMessage, ChatRequest
from bot.memory import keyword
from bot.memory.records import Hit, NewMemory, clamp_importance, clean_kind, clean_text
from bot.memory.service import MemoryService
from bot.prompts import PromptRegistry
from bot.runtime.clock import utcnow

log = logging.getLogger(__name__)

MAX_FACTS = 10
NEIGHBOURS = 3
MAX_EXCHANGE_CHARS = 6000
EXTRACT_MAX_TOKENS = 700
# After the model fails an extraction call, extraction pauses this long: it is
# optional work, and must not add load to (or trip the breaker of) an
# endpoint the chat needs.
PAUSE_AFTER_MODEL_ERROR = 60.0


class ExtractionFailed(AriumError):
    """The model's answer could not be used; this turn is skipped."""


@dataclass(frozen=True)
class Turn:
    role: str  # user | assistant
    text: str


@dataclass
class WriteReport:
    """What one extraction did (for logs and tests)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: str | None = None


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer, tolerating code fences and prose around it."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ExtractionFailed("no JSON object in the answer")
    try:
        value = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise ExtractionFailed(f"invalid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ExtractionFailed("the answer is not a JSON object")
    return value


def parse_facts(answer: str, now: datetime, ephemeral_days: int) -> list[NewMemory]:
    items = parse_json_object(answer).get("facts")
    if not isinstance(items, list):
        raise ExtractionFailed("'facts' is not a list")
    facts: list[NewMemory] = []
    seen: set[str] = set()
    for item in items[:MAX_FACTS]:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            continue
        text = clean_text(item.get("text"))
        if not text or keyword.normalize(text) in seen:
            continue
        seen.add(keyword.normalize(text))
        kind = clean_kind(item.get("kind"))
        facts.append(
            NewMemory(
                text=text,
                kind=kind,
                importance=clamp_importance(item.get("importance")),
                expires_at=_expiry(kind, item.get("expires_in_days"), now, ephemeral_days),
            )
        )
    return facts


def _expiry(kind: str, days: object, now: datetime, default_days: int) -> datetime | None:
    if kind != "ephemeral":
        return None
    try:
        count = int(days)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        count = default_days
    return now + timedelta(days=max(1, min(count, 365)))


@dataclass(frozen=True)
class Decision:
    action: str  # add | update | delete | none
    memory_label: str | None
    text: str


def parse_decisions(answer: str) -> dict[str, Decision]:
    items = parse_json_object(answer).get("decisions")
    if not isinstance(items, list):
        raise ExtractionFailed("'decisions' is not a list")
    decisions: dict[str, Decision] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        fact = str(item.get("fact") or "").strip().upper()
        action = str(item.get("action") or "").strip().lower()
        if not fact or action not in ("add", "update", "delete", "none"):
            continue
        label = item.get("memory")
        decisions.setdefault(
            fact,
            Decision(action, str(label).strip().upper() if label else None, clean_text(item.get("text"))),
        )
    return decisions


def format_exchange(turns: list[Turn], user_name: str) -> str:
    lines = [f"{user_name if t.role == 'user' else 'Assistant'}: {t.text}" for t in turns]
    text = "\n\n".join(lines)
    # The newest words matter most; cut the oldest if the exchange is huge.
    return text if len(text) <= MAX_EXCHANGE_CHARS else "…" + text[-MAX_EXCHANGE_CHARS:]


class MemoryWriter:
    def __init__(self, memory: MemoryService, models: ModelService, prompts: PromptRegistry) -> None:
        self._memory = memory
        self._models = models
        self._prompts = prompts
        # One extraction per user at a time, so two quick turns cannot both add a fact.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._paused_until = 0.0

    def worth_extracting(self, user_text: str) -> bool:
        """"ok", "thanks!", "?" carry nothing to remember, and while the model
        is failing extraction waits: no model call in either case."""
        return time.monotonic() >= self._paused_until and bool(keyword.query_terms(user_text))

    async def write(
        self, user_id: int, user_name: str, turns: list[Turn], source_message_id: int | None
    ) -> WriteReport:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        async with lock:
            try:
                return await self._write(user_id, user_name, turns, source_message_id)
            except ModelError as exc:
                self._paused_until = time.monotonic() + PAUSE_AFTER_MODEL_ERROR
                log.warning("memory extraction paused for %.0f s: %s", PAUSE_AFTER_MODEL_ERROR, exc)
                return WriteReport(skipped=str(exc))
            except (AriumError, ValueError) as exc:
                log.warning("memory extraction skipped: %s: %s", exc.__class__.__name__, exc)
                return WriteReport(skipped=str(exc))

    async def _write(
        self, user_id: int, user_name: str, turns: list[Turn], source_message_id: int | None
    ) -> WriteReport:
        report = WriteReport()
        facts = await self._extract(user_name, turns)
        if not facts:
            return report
        facts = [NewMemory(f.text, f.kind, f.importance, "extracted", source_message_id, f.expires_at) for f in facts]
        vectors = await self._memory.encode([f.text for f in facts])
        fresh: list[NewMemory] = []
        contested: list[tuple[NewMemory, list[Hit]]] = []
        for i, fact in enumerate(facts):
            vector = vectors[i] if vectors is not None else None
            neighbours = await self._memory.nearest(user_id, fact.text, vector, NEIGHBOURS)
            if _duplicate(fact, neighbours):
                report.unchanged.append(fact.text)
            elif neighbours:
                contested.append((fact, neighbours))
            else:
                fresh.append(fact)
        if fresh:
            await self._memory.add(user_id, fresh)
            report.added += [f.text for f in fresh]
        if contested:
            await self._reconcile(user_id, user_name, contested, report)
        await self._memory.sweep_expired(user_id)
        log.info(
            "memory: %d added, %d updated, %d deleted, %d already known",
            len(report.added), len(report.updated), len(report.deleted), len(report.unchanged),
        )
        return report

    async def _extract(self, user_name: str, turns: list[Turn]) -> list[NewMemory]:
        now = utcnow()
        prompt, _ = self._prompts.render(
            "memory_extract",
            {"user_name": user_name, "today": now.strftime("%Y-%m-%d"), "exchange": format_exchange(turns, user_name)},
        )
        answer = await self._ask(prompt)
        return parse_facts(answer, now, self._memory.config.ephemeral_days)

    async def _reconcile(
        self, user_id: int, user_name: str, contested: list[tuple[NewMemory, list[Hit]]], report: WriteReport
    ) -> None:
        labels: dict[str, int] = {}
        memory_lines: list[str] = []
        for _, neighbours in contested:
            for hit in neighbours:
                if hit.memory.id not in labels.values():
                    label = f"M{len(labels) + 1}"
                    labels[label] = hit.memory.id
                    memory_lines.append(f"{label}: {hit.memory.text}")
        fact_lines = [f"F{i}: {fact.text}" for i, (fact, _) in enumerate(contested, 1)]
        prompt, _ = self._prompts.render(
            "memory_update",
            {"user_name": user_name, "memories": "\n".join(memory_lines), "facts": "\n".join(fact_lines)},
        )
        decisions = parse_decisions(await self._ask(prompt))
        for i, (fact, _) in enumerate(contested, 1):
            decision = decisions.get(f"F{i}")
            if decision is None:
                continue  # not decided: keeping memory unchanged is the safe default
            target = labels.get(decision.memory_label or "")
            if decision.action == "add":
                await self._memory.add(user_id, [fact])
                report.added.append(fact.text)
            elif decision.action == "update" and target is not None:
                text = decision.text or fact.text
                updated = await self._memory.update(
                    user_id, target, text, kind=fact.kind, importance=fact.importance, expires_at=fact.expires_at
                )
                if updated is not None:
                    report.updated.append(text)
            elif decision.action == "delete" and target is not None:
                report.deleted += await self._memory.delete(user_id, [target], by_user=False)
            else:
                report.unchanged.append(fact.text)

    async def _ask(self, prompt: str) -> str:
        completion = await self._models.complete(
            ChatRequest(messages=(ChatMessage("user", prompt),), max_tokens=EXTRACT_MAX_TOKENS, temperature=0.0)
        )
        return completion.text


def _duplicate(fact: NewMemory, neighbours: list[Hit]) -> bool:
    """The same words as a stored memory (case, punctuation and ё aside).
    Closeness in vector space is not enough: for Russian the English embedder
    puts "sister lives in Kazan" and "... in Moscow" almost on top of each
    other, and that is exactly an update, which the update prompt decides."""
    wanted = keyword.words(fact.text)
    return any(keyword.words(hit.memory.text) == wanted for hit in neighbours)


