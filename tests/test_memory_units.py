"""Small pure parts of memory: keyword terms, model-answer parsing, the index
file format and the LRU bound."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from bot.errors import IndexFileError
from bot.memory import keyword
from bot.memory.extraction import ExtractionFailed, parse_decisions, parse_facts
from bot.memory.index import (
    CachedIndex,
    IndexCache,
    SketchIndex,
    VectorIndex,
    fit,
    load_index,
    save_index,
)

NOW = datetime(2026, 11, 21, tzinfo=timezone.utc)


def test_query_terms_drop_function_words_and_stem_the_rest() -> None:
    assert keyword.query_terms("Where does my sister live?") == ["sister", "live"]
    assert keyword.query_terms("Где живёт моя сестра?") == ["живет", "сестр"]
    assert keyword.query_terms("thanks, that's all!") == []
    assert keyword.query_terms("born in 2019") == ["born", "2019"]


@pytest.mark.parametrize(
    ("fact", "question"),
    [
        ("Сестра Катя живёт в Казани", "Что подарить сестре?"),
        ("Работает учителем в школе", "Кем работает мой учитель?"),
        ("Has two sisters", "Where does my sister live?"),
        ("Is allergic to peanuts", "what about my peanut allergy"),
    ],
)
def test_inflected_forms_share_a_stem(fact: str, question: str) -> None:
    """A fact and a question about it meet on a stem, in either language."""
    assert set(keyword.index_terms(fact).split()) & set(keyword.query_terms(question))


def test_index_terms_hold_each_content_stem_once() -> None:
    assert keyword.index_terms("Моя сестра, сестра Катя, живёт в Казани") == "сестр кат живет казан"
    assert keyword.index_terms("ok") == "" and keyword.index_terms("") == ""


@pytest.mark.parametrize("hostile", ['" OR owner:u2 OR "', "text:(a) NOT b*", "'); DROP TABLE memories; --", "NEAR(a b)"])
def test_query_syntax_cannot_leak_into_the_match_expression(hostile: str) -> None:
    match = keyword.fts5_match(7, keyword.query_terms(hostile))
    assert match.startswith('owner:"u7" AND terms:(')
    inner = match.removeprefix('owner:"u7" AND terms:(').removesuffix(")")
    for term in inner.split(" OR "):
        assert term.startswith('"') and term.endswith('"') and term.count('"') == 2
    assert all(c.isalnum() or c in "' |" for c in keyword.tsquery(keyword.query_terms(hostile)))


def test_rarer_terms_weigh_more_in_exact_integers() -> None:
    weights = [keyword.rarity(n) for n in (1, 2, 10, 100, keyword.COMMON_TERM_ROWS + 1)]
    assert weights == sorted(weights, reverse=True) and len(set(weights)) == len(weights)
    assert all(isinstance(w, int) and w > 0 for w in weights)


def test_facts_parse_leniently_and_skip_junk() -> None:
    answer = 'Here you go:\n```json\n{"facts": [{"text": "  Lives   in Paris ", "kind": "PROFILE", "importance": 9},' \
        ' {"text": ""}, 42, "Likes tea", {"text": "lives in paris"},' \
        ' {"text": "In Rome this week", "kind": "ephemeral", "expires_in_days": "3"}]}\n```'
    facts = parse_facts(answer, NOW, 7)
    assert [(f.text, f.kind, f.importance) for f in facts] == [
        ("Lives in Paris", "profile", 5),
        ("Likes tea", "fact", 3),
        ("In Rome this week", "ephemeral", 3),
    ]
    assert facts[2].expires_at == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert parse_facts('{"facts": []}', NOW, 7) == []


@pytest.mark.parametrize("garbage", ["", "no json here", "[1, 2]", '{"facts": "x"}', '{"facts": [', "{'facts': []}"])
def test_unusable_extraction_answers_fail_cleanly(garbage: str) -> None:
    with pytest.raises(ExtractionFailed):
        parse_facts(garbage, NOW, 7)


def test_decisions_parse_and_ignore_unknown_actions() -> None:
    decisions = parse_decisions(
        '{"decisions": [{"fact": "f1", "action": "UPDATE", "memory": "m2", "text": "Lives in Paris"},'
        ' {"fact": "F2", "action": "explode"}, {"fact": "F3", "action": "none"}, "junk"]}'
    )
    assert set(decisions) == {"F1", "F3"}
    assert (decisions["F1"].action, decisions["F1"].memory_label, decisions["F1"].text) == ("update", "M2", "Lives in Paris")


def _index(count: int, dim: int = 8) -> VectorIndex:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(dim)
    index.upsert(range(1, count + 1), vectors)
    return index


def test_index_file_round_trip_and_every_kind_of_damage(tmp_path: Path) -> None:
    path = tmp_path / "5.faiss"
    index = _index(20)
    save_index(path, index, "model-a", NOW)
    loaded, snapshot = load_index(path, "model-a", 8)
    assert loaded.ids() == set(range(1, 21)) and snapshot == NOW
    query = np.ones(8, dtype=np.float32) / np.sqrt(8)
    assert loaded.search(query, 3) == index.search(query, 3)
    assert not list(tmp_path.glob(".5.faiss.*")), "no temp file is left behind"

    with pytest.raises(IndexFileError, match="built with"):
        load_index(path, "model-b", 8)
    data = path.read_bytes()
    for damaged, reason in [
        (data[:-10], "checksum"),
        (data.replace(b'"dim": 8', b'"dim": 9'), "built with"),
        (b"garbage", "not an index file"),
        (data[:20], "bad header|checksum"),
    ]:
        path.write_bytes(damaged)
        with pytest.raises(IndexFileError, match=reason):
            load_index(path, "model-a", 8)
    path.unlink()
    with pytest.raises(IndexFileError, match="missing"):
        load_index(path, "model-a", 8)


def test_upsert_replaces_instead_of_duplicating() -> None:
    index = _index(3)
    index.upsert([2], np.ones((1, 8), dtype=np.float32) / np.sqrt(8))
    assert index.size == 3
    assert index.search(np.ones(8, dtype=np.float32) / np.sqrt(8), 1)[0][0] == 2
    assert index.remove([2, 99]) == 1 and index.ids() == {1, 3}


def _matrix(count: int, dim: int = 8, seed: int = 1) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Same ids in the same order; scores equal up to float rounding."""
    return [i for i, _ in a] == [i for i, _ in b] and np.allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_large_indexes_are_sketched_and_small_again_exact() -> None:
    exact = _index(50)
    sketched = fit(exact, 40)
    assert isinstance(sketched, SketchIndex) and sketched.ids() == exact.ids()
    assert fit(sketched, 40) is sketched
    queries = _matrix(10, seed=2)
    # Under SKETCH_CANDIDATES vectors every one is rescored: the same answers as exact.
    assert all(_same(sketched.search(q, 5), exact.search(q, 5)) for q in queries)
    assert fit(exact, 50) is exact, "at the threshold: still exact"
    sketched.remove(range(1, 21))
    assert fit(sketched, 40) is sketched, "between half the threshold and it: no flip-flopping"
    sketched.remove(range(21, 31))
    back = fit(sketched, 40)
    assert type(back) is VectorIndex and back.ids() == set(range(31, 51))
    assert _same(back.search(queries[0], 3), sketched.search(queries[0], 3))


def test_sketch_index_updates_deletes_and_round_trips(tmp_path: Path) -> None:
    index = fit(_index(30), 10)
    assert isinstance(index, SketchIndex)
    target = np.ones((1, 8), dtype=np.float32) / np.sqrt(8)
    index.upsert([7], target)
    assert index.size == 30 and index.search(target[0], 1)[0][0] == 7
    assert index.remove([7, 99]) == 1 and 7 not in index.ids()
    assert all(i != 7 for i, _ in index.search(target[0], 30))

    path = tmp_path / "5.faiss"
    save_index(path, index, "model-a", NOW)
    loaded, _ = load_index(path, "model-a", 8)
    assert isinstance(loaded, SketchIndex) and loaded.ids() == index.ids()
    assert loaded.search(target[0], 5) == index.search(target[0], 5)
    loaded.upsert([7], target)
    assert loaded.search(target[0], 1)[0][0] == 7, "a loaded sketch index still takes writes"

    data = path.read_bytes()
    for damaged, reason in [
        (data.replace(b'"kind": "sketch"', b'"kind": "exact"'), "FAISS|not an"),
        (data.replace(b'"kind": "sketch"', b'"kind": "hnsw!"'), "unknown index kind"),
    ]:
        path.write_bytes(damaged)
        with pytest.raises(IndexFileError, match=reason):
            load_index(path, "model-a", 8)


def test_index_files_without_a_kind_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "5.faiss"
    save_index(path, _index(5), "model-a", NOW)
    data = path.read_bytes().replace(b', "kind": "exact"', b"")
    path.write_bytes(data)
    loaded, _ = load_index(path, "model-a", 8)
    assert type(loaded) is VectorIndex and loaded.size == 5


def test_cache_evicts_least_recently_used_by_vectors_and_by_count() -> None:
    cache = IndexCache(max_vectors=10, max_entries=3)
    cache.put(1, CachedIndex(_index(6)))
    cache.put(2, CachedIndex(_index(3)))
    cache.get(1)  # 1 is now the most recently used
    evicted = cache.put(3, CachedIndex(_index(4)))
    assert [user for user, _ in evicted] == [2], "the least recently used goes first, and only as needed"
    assert 3 in cache and cache.total_vectors <= 10
    many = IndexCache(max_vectors=10**6, max_entries=3)
    for user in range(5):
        many.put(user, CachedIndex(VectorIndex(8)))
    assert [user for user, _ in many.items()] == [2, 3, 4]


def test_a_dense_hit_must_stand_out_from_the_other_candidates() -> None:
    """A model that finds every text of a language alike (the bundled English
    model on Russian) gives no dense hit; one that stands out is kept."""
    from bot.memory.relevance import LIFT_MIN_CANDIDATES, RecallPolicy, relevant_dense

    policy = RecallPolicy(min_similarity=0.25, similarity_margin=0.15, min_lift=0.10)
    alike = [(i, 0.62 - i * 0.002) for i in range(20)]
    assert relevant_dense(alike, policy) == []
    standing_out = [(99, 0.75), *alike[1:]]
    assert relevant_dense(standing_out, policy) == [(99, 0.75)]
    # Too few candidates to tell the user's typical similarity: the other bars only.
    few = [(1, 0.50), (2, 0.45)][: LIFT_MIN_CANDIDATES - 1]
    assert relevant_dense(few, policy) == few
    assert relevant_dense([(1, 0.2)], policy) == [], "below the absolute bar"


def test_fusion_weighs_a_shared_word_over_a_similar_meaning_of_the_same_rank() -> None:
    from bot.memory.relevance import RecallPolicy, fuse

    policy = RecallPolicy(dense_weight=0.5, keyword_weight=1.0)
    fused = fuse([(1, 0.8), (2, 0.7)], [3, 2], policy)
    assert [memory_id for memory_id, _ in fused] == [2, 3, 1], "found by both first, then the keyword hit"
    even = fuse([(5, 0.9)], [4], RecallPolicy(dense_weight=1.0))
    assert [memory_id for memory_id, _ in even] == [5, 4], "equal scores: the newer memory first"
