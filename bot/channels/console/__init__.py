"""The terminal console channel (``python -m bot console``)."""

from bot.channels.console.channel import ConsoleChannel

__all__ = ["ConsoleChannel"]
