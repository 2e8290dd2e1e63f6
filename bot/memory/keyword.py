"""Turning text into keyword-search terms, shared by SQLite FTS5 and
PostgreSQL full-text search so both dialects find the same memories.

The bundled embedder is English-only, so for Russian (and other languages)
keyword search carries recall. Words are reduced to their Snowball stems
(PyStemmer: Russian for Cyrillic words, English for the rest), in Python,
on both sides: each memory row keeps its stems in ``search_terms`` (written
with the text), the full-text index covers that column, and a query is
stemmed alike. So "сестра", "сестре" and "сестрой" all become ``сестр``
whatever the database, and neither SQLite (whose tokenizer cannot stem
Russian) nor PostgreSQL's language configurations (one language per
expression) decide what matches. Function words are dropped on both sides,
so a match means a content word matched.

Ranking is decided here too (ranking_sql), in one statement that both
dialects run alike, from how many of the user's memories each term matches:
a row scores the sum of its terms' rarity, ``log(1 + REFERENCE_ROWS /
matches)``, ties going to the newest row. Each term reads only its newest
COMMON_TERM_ROWS + 1 matches; a term with that many is common for this user.
Common terms are dropped when a rarer term matched anything (the rare word
already picks the rows; a common one would only reorder them a little), and
rank their newest matches on their own otherwise. So a search touches at
most MAX_TERMS * (COMMON_TERM_ROWS + 1) index entries however many memories
the user has. (FTS5's bm25() scored every matching row and, to weigh the
owner filter, counted all of the user's rows: 12-28 ms at 100k memories.)
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from functools import cache

import Stemmer

MAX_TERMS = 12
# A term matching more of one user's memories than this is "common".
COMMON_TERM_ROWS = 500
# Sets how much rarity counts against matching one more term: roughly the
# size of a large user's memory (the default cap). A fixed number, because
# counting the user's rows on every search would cost what the cap saves.
REFERENCE_ROWS = 10_000

# Words that carry no topic in a question about oneself ("what is my ...",
# "как зовут мою ..."). Kept short on purpose: a missing stopword only adds
# a weak match, a wrong one hides a real match.
STOPWORDS = frozenset(
    """
    a about am an and any are as at be been but by can could did do does for from had has
    have he her him his how i i'm if in into is it its me my myself no not of on or our
    please remember recall she should so tell that the their them there they this to
    us was we were what when where which who whom why will with would you your
    know forget forgot again also just like all thanks thank ok okay yes hi hello hey bye
    sure great good nice cool
    а без бы был была были было в вам вас во вот все всё где да для до его ее её если есть
    же за и из или им их к как ко когда кто ли мне меня мной мои моего моей мой мою моя
    мы на над не нет ни но о об обо он она они от по под при про с со так там то тоже ты у
    уже чем что чтобы это эта эти этот я помнишь помни запомни знаешь скажи какой какая
    какие каким какую зовут кем кому спасибо привет пока ладно хорошо ок окей
    """.split()
)

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower case, with ё folded into е (Russian writes either)."""
    return text.lower().replace("ё", "е")


def words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


_CYRILLIC = re.compile("[\u0400-\u04ff]")
_stemmers = threading.local()  # a PyStemmer object must not be shared between threads


def _stemmer(language: str) -> Stemmer.Stemmer:
    stemmer = getattr(_stemmers, language, None)
    if stemmer is None:
        stemmer = Stemmer.Stemmer(language)
        setattr(_stemmers, language, stemmer)
    return stemmer


def stem(word: str) -> str:
    """The Snowball stem of a normalized word: Russian rules for a Cyrillic
    word, English for any other. Numbers stay whole."""
    if word.isdigit():
        return word
    return _stemmer("russian" if _CYRILLIC.search(word) else "english").stemWord(word)


def _content_words(text: str) -> list[str]:
    return [
        word for word in words(text)
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()) and "_" not in word
    ]


def query_terms(text: str) -> list[str]:
    """Distinct stems of a query's content words, in order, at most MAX_TERMS."""
    terms: list[str] = []
    for word in _content_words(text):
        term = stem(word)
        if term not in terms:
            terms.append(term)
            if len(terms) == MAX_TERMS:
                break
    return terms


def index_terms(text: str) -> str:
    """What a memory's ``search_terms`` column holds: the stems of its
    content words, space-separated, each once."""
    return " ".join(dict.fromkeys(stem(word) for word in _content_words(text)))


def fts5_match(user_id: int, terms: list[str]) -> str:
    """An FTS5 MATCH expression: the user's rows, any of the terms."""
    # Terms are \w+ and each is quoted, so no FTS5 syntax can leak in from
    # what the user wrote.
    alternatives = " OR ".join(f'"{t}"' for t in terms)
    return f'owner:"u{int(user_id)}" AND terms:({alternatives})'


def tsquery(terms: list[str]) -> str:
    """A PostgreSQL to_tsquery('simple', ...) text: any of the terms."""
    return " | ".join(f"'{t}'" for t in terms)


def rarity(matches: int) -> int:
    """A term's weight from how many memories it matches, in integer
    thousandths, so both databases add weights exactly and tie-break alike."""
    return round(1000 * math.log1p(REFERENCE_ROWS / matches))


@cache
def _rarity_values(common: int) -> str:
    # Every count a term can have, 1 .. common + 1: a constant table, so the
    # statement needs no ln() (an optional SQLite build feature).
    return ", ".join(f"({n}, {rarity(n)})" for n in range(1, common + 2))


def ranking_sql(term_matches: Sequence[str]) -> str:
    """A WITH clause ending in ``ranked (id, score)``: the best :inner ids.
    ``term_matches[i]`` selects ``id`` of the rows matching term i, newest
    first, at most COMMON_TERM_ROWS + 1 of them."""
    common = COMMON_TERM_ROWS
    hits = " UNION ALL ".join(f"SELECT {i} AS term, id FROM ({m}) AS h{i}" for i, m in enumerate(term_matches))
    return (
        f"WITH hits AS ({hits}), "
        "counts AS (SELECT term, count(*) AS n FROM hits GROUP BY term), "
        f"rarity (n, weight) AS (VALUES {_rarity_values(common)}), "
        "used AS (SELECT counts.term, rarity.weight FROM counts JOIN rarity ON rarity.n = counts.n "
        f"WHERE counts.n <= {common} OR NOT EXISTS (SELECT 1 FROM counts WHERE n <= {common})), "
        "ranked AS (SELECT hits.id, sum(used.weight) AS score FROM hits JOIN used ON used.term = hits.term "
        "GROUP BY hits.id ORDER BY score DESC, hits.id DESC LIMIT :inner) "
    )
