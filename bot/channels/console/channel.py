"""Chat with Arium in a terminal, through the same core as Telegram: the
inbound path (gates, input checks), the conversation, the commands.

Interactive (stdin is a terminal): a prompt with line editing and history
(readline), the answer printed as it streams. Piped: one message per input
line, each final answer printed, and the session ends at end of input."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.agents.commands import agent_command
from bot.channels.base import Capabilities, Channel
from bot.channels.inbound import Arrival, InboundPath
from bot.commands import MENU_COMMANDS, help_text, new_conversation, start_text, unknown_command_text
from bot.context import ChatType, RequestContext
from bot.i18n import add_strings, plain, t
from bot.identity import CONSOLE, local_chat_id
from bot.errors import AriumError
from bot.linking import Linker, link_command
from bot.memory.commands import (
    erase_everything,
    export_filename,
    forget,
    forget_everything,
    forget_request,
    memory_page,
    page_argument,
)
from bot.memory.service import MemoryService
from bot.reminders import views as reminder_views
from bot.reminders.notifier import DueReminder, Notifier
from bot.reminders.service import ReminderService
from bot.storage.repositories import UserProfile
from bot.personal_data import UserData

if TYPE_CHECKING:
    from bot.agents.desk import AgentDesk

log = logging.getLogger(__name__)

PROMPT = "you> "
MEMORY_PAGE = 20
# The answers to "are you sure?" that go ahead, and those that only cancel.
CONFIRMATIONS = frozenset({"yes", "y", "да", "д"})
REFUSALS = frozenset({"no", "n", "нет", "н"})

add_strings(
    {
        "en": {
            "console_not_here": "{command} is not available in the console yet; use it in Telegram.",
            "console_memory_empty": "I don't remember anything about you yet.",
            "console_memory_next": "/memory {next} shows the next page.",
            "console_confirm": "Type yes to go ahead; anything else keeps everything as it is.",
            "console_exported": "Your data (profile, memories, reminders, history) is saved as JSON in {path}",
        },
        "ru": {
            "console_not_here": "{command} пока недоступна в консоли; воспользуйтесь ею в Telegram.",
            "console_memory_empty": "Я пока ничего о вас не запомнил.",
            "console_memory_next": "/memory {next} — следующая страница.",
            "console_confirm": "Напишите «да», чтобы продолжить; любой другой ответ ничего не меняет.",
            "console_exported": "Ваши данные (профиль, память, напоминания, история) сохранены в JSON: {path}",
        },
    }
)


@dataclass(frozen=True)
class ConsoleServices:
    """The core services the console's commands use."""

    inbound: InboundPath
    reminders: ReminderService
    memory: MemoryService
    linker: Linker
    userdata: UserData
    agents: AgentDesk | None = None  # None: no [agents.NAME] configured


# Control characters as their visible pictures (ESC as ␛): text from a model,
# a fetched page or a reminder must not drive the terminal (clear it, move the
# cursor, retitle the window). Tab and newline stay as they are.
_VISIBLE_CONTROLS = {code: 0x2400 + code for code in range(0x20) if chr(code) not in "\t\n"} | {0x7F: 0x2421} | {
    code: 0xFFFD for code in range(0x80, 0xA0)
}


class ConsoleOutput:
    """Writes to the terminal (or a pipe); a stream being shown is tracked so
    the final answer prints only what is not on the screen yet."""

    def __init__(self, writer: TextIO) -> None:
        self._writer = writer

    def line(self, text: str) -> None:
        self._writer.write(text.translate(_VISIBLE_CONTROLS) + "\n")
        self._writer.flush()

    def piece(self, text: str) -> None:
        self._writer.write(text.translate(_VISIBLE_CONTROLS))
        self._writer.flush()


def _decodable(line: str) -> str:
    """``line`` with bytes that were not UTF-8 (a Latin-1 or Windows file piped
    in) as U+FFFD. Python hands them over as lone surrogates, which no
    encoder takes: printing, storing or sending such a line failed."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return line


class ConsoleSink:
    """The ReplySink of one console turn."""

    def __init__(self, output: ConsoleOutput, *, streaming: bool) -> None:
        self._output = output
        self._streaming = streaming
        self._shown = ""

    async def update(self, text: str) -> None:
        if not self._streaming:
            return
        if not text.startswith(self._shown):  # a tool round restarted the answer
            self._end_line()
        self._output.piece(text[len(self._shown):])
        self._shown = text

    async def finish(self, text: str) -> None:
        if self._shown and text.startswith(self._shown):
            self._output.line(text[len(self._shown):])
        else:
            self._end_line()
            self._output.line(text)
        self._shown = ""

    async def notice(self, text: str) -> None:
        self._end_line()
        self._output.line(plain(text))

    async def progress(self, hint: str) -> None:
        if self._streaming:
            self._end_line()
            self._output.line(hint)

    def _end_line(self) -> None:
        if self._shown:
            self._output.line("")
            self._shown = ""


class ConsoleReminderNotifier:
    """Fired reminders are printed between turns."""

    def __init__(self, output: ConsoleOutput) -> None:
        self._output = output

    async def deliver(self, reminder: DueReminder) -> None:
        self._output.line(reminder_views.fired_text(reminder))


async def read_line(read: Callable[[], str | None]) -> str | None:
    """One line from a blocking reader, without blocking the event loop and
    without a thread that outlives the process: a daemon thread per line
    (Ctrl-C cannot interrupt input(), and a pool thread stuck there would
    hold the interpreter open at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()

    def work() -> None:
        try:
            line = read()
        except (EOFError, OSError, ValueError):  # end of input, or stdin closed
            line = None
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(line))

    threading.Thread(target=work, name="console-input", daemon=True).start()
    return await done


class ConsoleChannel(Channel):
    name = "console"

    def __init__(
        self,
        user: UserProfile,
        *,
        reader: TextIO | None = None,
        writer: TextIO | None = None,
        interactive: bool | None = None,
        bot_name: str = "Arium",
        export_dir: Path | None = None,
        session_lock: Path | None = None,
    ) -> None:
        """``export_dir``: where /export writes its file (the current directory).
        ``session_lock``: a file this session locks while it runs; holding it
        means no other console session of this user is answering, so a turn
        of theirs left unfinished is one a crash cut short (see sink_for)."""
        self._user = user
        self._reader = reader or sys.stdin
        self._output = ConsoleOutput(writer or sys.stdout)
        self.interactive = self._reader.isatty() if interactive is None else interactive
        self.capabilities = Capabilities(streaming=self.interactive)
        self._bot_name = bot_name
        self._core: ConsoleServices | None = None
        # A /forget or /deleteme waiting for "yes" on the next line.
        self._pending: Callable[[RequestContext], Awaitable[str]] | None = None
        self._export_dir = export_dir or Path.cwd()
        self._closing = False
        self._session_lock = session_lock
        self._lock_fd: int | None = None

    @property
    def user_id(self) -> int:
        return self._user.id

    def connect(self, core: ConsoleServices) -> None:
        """The core services the console's commands use (bot/app.py wires them)."""
        self._core = core

    def reminder_notifier(self) -> Notifier:
        return ConsoleReminderNotifier(self._output)

    # The Channel lifecycle --------------------------------------------------

    async def start(self) -> None:
        self._lock_fd = _lock_session(self._session_lock) if self._session_lock else None
        if self.interactive:
            _enable_line_editing()
            self._output.line(f"{self._bot_name} console. /help lists the commands; Ctrl-D ends the session.")

    async def stop(self, timeout: float) -> None:
        self._closing = True
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def sink_for(self, chat_id: int, chat_type: str, *, shown: Sequence[int] = ()) -> ConsoleSink | None:
        """This user's console chat, when this is their only console session:
        a turn an earlier session left unfinished (killed mid-answer) is
        finished here, at the start. With another session of theirs running,
        its turns may still be in flight, and are left alone."""
        if self._lock_fd is None or chat_id != local_chat_id(CONSOLE, self._user.id):
            return None
        return ConsoleSink(self._output, streaming=False)

    async def deliver(self, address: int, text: str) -> None:
        self._output.line(plain(text))

    # The session --------------------------------------------------------------

    async def serve(self) -> None:
        """Handle input lines in order until end of input (or ``stop``)."""
        while not self._closing:
            line = await read_line(self._read)
            if line is None:
                break
            text = line.strip()
            if text:
                await self._handle_safely(text)

    async def _handle_safely(self, text: str) -> None:
        """One line; a failure in it is told and logged, and the session goes
        on with the next line, as a Telegram chat does after an error."""
        try:
            await self.handle_line(text)
        except Exception:  # noqa: BLE001 - one bad line must not end the session
            log.exception("console: a line failed")
            await self._say(t("internal_error", self._user.language or "en"))

    def _read(self) -> str | None:
        """The next line; None at the end of piped input (a terminal's end,
        Ctrl-D, raises EOFError in input())."""
        if self.interactive:
            return _decodable(input(PROMPT))  # "" is an empty line here, not the end
        line = self._reader.readline()
        return _decodable(line) if line else None

    async def handle_line(self, text: str) -> None:
        assert self._core is not None, "connect() first"
        command = text.startswith("/")
        answer = self._pending is not None and text.lower() in CONFIRMATIONS | REFUSALS
        arrival = Arrival(
            self._user,
            chat_id=local_chat_id(CONSOLE, self._user.id),
            chat_type=ChatType.CONSOLE,
            received_at=datetime.now(timezone.utc),
            reaches_model=not command and not answer,
        )
        ctx = await self._core.inbound.admit(arrival, self._say)
        if ctx is None:
            return
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if text.lower() in CONFIRMATIONS:
                await self._say(await pending(ctx))
                return
            await self._say(t("mem_cancelled", ctx.language))
            if text.lower() in REFUSALS:
                return
        if command:
            await self._command(ctx, text)
            return
        await self._core.inbound.converse(ctx, text, ConsoleSink(self._output, streaming=self.interactive))

    async def _say(self, text: str) -> None:
        self._output.line(plain(text))

    async def _command(self, ctx: RequestContext, text: str) -> None:
        head, _, argument = text.partition(" ")
        name = head[1:].lower()
        await self._say(await self._answer_command(ctx, name, argument.strip()))

    async def _answer_command(self, ctx: RequestContext, name: str, argument: str) -> str:
        core = self._core
        assert core is not None
        if name == "start":
            return start_text(ctx, self._bot_name)
        if name == "help":
            return help_text(ctx.language, markup=False, extra=("agent",) if core.agents is not None else ())
        if name == "new":
            return await new_conversation(core.inbound.conversation, ctx)
        if name == "remind":
            return await reminder_views.remind(core.reminders, ctx, argument)
        if name == "reminders":
            listing = await reminder_views.reminder_list(core.reminders, ctx)
            head = [] if listing.header is None else [plain(listing.header), ""]
            return "\n".join([*head, *listing.lines])
        if name == "timezone":
            return await reminder_views.timezone_without_choices(core.reminders, ctx, argument)
        if name == "memory":
            return await self._memory_page(ctx, page_argument(argument))
        if name == "forget":
            return await self._forget(ctx, argument)
        if name == "export":
            return await self._export(ctx)
        if name == "deleteme":
            erase = t("mem_deleteme_confirm", ctx.language)
            return self._confirm(ctx, erase, lambda c: erase_everything(core.userdata, c))
        if name == "link":
            return await link_command(core.linker, ctx, argument)
        if name == "agent":
            return (await agent_command(core.agents, ctx, argument.split())).text
        if name in MENU_COMMANDS:
            return t("console_not_here", ctx.language, command=f"/{name}")
        return unknown_command_text(ctx, f"/{name}")

    async def _memory_page(self, ctx: RequestContext, page: int) -> str:
        assert self._core is not None
        shown = await memory_page(self._core.memory, ctx.user_id, page, MEMORY_PAGE)
        if shown is None:
            return t("console_memory_empty", ctx.language)
        lines = shown.lines(ctx.language)
        if shown.page + 1 < shown.pages:
            lines += ["", t("console_memory_next", ctx.language, next=shown.page + 2)]
        return "\n".join(lines)

    async def _forget(self, ctx: RequestContext, argument: str) -> str:
        memory = self._core.memory if self._core else None
        assert memory is not None
        request = await forget_request(memory, ctx, argument)
        if request.answer is not None:
            return request.answer
        if request.everything:
            return self._confirm(ctx, request.prompt(ctx.language), lambda c: forget_everything(memory, c))
        return self._confirm(ctx, request.prompt(ctx.language), lambda c: forget(memory, c, request.ids))

    def _confirm(self, ctx: RequestContext, question: str, action: Callable[[RequestContext], Awaitable[str]]) -> str:
        """Ask; the next line says yes (do it) or anything else (keep everything)."""
        self._pending = action
        return f"{question}\n{t('console_confirm', ctx.language)}"

    async def _export(self, ctx: RequestContext) -> str:
        assert self._core is not None
        try:
            data = await self._core.userdata.export_json(ctx.user_id)
            name = export_filename(datetime.now(timezone.utc))
            path = await asyncio.to_thread(_write_new_file, self._export_dir, name, data)
        except (AriumError, OSError) as exc:
            log.error("console export failed: %s", exc)
            return t("mem_export_failed", ctx.language)
        return t("console_exported", ctx.language, path=str(path))


def _lock_session(path: Path) -> int | None:
    """An exclusive lock on ``path`` (held until the descriptor is closed or
    the process ends, a kill -9 included), or None when another session holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        log.info("another console session of this user is running; its unfinished turns are left to it")
        return None
    return fd


def _write_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Writes ``data`` to ``folder/name``, or to name-2, name-3 ... so an
    earlier export is never overwritten."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for attempt in range(1, 1000):
        path = folder / (name if attempt == 1 else f"{stem}-{attempt}{suffix}")
        try:
            with path.open("xb") as file:
                file.write(data)
            return path.resolve()
        except FileExistsError:
            continue
    raise OSError(f"too many exports named {name} in {folder}")


def _enable_line_editing() -> None:
    """Arrow keys, history and editing for input() where readline exists."""
    try:
        import readline  # noqa: F401 - importing it is what turns it on
    except ImportError:  # not on every platform; input() still works
        log.debug("readline is not available; the console has no line editing")
