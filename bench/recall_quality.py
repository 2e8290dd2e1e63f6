"""Memory recall quality on the hand-written evaluation set (bench/recall_set.py):
does the fact a question needs reach the prompt, and how many memories do.

    .venv/bin/python -m bench.recall_quality            # the shipped settings (~1 min)
    .venv/bin/python -m bench.recall_quality --tune     # plus the search that chose them
    .venv/bin/python -m bench.recall_quality --exact    # the fp32 model (BOT_EMBEDDING_INT8=false)

One user holds every fact and distractor of both languages (stored in a
shuffled order, so newer-first tie-breaks favour no one), through the real
MemoryService: SQLite with its stemmed FTS5 index, FAISS, the bundled
embedder (or EMBEDDING_MODEL). For each question the benchmark keeps the
whole dense ranking and the keyword ranking once; the rows then come from
replaying bot/memory/relevance.py (the functions recall itself runs) under a
policy, so a grid of policies costs no database work. One row per policy
checks the replay against MemoryService.recall itself.

Reported per language: recall (the question's fact is among those injected),
the mean number injected for answerable questions, and for questions no
memory answers ("unanswerable": the injected count is pure cost).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.recall_set import CASES, DISTRACTORS, UNANSWERABLE  # noqa: E402
from bot.memory import keyword  # noqa: E402
from bot.memory.embedder import EmbeddingService, SentenceTransformerEmbedder  # noqa: E402
from bot.memory.records import NewMemory  # noqa: E402
from bot.memory.relevance import RecallPolicy, fuse, relevant_dense  # noqa: E402
from bot.memory.repository import MemoryRepository  # noqa: E402
from bot.memory.service import MemoryConfig, MemoryService  # noqa: E402
from bot.runtime.tasks import TaskTracker  # noqa: E402
from bot.storage.db import Database  # noqa: E402
from bot.storage.repositories import UserProfile, UserRepository  # noqa: E402

USER = 1
SEED = 20261205
# The policy before the evaluation set existed (chosen by hand), for comparison.
BY_HAND = RecallPolicy(k=5, min_similarity=0.30, similarity_margin=0.20, dense_weight=1.0, min_lift=0.0)
KEYWORD_DEPTH = 64  # keyword hits kept per question; a policy uses its own pool of them


@dataclass(frozen=True)
class Probe:
    """One question with both rankings over the user's memories."""

    question: str
    language: str
    target: int | None  # the memory id it needs; None: nothing stored answers it
    shares_word: bool  # shares a stem with its fact (computed, not the set's label)
    dense: list[tuple[int, float]]  # every memory, best first
    keyword: list[int]  # keyword hits, best first


@dataclass(frozen=True)
class Score:
    recall: float
    injected: float  # mean memories injected for answerable questions
    unanswerable_injected: float


def replay(probe: Probe, policy: RecallPolicy, mode: str = "hybrid") -> list[int]:
    """The ids recall would inject for this question under ``policy``: the
    same candidate pools and functions as MemoryService.search."""
    if not keyword.query_terms(probe.question):
        return []  # recall() answers small talk with nothing
    pool = policy.k * policy.candidates_per_hit
    dense = relevant_dense(probe.dense[:pool], policy) if mode in ("hybrid", "dense") else []
    found = probe.keyword[:pool] if mode in ("hybrid", "keyword") else []
    return [memory_id for memory_id, _ in fuse(dense, found, policy)][: policy.k]


def score(probes: Iterable[Probe], policy: RecallPolicy, mode: str = "hybrid") -> Score:
    hits = answered = injected = empty_injected = unanswerable = 0
    for probe in probes:
        chosen = replay(probe, policy, mode)
        if probe.target is None:
            unanswerable += 1
            empty_injected += len(chosen)
            continue
        answered += 1
        hits += probe.target in chosen
        injected += len(chosen)
    return Score(hits / max(answered, 1), injected / max(answered, 1), empty_injected / max(unanswerable, 1))


async def collect(
    model: str | None, *, int8: bool = True
) -> tuple[list[Probe], list[tuple[Probe, list[int]]], str, RecallPolicy]:
    """Stores the set for one user and asks every question once; returns the
    probes, what MemoryService.recall itself injected for each, the
    embedder's name and the policy recall ran with (the shipped defaults).
    ``int8``: the int8 variant, as the bot runs by default (BOT_EMBEDDING_INT8)."""
    rng = random.Random(SEED)
    texts = [case.fact for case in CASES] + list(DISTRACTORS)
    rng.shuffle(texts)
    with tempfile.TemporaryDirectory(prefix="arium-bench-recall-") as tmp:
        db = Database(f"sqlite+aiosqlite:///{tmp}/bench.db")
        await db.migrate()
        await UserRepository(db, "UTC").touch(UserProfile(USER, "eval"), "user")
        embedder = await asyncio.to_thread(SentenceTransformerEmbedder, model, int8=int8)
        tasks = TaskTracker()
        embeddings = EmbeddingService(lambda: embedder, tasks)
        service = MemoryService(MemoryRepository(db), embeddings, tasks, MemoryConfig(index_dir=Path(tmp) / "m"))
        service.start()
        await embeddings.wait_ready(120)
        records = await service.add(USER, [NewMemory(text) for text in texts])
        ids = {record.text: record.id for record in records}
        matrix = np.stack([embedder.encode([text])[0] for text in texts])
        row_ids = [ids[text] for text in texts]
        questions = [(c.question, c.language, ids[c.fact], c.fact) for c in CASES]
        questions += [(question, language, None, None) for question, language in UNANSWERABLE]
        probes, shipped = [], []
        for question, language, target, fact in questions:
            vector = embedder.encode([question])[0]
            sims = matrix @ vector
            order = np.argsort(-sims, kind="stable")
            found = await service.repository.keyword_records(USER, question, KEYWORD_DEPTH)
            shares = fact is not None and bool(set(keyword.query_terms(question)) & set(keyword.index_terms(fact).split()))
            probe = Probe(question, language, target, shares,
                          [(row_ids[i], float(sims[i])) for i in order], [r.id for r in found])
            probes.append(probe)
            shipped.append((probe, [hit.memory.id for hit in await service.recall(USER, question)]))
        await service.close()
        await db.dispose()
        return probes, shipped, embedder.name, service.policy


def subsets(probes: list[Probe]) -> dict[str, list[Probe]]:
    out: dict[str, list[Probe]] = {}
    for language in ("en", "ru"):
        mine = [p for p in probes if p.language == language]
        out[language] = mine
        out[f"{language}, shares a stem"] = [p for p in mine if p.target is None or p.shares_word]
        out[f"{language}, no shared stem"] = [p for p in mine if p.target is None or not p.shares_word]
    return out


def table(probes: list[Probe], policy: RecallPolicy) -> list[str]:
    lines = [
        f"| subset | questions | {' | '.join(f'{m} recall / injected' for m in ('dense', 'keyword', 'hybrid'))} "
        "| hybrid injected, unanswerable |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, mine in subsets(probes).items():
        answerable = sum(p.target is not None for p in mine)
        cells = []
        for mode in ("dense", "keyword", "hybrid"):
            s = score(mine, policy, mode)
            cells.append(f"{s.recall:.2f} / {s.injected:.1f}")
        lines.append(f"| {name} | {answerable} | {' | '.join(cells)} | {score(mine, policy).unanswerable_injected:.1f} |")
    return lines


def tune(probes: list[Probe], base: RecallPolicy) -> list[str]:
    """A grid over the relevance bar, the fusion weights and k, scored by
    two-fold cross-validation (chosen on one half of the questions, reported
    on the other), so the figures are not the set fitting itself."""
    grid = [
        replace(base, k=k, min_similarity=ms, similarity_margin=margin, dense_weight=dw, min_lift=lift,
                candidates_per_hit=cands)
        for k, ms, margin, dw, lift, cands in itertools.product(
            (3, 4, 5, 6, 8), (0.2, 0.25, 0.3, 0.35, 0.4, 0.5), (0.1, 0.15, 0.2, 0.3, 1.0), (0.5, 0.75, 1.0, 1.5),
            (0.0, 0.05, 0.1, 0.15, 0.2, 0.25), (2, 3, 4),
        )
    ]
    folds = [probes[0::2], probes[1::2]]
    lines = ["| fold chosen on | policy | recall en / ru (other fold) | injected | unanswerable injected |",
             "| --- | --- | --- | --- | --- |"]
    for chosen_on, report_on in ((0, 1), (1, 0)):
        best = max(grid, key=lambda policy: objective(folds[chosen_on], policy))
        for label, policy in ((f"{chosen_on + 1}", best), (f"{chosen_on + 1}: by hand", BY_HAND)):
            by_language = {lang: score([p for p in folds[report_on] if p.language == lang], policy) for lang in ("en", "ru")}
            overall = score(folds[report_on], policy)
            lines.append(
                f"| {label} | {describe(policy)} | {by_language['en'].recall:.2f} / {by_language['ru'].recall:.2f} "
                f"| {overall.injected:.1f} | {overall.unanswerable_injected:.1f} |"
            )
    best = max(grid, key=lambda policy: objective(probes, policy))
    lines.append(f"| whole set | {describe(best)} | - | - | - |")
    return lines + ["", f"Chosen on the whole set: {describe(best)}", "", *table(probes, best),
                    "", f"By hand, before the set: {describe(BY_HAND)}", "", *table(probes, BY_HAND)]


def objective(probes: list[Probe], policy: RecallPolicy) -> tuple[float, float]:
    """Recall first (the two languages' mean, to two places: a question
    more or less on one fold is noise); then fewer memories injected,
    answerable or not."""
    mean = sum(score([p for p in probes if p.language == lang], policy).recall for lang in ("en", "ru")) / 2
    s = score(probes, policy)
    return (round(mean, 2), -(s.injected + s.unanswerable_injected))


def describe(policy: RecallPolicy) -> str:
    return (f"k={policy.k}, min sim {policy.min_similarity:.2f}, margin {policy.similarity_margin:.2f}, "
            f"lift {policy.min_lift:.2f}, dense weight {policy.dense_weight:g}, {policy.candidates_per_hit} candidates per hit")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="also search the policy grid (two-fold)")
    parser.add_argument("--model", default=os.environ.get("EMBEDDING_MODEL"), help="embedding model (path or name)")
    parser.add_argument("--exact", action="store_true", help="the fp32 model, as with BOT_EMBEDDING_INT8=false")
    args = parser.parse_args()
    probes, shipped, name, policy = await collect(args.model, int8=not args.exact)
    agree = sum(replay(probe, policy) == ids for probe, ids in shipped)
    print(f"embedder {name}; {len(CASES)} facts + {len(DISTRACTORS)} distractors, "
          f"{len(UNANSWERABLE)} unanswerable questions; shipped policy: {describe(policy)}")
    print(f"replay agrees with MemoryService.recall on {agree} of {len(shipped)} questions\n")
    print("\n".join(table(probes, policy)))
    if args.tune:
        print()
        print("\n".join(tune(probes, policy)))


if __name__ == "__main__":
    asyncio.run(main())
