"""Which recalled memories reach the prompt: the dense side's relevance bar,
and the fusion of the dense and keyword rankings.

Pure functions of the two rankings, so the recall benchmark
(bench/recall_quality.py) can replay a whole evaluation set under other
settings without touching the database, and what it measures is exactly
what MemoryService does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The median of fewer candidates says little about the user's other memories
# (one memory is its own median): below this many, no lift is asked.
LIFT_MIN_CANDIDATES = 8


@dataclass(frozen=True)
class RecallPolicy:
    """The defaults were chosen on the evaluation set (bench/recall_quality.py
    --tune; figures in BENCHMARKS.md), not by hand. ``k``: memories a turn gets at most. A dense hit needs a cosine
    similarity of ``min_similarity``, at most ``similarity_margin`` below the
    best one, and ``min_lift`` above the median of the candidates the search
    returned: it must stand out from the user's other memories, not only be
    similar (a model that knows little of a language finds every text in it
    alike). Fusion adds ``weight / (rrf_k + rank)`` from each side
    (reciprocal rank fusion)."""

    k: int = 8
    min_similarity: float = 0.25
    similarity_margin: float = 0.15
    rrf_k: int = 60
    # Keyword hits outrank dense ones of the same rank: a shared stem is the
    # stronger evidence, most of all where the embedder is weak (Russian).
    dense_weight: float = 0.5
    keyword_weight: float = 1.0
    min_lift: float = 0.10
    # Each side proposes this many candidates per memory wanted.
    candidates_per_hit: int = 4


def relevant_dense(found: Sequence[tuple[int, float]], policy: RecallPolicy) -> list[tuple[int, float]]:
    """The dense hits (best first) that clear the relevance bar."""
    if not found:
        return []
    floor = max(policy.min_similarity, found[0][1] - policy.similarity_margin)
    if len(found) >= LIFT_MIN_CANDIDATES:
        median = sorted(score for _, score in found)[len(found) // 2]
        floor = max(floor, median + policy.min_lift)
    return [(memory_id, score) for memory_id, score in found if score >= floor]


def fuse(
    dense: Sequence[tuple[int, float]], keyword: Sequence[int], policy: RecallPolicy
) -> list[tuple[int, float]]:
    """Every candidate with its fused score, best first (ties: the newer
    memory, the larger id, first)."""
    scores: dict[int, float] = {}
    for rank, (memory_id, _) in enumerate(dense, 1):
        scores[memory_id] = scores.get(memory_id, 0.0) + policy.dense_weight / (policy.rrf_k + rank)
    for rank, memory_id in enumerate(keyword, 1):
        scores[memory_id] = scores.get(memory_id, 0.0) + policy.keyword_weight / (policy.rrf_k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], -item[0]))
