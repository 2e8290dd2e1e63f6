"""What a file a user sent really is, and its text.

The bytes decide first: a PDF's ``%PDF-`` header, a ZIP holding
``word/document.xml``, the signatures of images, archives, media and
programs. The name and MIME type come second, because Telegram passes on
whatever the sender's app claimed: a PDF renamed ``.txt`` is read as a PDF,
and a photo or a saved login page named ``report.pdf`` is called what it is
instead of being read as something it is not.

Text comes from maintained libraries (pypdf, python-docx, trafilatura via
the web tools' extractor) or from UTF-8 decoding. Parsing is CPU work that
can take seconds on a large file, so ``read_document`` runs it in a thread,
bounded in pages and characters; the caller bounds the input size. Any
failure inside a parser becomes an ``UnreadableDocument`` with a reason,
never an exception a chat could show."""

from __future__ import annotations

import asyncio
import enum
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

log = logging.getLogger(__name__)

PDF_MAGIC = b"%PDF-"
# Readers accept the header anywhere in the first kilobyte (some generators
# write a few bytes of junk first), so we do too, unless the file is text
# that merely mentions it.
PDF_HEADER_WINDOW = 1024
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # old Office files, and encrypted new ones
DOCX_BODY = "word/document.xml"
# A DOCX is a ZIP: a few megabytes can unpack to gigabytes of XML. python-docx
# loads every part into memory, so the declared unpacked size is checked first.
MAX_UNPACKED_BYTES = 64 * 1024 * 1024

PDF_SUFFIXES = frozenset({".pdf"})
PDF_TYPES = frozenset({"application/pdf", "application/x-pdf"})
DOCX_SUFFIXES = frozenset({".docx", ".docm"})
DOCX_TYPES = frozenset({"application/vnd.openxmlformats-officedocument.wordprocessingml.document"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})


class DocumentKind(enum.Enum):
    PDF = "PDF"
    DOCX = "DOCX"
    HTML = "HTML"
    TEXT = "text"


class Reason(enum.Enum):
    """Why a file gave no text; each has its own answer for the user."""

    EMPTY = "empty"
    UNSUPPORTED = "unsupported"  # not a kind we read (an image, an archive...)
    CORRUPT = "corrupt"  # claims or starts like a kind we read, but will not parse
    ENCRYPTED = "encrypted"  # needs a password
    NO_TEXT = "no_text"  # parses, but holds no text (a scanned PDF)


@dataclass(frozen=True)
class Sort:
    """What a file we do not read looks like: a category for the user's
    sentence (image, archive, audio_video, program, office) and the format."""

    category: str
    format: str


class UnreadableDocument(Exception):
    def __init__(self, reason: Reason, kind: DocumentKind | None = None, sort: Sort | None = None) -> None:
        super().__init__(f"{reason.value} {kind.value if kind else ''} {sort or ''}".strip())
        self.reason = reason
        self.kind = kind
        self.sort = sort


@dataclass(frozen=True)
class ExtractionLimits:
    max_pages: int  # PDF pages read; the rest are left unread
    max_chars: int  # text kept; more is never needed (the saved copy has a size limit)


@dataclass(frozen=True)
class Extracted:
    kind: DocumentKind
    text: str
    format_name: str  # for people and the model: "PDF", "DOCX", "HTML", "Markdown", "text"
    pages: int | None = None  # pages in a PDF
    pages_read: int | None = None  # fewer than ``pages`` when the page limit stopped the reading
    cut_at_max_chars: bool = False  # the document has more text than ``text``


# Signatures of common files we do not read, so the answer can name them.
# Only a file that is not also valid UTF-8 text is taken for one of these.
_FOREIGN_SIGNATURES: tuple[tuple[int, bytes, Sort], ...] = (
    (0, b"\xff\xd8\xff", Sort("image", "JPEG")),
    (0, b"\x89PNG\r\n\x1a\n", Sort("image", "PNG")),
    (0, b"GIF87a", Sort("image", "GIF")),
    (0, b"GIF89a", Sort("image", "GIF")),
    (8, b"WEBP", Sort("image", "WebP")),
    (4, b"ftypheic", Sort("image", "HEIC")),
    (0, b"II*\x00", Sort("image", "TIFF")),
    (0, b"MM\x00*", Sort("image", "TIFF")),
    (0, b"\x1f\x8b", Sort("archive", "gzip")),
    (0, b"7z\xbc\xaf\x27\x1c", Sort("archive", "7z")),
    (0, b"Rar!\x1a\x07", Sort("archive", "RAR")),
    (0, b"BZh", Sort("archive", "bzip2")),
    (0, b"\xfd7zXZ\x00", Sort("archive", "xz")),
    (0, b"ID3", Sort("audio_video", "MP3")),
    (0, b"OggS", Sort("audio_video", "Ogg")),
    (0, b"fLaC", Sort("audio_video", "FLAC")),
    (8, b"WAVE", Sort("audio_video", "WAV")),
    (4, b"ftyp", Sort("audio_video", "MP4")),
    (0, b"\x1aE\xdf\xa3", Sort("audio_video", "Matroska/WebM")),
    (0, b"\x7fELF", Sort("program", "ELF")),
    (0, b"MZ", Sort("program", "EXE")),
)


def identify(data: bytes, file_name: str | None, mime_type: str | None) -> DocumentKind:
    """The kind of document ``data`` is; raises UnreadableDocument when it is
    empty or not a kind we read."""
    if not data:
        raise UnreadableDocument(Reason.EMPTY)
    claimed = _claimed_kind(file_name, mime_type)
    if _starts_like_pdf(data):
        return DocumentKind.PDF
    if data.startswith(ZIP_MAGIC):
        return _zip_kind(data, claimed)
    if data.startswith(OLE_MAGIC):
        # Word wraps a password-protected .docx in this older container.
        if claimed is DocumentKind.DOCX:
            raise UnreadableDocument(Reason.ENCRYPTED, DocumentKind.DOCX)
        raise UnreadableDocument(Reason.UNSUPPORTED, sort=Sort("office", "DOC/XLS/PPT"))
    foreign = _foreign_sort(data)
    text = decode_text(data)
    if foreign is not None and text is None:  # valid UTF-8 text that happens to start with "MZ" is text
        raise UnreadableDocument(Reason.UNSUPPORTED, sort=foreign)
    if claimed in (DocumentKind.PDF, DocumentKind.DOCX):
        # Named or typed as one, but without its signature: a damaged file, or
        # something else saved under that name (often an HTML error page).
        raise UnreadableDocument(Reason.CORRUPT, claimed)
    if (claimed is DocumentKind.HTML or _looks_like_html(data)) and b"\x00" not in data:
        # Not necessarily UTF-8: trafilatura reads the charset from meta tags
        # or guesses it from the bytes.
        return DocumentKind.HTML
    if text is None:
        raise UnreadableDocument(Reason.UNSUPPORTED)
    return DocumentKind.TEXT


def extract_text(
    data: bytes, file_name: str | None, mime_type: str | None, limits: ExtractionLimits
) -> Extracted:
    """The text of a document (blocking: call from a thread); raises
    UnreadableDocument."""
    kind = identify(data, file_name, mime_type)
    try:
        if kind is DocumentKind.PDF:
            extracted = _pdf_text(data, limits)
        elif kind is DocumentKind.DOCX:
            extracted = _docx_text(data, limits)
        elif kind is DocumentKind.HTML:
            extracted = _html_text(data, limits)
        else:
            extracted = _plain_text(data, file_name, mime_type, limits)
    except UnreadableDocument:
        raise
    except Exception as exc:  # parsers raise all sorts on malformed input
        log.info("could not read a %s document: %s: %s", kind.value, type(exc).__name__, exc)
        raise UnreadableDocument(Reason.CORRUPT, kind) from exc
    if not extracted.text.strip():
        raise UnreadableDocument(Reason.NO_TEXT, kind)
    return extracted


async def read_document(
    data: bytes, file_name: str | None, mime_type: str | None, limits: ExtractionLimits
) -> Extracted:
    """``extract_text`` off the event loop."""
    return await asyncio.to_thread(extract_text, data, file_name, mime_type, limits)


def decode_text(data: bytes) -> str | None:
    """The text of an upload, or None if it is not UTF-8 text (a binary file
    renamed to .txt, for example)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    return text


# ---- identification ----------------------------------------------------------


def _suffix(file_name: str | None) -> str:
    return PurePosixPath(file_name or "").suffix.lower()


def _media_type(mime_type: str | None) -> str:
    return (mime_type or "").split(";")[0].strip().lower()


def _claimed_kind(file_name: str | None, mime_type: str | None) -> DocumentKind | None:
    suffix, media_type = _suffix(file_name), _media_type(mime_type)
    if suffix in PDF_SUFFIXES or media_type in PDF_TYPES:
        return DocumentKind.PDF
    if suffix in DOCX_SUFFIXES or media_type in DOCX_TYPES:
        return DocumentKind.DOCX
    if suffix in HTML_SUFFIXES or media_type in HTML_TYPES:
        return DocumentKind.HTML
    return None


def _starts_like_pdf(data: bytes) -> bool:
    at = data.find(PDF_MAGIC, 0, PDF_HEADER_WINDOW)
    if at < 0:
        return False
    return not data[:at].strip() or decode_text(data) is None


def _zip_kind(data: bytes, claimed: DocumentKind | None) -> DocumentKind:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError):
        if claimed is DocumentKind.DOCX:
            raise UnreadableDocument(Reason.CORRUPT, DocumentKind.DOCX) from None
        raise UnreadableDocument(Reason.UNSUPPORTED, sort=Sort("archive", "ZIP")) from None
    if DOCX_BODY in names:
        return DocumentKind.DOCX
    if "xl/workbook.xml" in names:
        raise UnreadableDocument(Reason.UNSUPPORTED, sort=Sort("office", "XLSX"))
    if "ppt/presentation.xml" in names:
        raise UnreadableDocument(Reason.UNSUPPORTED, sort=Sort("office", "PPTX"))
    if "mimetype" in names and "content.xml" in names:
        raise UnreadableDocument(Reason.UNSUPPORTED, sort=Sort("office", "OpenDocument"))
    if claimed is DocumentKind.DOCX:
        raise UnreadableDocument(Reason.CORRUPT, DocumentKind.DOCX)
    raise UnreadableDocument(Reason.UNSUPPORTED, sort=Sort("archive", "ZIP"))


def _foreign_sort(data: bytes) -> Sort | None:
    for offset, signature, sort in _FOREIGN_SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return sort
    return None


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


# ---- extraction ----------------------------------------------------------------


def _pdf_text(data: bytes, limits: ExtractionLimits) -> Extracted:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(io.BytesIO(data))
        # An owner password alone (printing or copying restricted) opens with
        # the empty user password; a user password we cannot know.
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnreadableDocument(Reason.ENCRYPTED, DocumentKind.PDF)
        total = len(reader.pages)
        pages: list[str] = []
        chars = 0
        for index in range(min(total, limits.max_pages)):
            text = (reader.pages[index].extract_text() or "").strip()
            pages.append(text)
            chars += len(text)
            if chars > limits.max_chars:
                break
    except (FileNotDecryptedError, DependencyError):
        raise UnreadableDocument(Reason.ENCRYPTED, DocumentKind.PDF) from None
    if not any(pages):
        # Pages without a text layer: scanned paper or pictures of text.
        raise UnreadableDocument(Reason.NO_TEXT, DocumentKind.PDF)
    text = _join_pages(pages)
    kept = text[: limits.max_chars]
    return Extracted(
        DocumentKind.PDF,
        kept,
        "PDF",
        pages=total,
        pages_read=len(pages),
        cut_at_max_chars=len(kept) < len(text),
    )


def _join_pages(pages: list[str]) -> str:
    """Pages marked by number, so the model can answer "what is on page 3"."""
    if len(pages) == 1:
        return pages[0]
    return "\n\n".join(f"[page {number}]\n{text}" for number, text in enumerate(pages, start=1))


def _docx_text(data: bytes, limits: ExtractionLimits) -> Extracted:
    import docx
    import docx.table

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    if unpacked > MAX_UNPACKED_BYTES:
        log.info("refused a DOCX that unpacks to %d bytes", unpacked)
        raise UnreadableDocument(Reason.CORRUPT, DocumentKind.DOCX)
    document = docx.Document(io.BytesIO(data))
    blocks: list[str] = []
    chars = 0
    for block in document.iter_inner_content():  # paragraphs and tables, in reading order
        text = _table_text(block) if isinstance(block, docx.table.Table) else _paragraph_text(block)
        if not text:
            continue
        blocks.append(text)
        chars += len(text)
        if chars > limits.max_chars:
            break
    text = "\n\n".join(blocks)
    kept = text[: limits.max_chars]
    return Extracted(DocumentKind.DOCX, kept, "DOCX", cut_at_max_chars=len(kept) < len(text))


def _paragraph_text(paragraph: Paragraph) -> str:
    """A paragraph, with headings marked as in Markdown so the outline survives."""
    text = paragraph.text.strip()
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if text and style.startswith("Heading "):
        level = style.removeprefix("Heading ").strip()
        if level.isdigit():
            return f"{'#' * min(int(level), 6)} {text}"
    return text


def _table_text(table: Table) -> str:
    """One line per row, cells separated by " | "; a merged cell is reported
    once per row, not once per grid column it spans."""
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous: object = None
        for cell in row.cells:
            if cell._tc is previous:  # python-docx repeats a merged cell for each column
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _html_text(data: bytes, limits: ExtractionLimits) -> Extracted:
    from bot.tools.web.extract import readable_text
    from bot.tools.web.fetch import FetchedPage

    # The charset is left to trafilatura, which reads meta tags and byte statistics.
    page = readable_text(FetchedPage(url="", media_type="text/html", charset=None, body=data))
    text = page.text
    if page.title and not text.startswith(page.title):
        text = f"{page.title}\n\n{text}" if text else page.title
    kept = text[: limits.max_chars]
    return Extracted(DocumentKind.HTML, kept, "HTML", cut_at_max_chars=len(kept) < len(text))


def _plain_text(data: bytes, file_name: str | None, mime_type: str | None, limits: ExtractionLimits) -> Extracted:
    text = decode_text(data)
    if text is None:  # identify() checked; kept for a caller that skipped it
        raise UnreadableDocument(Reason.UNSUPPORTED)
    markdown = _suffix(file_name) in MARKDOWN_SUFFIXES or _media_type(mime_type) == "text/markdown"
    kept = text[: limits.max_chars]
    return Extracted(DocumentKind.TEXT, kept, "Markdown" if markdown else "text", cut_at_max_chars=len(kept) < len(text))
