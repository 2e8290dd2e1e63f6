"""An exact-match response cache (LRU with TTL) for deterministic internal
calls: the same temperature-0 request gets the same answer without a model call."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable

from bot.llm.types import ChatRequest, Completion


def request_key(request: ChatRequest) -> str:
    payload = {
        "messages": [m.as_wire() for m in request.messages],
        "tools": [t.as_openai() for t in request.tools],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Completion]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, request: ChatRequest) -> Completion | None:
        key = request_key(request)
        entry = self._entries.get(key)
        if entry is None or self._clock() - entry[0] > self._ttl:
            self._entries.pop(key, None)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, request: ChatRequest, completion: Completion) -> None:
        if self._max <= 0:
            return
        key = request_key(request)
        self._entries[key] = (self._clock(), completion)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
