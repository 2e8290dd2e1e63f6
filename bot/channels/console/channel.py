"""Chat with Arium in a terminal, through the same core as Telegram: the
inbound path (gates, input checks), the conversation, the commands.

Interactive (stdin is a terminal): a prompt with line editing and history
(readline), the answer printed as it streams. Piped: one message per input
line, each final answer printed, and the session ends at end of input."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

from bot.channels.base import Capabilities, Channel
from bot.channels.inbound import Arrival, InboundPath
from bot.commands import MENU_COMMANDS, help_text, new_conversation, start_text, unknown_command_text
from bot.context import ChatType, RequestContext
from bot.i18n import add_strings, plain, t
from bot.identity import CONSOLE, local_chat_id
from bot.linking import Linker, link_command
from bot.memory.service import MemoryService
from bot.reminders import views as reminder_views
from bot.reminders.notifier import DueReminder, Notifier
from bot.reminders.service import ReminderService
from bot.storage.repositories import UserProfile

log = logging.getLogger(__name__)

PROMPT = "you> "
MEMORY_PAGE = 20

add_strings(
    {
        "en": {
            "console_not_here": "{command} is not available in the console yet; use it in Telegram.",
            "console_memory_empty": "I don't remember anything about you yet.",
            "console_memory_header": "What I remember about you (the newest {shown} of {total}):",
        },
        "ru": {
            "console_not_here": "{command} пока недоступна в консоли; воспользуйтесь ею в Telegram.",
            "console_memory_empty": "Я пока ничего о вас не запомнил.",
            "console_memory_header": "Что я о вас помню (последние {shown} из {total}):",
        },
    }
)


class ConsoleOutput:
    """Writes to the terminal (or a pipe); a stream being shown is tracked so
    the final answer prints only what is not on the screen yet."""

    def __init__(self, writer: TextIO) -> None:
        self._writer = writer

    def line(self, text: str) -> None:
        self._writer.write(text + "\n")
        self._writer.flush()

    def piece(self, text: str) -> None:
        self._writer.write(text)
        self._writer.flush()


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
    ) -> None:
        self._user = user
        self._reader = reader or sys.stdin
        self._output = ConsoleOutput(writer or sys.stdout)
        self.interactive = self._reader.isatty() if interactive is None else interactive
        self.capabilities = Capabilities(streaming=self.interactive)
        self._bot_name = bot_name
        self._inbound: InboundPath | None = None
        self._reminders: ReminderService | None = None
        self._memory: MemoryService | None = None
        self._linker: Linker | None = None
        self._closing = False

    @property
    def user_id(self) -> int:
        return self._user.id

    def connect(self, inbound: InboundPath, reminders: ReminderService, memory: MemoryService, linker: Linker) -> None:
        """The core services the console's commands use (bot/app.py wires them)."""
        self._inbound = inbound
        self._reminders = reminders
        self._memory = memory
        self._linker = linker

    def reminder_notifier(self) -> Notifier:
        return ConsoleReminderNotifier(self._output)

    # The Channel lifecycle --------------------------------------------------

    async def start(self) -> None:
        if self.interactive:
            _enable_line_editing()
            self._output.line(f"{self._bot_name} console. /help lists the commands; Ctrl-D ends the session.")

    async def stop(self, timeout: float) -> None:
        self._closing = True

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
                await self.handle_line(text)

    def _read(self) -> str | None:
        if self.interactive:
            return input(PROMPT)
        line = self._reader.readline()
        return line if line else None

    async def handle_line(self, text: str) -> None:
        assert self._inbound is not None, "connect() first"
        command = text.startswith("/")
        arrival = Arrival(
            self._user,
            chat_id=local_chat_id(CONSOLE, self._user.id),
            chat_type=ChatType.CONSOLE,
            received_at=datetime.now(timezone.utc),
            reaches_model=not command,
        )
        ctx = await self._inbound.admit(arrival, self._say)
        if ctx is None:
            return
        if command:
            await self._command(ctx, text)
            return
        await self._inbound.converse(ctx, text, ConsoleSink(self._output, streaming=self.interactive))

    async def _say(self, text: str) -> None:
        self._output.line(plain(text))

    async def _command(self, ctx: RequestContext, text: str) -> None:
        head, _, argument = text.partition(" ")
        name = head[1:].lower()
        await self._say(await self._answer_command(ctx, name, argument.strip()))

    async def _answer_command(self, ctx: RequestContext, name: str, argument: str) -> str:
        assert self._inbound is not None and self._reminders is not None
        if name == "start":
            return start_text(ctx, self._bot_name)
        if name == "help":
            return help_text(ctx.language, markup=False)
        if name == "new":
            return await new_conversation(self._inbound.conversation, ctx)
        if name == "remind":
            return await reminder_views.remind(self._reminders, ctx, argument)
        if name == "reminders":
            listing = await reminder_views.reminder_list(self._reminders, ctx)
            head = [] if listing.header is None else [plain(listing.header), ""]
            return "\n".join([*head, *listing.lines])
        if name == "timezone":
            return await reminder_views.timezone_without_choices(self._reminders, ctx, argument)
        if name == "memory":
            return await self._memory_list(ctx)
        if name == "link":
            assert self._linker is not None
            return await link_command(self._linker, ctx, argument)
        if name in MENU_COMMANDS:
            return t("console_not_here", ctx.language, command=f"/{name}")
        return unknown_command_text(ctx, f"/{name}")

    async def _memory_list(self, ctx: RequestContext) -> str:
        assert self._memory is not None
        items, total = await self._memory.page(ctx.user_id, 0, MEMORY_PAGE)
        if not items:
            return t("console_memory_empty", ctx.language)
        lines = [t("console_memory_header", ctx.language, shown=len(items), total=total), ""]
        lines += [f"{number}. {item.text}" for number, item in enumerate(items, start=1)]
        return "\n".join(lines)


def _enable_line_editing() -> None:
    """Arrow keys, history and editing for input() where readline exists."""
    try:
        import readline  # noqa: F401 - importing it is what turns it on
    except ImportError:  # not on every platform; input() still works
        log.debug("readline is not available; the console has no line editing")
