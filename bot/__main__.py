"""Command line: ``python -m bot run | migrate | doctor``."""

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


def _run(settings: Settings) -> int:
    from bot.app import Arium

    configure_logging(settings.bot_log_level, settings.secrets())
    app = Arium(settings)
    asyncio.run(app.run_until_signal())
    if app.stuck_tools:
        # A hung tool thread cannot be stopped, and the interpreter would wait
        # for it forever at exit; everything else is closed, so leave now.
        logging.shutdown()
        os._exit(0)
    return 0


def _migrate(settings: Settings) -> int:
    from bot.app import check_database_url
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


def _doctor(settings: Settings) -> int:
    from bot.doctor import run_doctor

    return asyncio.run(run_doctor(settings, print))


def _tools(settings: Settings) -> int:
    """List plugins and the tools they add, as `run` would load them."""
    from bot.doctor import _plugins, load_for_report

    ok = _plugins(settings, print, None)
    _, registry = load_for_report(settings)
    for tool in registry.tools():
        scope = " [admin only]" if tool.admin_only else ""
        print(f"  {tool.name}{scope} ({tool.plugin}): {tool.description.splitlines()[0]}")
    return 0 if ok else 1


COMMANDS: dict[str, tuple[str, Callable[[Settings], int]]] = {
    "run": ("start the bot (long polling) until SIGTERM/Ctrl-C", _run),
    "migrate": ("apply database migrations and exit", _migrate),
    "doctor": ("check settings, database, model endpoints and Telegram", _doctor),
    "tools": ("list plugins and the tools the model can call (BOT_TOOLS_DISABLED applied)", _tools),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Arium, a Telegram AI assistant")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        return COMMANDS[args.command][1](settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except AriumError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
