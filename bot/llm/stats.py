"""What each endpoint did: requests, errors by class, latency, time to first
token, tokens. Read by `doctor` (through the status file) and by /stats."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from bot.llm.types import Usage

# Percentiles over the most recent requests: enough to see trouble, bounded memory.
SAMPLE_SIZE = 512


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class EndpointStats:
    requests: int = 0
    successes: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE_SIZE))
    first_tokens: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE_SIZE))

    def first_token(self, seconds: float) -> None:
        self.first_tokens.append(seconds)

    def success(self, seconds: float, usage: Usage) -> None:
        self.requests += 1
        self.successes += 1
        self.latencies.append(seconds)
        self.tokens_in += usage.prompt_tokens
        self.tokens_out += usage.completion_tokens

    def error(self, exc: BaseException) -> None:
        self.requests += 1
        self.errors[type(exc).__name__] += 1

    def retry(self) -> None:
        self.retries += 1

    def snapshot(self) -> dict[str, object]:
        latencies, firsts = list(self.latencies), list(self.first_tokens)
        return {
            "requests": self.requests,
            "successes": self.successes,
            "retries": self.retries,
            "errors": dict(self.errors),
            "latency_p50": percentile(latencies, 0.5),
            "latency_p95": percentile(latencies, 0.95),
            "first_token_p50": percentile(firsts, 0.5),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }
