"""Readable text from a fetched page: trafilatura for HTML (the article
without menus, footers and cookie banners), the body itself for text types.

trafilatura is imported on first use: it pulls in lxml and a few more
libraries, which a bot that never reads a page should not pay for at start."""

from __future__ import annotations

import codecs
import html
import re
from dataclasses import dataclass

from bot.errors import ToolError
from bot.tools.web.fetch import FetchedPage

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Text that is worth reading as it is, besides text/*.
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/ld+json", "application/rss+xml"})
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class Readable:
    title: str
    text: str


def is_readable_type(media_type: str) -> bool:
    """HTML, text, or unknown (the server did not say: the body decides)."""
    return (
        not media_type
        or media_type in HTML_TYPES
        or media_type in TEXT_TYPES
        or media_type.startswith("text/")
        or media_type.endswith(("+json", "+xml"))
    )


def readable_text(page: FetchedPage) -> Readable:
    kind = _kind(page)
    if kind == "html":
        return _from_html(page)
    if kind == "text":
        return Readable("", _tidy(_decode(page)))
    raise ToolError("the page is binary data without a content type, which read_url cannot read")


def _kind(page: FetchedPage) -> str:
    if page.media_type in HTML_TYPES:
        return "html"
    if page.media_type:
        return "text"
    head = page.body[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "html"
    return "binary" if b"\x00" in head else "text"


def _decode(page: FetchedPage) -> str:
    encoding = page.charset if page.charset and _known_codec(page.charset) else "utf-8"
    text = page.body.decode(encoding, errors="replace")
    if "\x00" in text[:4096]:
        raise ToolError(f"the page claims to be {page.media_type or 'text'} but holds binary data")
    return text


def _from_html(page: FetchedPage) -> Readable:
    import trafilatura

    # With a charset from the headers decode here; without one trafilatura
    # guesses from the bytes (meta tags, byte statistics).
    source: str | bytes = page.body
    if page.charset and _known_codec(page.charset):
        source = page.body.decode(page.charset, errors="replace")
    document = trafilatura.bare_extraction(
        source, url=page.url, with_metadata=True, include_comments=False, include_tables=True
    )
    text = getattr(document, "text", None) or ""
    if not text.strip():
        # No main content found (a short page, a list of links): all the
        # visible text is better than nothing.
        text = trafilatura.html2txt(source) or ""
    title = getattr(document, "title", None) or _title_tag(page.body)
    return Readable(_tidy(title or ""), _tidy(text))


def _title_tag(body: bytes) -> str:
    match = _TITLE.search(body[:65536])
    if not match:
        return ""
    return html.unescape(match.group(1).decode("utf-8", errors="replace"))


def _known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _tidy(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def excerpt(text: str, limit: int) -> tuple[str, int]:
    """At most ``limit`` characters of ``text``, cut at a paragraph, line or
    word boundary near the limit when there is one; and how many were left out."""
    if len(text) <= limit:
        return text, 0
    piece = text[:limit]
    floor = int(limit * 0.8)  # never give up more than a fifth for a neat cut
    for boundary in ("\n\n", "\n", " "):
        at = piece.rfind(boundary)
        if at >= floor:
            piece = piece[:at]
            break
    return piece.rstrip(), len(text) - len(piece.rstrip())
