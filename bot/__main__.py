"""Command line: ``python -m bot run | console | worker | gateway | migrate | doctor | tools | backup | restore <backup>``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no code path may fetch from a model hub

from bot.context import configure_logging  # noqa: E402
from bot.errors import AriumError, ConfigError  # noqa: E402
from bot.settings import Settings, load_settings  # noqa: E402
from sqlalchemy.exc import InterfaceError, OperationalError  # noqa: E402


def _log_to_file(settings: Settings, *, also_stderr: bool) -> None:
    configure_logging(
        settings.bot_log_level,
        settings.secrets(),
        str(settings.log_file),
        max_bytes=int(settings.bot_log_max_mb * 1024 * 1024),
        backup_count=settings.bot_log_backups,
        also_stderr=also_stderr,
    )


def _run(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.app import Arium, check_run_settings

    check_run_settings(settings, telegram=settings.serves_telegram)  # a bad setting is one line on stderr
    _log_to_file(settings, also_stderr=sys.stderr.isatty() if settings.bot_log_stderr is None else settings.bot_log_stderr)
    try:
        app = Arium(settings)
        asyncio.run(app.run_until_signal())
    except ConfigError:
        raise  # one line from main(), as before the log existed
    except Exception:
        # Into the bot's own log too, not only to stderr (console.log or the journal).
        logging.getLogger("bot").critical("the bot stopped on an error", exc_info=True)
        raise
    if app.stuck_tools:
        # A hung tool thread cannot be stopped, and the interpreter would wait
        # for it forever at exit; everything else is closed, so leave now.
        logging.shutdown()
        os._exit(0)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    """The scaled mode: take updates from the broker (any number of workers)."""
    import socket

    from bot.app import Arium, check_worker_settings

    check_worker_settings(settings)
    _log_to_file(settings, also_stderr=sys.stderr.isatty() if settings.bot_log_stderr is None else settings.bot_log_stderr)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    try:
        app = Arium(settings, worker=name)
        asyncio.run(app.run_until_signal())
    except ConfigError:
        raise
    except Exception:
        logging.getLogger("bot").critical("the worker stopped on an error", exc_info=True)
        raise
    return 0


def _gateway(settings: Settings, _args: argparse.Namespace) -> int:
    """The scaled mode: Telegram's webhooks into the broker."""
    from bot.scale.gateway import check_gateway_settings, run_gateway

    check_gateway_settings(settings)
    _log_to_file(settings, also_stderr=sys.stderr.isatty() if settings.bot_log_stderr is None else settings.bot_log_stderr)
    asyncio.run(run_gateway(settings))
    return 0


def _console(settings: Settings, _args: argparse.Namespace) -> int:
    """Chat in the terminal through the same core; no Telegram token needed."""
    from bot.app import Arium, check_run_settings
    from bot.channels.console import ConsoleChannel
    from bot.storage.repositories import UserProfile

    check_run_settings(settings, telegram=False)
    # Model loading draws progress bars on stderr, in the middle of the chat.
    os.environ.setdefault("TQDM_DISABLE", "1")
    _log_to_file(settings, also_stderr=False)  # the terminal is the chat
    user = UserProfile(settings.console_user_id(), settings.bot_console_user_name)
    # One lock per console user: a restarted session finishes what a killed one left.
    lock = settings.bot_data_dir / f"console-{user.id}.lock"
    app = Arium(settings, console=ConsoleChannel(user, session_lock=lock))
    try:
        asyncio.run(app.run_console())
    except KeyboardInterrupt:
        print()  # leave the terminal on a fresh line
    if app.stuck_tools:
        logging.shutdown()
        os._exit(0)
    return 0


def _apikey(settings: Settings, args: argparse.Namespace) -> int:
    """Keys of the HTTP API: create (prints the key alone on the last line), list, revoke."""
    from bot.apikeys import run_apikey_command

    return asyncio.run(run_apikey_command(settings, args.action, name=args.name, user_id=args.user_id, out=print))


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.storage.db import check_database_url
    from bot.storage.db import Database

    check_database_url(settings.effective_database_url)

    async def go() -> None:
        db = Database(settings.effective_database_url)
        try:
            await db.migrate()
        finally:
            await db.dispose()

    asyncio.run(go())
    print("database is up to date")
    return 0


def _doctor(settings: Settings, _args: argparse.Namespace) -> int:
    from bot.doctor import run_doctor

    return asyncio.run(run_doctor(settings, print))


def _tools(settings: Settings, _args: argparse.Namespace) -> int:
    """List plugins and the tools they add, as `run` would load them."""
    from bot.doctor import _plugins, load_for_report

    ok = _plugins(settings, print, None)
    _, registry = load_for_report(settings)
    for tool in registry.tools():
        scope = " [admin only]" if tool.admin_only else ""
        print(f"  {tool.name}{scope} ({tool.plugin}): {tool.description.splitlines()[0]}")
    return 0 if ok else 1


def _backup(settings: Settings, _args: argparse.Namespace) -> int:
    """A backup now; safe while the bot runs (SQLite's online backup API)."""
    from bot.admin.backup import BackupConfig, BackupService, describe_backup

    result = BackupService(BackupConfig.from_settings(settings)).run_sync()
    print(f"backup written: {describe_backup(result)}")
    return 0


def _restore(settings: Settings, args: argparse.Namespace) -> int:
    from bot.admin.backup import BackupConfig
    from bot.admin.restore import describe_restore, restore

    result = asyncio.run(restore(BackupConfig.from_settings(settings), args.backup))
    print(describe_restore(result))
    return 0


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from bot.eval.cli import main as eval_main

    return eval_main(settings, args)


Command = Callable[[Settings, argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Command]] = {
    "run": ("start the bot (long polling) until SIGTERM/Ctrl-C", _run),
    "console": ("chat with the bot in this terminal (one message per line when piped; ends at end of input)", _console),
    "apikey": ("HTTP API keys: apikey create --name NAME [--user-id ID] | apikey list | apikey revoke NAME", _apikey),
    "migrate": ("apply database migrations and exit", _migrate),
    "doctor": ("check settings, database, model endpoints, Telegram, backups, disk and logs", _doctor),
    "tools": ("list plugins and the tools the model can call (BOT_TOOLS_DISABLED applied)", _tools),
    "backup": ("back up the database, memory indexes and user files into BOT_DATA_DIR/backups", _backup),
    "restore": ("replace the data with a backup (the bot must be stopped); the current data is kept aside", _restore),
    "eval": ("evaluate the assistant: eval run | export | compare | report (see README)", _eval),
    "gateway": ("the scaled mode: receive Telegram's webhooks and publish each update to RabbitMQ", _gateway),
    "worker": ("the scaled mode: answer the updates the gateway published (run any number)", _worker),
}
# Positional arguments of the commands that take some: (name, help).
ARGUMENTS: dict[str, list[tuple[str, str]]] = {
    "restore": [("backup", "a backup name under BOT_DATA_DIR/backups (e.g. 20250101-033000), a backup directory, or a database file")],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Arium, a Telegram AI assistant")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        for argument, argument_help in ARGUMENTS.get(name, []):
            command.add_argument(argument, help=argument_help)
        if name == "eval":
            from bot.eval.cli import add_arguments

            add_arguments(command)
        if name == "worker":
            command.add_argument("--name", help="this worker's name in logs and /health (default: host-pid)")
        if name == "apikey":
            command.add_argument("action", choices=["create", "list", "revoke"])
            command.add_argument("key_name", nargs="?", metavar="NAME", help="the key's name (or --name)")
            command.add_argument("--name", help="a name for the new key (letters, digits, . _ -)")
            command.add_argument("--user-id", type=int, help="whose key it is (default: the console user, the owner)")
    args = parser.parse_args(argv)
    if args.command == "apikey":
        args.name = args.key_name or args.name
    try:
        settings = load_settings()
        return COMMANDS[args.command][1](settings, args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except AriumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, OperationalError, InterfaceError) as exc:
        # What the machine refused (a data directory that cannot be made, a
        # database that does not answer): the operator's to fix, told in a
        # line instead of a page of traceback. Bugs still print theirs.
        logging.getLogger("bot").debug("command failed", exc_info=exc)
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
