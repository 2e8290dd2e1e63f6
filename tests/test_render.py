from __future__ import annotations

import html
import os
import re

from hypothesis import given, settings, strategies as st

from bot.channels.telegram.render import TELEGRAM_LIMIT, html_to_plain, plain_chunks, render_chunks, utf16_len

TAG = re.compile(r"<(/?)([a-z-]+)[^>]*>")


def balanced(markup: str) -> bool:
    stack: list[str] = []
    for closing, name in TAG.findall(markup):
        if closing:
            if not stack or stack.pop() != name:
                return False
        else:
            stack.append(name)
    return not stack


def test_markdown_becomes_telegram_html() -> None:
    [chunk] = render_chunks("**bold** _it_ `x<y` [site](https://example.com)\n\n- one\n- two")
    assert "<b>bold</b>" in chunk.html and "<i>it</i>" in chunk.html
    assert "<code>x&lt;y</code>" in chunk.html
    assert '<a href="https://example.com">site</a>' in chunk.html
    assert chunk.plain.startswith("bold it x<y site")


def test_ten_thousand_characters_split_on_boundaries() -> None:
    paragraphs = [f"Paragraph {i}: " + " ".join(f"word{j}" for j in range(120)) for i in range(12)]
    text = "\n\n".join(paragraphs)
    assert len(text) > 10_000
    chunks = render_chunks(text)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert utf16_len(chunk.html) <= TELEGRAM_LIMIT
        assert balanced(chunk.html)
        assert not chunk.plain.startswith(("ord", " ")), "split inside a word"
    joined = " ".join(c.plain for c in chunks)
    for i in range(12):
        assert f"Paragraph {i}:" in joined


def test_long_code_block_is_closed_and_reopened() -> None:
    text = "```python\n" + "print('line')\n" * 700 + "```"
    chunks = render_chunks(text)
    assert len(chunks) >= 2
    for chunk in chunks:
        assert utf16_len(chunk.html) <= TELEGRAM_LIMIT
        assert chunk.html.startswith("<pre>") and chunk.html.rstrip().endswith("</pre>")


def test_emoji_count_twice_toward_the_limit() -> None:
    text = " ".join(["😀" * 10] * 600)
    chunks = render_chunks(text)
    assert all(utf16_len(c.html) <= TELEGRAM_LIMIT for c in chunks)
    assert sum(c.plain.count("😀") for c in chunks) == 6000


def test_empty_and_whitespace_give_no_chunks() -> None:
    assert render_chunks("") == []
    assert render_chunks(" \n\n ") == []


def test_plain_chunks_split_on_words() -> None:
    text = ("alpha beta gamma " * 800).strip()
    pieces = plain_chunks(text)
    assert all(utf16_len(p) <= TELEGRAM_LIMIT for p in pieces)
    assert " ".join(pieces).split() == text.split()


@settings(max_examples=int(os.environ.get("RENDER_EXAMPLES", "60")), deadline=None)
@given(st.text(alphabet=st.sampled_from(list("я7 *_`#>-[]()\n😀ж<&")), min_size=1, max_size=12_000))
def test_any_text_fits_and_loses_no_letters(text: str) -> None:
    chunks = render_chunks(text)
    for chunk in chunks:
        assert utf16_len(chunk.html) <= TELEGRAM_LIMIT
        assert balanced(chunk.html)
        assert html_to_plain(chunk.html) == chunk.plain
    # Markdown may turn markup characters into tags, never drop letters. A
    # fence's language name moves into an attribute, so count in the markup;
    # these letters appear in no tag or attribute name.
    kept = html.unescape("".join(c.html for c in chunks))
    for letter in "я7ж😀":
        assert kept.count(letter) == text.count(letter)
