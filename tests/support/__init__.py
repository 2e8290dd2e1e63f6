"""Helpers that several test modules share, so that no test module imports
another (a test module's names are its own; pytest collects it, nothing
else reads it).

Grouped by topic, each module's docstring says what it holds:

- processes: the bot and its command line run as separate OS processes.
- chat: the fake Telegram's chats and what the fake model was sent.
- api: the bot's HTTP API and its keys.
- admin: the admin commands, driven through the fake Telegram.
- memory_bot: the whole bot with memory on, against a fake model that
  answers each kind of memory request.
- memory_service: a MemoryService on a real database, called directly.
- contexts: RequestContexts for code called without a chat around it.
- broker: the local RabbitMQ of the scaled mode's tests.

Fakes that stand in for an outside service or one of the bot's seams live
in tests/fakes/ (the reminder scheduler's RecordingNotifier among them);
fixtures every kind of test uses, in tests/conftest.py.

ANN and BOB are different users in api, memory_bot and memory_service, each
module's pair fitting its helpers (memory_service's ``db`` fixture creates
its own two, memory_bot's Ann is the fake Telegram's default user): take
them from the module whose helpers a test uses.

A fixture shared by a few modules lives here under the name
``fixture_<name>`` (registered as ``<name>``), and a test module imports it
explicitly: pytest finds fixtures in a module's namespace, and the function
name differing from the fixture's keeps test parameters from shadowing the
import.
"""
