"""Model Markdown -> Telegram HTML chunks that fit one message each."""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser

from chatgpt_md_converter import split_html_for_telegram, telegram_format

TELEGRAM_LIMIT = 4096
# The splitter refuses limits below this; anything that still does not fit is cut as plain text.
MIN_SPLIT_LIMIT = 500


@dataclass(frozen=True)
class Chunk:
    html: str   # Telegram HTML for parse_mode="HTML"
    plain: str  # the same text without markup, the fallback when Telegram rejects the HTML


def utf16_len(text: str) -> int:
    """Telegram measures message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_plain(markup: str) -> str:
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


def render_markdown(markdown: str) -> str:
    """Telegram HTML for the model's Markdown. The converter can lose text on
    malformed input (an unmatched backtick inside emphasis leaves its internal
    placeholder behind); when the result is not faithful, show the text as is."""
    rendered = telegram_format(markdown)
    if _faithful(markdown, rendered):
        return rendered
    return html.escape(markdown, quote=False)


class _NestingChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ok = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.ok = False


def _well_nested(markup: str) -> bool:
    checker = _NestingChecker()
    checker.feed(markup)
    checker.close()
    return checker.ok and not checker.stack


def _faithful(source: str, rendered: str) -> bool:
    if "PLACEHOLDER" in rendered and "PLACEHOLDER" not in source:
        return False
    # Telegram rejects crossed tags, which the converter emits for some odd input.
    if not _well_nested(rendered):
        return False
    # Markup only removes punctuation and adds tag names, so every letter and
    # digit of the source must still be there (link URLs move into href).
    have = Counter(ch for ch in html.unescape(rendered) if ch.isalnum())
    need = Counter(ch for ch in source if ch.isalnum())
    return all(have[ch] >= count for ch, count in need.items())


def render_chunks(markdown: str, limit: int = TELEGRAM_LIMIT) -> list[Chunk]:
    """Render and split so every chunk's HTML (tags included, the stricter
    measure) fits ``limit``. Splits fall on paragraph, line or word boundaries
    and never inside a tag; tags open across a split are closed and reopened."""
    text = markdown.strip()
    if not text:
        return []
    rendered = render_markdown(text)
    pieces = _split_to_fit(rendered, limit)
    chunks = [Chunk(piece, html_to_plain(piece)) for piece in pieces]
    return [c for c in chunks if c.plain.strip()]


def _split_to_fit(rendered: str, limit: int) -> list[str]:
    if utf16_len(rendered) <= limit:
        return [rendered]
    attempt = limit
    while attempt >= MIN_SPLIT_LIMIT:
        pieces = [p for p in split_html_for_telegram(rendered, max_length=attempt) if p.strip()]
        if all(utf16_len(p) <= limit for p in pieces):
            return pieces
        # Wide characters (emoji count twice in UTF-16) overflowed; aim lower.
        attempt -= max(100, attempt // 8)
    return [html.escape(p) for p in _hard_split(html_to_plain(rendered), limit // 2)]


def _hard_split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def plain_chunks(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Split plain text on line/word boundaries (for texts sent without markup)."""
    out: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        window = rest[:limit]
        while utf16_len(window) > limit:
            window = window[:-64]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < len(window) // 2:
            cut = len(window)
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest.strip():
        out.append(rest)
    return out
