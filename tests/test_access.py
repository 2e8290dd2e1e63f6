"""Access control: the storage it stands on (users, invites), argument
parsing, and end to end against the fakes: admin-only commands, the
allow-list with /allow and one-time invites, bans that apply mid-
conversation, the audit view, and bad arguments."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import pytest

from bot.gates.access import UserRef, parse_user_ref
from bot.channels.telegram.access_handlers import parse_budget, render_audit
from bot.admin.audit import AuditLine
from bot.i18n import t
from bot.storage.db import Database
from bot.storage.invites import InviteRepository, Redemption
from bot.storage.models import AuditEntry, User
from bot.runtime.clock import utcnow
from bot.storage.repositories import UserProfile, UserRepository
from tests.conftest import BotFactory
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram

ADMIN = 500
USER = 1001
ADMIN_COMMANDS = ("allow", "disallow", "invite", "ban", "unban", "budget", "audit")


# --- storage --------------------------------------------------------------------


async def test_user_repository_finds_sets_and_reactivates(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    users = UserRepository(db, "UTC")
    try:
        await users.touch(UserProfile(7, "Ann", username="Ann_K"), "user")
        assert (await users.find_by_username("@ann_k")).id == 7  # type: ignore[union-attr]
        assert await users.find_by_username("nobody") is None
        assert await users.find_by_username("@") is None

        assert (await users.set_role(7, "banned")).role == "banned"  # type: ignore[union-attr]
        assert (await users.set_allowed(7, True)).allowed  # type: ignore[union-attr]
        assert (await users.set_token_budget(7, 5000)).token_budget == 5000  # type: ignore[union-attr]
        assert (await users.set_token_budget(7, None)).token_budget is None  # type: ignore[union-attr]
        assert await users.set_role(8, "banned") is None  # unknown, not created
        assert await users.set_token_budget(8, 10) is None

        # An id named before the user ever wrote: a placeholder, inactive until they write.
        ahead = await users.set_allowed(9, True, create=True)
        assert ahead is not None and ahead.allowed and not ahead.active and ahead.first_name == ""
        visited = await users.visit(UserProfile(9, "Bo", username="bo_b"), lambda stored: "user")
        assert visited.active and visited.allowed and visited.first_name == "Bo"

        async with db.session() as s:
            (await s.get(User, 7)).active = False  # type: ignore[union-attr]  # a broadcast saw a 403
        back = await users.visit(UserProfile(7, "Ann", username="Ann_K"), lambda stored: "banned")
        assert back.active, "writing to the bot again reactivates the user"
        assert set(await users.get_many([7, 9, 12345])) == {7, 9}
        assert await users.get_many([]) == {}
    finally:
        await db.dispose()


async def test_a_username_that_changed_hands_resolves_to_the_latest_holder(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    users = UserRepository(db, "UTC")
    try:
        await users.touch(UserProfile(1, "Old", username="shared"), "user")
        async with db.session() as s:
            (await s.get(User, 1)).last_seen_at = utcnow() - timedelta(days=30)  # type: ignore[union-attr]
        await users.touch(UserProfile(2, "New", username="Shared"), "user")
        assert (await users.find_by_username("SHARED")).id == 2  # type: ignore[union-attr]
    finally:
        await db.dispose()


async def test_invite_is_single_use_even_when_redeemed_at_once(database_url: str) -> None:
    db = Database(database_url)
    await db.migrate()
    users, invites = UserRepository(db, "UTC"), InviteRepository(db)
    now = datetime(2026, 3, 8, 12, tzinfo=timezone.utc)
    try:
        for uid in (10, 11, 12, 13):
            await users.touch(UserProfile(uid, f"u{uid}"), "user")
        await invites.create("code-A", ADMIN, now=now, expires_at=now + timedelta(hours=1))
        await invites.create("code-old", ADMIN, now=now, expires_at=now - timedelta(seconds=1))
        await invites.create("forever", ADMIN, now=now, expires_at=None)
        results = await asyncio.gather(*(invites.redeem("code-A", uid, now=now) for uid in (10, 11, 12)))
        assert sorted(results) == sorted([Redemption.ADMITTED, Redemption.USED, Redemption.USED])
        winner = (await invites.get("code-A")).used_by  # type: ignore[union-attr]
        assert (await users.get(winner)).allowed  # type: ignore[union-attr]
        assert [uid for uid in (10, 11, 12) if (await users.get(uid)).allowed] == [winner]  # type: ignore[union-attr]
        assert await invites.redeem("code-old", 13, now=now) is Redemption.EXPIRED
        assert await invites.redeem("nope", 13, now=now) is Redemption.UNKNOWN
        assert not (await users.get(13)).allowed  # type: ignore[union-attr]
        assert await invites.redeem("forever", 13, now=now + timedelta(days=999)) is Redemption.ADMITTED
    finally:
        await db.dispose()


# --- parsing and rendering ------------------------------------------------------------


def test_user_references() -> None:
    assert parse_user_ref("12345") == UserRef(user_id=12345)
    assert parse_user_ref("@Ann_K") == UserRef(username="Ann_K")
    for bad in ("ann", "", "@", "0", "-5", "12x", "١٢٣", "１２３", "99999999999999999999", "@ann-k", "@Анна", "a b", "😀"):
        assert parse_user_ref(bad) is None, bad


def test_budget_amounts() -> None:
    assert parse_budget("50000") == 50000
    assert parse_budget("50k") == 50_000 and parse_budget("2M") == 2_000_000
    assert parse_budget("default") is None
    assert parse_budget("0") == 0 and parse_budget("Unlimited") == 0
    for bad in ("", "-1", "lots", "1.5k", "５０", "99999999999", "3000m", "1e6"):
        with pytest.raises(ValueError):
            parse_budget(bad)


def test_audit_view_escapes_and_fits_one_message() -> None:
    at = datetime(2026, 3, 8, 12, tzinfo=timezone.utc)
    evil = AuditLine(at, ADMIN, None, "ban", "<b>@x</b> & co", "usage <shown>")
    text = render_audit([evil], "Asia/Tokyo", "en")
    assert "&lt;b&gt;@x&lt;/b&gt; &amp; co" in text and "usage &lt;shown&gt;" in text
    assert "2026-03-08 21:00" in text and "<b>x</b>" not in text
    many = render_audit([AuditLine(at, ADMIN, None, "broadcast", "y" * 500, "z" * 300)] * 50, "UTC", "en")
    assert len(many) <= 4096


# --- end to end ---------------------------------------------------------------------


def reply_count(tg: FakeTelegram, chat: int) -> int:
    return len(tg.messages(chat))


async def ask(tg: FakeTelegram, chat: int, text: str, **options: object) -> str:
    """Sends ``text`` from ``chat`` and returns the bot's next message there."""
    before = reply_count(tg, chat)
    tg.user_text(text, chat_id=chat, **options)  # type: ignore[arg-type]
    return (await tg.wait_messages(chat, before + 1))[before].text


async def test_non_admins_get_the_unknown_command_answer_and_change_nothing(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    for name in ADMIN_COMMANDS:
        answer = await ask(tg, USER, f"/{name} {USER + 1} 100")
        assert answer == t("unknown_command", "en", command=f"/{name}"), name
    assert await ask(tg, USER, "/frobnicate") == t("unknown_command", "en", command="/frobnicate")
    assert not model.chat_requests()
    await app.audit_writer.flush()
    async with app.db.reading() as s:
        assert (await s.get(User, USER + 1)) is None  # nothing was created, banned or allowed
        assert not (await s.execute(AuditEntry.__table__.select())).all()
    assert not [m for m in tg.messages(USER) if "https://t.me/" in m.text]


async def test_allow_list_stranger_hears_once_and_never_reaches_the_model(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_access_mode="allowlist", bot_admin_ids=str(ADMIN))
    for text in ("hi", "hello?", "/help", "/start", "anyone there?"):
        tg.user_text(text, chat_id=USER)
    await tg.wait_for(lambda: app.gates.refusals["allowlist"] == 5)
    [notice] = tg.messages(USER)
    assert "invited people only" in notice.text and str(USER) in notice.text
    assert not model.chat_requests()

    assert await ask(tg, ADMIN, "hello") == "echo: hello"  # admins always pass
    answer = await ask(tg, ADMIN, f"/allow {USER}")
    assert answer == f"Ann (id {USER}) can use the bot now."
    told = await tg.wait_messages(USER, 2)
    assert "you can use this bot now" in told[1].text
    assert await ask(tg, USER, "finally") == "echo: finally"
    assert await ask(tg, ADMIN, f"/allow {USER}") == f"Ann (id {USER}) already had access."
    assert await ask(tg, ADMIN, f"/allow {ADMIN}") == f"Ann (id {ADMIN}) is an admin (BOT_ADMIN_IDS) and always has access."

    assert await ask(tg, ADMIN, f"/disallow {USER}") == f"Ann (id {USER}) is no longer on the allow list."
    assert "invited people only" in await ask(tg, USER, "still me")
    assert len(model.chat_requests()) == 2


async def test_allow_by_username_and_ahead_by_id(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(bot_access_mode="allowlist", bot_admin_ids=str(ADMIN))
    carol = 1002
    assert "invited people only" in await ask(tg, carol, "hi", first_name="Carol", username="Carol_K")
    assert await ask(tg, ADMIN, "/allow @carol_k") == f"Carol (@Carol_K, id {carol}) can use the bot now."
    assert "you can use this bot now" in (await tg.wait_messages(carol, 2))[1].text
    assert "I haven't seen @nobody_here yet" in await ask(tg, ADMIN, "/allow @nobody_here")
    assert await ask(tg, carol, "thanks", username="Carol_K") == "echo: thanks"

    # An id the bot has never seen is admitted before their first message.
    assert await ask(tg, ADMIN, "/allow 777") == "user 777 can use the bot now."
    assert await ask(tg, 777, "first words") == "echo: first words"
    assert await ask(tg, ADMIN, "/disallow 778") == "I have no user with id 778: they have never written to the bot."


async def test_open_mode_notes_that_allowing_changes_nothing_yet(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    assert await ask(tg, USER, "hi") == "echo: hi"
    answer = await ask(tg, ADMIN, f"/allow {USER}")
    assert "can use the bot now" in answer and "access mode is open" in answer
    # The command is audited when its handler is done: no "you can use this
    # bot now" was sent by then, as in open mode they always could.
    await tg.wait_for(lambda: app.audit_writer.written + len(app.audit_writer.pending) == 1)
    assert [m.text for m in tg.messages(USER)] == ["echo: hi"]


async def test_invite_admits_once_and_refuses_used_unknown_and_expired_codes(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_access_mode="allowlist", bot_admin_ids=str(ADMIN), bot_invite_ttl_hours=48)
    created = await ask(tg, ADMIN, "/invite")
    match = re.search(r"https://t\.me/arium_test_bot\?start=([A-Za-z0-9_-]+)", created)
    assert match and "Valid until" in created
    code = match.group(1)
    assert len(code) == 16

    tg.user_text(f"/start {code}", chat_id=1003, first_name="Dan")
    welcome, greeting = await tg.wait_messages(1003, 2)
    assert "invite worked" in welcome.text and greeting.text.startswith("Hi, Dan!")
    assert await ask(tg, 1003, "hello") == "echo: hello"
    assert (await app.invites.get(code)).used_by == 1003  # type: ignore[union-attr]

    assert "already been used" in await ask(tg, 1004, f"/start {code}")
    assert "don't recognise" in await ask(tg, 1005, "/start no_such_code")
    assert "don't recognise" in await ask(tg, 1006, "/start ../../etc/passwd")
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    await app.invites.create("expired-code", ADMIN, now=past - timedelta(days=1), expires_at=past)
    assert "has expired" in await ask(tg, 1007, "/start expired-code")
    assert len(model.chat_requests()) == 1

    forever = await ask(tg, ADMIN, "/invite 0")
    assert "does not expire" in forever
    short = await ask(tg, ADMIN, "/invite 2")
    invite = await app.invites.get(re.search(r"start=([A-Za-z0-9_-]+)", short).group(1))  # type: ignore[union-attr]
    assert invite is not None and invite.expires_at is not None
    assert timedelta(hours=1.9) < invite.expires_at - invite.created_at <= timedelta(hours=2)
    # An admitted user's /start with someone else's code does not spend it.
    assert (await ask(tg, 1003, f"/start {invite.code}", first_name="Dan")).startswith("Hi, Dan!")
    assert (await app.invites.get(invite.code)).used_by is None  # type: ignore[union-attr]


async def test_ban_applies_mid_conversation_and_unban_restores(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    assert await ask(tg, USER, "hi", username="talker") == "echo: hi"
    # The admin bans while an answer to the user is still streaming.
    model.script(Reply(chunks=["a slow ", "answer ", "in parts"], chunk_delay=0.3))
    tg.user_text("tell me a story", chat_id=USER, username="talker")
    await tg.wait_for(lambda: bool(tg.drafts(USER)))
    assert await ask(tg, ADMIN, "/ban @talker") == f"Ann (@talker, id {USER}) is banned. Their next message will not reach the model."
    await tg.wait_for(lambda: any(m.text == "a slow answer in parts" for m in tg.messages(USER)))

    tg.user_text("why no answer?", chat_id=USER, username="talker")
    tg.user_text("hello??", chat_id=USER, username="talker")
    tg.user_text("/help", chat_id=USER, username="talker")
    await tg.wait_for(lambda: app.gates.refusals["banned"] == 3)
    texts = [m.text for m in tg.messages(USER)]
    assert texts[2:] == [t("banned", "en")], "one notice, then silence"
    assert len(model.chat_requests()) == 2

    assert await ask(tg, ADMIN, f"/ban {USER}") == f"Ann (@talker, id {USER}) was already banned."
    assert "admins can't be banned" in await ask(tg, ADMIN, f"/ban {ADMIN}")
    assert await ask(tg, ADMIN, f"/unban {USER}") == f"Ann (@talker, id {USER}) is no longer banned."
    assert await ask(tg, USER, "am I back?", username="talker") == "echo: am I back?"
    assert await ask(tg, ADMIN, f"/unban {USER}") == f"Ann (@talker, id {USER}) was not banned."
    assert "I haven't seen @ghost_user" in await ask(tg, ADMIN, "/ban @ghost_user")

    # A ban by id of someone who never wrote holds from their first message.
    assert await ask(tg, ADMIN, "/ban 4444") == "user 4444 is banned. Their next message will not reach the model."
    assert await ask(tg, 4444, "hi") == t("banned", "en")

    audit = await ask(tg, ADMIN, "/audit")
    assert "/ban @talker" in audit and f"banned {USER}" in audit
    assert f"refused: admin {ADMIN}" in audit and f"unbanned {USER}" in audit
    assert audit.index("/ban 4444") < audit.index("/ban @talker"), "newest first"
    assert "/audit" not in audit.split("\n", 1)[1]


async def test_audit_is_limited_and_readable(start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer) -> None:
    app = await start_bot(bot_admin_ids=str(ADMIN))
    assert await ask(tg, ADMIN, "/audit") == "The audit log is empty."
    await ask(tg, ADMIN, "/ban <b>boo</b>")
    await ask(tg, ADMIN, "/invite 5")
    await ask(tg, ADMIN, "/budget 99 10")
    await app.audit_writer.flush()
    tg.user_text("/audit 2", chat_id=ADMIN, username="boss")
    last = (await tg.wait_messages(ADMIN, 5))[-1]
    assert last.html is not None and "&lt;b&gt;boo&lt;/b&gt;" not in last.html  # only the 2 newest
    lines = last.text.split("\n")
    assert len(lines) == 3 and "newest first" in lines[0]
    assert "/budget 99 10 → unknown user 99" in lines[1] and "/invite 5 → invite " in lines[2]
    assert "@boss" in lines[1]
    assert f"expires {(datetime.now(timezone.utc) + timedelta(hours=5)).date()}" in lines[2]
    full = (await ask(tg, ADMIN, "/audit 50"))
    assert "/ban <b>boo</b> → usage shown" in full  # shown as text, not as markup


BAD_COMMANDS = [
    "/allow", "/allow 1 2", "/allow -5", "/allow 12x", "/allow ١٢٣", "/allow 😀", "/allow remove 5",
    "/disallow", "/disallow @",
    "/ban", "/ban 99999999999999999999999", "/ban Анна", "/ban @a-b", "/ban " + "9" * 400,
    "/unban", "/unban 0",
    "/budget", "/budget 1001 lots", "/budget 1001 99999999999", "/budget 1001 ５０",
    "/budget 1001 -5", "/budget x 5", "/budget 1001 5 6",
    "/invite -1", "/invite 1 2", "/invite 99999", "/invite soon",
    "/audit 0", "/audit 51", "/audit x", "/audit 1 2",
]


async def test_bad_arguments_get_the_usage_line(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    await start_bot(bot_admin_ids=str(ADMIN))
    for command in BAD_COMMANDS:
        answer = await ask(tg, ADMIN, command)
        assert answer.startswith(f"Usage: {command.split()[0]} "), (command, answer)
    # Well-formed, about nobody the bot knows: a clear answer, not the usage line.
    assert await ask(tg, ADMIN, "/budget 1001") == "I have no user with id 1001: they have never written to the bot."
    assert "I haven't seen @ghost" in await ask(tg, ADMIN, "/budget @ghost 5k")
    assert not model.chat_requests()


def test_access_and_limit_settings_are_validated() -> None:
    from bot.errors import ConfigError
    from bot.settings import load_settings

    assert load_settings(_env_file=None, bot_access_mode="Allow-List").bot_access_mode == "allowlist"
    defaults = load_settings(_env_file=None)
    assert (defaults.bot_access_mode, defaults.bot_daily_tokens, defaults.bot_rate_burst) == ("open", 0, 10)
    for name, value in (
        ("bot_access_mode", "closed"),
        ("bot_rate_burst", 0),
        ("bot_rate_per_minute", -1),
        ("bot_daily_tokens", -5),
        ("bot_invite_ttl_hours", -1),
    ):
        with pytest.raises(ConfigError, match=name.upper()):
            load_settings(_env_file=None, **{name: value})
