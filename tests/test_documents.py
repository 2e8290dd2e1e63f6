"""Documents people send: PDF, DOCX, HTML, Markdown and text, read into the
user's files and offered to the model; every bad file gets a clear answer.

End to end through the real bot against the fake Bot API and the fake model
server, with real files made here (matplotlib's PDF backend writes a real
text layer, pypdf encrypts, python-docx writes Word files), and the reading
module on its own."""

from __future__ import annotations

import io
import zipfile

import docx
import numpy as np
import pytest
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from pypdf import PdfWriter

from bot.i18n import t
from bot.media.document_reader import (
    StoredText,
    fit_utf8,
    model_note,
    refusal_text,
    saved_name,
)
from bot.media.documents import (
    DocumentKind,
    Extracted,
    ExtractionLimits,
    Reason,
    UnreadableDocument,
    extract_text,
    identify,
    read_document,
)
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support.chat import PRIVATE, last_user_text

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(200)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100)
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500)
ROOMY = ExtractionLimits(max_pages=100, max_chars=1_000_000)
KINDS_WE_READ = "I read PDF, Word (.docx), HTML, Markdown and plain-text files"


# ---- real files ------------------------------------------------------------------


def pdf_of(*pages: str) -> bytes:
    """A PDF with one page per string, each with a real text layer."""
    out = io.BytesIO()
    with PdfPages(out) as pdf:
        for text in pages:
            figure = Figure(figsize=(8.27, 11.69))
            figure.text(0.05, 0.95, text, fontsize=7, va="top")
            pdf.savefig(figure)
    return out.getvalue()


def scanned_pdf() -> bytes:
    """Pages that are only a picture, as a scanner makes them."""
    out = io.BytesIO()
    noise = np.random.default_rng(7).random((120, 120))
    with PdfPages(out) as pdf:
        for _ in range(2):
            figure = Figure(figsize=(3, 3))
            figure.figimage(noise, resize=False)
            pdf.savefig(figure)
    return out.getvalue()


def encrypted(pdf: bytes, user_password: str) -> bytes:
    writer = PdfWriter(clone_from=io.BytesIO(pdf))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def numbered_lines(page: int, count: int = 40) -> str:
    return "\n".join(f"Page {page} line {n}: the committee reviewed the budget for item {n}." for n in range(count))


def docx_file() -> bytes:
    document = docx.Document()
    document.add_heading("Renovation plan", level=1)
    document.add_paragraph("The kitchen comes first, then the bathroom.")
    table = document.add_table(rows=3, cols=2)
    for row, (item, cost) in enumerate([("Item", "Cost"), ("Kitchen", "4200 EUR"), ("Bathroom", "3100 EUR")]):
        table.cell(row, 0).text = item
        table.cell(row, 1).text = cost
    document.add_paragraph("Work starts in May.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


HTML_PAGE = b"""<!DOCTYPE html><html><head><title>Soup of the day</title></head><body>
<nav><a href="/">Home</a> | <a href="/menu">Menu</a></nav>
<article><h1>Soup of the day</h1>
<p>Today we serve a tomato soup with fresh basil, made from tomatoes grown by a farm near the town.</p>
<p>It costs five euros a bowl and comes with bread baked in our own kitchen every morning.</p>
<p>Ask for the vegan version without cream; it is the same price.</p></article>
<footer>Cookies help us. <a href="/privacy">Privacy</a></footer></body></html>"""


def told(model: FakeModelServer, index: int = 0) -> str:
    """The user's turn as the model got it."""
    return last_user_text(model, index)


@pytest.fixture(autouse=True)
def short_answers(model: FakeModelServer) -> None:
    # The echo would repeat a whole document back into the chat.
    model.responder = lambda request: Reply(text="Read it.")


# ---- end to end: documents that work ---------------------------------------------


async def test_a_pdf_question_is_answered_from_its_text(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    pdf = pdf_of("Quarterly report\nRevenue grew 12% to 4.1 million euros.\nCosts fell by 3%.")
    app = await start_bot()
    tg.user_document("report.pdf", pdf, mime_type="application/pdf", caption="how much did revenue grow?")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "Read it."
    note = told(model)
    assert note.startswith('[The user sent the file "report.pdf" (PDF, 1 page, ')
    assert 'saved in their files as "report.pdf.txt"; read it with read_file("report.pdf.txt")' in note
    assert "[Its text follows.]\n----- report.pdf -----\nQuarterly report\nRevenue grew 12%" in note
    assert note.endswith("----- end of report.pdf -----\nhow much did revenue grow?")
    saved = app.files.read(PRIVATE, "report.pdf.txt")
    assert saved.startswith("Quarterly report") and "Costs fell by 3%." in saved
    assert [e.name for e in app.files.list(PRIVATE)] == ["report.pdf.txt"]


async def test_a_long_pdf_is_offered_with_an_honest_truncation_note(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    pdf = pdf_of(*(numbered_lines(page) for page in range(1, 7)))
    app = await start_bot(bot_document_prompt_chars=2000)
    tg.user_document("minutes.pdf", pdf, mime_type="application/pdf", caption="summarize")
    await tg.wait_messages(PRIVATE, 1)
    note = told(model)
    saved = app.files.read(PRIVATE, "minutes.pdf.txt")
    assert "(PDF, 6 pages, " in note and "[page 6]\nPage 6 line 0:" in saved and "Page 6 line 39:" in saved
    shown = note.split("----- minutes.pdf -----\n")[1].split("\n----- end of minutes.pdf -----")[0]
    assert len(shown) <= 2000 and saved.startswith(shown)
    assert (
        f"[Below are the first {len(shown):,} of {len(saved):,} characters; the rest is in the saved file: "
        f'read_file("minutes.pdf.txt", start={len(shown)}).]'
    ) in note
    assert "page limit" not in note and note.endswith("\nsummarize")


async def test_the_page_limit_is_said(start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer) -> None:
    app = await start_bot(bot_document_max_pages=2)
    tg.user_document("book.pdf", pdf_of("one", "two", "three"), mime_type="application/pdf")
    await tg.wait_messages(PRIVATE, 1)
    assert "(PDF, 3 pages, " in told(model)
    assert "[Only the first 2 of 3 pages were read (the page limit).]" in told(model)
    assert app.files.read(PRIVATE, "book.pdf.txt") == "[page 1]\none\n\n[page 2]\ntwo"


async def test_a_docx_gives_its_paragraphs_and_table(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    mime = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    tg.user_document("plan.docx", docx_file(), mime_type=mime, caption="what does the kitchen cost?")
    await tg.wait_messages(PRIVATE, 1)
    expected = (
        "# Renovation plan\n\nThe kitchen comes first, then the bathroom.\n\n"
        "Item | Cost\nKitchen | 4200 EUR\nBathroom | 3100 EUR\n\nWork starts in May."
    )
    assert app.files.read(PRIVATE, "plan.docx.txt") == expected
    note = told(model)
    assert note.startswith('[The user sent the file "plan.docx" (DOCX, ')
    assert f"----- plan.docx -----\n{expected}\n----- end of plan.docx -----\nwhat does the kitchen cost?" in note


async def test_an_html_page_gives_its_text_and_markdown_is_kept_as_sent(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    markdown = "# Shopping\n\n- **milk**\n- bread\n"
    app = await start_bot()
    tg.user_document("soup.html", HTML_PAGE, mime_type="text/html", caption="is there a vegan soup?")
    tg.user_document("list.md", markdown.encode(), mime_type="text/markdown")
    await tg.wait_messages(PRIVATE, 2)
    page = app.files.read(PRIVATE, "soup.html.txt")
    assert "tomato soup with fresh basil" in page and "vegan version" in page and "<p>" not in page
    assert told(model, 0).startswith('[The user sent the file "soup.html" (HTML, ')
    assert app.files.read(PRIVATE, "list.md") == markdown  # saved as it is, under its own name
    note = told(model, 1)
    assert note.startswith('[The user sent the file "list.md" (Markdown, 31 B). It is saved in their files as "list.md"')
    assert note.endswith(f"----- list.md -----\n{markdown.rstrip()}\n----- end of list.md -----")


async def test_the_bytes_decide_not_the_name(start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer) -> None:
    app = await start_bot()
    tg.user_document("notes.txt", pdf_of("Meeting at noon."), mime_type="text/plain")
    await tg.wait_messages(PRIVATE, 1)
    assert told(model).startswith('[The user sent the file "notes.txt" (PDF, 1 page, ')
    assert app.files.read(PRIVATE, "notes.txt") == "Meeting at noon."


async def test_text_longer_than_one_saved_file_is_saved_in_part(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    log = "".join(f"{n:04d} all quiet\n" for n in range(300))  # 4.5 KB
    app = await start_bot(bot_files_max_file_kb=1)
    tg.user_document("server.log", log.encode(), mime_type="text/plain")
    await tg.wait_messages(PRIVATE, 1)
    saved = app.files.read(PRIVATE, "server.log")
    assert len(saved.encode()) == 1024 and log.startswith(saved)
    assert "[The document has more text than one saved file may hold (1.0 KB): the saved file has its first 1,024 characters.]" in told(model)


# ---- end to end: documents that do not work ----------------------------------------


async def test_bad_documents_get_clear_answers_and_nothing_is_kept(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    tg.user_document("locked.pdf", encrypted(pdf_of("secret numbers"), "hunter2"), mime_type="application/pdf")
    tg.user_document("report.pdf", b"<html><body>Please log in</body></html>", mime_type="application/pdf")
    tg.user_document("broken.pdf", pdf_of("cut short")[:300], mime_type="application/pdf")
    tg.user_document("empty.txt", b"", mime_type="text/plain")
    tg.user_document("holiday.pdf", JPEG, mime_type="application/pdf")
    tg.user_document("notes.txt", PNG, mime_type="text/plain")
    tg.user_document("scan.pdf", scanned_pdf(), mime_type="application/pdf")
    tg.user_document("backup.zip", zip_of({"a.txt": b"a"}), mime_type="application/zip")
    tg.user_document("locked.docx", OLE, mime_type="application/octet-stream")
    tg.user_document("tool.bin", b"\x00\x01\x02\xff" * 50, mime_type="application/octet-stream")
    replies = [m.text for m in await tg.wait_messages(PRIVATE, 10)]
    assert replies == [
        t("document_encrypted", "en", kind="PDF"),
        t("document_corrupt", "en", kind="PDF"),
        t("document_corrupt", "en", kind="PDF"),
        t("document_empty", "en"),
        t("document_is_image", "en", format="JPEG"),
        t("document_is_image", "en", format="PNG"),
        t("document_scanned", "en"),
        t("document_is_archive", "en", format="ZIP"),
        t("document_encrypted", "en", kind="DOCX"),
        t("document_unknown_type", "en"),
    ]
    assert "password-protected" in replies[0] and "isn't really a PDF" in replies[1]
    assert "scan" in replies[6] and KINDS_WE_READ in replies[9]
    assert not model.chat_requests()
    assert app.files.list(PRIVATE) == []


async def test_a_document_over_the_size_limit_is_refused_before_downloading(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_document_max_mb=1)
    big = b"x" * (1024 * 1024 + 1)
    tg.user_document("big.txt", big, mime_type="text/plain")
    [refusal] = await tg.wait_messages(PRIVATE, 1)
    assert refusal.text == "That file is 1.0 MB; I can read documents up to 1.0 MB."
    assert tg.downloads == []
    tg.user_document("quiet.txt", big, mime_type="text/plain", declare_size=False)  # the size is optional
    replies = await tg.wait_messages(PRIVATE, 2)
    assert replies[1].text == refusal.text and len(tg.downloads) == 1
    assert not model.chat_requests() and app.files.list(PRIVATE) == []


async def test_refusals_speak_the_users_language(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot()
    tg.user_document("empty.pdf", b"", mime_type="application/pdf", language_code="ru")
    tg.user_document("scan.pdf", scanned_pdf(), mime_type="application/pdf", language_code="ru")
    first, second = await tg.wait_messages(PRIVATE, 2)
    assert first.text == "Файл пустой (0 байт). Проверьте его и отправьте ещё раз."
    assert second.text.startswith("В этом PDF нет текстового слоя")


# ---- the reading module on its own ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "mime", "kind"),
    [
        (b"%PDF-1.7 ...", "a.txt", "text/plain", DocumentKind.PDF),
        (b"\x00\x9ajunk before the header %PDF-1.4 ...", None, None, DocumentKind.PDF),
        (b"notes: a PDF starts with %PDF-1.7", "notes.txt", None, DocumentKind.TEXT),
        (b"<html><body>\xcf\xf0\xe8\xe2\xe5\xf2</body></html>", "cp1251.html", None, DocumentKind.HTML),
        (b"# Title\n", "a.md", None, DocumentKind.TEXT),
        (b"MZ is where the story starts", "story.txt", None, DocumentKind.TEXT),
        (b"  <!DOCTYPE html><p>hi</p>", "page.txt", None, DocumentKind.HTML),
        (b"<p>hi</p>", None, "text/html; charset=utf-8", DocumentKind.HTML),
        (b"\xef\xbb\xbfplain with a BOM", None, None, DocumentKind.TEXT),
    ],
)
def test_the_kind_comes_from_the_bytes_first(data: bytes, name: str | None, mime: str | None, kind: DocumentKind) -> None:
    assert identify(data, name, mime) is kind


@pytest.mark.parametrize(
    ("data", "name", "reason", "category"),
    [
        (b"", "a.txt", Reason.EMPTY, None),
        (JPEG, "a.pdf", Reason.UNSUPPORTED, "image"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff", None, Reason.UNSUPPORTED, "image"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "a.txt.gz", Reason.UNSUPPORTED, "archive"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(8), None, Reason.UNSUPPORTED, "program"),
        (b"\x00\x00\x00\x18ftypmp42" + bytes(8), None, Reason.UNSUPPORTED, "audio_video"),
        (zip_of({"xl/workbook.xml": b"<x/>"}), "a.xlsx", Reason.UNSUPPORTED, "office"),
        (zip_of({"ppt/presentation.xml": b"<x/>"}), None, Reason.UNSUPPORTED, "office"),
        (zip_of({"notes.txt": b"hi"}), "a.docx", Reason.CORRUPT, None),
        (b"PK\x03\x04 not really a zip", "a.docx", Reason.CORRUPT, None),
        (b"PK\x03\x04 not really a zip", "a.zip", Reason.UNSUPPORTED, "archive"),
        (OLE, "a.doc", Reason.UNSUPPORTED, "office"),
        (OLE, "a.docx", Reason.ENCRYPTED, None),
        (b"plain words", "a.pdf", Reason.CORRUPT, None),
        (b"\xff\xfe\x00\x01garbage", "a.txt", Reason.UNSUPPORTED, None),
    ],
)
def test_what_is_not_read_is_named(data: bytes, name: str | None, reason: Reason, category: str | None) -> None:
    with pytest.raises(UnreadableDocument) as caught:
        identify(data, name, None)
    assert caught.value.reason is reason
    assert (caught.value.sort.category if caught.value.sort else None) == category


def test_a_pdf_with_only_an_owner_password_is_read() -> None:
    restricted = encrypted(pdf_of("copying is restricted, reading is not"), user_password="")
    assert extract_text(restricted, "r.pdf", None, ROOMY).text == "copying is restricted, reading is not"


def test_pdf_limits_stop_the_reading() -> None:
    pdf = pdf_of(*(numbered_lines(page, count=10) for page in range(1, 5)))
    by_pages = extract_text(pdf, "m.pdf", None, ExtractionLimits(max_pages=2, max_chars=100_000))
    assert (by_pages.pages, by_pages.pages_read, by_pages.cut_at_max_chars) == (4, 2, False)
    by_chars = extract_text(pdf, "m.pdf", None, ExtractionLimits(max_pages=100, max_chars=500))
    assert len(by_chars.text) == 500 and by_chars.cut_at_max_chars and by_chars.pages_read == 1


def test_a_docx_that_unpacks_to_too_much_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.media.documents.MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(UnreadableDocument) as caught:
        extract_text(docx_file(), "plan.docx", None, ROOMY)
    assert (caught.value.reason, caught.value.kind) == (Reason.CORRUPT, DocumentKind.DOCX)


def test_a_docx_with_broken_xml_is_corrupt() -> None:
    broken = zip_of({"[Content_Types].xml": b"<Types", "word/document.xml": b"<w:document"})
    with pytest.raises(UnreadableDocument) as caught:
        extract_text(broken, "x.docx", None, ROOMY)
    assert caught.value.reason is Reason.CORRUPT


def test_whitespace_is_no_text() -> None:
    with pytest.raises(UnreadableDocument) as caught:
        extract_text(b" \n\t\n", "blank.md", None, ROOMY)
    assert (caught.value.reason, caught.value.kind) == (Reason.NO_TEXT, DocumentKind.TEXT)
    assert refusal_text(caught.value, "en") == "I found no text in that file."


async def test_reading_runs_in_a_thread_and_returns_the_text() -> None:
    extracted = await read_document("привет, мир".encode(), "hi.txt", "text/plain", ROOMY)
    assert (extracted.text, extracted.format_name) == ("привет, мир", "text")


def test_saved_names_and_byte_fitting() -> None:
    assert saved_name("report.pdf", DocumentKind.PDF) == "report.pdf.txt"
    assert saved_name("notes.txt", DocumentKind.PDF) == "notes.txt"
    assert saved_name("list.md", DocumentKind.TEXT) == "list.md"
    assert fit_utf8("ab", 10) == "ab"
    assert fit_utf8("яяя", 5) == "яя"  # two bytes each; half a letter is never kept


def test_the_note_without_inline_text() -> None:
    extracted = Extracted(DocumentKind.DOCX, "body", "DOCX")
    note = model_note("a.docx", 2048, extracted, StoredText("a.docx.txt", "body", False), 1024, prompt_chars=0)
    assert note == (
        '[The user sent the file "a.docx" (DOCX, 2.0 KB). Its text (4 characters) is saved in their files as '
        '"a.docx.txt"; read it with read_file("a.docx.txt") when needed.]'
    )
