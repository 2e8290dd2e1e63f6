"""What Arium does with a document a user sent: check its size, read its
text (bot/media/documents.py), keep the text in the user's file sandbox, and
tell the model about it in the turn, with the caption as the question.

Every channel only downloads the bytes and shows the answer: the size check
before the download, the refusals (in the user's language) and the model's
note are decided here. A refusal stores nothing; an accepted document is
stored once, whole or honestly cut to the sandbox's per-file limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import PurePosixPath

from bot.i18n import add_strings, t
from bot.media.documents import (
    DocumentKind,
    Extracted,
    ExtractionLimits,
    Reason,
    UnreadableDocument,
    read_document,
)
from bot.runtime.units import human_size
from bot.tools.sandbox import FileSandbox, SandboxError
from bot.tools.web.extract import excerpt

# Shown when a sender's app gives no file name.
DEFAULT_NAMES = {DocumentKind.PDF: "document.pdf", DocumentKind.DOCX: "document.docx", DocumentKind.HTML: "page.html"}
DEFAULT_TEXT_NAME = "document.txt"

_KINDS_WE_READ = {
    "en": "I read PDF, Word (.docx), HTML, Markdown and plain-text files (txt, csv, json and similar).",
    "ru": "Я читаю PDF, Word (.docx), HTML, Markdown и текстовые файлы (txt, csv, json и похожие).",
}

add_strings(
    {
        "en": {
            "document_empty": "That file is empty (0 bytes). Please check it and send it again.",
            "document_too_big": "That file is {size}; I can read documents up to {limit}.",
            "document_unknown_type": "That file doesn't look like text or a document I can read. " + _KINDS_WE_READ["en"],
            "document_is_image": (
                "That file is an image ({format}), not a document. To show me a picture, send it as a photo. "
                + _KINDS_WE_READ["en"]
            ),
            "document_is_archive": "That file is an archive ({format}); I don't open archives. " + _KINDS_WE_READ["en"],
            "document_is_audio_video": (
                "That file is audio or video ({format}), not a document. " + _KINDS_WE_READ["en"]
            ),
            "document_is_program": "That file is a program ({format}), not a document. " + _KINDS_WE_READ["en"],
            "document_is_office": (
                "I can't read {format} files. Please save it as PDF or Word (.docx) and send that."
            ),
            "document_corrupt": (
                "I couldn't read that {kind} file: it is damaged, or it isn't really a {kind}. "
                "Please check that it opens on your device and send it again."
            ),
            "document_encrypted": (
                "That {kind} file is password-protected, so I can't read it. Please send a copy without the password."
            ),
            "document_scanned": (
                "That PDF has no text layer: it looks like a scan or pictures of pages, and I can't read text "
                "from those. Please send a PDF with selectable text, or paste the text into a message."
            ),
            "document_no_text": "I found no text in that file.",
            "document_not_saved": "I couldn't save that file: {reason}",
        },
        "ru": {
            "document_empty": "Файл пустой (0 байт). Проверьте его и отправьте ещё раз.",
            "document_too_big": "Файл весит {size}, а я читаю документы до {limit}.",
            "document_unknown_type": (
                "Этот файл не похож ни на текст, ни на документ, который я умею читать. " + _KINDS_WE_READ["ru"]
            ),
            "document_is_image": (
                "Это изображение ({format}), а не документ. Чтобы показать мне картинку, отправьте её как фото. "
                + _KINDS_WE_READ["ru"]
            ),
            "document_is_archive": "Это архив ({format}), архивы я не открываю. " + _KINDS_WE_READ["ru"],
            "document_is_audio_video": "Это аудио или видео ({format}), а не документ. " + _KINDS_WE_READ["ru"],
            "document_is_program": "Это программа ({format}), а не документ. " + _KINDS_WE_READ["ru"],
            "document_is_office": (
                "Файлы {format} я читать не умею. Сохраните документ как PDF или Word (.docx) и отправьте его."
            ),
            "document_corrupt": (
                "Не получилось прочитать файл {kind}: он повреждён или на самом деле это не {kind}. "
                "Проверьте, открывается ли он у вас, и отправьте ещё раз."
            ),
            "document_encrypted": (
                "Файл {kind} защищён паролем, поэтому прочитать его я не могу. Отправьте копию без пароля."
            ),
            "document_scanned": (
                "В этом PDF нет текстового слоя: похоже, это скан или картинки страниц, а текст с них я читать "
                "не умею. Отправьте PDF с выделяемым текстом или вставьте текст в сообщение."
            ),
            "document_no_text": "В этом файле я не нашёл текста.",
            "document_not_saved": "Не получилось сохранить файл: {reason}",
        },
    }
)


@dataclass(frozen=True)
class DocumentLimits:
    max_bytes: int  # the largest file read at all
    max_pages: int  # PDF pages read
    prompt_chars: int  # text shown to the model in the turn itself; 0: none


@dataclass(frozen=True)
class Upload:
    file_name: str | None
    mime_type: str | None
    data: bytes


@dataclass(frozen=True)
class Accepted:
    note: str  # the user's turn as the model gets it
    saved_as: str


@dataclass(frozen=True)
class Refused:
    message: str  # for the user, in their language


@dataclass(frozen=True)
class StoredText:
    """The text as the sandbox keeps it, and what the note must admit about it."""

    path: str
    text: str
    cut_to_file_limit: bool


class DocumentReader:
    """One per process; channels call it with the bytes they downloaded."""

    def __init__(self, files: FileSandbox, limits: DocumentLimits) -> None:
        self._files = files
        self.limits = limits

    def refusal_before_download(self, declared_size: int | None, language: str) -> str | None:
        """Why a file of ``declared_size`` bytes is refused without fetching
        it; None when it may be fetched (or the size is unknown)."""
        if declared_size is not None and declared_size > self.limits.max_bytes:
            return self._too_big(declared_size, language)
        return None

    async def receive(self, user_id: int, language: str, upload: Upload, caption: str) -> Accepted | Refused:
        """Read, store and describe a document; a refusal leaves nothing behind."""
        if len(upload.data) > self.limits.max_bytes:  # the channel may not have known the size
            return Refused(self._too_big(len(upload.data), language))
        try:
            extracted = await read_document(upload.data, upload.file_name, upload.mime_type, self._extraction_limits())
        except UnreadableDocument as problem:
            return Refused(refusal_text(problem, language))
        shown_name = upload.file_name or _default_name(extracted.kind)
        try:
            stored = await asyncio.to_thread(self._store, user_id, shown_name, extracted)
        except SandboxError as exc:
            return Refused(t("document_not_saved", language, reason=str(exc)))
        note = model_note(shown_name, len(upload.data), extracted, stored, self._file_limit, self.limits.prompt_chars)
        return Accepted(f"{note}\n{caption}" if caption else note, stored.path)

    @property
    def _file_limit(self) -> int:
        return self._files.limits.max_file_bytes

    def _extraction_limits(self) -> ExtractionLimits:
        # No more characters than one saved file can hold (a character takes
        # at least a byte): reading further would be work thrown away.
        return ExtractionLimits(max_pages=self.limits.max_pages, max_chars=self._file_limit)

    def _store(self, user_id: int, shown_name: str, extracted: Extracted) -> StoredText:
        text = fit_utf8(extracted.text, self._file_limit)
        written = self._files.save_document(user_id, saved_name(shown_name, extracted.kind), text)
        return StoredText(written.path, text, cut_to_file_limit=len(text) < len(extracted.text) or extracted.cut_at_max_chars)

    def _too_big(self, size: int, language: str) -> str:
        return t("document_too_big", language, size=human_size(size), limit=human_size(self.limits.max_bytes))


def refusal_text(problem: UnreadableDocument, language: str) -> str:
    """The user's answer for a document that gave no text."""
    kind = problem.kind.value if problem.kind else ""
    if problem.reason is Reason.EMPTY:
        return t("document_empty", language)
    if problem.reason is Reason.ENCRYPTED:
        return t("document_encrypted", language, kind=kind)
    if problem.reason is Reason.CORRUPT:
        return t("document_corrupt", language, kind=kind)
    if problem.reason is Reason.NO_TEXT:
        return t("document_scanned" if problem.kind is DocumentKind.PDF else "document_no_text", language)
    if problem.sort is None:
        return t("document_unknown_type", language)
    return t(f"document_is_{problem.sort.category}", language, format=problem.sort.format)


def _default_name(kind: DocumentKind) -> str:
    return DEFAULT_NAMES.get(kind, DEFAULT_TEXT_NAME)


def saved_name(shown_name: str, kind: DocumentKind) -> str:
    """Text files keep their name; the text of any other document goes
    beside it as ``<name>.txt`` ("report.pdf.txt"), which says what it came from."""
    if kind is DocumentKind.TEXT or PurePosixPath(shown_name).suffix.lower() == ".txt":
        return shown_name
    return f"{shown_name}.txt"


def fit_utf8(text: str, max_bytes: int) -> str:
    """The longest beginning of ``text`` whose UTF-8 form fits ``max_bytes``
    (the sandbox counts bytes, a cut never splits a character)."""
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def model_note(
    shown_name: str, size: int, extracted: Extracted, stored: StoredText, file_limit: int, prompt_chars: int
) -> str:
    """What the model is told: the file, where its text is, the limits that
    cut it, and the beginning of the text itself."""
    lines = [_headline(shown_name, size, extracted, stored)]
    stopped_by_page_limit = (
        extracted.pages is not None
        and extracted.pages_read is not None
        and extracted.pages_read < extracted.pages
        and not extracted.cut_at_max_chars  # then the character limit stopped it, said below
    )
    if stopped_by_page_limit:
        lines.append(f"[Only the first {extracted.pages_read} of {extracted.pages} pages were read (the page limit).]")
    if stored.cut_to_file_limit:
        lines.append(
            f"[The document has more text than one saved file may hold ({human_size(file_limit)}): "
            f"the saved file has its first {len(stored.text):,} characters.]"
        )
    if prompt_chars > 0:
        lines.extend(_inline_text(shown_name, stored, prompt_chars))
    return "\n".join(lines)


def _headline(shown_name: str, size: int, extracted: Extracted, stored: StoredText) -> str:
    details = [extracted.format_name]
    if extracted.pages is not None:
        details.append(f"{extracted.pages} page{'s' if extracted.pages != 1 else ''}")
    details.append(human_size(size))
    what = "It is" if extracted.kind is DocumentKind.TEXT else f"Its text ({len(stored.text):,} characters) is"
    return (
        f'[The user sent the file "{shown_name}" ({", ".join(details)}). {what} saved in their files as '
        f'"{stored.path}"; read it with read_file("{stored.path}") when needed.]'
    )


def _inline_text(shown_name: str, stored: StoredText, prompt_chars: int) -> list[str]:
    shown, left_out = excerpt(stored.text, prompt_chars)
    if left_out:
        intro = (
            f"[Below are the first {len(shown):,} of {len(stored.text):,} characters; the rest is in the saved "
            f'file: read_file("{stored.path}", start={len(shown)}).]'
        )
    else:
        intro = "[Its text follows.]"
    # Markers keep the document apart from the user's question after it.
    return [intro, f"----- {shown_name} -----", shown.rstrip(), f"----- end of {shown_name} -----"]
