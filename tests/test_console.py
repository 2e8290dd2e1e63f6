"""The console channel: `python -m bot console` as a real subprocess with
piped input against the fake model server, and the same channel in process
(a StringIO for the terminal) where a test needs to look at the database."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

from sqlalchemy import select

from bot.app import Arium
from bot.channels.console import ConsoleChannel
from bot.channels.console.channel import ConsoleSink, ConsoleOutput
from bot.memory.embedder import Embedder
from bot.identity import CONSOLE, local_chat_id
from bot.memory.records import NewMemory
from bot.storage.models import Chat, Message
from bot.storage.repositories import UserProfile
from tests.conftest import BotFactory, fake_settings
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.limits import WAIT_LIMIT
from tests.support.processes import FAKE_EMBEDDINGS, REPO, clean_env

OWNER = 4242


def console_env(tmp_path: Path, model: FakeModelServer, **env: str) -> dict[str, str]:
    """A fresh shell's environment with only a model key: what a new user has."""
    return clean_env(
        tmp_path, PYTHONPATH=str(REPO), BOT_MODELS="openai:gpt-4o-mini", OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=model.openai_base_url, BOT_MEMORY_EXTRACTION="false",
        EMBEDDING_MODEL=FAKE_EMBEDDINGS, **env,
    )


async def console_process(tmp_path: Path, model: FakeModelServer, stdin: str | bytes, **env: str) -> tuple[int, str, str]:
    """Run `python -m bot console` with ``stdin`` piped in; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "console",
        cwd=tmp_path,  # no .env there
        env=console_env(tmp_path, model, **env),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    # Start-up imports torch and loads the embedder: generous, like every wait here.
    data = stdin.encode() if isinstance(stdin, str) else stdin
    out, err = await asyncio.wait_for(process.communicate(data), WAIT_LIMIT * 3)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_piped_console_session_answers_each_line_and_exits_zero(
    tmp_path: Path, model: FakeModelServer
) -> None:
    model.responder = lambda request: Reply(text=f"echo: {request.last_user_text}")
    lines = [
        "hello there",
        "/remind tomorrow at 9 call mom",
        "/reminders",
        "",  # an empty line is skipped, as a terminal user expects
        "/nonsense",
        "x" * 50_000,
        "what did I say first?",
    ]
    code, out, err = await console_process(tmp_path, model, "\n".join(lines) + "\n", BOT_TIMEZONE="Europe/Berlin")
    assert code == 0, err
    assert "Traceback" not in out + err
    assert "echo: hello there" in out
    assert "call mom" in out and "(Europe/Berlin)" in out, "the reminder is confirmed in the user's zone"
    assert "1. call mom" in out, "and listed"
    assert "I don't know the command /nonsense" in out
    assert "too long" in out and "50000" in out
    # Two messages reached the model, the second with the first in its history.
    chats = model.chat_requests()
    assert len(chats) == 2
    assert "hello there" in [m.get("content") for m in chats[1].messages]


async def test_lines_that_once_ended_the_session_get_an_answer_and_the_session_goes_on(
    tmp_path: Path, model: FakeModelServer
) -> None:
    model.responder = lambda request: Reply(text=f"echo: {request.last_user_text}")
    lines = [
        b"caf\xe9 from a Latin-1 file",  # not UTF-8
        b"/remind in 99999999999999999999 minutes x",
        b"/remind in 100000 years far",
        b"/remind cron 0 0 31 2 * never",
        b"/remind 2027-13-01 10:00 x",
        b"/timezone UTC-13",
        b"still here",
    ]
    code, out, err = await console_process(tmp_path, model, b"\n".join(lines) + b"\n")
    assert code == 0, err
    assert "Traceback" not in out + err
    assert "echo: caf\ufffd from a Latin-1 file" in out
    assert out.count("further ahead than any calendar") == 2
    assert "never fires" in out
    assert "'2027-13-01' is not a date or time on the calendar" in out
    assert "I don't know the time zone 'UTC-13'" in out
    assert "echo: still here" in out
    assert [r.last_user_text for r in model.chat_requests()] == ["caf\ufffd from a Latin-1 file", "still here"]


async def test_the_reminder_list_shows_every_time_in_the_zone_its_header_names(
    tmp_path: Path, model: FakeModelServer
) -> None:
    lines = [
        "/timezone Europe/Berlin",
        "/remind 2027-01-01 10:00 set in Berlin",
        "/timezone Asia/Kolkata",
        "/reminders",
    ]
    code, out, err = await console_process(tmp_path, model, "\n".join(lines) + "\n")
    assert code == 0, err
    assert "(Asia/Kolkata)" in out
    # 10:00 in Berlin (UTC+1 in winter) is 14:30 in Kolkata (UTC+5:30).
    assert "set in Berlin — 2027-01-01 14:30" in out, out


async def test_the_console_needs_no_telegram_token_but_a_model_key(tmp_path: Path, model: FakeModelServer) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "console", cwd=tmp_path,
        env=clean_env(tmp_path, PYTHONPATH=str(REPO), BOT_MODELS="mistral:mistral-small-latest"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), WAIT_LIMIT)
    assert process.returncode == 2
    assert err.decode().strip().splitlines() == ["configuration error: missing setting: MISTRAL_API_KEY (see .env.example)"]


async def test_console_and_telegram_share_the_owner_s_user(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder
) -> None:
    """The console user is the owner (the first admin): what they said in
    the console is history and data of the same user in the database."""
    model.responder = lambda request: Reply(text="noted")
    settings = fake_settings(tmp_path / "data", tg, model, bot_admin_ids=str(OWNER))
    output = io.StringIO()
    console = ConsoleChannel(
        UserProfile(settings.console_user_id(), "Owner"),
        reader=io.StringIO("my cat is called Tom\n/new\n"),
        writer=output,
        interactive=False,
    )
    app = Arium(settings, console=console, embedder=embedder)
    await app.run_console()
    assert console.user_id == OWNER
    assert output.getvalue().splitlines()[0] == "noted"
    assert "fresh conversation" in output.getvalue()
    # The app stopped cleanly; a new one over the same data sees the user as an admin with that history.
    again = Arium(settings, embedder=embedder)
    try:
        await again.db.migrate()
        user = await again.users.get(OWNER)
        assert user is not None and user.first_name == "Owner"
        async with again.db.reading() as session:
            from sqlalchemy import select

            from bot.storage.models import Message

            texts = list((await session.execute(select(Message.content).where(Message.user_id == OWNER))).scalars())
        assert "my cat is called Tom" in texts
    finally:
        await again.stop()


async def test_the_streaming_sink_prints_only_what_is_new() -> None:
    out = io.StringIO()
    sink = ConsoleSink(ConsoleOutput(out), streaming=True)
    await sink.update("Hel")
    await sink.update("Hello, wor")
    await sink.finish("Hello, world.")
    await sink.update("first try")
    await sink.progress("⏳ checking the time…")  # a tool round: the answer starts afresh
    await sink.update("It is")
    await sink.finish("It is 9:00.")
    assert out.getvalue() == "Hello, world.\nfirst try\n⏳ checking the time…\nIt is 9:00.\n"


async def test_the_piped_sink_prints_the_final_answer_and_notices_without_markup() -> None:
    out = io.StringIO()
    sink = ConsoleSink(ConsoleOutput(out), streaming=False)
    await sink.update("partial")
    await sink.finish("the answer")
    await sink.notice("<b>Heads up</b> &amp; more")
    assert out.getvalue() == "the answer\nHeads up & more\n"


async def test_control_characters_are_shown_not_obeyed_by_the_terminal() -> None:
    # A model's answer (or a fetched page it quotes, or a reminder's text)
    # could clear the screen or retitle the window with escape sequences.
    out = io.StringIO()
    streamed = ConsoleSink(ConsoleOutput(out), streaming=True)
    await streamed.update("\x1b[2J")
    await streamed.finish("\x1b[2Jclear\x07\tand\x9b on")
    ConsoleOutput(out).line("⏰ \x1b]0;title\x07 call mom\r")
    shown = out.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown and "\r" not in shown
    assert "␛[2Jclear␇\tand\ufffd on" in shown and "⏰ ␛]0;title␇ call mom␍\n" in shown


async def test_an_interactive_session_streams_the_answer_at_a_prompt(tmp_path: Path, model: FakeModelServer) -> None:
    """On a terminal (a pseudo-terminal here, driven by pexpect): a welcome
    line, a prompt, the answer as it streams, and Ctrl-D ends the session."""
    import pexpect

    model.responder = lambda request: Reply(chunks=["Hello ", "from ", "the ", "terminal."], chunk_delay=0.05)
    env = console_env(tmp_path, model, TERM="dumb")
    child = pexpect.spawn(
        sys.executable, ["-m", "bot", "console"], cwd=str(tmp_path), env=env, encoding="utf-8", timeout=WAIT_LIMIT * 3
    )
    try:
        await child.expect("Ctrl-D ends the session", async_=True)
        await child.expect_exact("you> ", async_=True)
        child.sendline("hi")
        await child.expect_exact("Hello from the terminal.", async_=True)
        await child.expect_exact("you> ", async_=True)
        child.sendline("")  # an empty line at the prompt is nothing, not the end
        await child.expect_exact("you> ", async_=True)
        child.sendeof()
        await child.expect(pexpect.EOF, async_=True)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
    assert len(model.chat_requests()) == 1 and model.chat_requests()[0].stream


async def test_memory_commands_work_in_the_console_with_a_typed_confirmation(
    tmp_path: Path, start_bot: BotFactory, embedder: Embedder
) -> None:
    """/memory pages, /forget asks and does only on "yes", /export writes a
    new file each time, /deleteme erases after "yes": the core's commands,
    rendered as plain text."""
    app = await start_bot(bot_console_user_id=OWNER)
    await app.users.touch(UserProfile(OWNER, "Owner"), "user")
    facts = [f"remembered fact number {n}" for n in range(1, 23)]
    await app.memory.add(OWNER, [NewMemory(text) for text in [*facts, "drinks green tea every morning"]])
    lines = [
        "/memory", "/memory 2", "/memory nonsense", "/memory 99",
        "/forget green tea", "no", "/forget green tea", "yes", "/forget", "/forget zebra crossings",
        "/export", "/export",
        "/forget all", "what?", "/forget all", "да",
        "/deleteme", "yes", "/memory",
    ]
    output = io.StringIO()
    console = ConsoleChannel(
        UserProfile(OWNER, "Owner"), reader=io.StringIO("\n".join(lines) + "\n"), writer=output,
        interactive=False, export_dir=tmp_path,
    )
    await Arium(app.settings, console=console, embedder=embedder).run_console()
    out = output.getvalue()
    assert "Traceback" not in out

    pages = out.split("What I remember about you")
    assert pages[1].startswith(" (23), page 1 of 2") and "/memory 2 shows the next page" in pages[1]
    assert pages[2].startswith(" (23), page 2 of 2") and "shows the next page" not in pages[2]
    assert pages[3].startswith(" (23), page 1 of 2") and pages[4].startswith(" (23), page 2 of 2")

    asked = out.index("Forget these 1?")
    assert "drinks green tea" in out[asked:] and "Type yes to go ahead" in out[asked:]
    cancelled = out.index("Cancelled. Nothing was deleted.", asked)
    done = out.index("Forgotten: 1.", out.index("Forget these 1?", cancelled))
    assert out.index("Tell me what to forget", done) < out.index("Nothing I remember matches", done)

    exports = sorted(tmp_path.glob("arium-export-*.json"))  # "-2.json" sorts before ".json"
    assert len(exports) == 2 and exports[0].name == exports[1].name.replace(".json", "-2.json")
    assert all(str(path) in out for path in exports), "each export says where it is"
    exported = json.loads(exports[0].read_text())
    texts = {m["text"] for m in exported["memories"]}
    assert "remembered fact number 1" in texts and "drinks green tea every morning" not in texts
    assert exported["profile"]["identities"] == [{"channel": "console", "id": str(OWNER)}]

    assert out.count("Forget all 22 things") == 2, "asked twice: 'what?' cancelled the first"
    assert "Done: I forgot everything I remembered about you (22)" in out
    assert "Erase everything I know about you" in out and "everything I stored about you is erased" in out
    assert out.rstrip().endswith("I don't remember anything about you yet.")
    assert await app.memory.count(OWNER) == 0
    # The console's own chat ("what?" and its answer) went with the rest.
    async with app.db.reading() as session:
        console_chat = local_chat_id(CONSOLE, OWNER)
        assert await session.get(Chat, console_chat) is None
        assert (await session.execute(select(Message).where(Message.chat_id == console_chat))).first() is None


async def test_a_console_turn_cut_short_is_finished_by_the_next_session_alone(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder
) -> None:
    """A console session killed mid-answer leaves its question pending. The
    next session of that user finishes it at its start, late and once; while
    another session of theirs runs (it holds the lock), its turns are left to it."""
    import fcntl
    import os

    from bot.recovery import RecoveryReport

    model.responder = lambda request: Reply(text=f"answer to {request.last_user_text}")
    settings = fake_settings(tmp_path / "data", tg, model, bot_admin_ids=str(OWNER))
    lock = tmp_path / "data" / f"console-{OWNER}.lock"

    def session(lines: str, output: io.StringIO) -> Arium:
        console = ConsoleChannel(
            UserProfile(OWNER, "Owner"), reader=io.StringIO(lines), writer=output, interactive=False,
            session_lock=lock,
        )
        return Arium(settings, console=console, embedder=embedder)

    first = session("hello\n", io.StringIO())
    await first.run_console()
    # What a kill -9 mid-answer leaves behind: the stored question, still pending.
    await first.messages.start_turn(
        chat_id=local_chat_id(CONSOLE, OWNER), chat_type="console", chat_title=None, user_id=OWNER,
        text="what was I asking?", tokens=5, request_id="lost", history_tokens=1000,
    )

    # Another session of the owner is running: the turn may be its own, in flight.
    other = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        beside = session("", io.StringIO())
        await beside.run_console()
        assert beside.recovery.last == RecoveryReport()
    finally:
        os.close(other)

    output = io.StringIO()
    alone = session("", output)
    await alone.run_console()
    assert alone.recovery.last == RecoveryReport(answered=1)
    lines = output.getvalue().splitlines()
    assert lines[0].startswith("Sorry for the wait") and lines[-1] == "answer to what was I asking?"
    again = session("", io.StringIO())
    await again.run_console()
    assert again.recovery.last == RecoveryReport(), "finished once"
