"""SQL of the tool rounds of running turns (see ToolRound)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, select

from bot.llm.types import ToolCall
from bot.runtime.clock import utcnow
from bot.storage.db import Database
from bot.storage.models import ToolRound


@dataclass(frozen=True)
class RecordedRound:
    text: str  # what the model said beside its calls
    calls: tuple[ToolCall, ...]
    answers: tuple[str, ...]  # one per call, as the model was told


class ToolRoundRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, request_id: str, user_id: int, round_: RecordedRound) -> None:
        payload = {
            "text": round_.text,
            "calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in round_.calls],
            "answers": list(round_.answers),
        }
        async with self._db.session() as s:
            s.add(
                ToolRound(
                    request_id=request_id, user_id=user_id, payload=json.dumps(payload, ensure_ascii=False),
                    created_at=utcnow(),
                )
            )

    async def of(self, request_id: str) -> list[RecordedRound]:
        async with self._db.reading() as s:
            rows = await s.execute(
                select(ToolRound.payload).where(ToolRound.request_id == request_id).order_by(ToolRound.id)
            )
            rounds = []
            for (payload,) in rows:
                data = json.loads(payload)
                calls = tuple(ToolCall(c["id"], c["name"], c["arguments"]) for c in data["calls"])
                rounds.append(RecordedRound(data["text"], calls, tuple(data["answers"])))
            return rounds

    async def forget(self, request_id: str) -> None:
        async with self._db.session() as s:
            await s.execute(delete(ToolRound).where(ToolRound.request_id == request_id))
