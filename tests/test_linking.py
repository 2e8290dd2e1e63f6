"""One person, several channels: identities, /link codes, and reminders
delivered through the channel that owns their chat (or, where it cannot
send, to the owner's Telegram). The real bot against the fake Bot API and
model server; the API through its real server; the console in process."""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.app import Arium
from bot.channels.console import ConsoleChannel
from bot.identity import API, CONSOLE, TELEGRAM, channel_of_chat, local_chat_id
from bot.memory.embedder import Embedder
from bot.memory.records import NewMemory
from bot.reminders.clock import ShiftedClock
from bot.reminders.notifier import DeliveryFailed, DueReminder, ReminderRouter
from bot.storage.repositories import UserProfile
from bot.tools.sandbox import FileSandbox, SandboxLimits
from tests.conftest import BotFactory, eventually
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram, SentMessage
from tests.support.api import Api, error_of, key_for

ANN, BOB = 3001, 3002
API_ONLY = 3999  # a user who has only an API key
CONSOLE_ID = 7  # BOT_CONSOLE_USER_ID: a local owner, not a Telegram account
START = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc)
CODE = re.compile(r"\b([A-Z2-9]{5}-[A-Z2-9]{5})\b")

Starter = Callable[..., Awaitable[Arium]]


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock(START)


@pytest.fixture
def linking_bot(start_bot: BotFactory, clock: ShiftedClock) -> Starter:
    """Telegram and the HTTP API in one process, on a clock the test moves."""

    async def start(**overrides: Any) -> Arium:
        values: dict[str, Any] = {"api_enabled": True, "api_port": 0, "bot_console_user_id": CONSOLE_ID}
        return await start_bot(clock=clock, **(values | overrides))

    return start


async def ask(tg: FakeTelegram, text: str, user_id: int, *, chat_id: int | None = None, **kwargs: Any) -> SentMessage:
    chat = user_id if chat_id is None else chat_id
    before = len(tg.messages(chat))
    tg.user_text(text, chat_id=chat, user_id=user_id, **kwargs)
    return (await tg.wait_messages(chat, before + 1))[before]


def code_in(text: str) -> str:
    found = CODE.search(text)
    assert found, f"no link code in {text!r}"
    return found.group(1)


async def run_console(app_settings: Any, embedder: Embedder, clock: ShiftedClock, lines: list[str]) -> str:
    """A console session of CONSOLE_ID over the same data, as `python -m bot console` runs it."""
    output = io.StringIO()
    console = ConsoleChannel(
        UserProfile(app_settings.console_user_id(), "Owner"),
        reader=io.StringIO("".join(f"{line}\n" for line in lines)),
        writer=output,
        interactive=False,
    )
    await Arium(app_settings, console=console, embedder=embedder, clock=clock).run_console()
    return output.getvalue()


# --- Addresses ----------------------------------------------------------------


def test_console_and_api_chats_never_take_a_telegram_chat_id() -> None:
    telegram_ids = [1, 42, 2**52 - 1, -1, -(10**12) - 4567, -(2**52) + 1]
    for user in (1, 42, 2**52 - 1, -5):
        for channel in (CONSOLE, API):
            chat = local_chat_id(channel, user)
            assert chat not in telegram_ids and channel_of_chat(chat) == channel
    assert all(channel_of_chat(chat) == TELEGRAM for chat in telegram_ids)
    # One chat per user and channel: different users never share one.
    assert len({local_chat_id(API, user) for user in (1, -1, 2, -2)}) == 4
    with pytest.raises(ValueError):
        local_chat_id(API, 2**53)


async def test_a_reminder_whose_channel_cannot_send_goes_to_the_owner_s_telegram_or_fails() -> None:
    delivered: list[DueReminder] = []

    class Recording:
        async def deliver(self, reminder: DueReminder) -> None:
            delivered.append(reminder)

    telegram_of = {ANN: ANN}

    async def telegram_chat_of(user_id: int) -> int | None:
        return telegram_of.get(user_id)

    def due(user_id: int, chat_id: int, channel: str) -> DueReminder:
        return DueReminder(1, user_id, chat_id, "tea", "UTC", "en", "Ann", START, False, None, None, channel)

    router = ReminderRouter(telegram_chat_of)
    router.add(TELEGRAM, Recording())
    await router.deliver(due(ANN, -100555, TELEGRAM))  # a group: its own chat
    await router.deliver(due(ANN, local_chat_id(API, ANN), API))  # the API cannot send: her Telegram chat
    assert [(r.chat_id, r.channel) for r in delivered] == [(-100555, TELEGRAM), (ANN, TELEGRAM)]
    with pytest.raises(DeliveryFailed):  # no Telegram identity and no console here
        await router.deliver(due(API_ONLY, local_chat_id(API, API_ONLY), API))

    # A console serving alone shows its own chat's reminders, and those no other route reaches.
    printed: list[DueReminder] = []

    class Terminal:
        async def deliver(self, reminder: DueReminder) -> None:
            printed.append(reminder)

    alone = ReminderRouter(telegram_chat_of)
    alone.add(CONSOLE, Terminal(), last_resort=True)
    await alone.deliver(due(CONSOLE_ID, local_chat_id(CONSOLE, CONSOLE_ID), CONSOLE))
    await alone.deliver(due(CONSOLE_ID, CONSOLE_ID, TELEGRAM))  # set before channels had chats of their own
    assert [r.channel for r in printed] == [CONSOLE, TELEGRAM]


def test_linked_files_move_without_overwriting_any(tmp_path: Path) -> None:
    sandbox = FileSandbox(tmp_path, SandboxLimits(max_bytes=10_000, max_entries=100, max_file_bytes=1_000))
    sandbox.write(ANN, "todo.md", "Ann's list")
    sandbox.write(API_ONLY, "todo.md", "the script's list")
    sandbox.write(API_ONLY, "deep/er/note.md", "kept")
    assert sandbox.adopt(API_ONLY, ANN) == 2
    assert sandbox.read(ANN, "todo.md") == "Ann's list"
    assert sandbox.read(ANN, f"linked-{API_ONLY}/todo.md") == "the script's list"
    assert sandbox.read(ANN, f"linked-{API_ONLY}/deep/er/note.md") == "kept"
    assert not sandbox.user_root(API_ONLY).exists()
    assert sandbox.adopt(API_ONLY, ANN) == 0, "nothing left to move"


# --- Linking Telegram and the API ---------------------------------------------


async def test_an_api_user_links_to_telegram_and_their_reminders_are_delivered_there(
    linking_bot: Starter, tg: FakeTelegram, clock: ShiftedClock
) -> None:
    """The API shows a code, Ann enters it in Telegram: the key's user joins
    hers. A reminder the key set before linking and one set after both fire
    in her Telegram chat, and her memories answer to the key."""
    app = await linking_bot()
    api = Api(app)
    key = await key_for(app, API_ONLY, "ann-script")
    before = await api.call("POST", "/v1/reminders", key, json={"text": "tomorrow at 9 water the plants"})
    assert before.status_code == 201, before.text
    await app.memory.add(API_ONLY, [NewMemory("prefers green tea")])
    app.files.write(API_ONLY, "notes/plants.md", "the fern wants water twice a week")
    await ask(tg, "/timezone Europe/Berlin", ANN)
    await app.memory.add(ANN, [NewMemory("has a cat called Tom")])

    issued = await api.call("POST", "/v1/link/code", key)
    assert issued.status_code == 201, issued.text
    answer = await ask(tg, f"/link {issued.json()['code']}", ANN)
    assert "Linked" in answer.text and "memories moved: 1, reminders moved: 1" in answer.text, answer.text

    # The key now belongs to Ann (a Telegram id stays its user's id).
    assert await app.api_keys.user_of(key) == ANN
    assert await app.users.get(API_ONLY) is None
    assert app.files.read(ANN, "notes/plants.md") == "the fern wants water twice a week"
    memories = {m["text"] for m in (await api.call("GET", "/v1/memories", key)).json()["data"]}
    assert memories == {"prefers green tea", "has a cat called Tom"}
    after = await api.call("POST", "/v1/reminders", key, json={"text": "in 2 hours call the vet"})
    assert after.status_code == 201, after.text
    assert after.json()["local"].endswith("(Europe/Berlin)"), "her time zone, not the API user's"
    listing = await ask(tg, "/reminders", ANN)
    assert "water the plants" in listing.text and "call the vet" in listing.text

    for reminder in sorted(await app.reminder_store.listed(ANN), key=lambda r: r.next_fire_at or START):
        assert reminder.channel == API and reminder.next_fire_at is not None
        clock.set(reminder.next_fire_at - timedelta(milliseconds=150))
        await app.reminder_scheduler.resync()
        fired = await eventually(
            lambda: texts_in(tg, ANN), lambda texts, wanted=reminder.text: sum(wanted in t for t in texts) == 2
        )
        assert reminder.text in fired[-1], "listed once, then delivered once in her Telegram chat"


async def texts_in(tg: FakeTelegram, chat_id: int) -> list[str]:
    return [m.text for m in tg.messages(chat_id)]


async def test_link_codes_refuse_what_they_cannot_join(
    linking_bot: Starter, tg: FakeTelegram, clock: ShiftedClock
) -> None:
    app = await linking_bot()
    api = Api(app)
    key = await key_for(app, API_ONLY, "script")

    # Two Telegram accounts are two people: Bob cannot join Ann's.
    code = code_in((await ask(tg, "/link", ANN)).text)
    refused = await ask(tg, f"/link {code}", BOB)
    assert "Both accounts already have a Telegram account" in refused.text
    # A code works once, even when the link was refused.
    again = await api.call("POST", "/v1/link", key, json={"code": code})
    assert again.status_code == 400 and error_of(again)["code"] == "link_unknown"

    # One's own code, in the same place.
    own = (await api.call("POST", "/v1/link/code", key)).json()["code"]
    same = await api.call("POST", "/v1/link", key, json={"code": own})
    assert same.status_code == 400 and error_of(same)["code"] == "link_same_user"
    # The mistake does not use the code up: it still is this user's live code.
    still = await api.call("POST", "/v1/link", key, json={"code": own})
    assert still.status_code == 400 and error_of(still)["code"] == "link_same_user"

    # Expired after ten minutes.
    stale = code_in((await ask(tg, "/link", ANN)).text)
    clock.advance(timedelta(minutes=11))
    expired = await api.call("POST", "/v1/link", key, json={"code": stale})
    assert expired.status_code == 400 and error_of(expired)["code"] == "link_unknown"

    # Not a code at all, in Telegram and in the API; nothing crashes, nothing is joined.
    for text in ("/link hello", "/link " + "A" * 300, "/link ABCDE-FGH10"):
        assert "doesn't look like a link code" in (await ask(tg, text, BOB)).text
    malformed = await api.call("POST", "/v1/link", key, json={"code": "!!"})
    assert malformed.status_code == 400 and error_of(malformed)["code"] == "link_malformed"
    for body in ({"code": ""}, {"nope": 1}, {"code": "x" * 65}, {"code": 12345}):
        response = await api.call("POST", "/v1/link", key, json=body)
        assert response.status_code == 400 and error_of(response)["code"] == "invalid_request", body

    # In a group a code would be seen by everyone: private chats only.
    group = await ask(tg, "/link", ANN, chat_id=-100777, chat_type="group")
    assert "private chat" in group.text and not CODE.search(group.text)

    # Nothing was joined by any of that.
    assert await app.api_keys.user_of(key) == API_ONLY
    assert await app.identities.channels_of(ANN) == {"telegram": str(ANN)}
    assert await app.identities.channels_of(BOB) == {"telegram": str(BOB)}


async def test_a_telegram_user_and_another_user_s_key_see_nothing_of_each_other(
    linking_bot: Starter, tg: FakeTelegram
) -> None:
    app = await linking_bot()
    api = Api(app)
    bob = await key_for(app, BOB, "bob")
    await ask(tg, "/remind tomorrow at 9 pay the rent", ANN)
    await app.memory.add(ANN, [NewMemory("Ann's door code is 4711")])
    [anns_reminder] = await app.reminder_store.listed(ANN)
    [anns_memory] = (await app.memory.page(ANN, 0, 10))[0]

    assert (await api.call("GET", "/v1/memories", bob)).json()["data"] == []
    assert (await api.call("GET", "/v1/reminders", bob)).json()["data"] == []
    for path in (f"/v1/memories/{anns_memory.id}", f"/v1/reminders/{anns_reminder.id}"):
        response = await api.call("DELETE", path, bob)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert "4711" not in (await api.call("GET", "/v1/export", bob)).text
    assert [r.id for r in await app.reminder_store.listed(ANN)] == [anns_reminder.id]
    listing = await ask(tg, "/memory", ANN)
    assert "4711" in listing.text


# --- Linking Telegram and the console -------------------------------------------


async def test_the_console_owner_links_to_their_telegram_account(
    linking_bot: Starter, tg: FakeTelegram, model: FakeModelServer, embedder: Embedder, clock: ShiftedClock
) -> None:
    """A console of a local owner (no Telegram id) enters the code Ann's
    Telegram showed: from then on the console is Ann, with her memories and
    reminders, and what the console kept moves to her."""
    model.responder = lambda request: Reply(text="noted")
    app = await linking_bot()
    await ask(tg, "/start", ANN)
    await app.memory.add(ANN, [NewMemory("has a cat called Tom")])
    settings = app.settings.model_copy(update={"api_enabled": False})
    # Before linking, the console is its own user with its own memory and reminder.
    first = await run_console(settings, embedder, clock, ["/remind tomorrow at 9 buy bread", "/memory"])
    assert "buy bread" in first and "has a cat called Tom" not in first
    assert await app.users.get(CONSOLE_ID) is not None
    await app.memory.add(CONSOLE_ID, [NewMemory("grows tomatoes on the balcony")])

    code = code_in((await ask(tg, "/link", ANN)).text)
    second = await run_console(settings, embedder, clock, [f"/link {code.lower()}", "/memory", "/reminders"])
    assert "Linked" in second and "memories moved: 1, reminders moved: 1" in second, second
    assert "has a cat called Tom" in second and "grows tomatoes on the balcony" in second
    assert "buy bread" in second.split("Linked", 1)[1]
    assert await app.identities.channels_of(ANN) == {"telegram": str(ANN), "console": str(CONSOLE_ID)}
    assert await app.users.get(CONSOLE_ID) is None

    # Telegram sees what the console kept; the console chat stays its own conversation.
    listing = await ask(tg, "/reminders", ANN)
    assert "buy bread" in listing.text
    memory = await ask(tg, "/memory", ANN)
    assert "grows tomatoes" in memory.text
    third = await run_console(settings, embedder, clock, [f"/link {code}"])
    assert "unknown, used or expired" in third
