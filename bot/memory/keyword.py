"""Turning a query into keyword-search terms, shared by SQLite FTS5 and
PostgreSQL full-text search so both dialects find the same memories.

The bundled embedder is English-only, so for Russian (and other languages)
keyword search carries recall. Neither backend stems Russian here (FTS5's
tokenizer cannot, and PostgreSQL's 'simple' config keeps both dialects
alike), so each term is cut to a prefix: "сестра" becomes ``сест*`` and
matches "сестре", "сестру", "сестрой". Function words are dropped so a
match means a content word matched.
"""

from __future__ import annotations

import re

MAX_TERMS = 12

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


def stem(word: str) -> str:
    """A language-agnostic stand-in for stemming: drop the likely ending and
    mark the rest as a prefix (``*``). Short words and numbers match whole."""
    if word.isdigit() or len(word) <= 3:
        return word
    if len(word) <= 5:
        return word[:-1] + "*"
    return word[:-2] + "*"


def query_terms(text: str) -> list[str]:
    """Distinct content-word stems of a query, in order, at most MAX_TERMS
    (a trailing ``*`` marks a prefix)."""
    terms: list[str] = []
    for word in words(text):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()) or "_" in word:
            continue
        term = stem(word)
        if term not in terms:
            terms.append(term)
        if len(terms) == MAX_TERMS:
            break
    return terms


def fts5_match(user_id: int, terms: list[str]) -> str:
    """An FTS5 MATCH expression: the user's rows, any of the terms."""
    # Terms are \w+ (plus the prefix mark) and each is quoted, so no FTS5
    # syntax can leak in from what the user wrote.
    alternatives = " OR ".join(f'"{t[:-1]}"*' if t.endswith("*") else f'"{t}"' for t in terms)
    return f'owner:"u{int(user_id)}" AND text:({alternatives})'


def tsquery(terms: list[str]) -> str:
    """A PostgreSQL to_tsquery('simple', ...) text: any of the terms."""
    return " | ".join(f"'{t[:-1]}':*" if t.endswith("*") else f"'{t}'" for t in terms)
