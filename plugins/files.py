"""write_file, read_file, list_files, delete_file: the user's private file
space (notes, lists, documents they sent). Everything goes through the
FileSandbox service, which keeps each user inside their own folder.

They need no RequestContext.tool_call_key: run again after a crash with the
same arguments, write_file writes the same content again (answering
"replaced" instead of "created"), delete_file finds the file gone (and says
so), and the others only read."""

from __future__ import annotations

from collections.abc import Callable

from bot.context import RequestContext
from bot.tools.sandbox import FileSandbox, human_size


def _usage_line(files: FileSandbox, used: int) -> str:
    return f"{human_size(used)} of {human_size(files.limits.max_bytes)} used"


def write_file(ctx: RequestContext, files: FileSandbox, path: str, content: str) -> str:
    """Save a text note or file in the user's private files, replacing a file of the same name.
    Use it when the user asks to keep, note down or save something.

    Args:
        path: a relative path such as "todo.md" or "recipes/pancakes.txt"; folders are created as needed
        content: the complete text of the file
    """
    written = files.write(ctx.user_id, path, content)
    action = "created" if written.created else "replaced"
    return f"{action} {written.path} ({human_size(written.size)}); {_usage_line(files, written.usage.bytes)}"


# One read returns at most this much, so a long document is read in pieces
# instead of being cut off by the result budget.
READ_CHUNK = 5000


def read_file(ctx: RequestContext, files: FileSandbox, path: str, start: int = 0) -> str:
    """Read a text file from the user's private files (including documents they sent).
    Long files come in pieces; the end of a piece says where the next one starts.

    Args:
        path: the file's path as list_files shows it
        start: the character to start from (0 for the beginning)
    """
    text = files.read(ctx.user_id, path)
    begin = max(0, start)
    piece = text[begin : begin + READ_CHUNK]
    rest = len(text) - begin - len(piece)
    if rest > 0:
        piece += f"\n[{rest} more characters; call read_file with start={begin + len(piece)} to continue]"
    return piece


def list_files(ctx: RequestContext, files: FileSandbox, path: str = ".") -> str:
    """List the user's private files and folders, with sizes.

    Args:
        path: the folder to list; "." is the top
    """
    entries = files.list(ctx.user_id, path)
    if not entries:
        return "no files here yet"
    lines = [f"{e.name}/" if e.is_dir else f"{e.name} ({human_size(e.size)})" for e in entries]
    return "\n".join(lines) + f"\n({_usage_line(files, files.usage(ctx.user_id).bytes)})"


def delete_file(ctx: RequestContext, files: FileSandbox, path: str) -> str:
    """Delete a file, or an empty folder, from the user's private files. Only when the user asks.

    Args:
        path: the file's path as list_files shows it
    """
    kind = files.delete(ctx.user_id, path)
    return f"deleted the {kind} {path.strip()}"


def register_tools(register: Callable[..., object]) -> None:
    register(write_file, hints={"en": "saving the file…", "ru": "сохраняю файл…"})
    register(read_file, hints={"en": "reading the file…", "ru": "читаю файл…"})
    register(list_files, hints={"en": "looking through the files…", "ru": "смотрю файлы…"})
    register(delete_file, hints={"en": "deleting the file…", "ru": "удаляю файл…"})
