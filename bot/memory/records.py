"""Plain values that memory code passes around (never live ORM objects)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

KINDS = ("profile", "person", "preference", "fact", "instruction", "ephemeral")
MIN_IMPORTANCE, MAX_IMPORTANCE = 1, 5
# What the user asked to remember outranks what was inferred from chat.
EXPLICIT_IMPORTANCE = 5
DEFAULT_IMPORTANCE = 3
MAX_MEMORY_CHARS = 500


@dataclass(frozen=True)
class MemoryRecord:
    id: int
    user_id: int
    text: str
    kind: str
    importance: int
    source: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    source_message_id: int | None = None


@dataclass(frozen=True)
class NewMemory:
    text: str
    kind: str = "fact"
    importance: int = DEFAULT_IMPORTANCE
    source: str = "extracted"  # extracted | explicit
    source_message_id: int | None = None
    expires_at: datetime | None = None
    # The remember tool's call (RequestContext.tool_call_key): unique, so the
    # same call re-run after a crash cannot store the fact twice.
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Hit:
    """A recalled memory with how it was found."""

    memory: MemoryRecord
    score: float  # fused rank score; higher is better
    similarity: float | None  # cosine similarity when the dense search found it
    keyword_rank: int | None  # 1-based rank in keyword search when it found it


def clamp_importance(value: object) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return DEFAULT_IMPORTANCE
    return max(MIN_IMPORTANCE, min(MAX_IMPORTANCE, number))


def clean_kind(value: object) -> str:
    kind = str(value or "").strip().lower()
    return kind if kind in KINDS else "fact"


def clean_text(value: object) -> str:
    """One line, trimmed, at most MAX_MEMORY_CHARS (cut at a word)."""
    text = " ".join(str(value or "").split())
    if len(text) <= MAX_MEMORY_CHARS:
        return text
    cut = text[:MAX_MEMORY_CHARS].rsplit(" ", 1)[0]
    return cut or text[:MAX_MEMORY_CHARS]
