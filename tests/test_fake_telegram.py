"""The fake Telegram server, driven through the real python-telegram-bot Bot.

If these pass, PTB accepts what the fake says and the fake understands what PTB
sends, so bot tests built on the fake exercise the real wire format.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import io
import ssl
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import Audio, Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update, VideoNote, Voice
from telegram.error import BadRequest, Conflict, EndPointNotFound, InvalidToken, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from tests.fakes.telegram_server import FakeTelegram, parse_html

CHAT = FakeTelegram.DEFAULT_CHAT

# Loading the CA bundle costs ~50 ms per httpx client and a Bot has two; one
# shared context keeps the suite fast without changing what is verified.
_TLS = ssl.create_default_context()


def make_bot(tg: FakeTelegram, token: str | None = None) -> Bot:
    def request() -> HTTPXRequest:
        return HTTPXRequest(httpx_kwargs={"verify": _TLS})

    return Bot(
        token or tg.token, base_url=tg.base_url, base_file_url=tg.base_file_url,
        request=request(), get_updates_request=request(),
    )


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(tg) as real_bot:
        yield real_bot


# ---------------------------------------------------------------- identity & envelope


async def test_get_me(bot: Bot, tg: FakeTelegram) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (4242, "arium_test_bot", True)
    assert me.can_join_groups and not me.can_read_all_group_messages
    assert len(tg.calls_of("getme")) == 2  # Bot.initialize + ours


async def test_unknown_token_is_rejected(tg: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with make_bot(tg, "999:WRONG"):
            pass


async def test_wire_envelope(tg: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as http:
        # JSON bodies and any method-name casing are accepted, like the real API
        async with http.post(f"{tg.base_url}{tg.token}/SENDMESSAGE", json={"chat_id": CHAT, "text": 5}) as r:
            body = await r.json()
            assert r.status == 200 and body["ok"] is True and body["result"]["text"] == "5"
        async with http.post(f"{tg.base_url}{tg.token}/noSuchMethod") as r:
            assert (r.status, await r.json()) == (
                404, {"ok": False, "error_code": 404, "description": "Not Found"}
            )
        async with http.post(f"{tg.base_url}1:bad/getMe") as r:
            assert (r.status, (await r.json())["description"]) == (401, "Unauthorized")
    assert tg.calls_of("sendMessage")[0].method == "sendMessage"


async def test_unimplemented_method_is_a_visible_gap(bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendHologram", api_kwargs={"chat_id": CHAT})


# ---------------------------------------------------------------- sendMessage


async def test_send_plain_message(bot: Bot, tg: FakeTelegram) -> None:
    first = await bot.send_message(CHAT, "hello")
    second = await bot.send_message(CHAT, "  again\n")
    assert first.text == "hello" and first.from_user.id == 4242
    assert first.chat.type == "private" and first.chat.id == CHAT
    assert second.message_id == first.message_id + 1
    assert [m.text for m in tg.messages(CHAT)] == ["hello", "again"]  # Telegram trims


async def test_numeric_looking_text_stays_a_string(bot: Bot, tg: FakeTelegram) -> None:
    message = await bot.send_message(CHAT, "123")
    await bot.send_message(CHAT, "true")
    params = tg.calls_of("sendMessage")[0].params
    assert params["text"] == "123" and params["chat_id"] == CHAT
    assert message.text == "123"
    assert [m.text for m in tg.messages(CHAT)] == ["123", "true"]


async def test_send_html(bot: Bot, tg: FakeTelegram) -> None:
    html = '😀 <b>bold</b> &amp; <a href="https://x.org">link</a> <pre><code class="language-py">x=1</code></pre>'
    message = await bot.send_message(CHAT, html, parse_mode="HTML")
    assert message.text == "😀 bold & link x=1"
    kinds = [(e.type, e.offset, e.length) for e in message.entities]
    assert kinds == [
        (MessageEntity.BOLD, 3, 4), (MessageEntity.TEXT_LINK, 10, 4), (MessageEntity.PRE, 15, 3)
    ]
    assert message.entities[2].language == "py"
    stored = tg.messages(CHAT)[0]
    assert (stored.html, stored.parse_mode, stored.text) == (html, "HTML", message.text)


@pytest.mark.parametrize(
    ("markup", "detail"),
    [
        ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
        ("<b>x", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("a < b", 'Unsupported start tag "" at byte offset 2'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
async def test_invalid_html_is_rejected(bot: Bot, tg: FakeTelegram, markup: str, detail: str) -> None:
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(CHAT, markup, parse_mode="HTML")
    assert tg.calls[-1].error == f"Bad Request: can't parse entities: {detail}"
    assert tg.messages(CHAT) == []


def test_html_entities_follow_telegram() -> None:
    # only four named references exist; unknown ones stay literal, not an error
    assert parse_html("&lt;&gt;&amp;&quot;&#65;&#x42;&nbsp;")[0] == '<>&"AB&nbsp;'
    assert parse_html("<blockquote expandable>q</blockquote>")[1][0]["type"] == "expandable_blockquote"


async def test_length_and_emptiness_limits(bot: Bot) -> None:
    await bot.send_message(CHAT, "x" * 4096)
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(CHAT, "x" * 4097)
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(CHAT, "😀" * 2049)  # 2049 chars, 4098 UTF-16 units
    with pytest.raises(BadRequest, match="(?i)message text is empty"):
        await bot.send_message(CHAT, "<b> </b>", parse_mode="HTML")


async def test_reply_to_unknown_message(bot: Bot) -> None:
    with pytest.raises(BadRequest, match="(?i)message to be replied not found"):
        await bot.send_message(CHAT, "hi", reply_to_message_id=999)


# ---------------------------------------------------------------- editing


async def test_edit_message_text(bot: Bot, tg: FakeTelegram) -> None:
    sent = await bot.send_message(CHAT, "one")
    edited = await bot.edit_message_text("<i>two</i>", CHAT, sent.message_id, parse_mode="HTML")
    assert edited.text == "two" and edited.edit_date is not None
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text("two", CHAT, sent.message_id, entities=[MessageEntity("italic", 0, 3)])
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await bot.edit_message_text("x", CHAT, 999)
    stored = tg.messages(CHAT)[0]
    assert (stored.text, stored.edits, stored.html) == ("two", ["two"], "<i>two</i>")


async def test_edit_without_markup_removes_keyboard(bot: Bot, tg: FakeTelegram) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("ok", callback_data="ok")]])
    sent = await bot.send_message(CHAT, "pick", reply_markup=keyboard)
    assert sent.reply_markup == keyboard
    await bot.edit_message_text("pick", CHAT, sent.message_id)  # same text, keyboard dropped
    assert tg.messages(CHAT)[0].reply_markup is None


# ---------------------------------------------------------------- drafts & actions


async def test_message_draft_private_only(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.send_message_draft(CHAT, draft_id=7, text="partial <b>an", parse_mode=None) is True
    assert await bot.send_message_draft(CHAT, draft_id=7, text="") is True  # placeholder
    tg.user_text("hi all", chat_id=-100555, user_id=77)
    with pytest.raises(BadRequest, match="(?i)textdraft_peer_invalid"):
        await bot.send_message_draft(-100555, draft_id=7, text="nope")
    assert [c.params.get("text") for c in tg.drafts(CHAT)] == ["partial <b>an", ""]
    assert tg.drafts(-100555) == [] and len(tg.calls_of("sendMessageDraft")) == 3


async def test_chat_action(bot: Bot, tg: FakeTelegram) -> None:
    assert await bot.send_chat_action(CHAT, "typing") is True
    with pytest.raises(BadRequest, match="(?i)wrong parameter action"):
        await bot.send_chat_action(CHAT, "dancing")
    assert tg.calls_of("sendChatAction")[0].params == {"chat_id": CHAT, "action": "typing"}


# ---------------------------------------------------------------- updates


async def test_get_updates_with_offsets(bot: Bot, tg: FakeTelegram) -> None:
    tg.user_text("/start now")
    tg.user_text("hey @arium_test_bot, 😀 /help@arium_test_bot", chat_id=-100777, user_id=55)
    updates = await bot.get_updates(timeout=0)
    assert len(updates) == 2
    private, group = updates[0].message, updates[1].message
    assert private.text == "/start now" and private.chat.type == "private"
    assert private.parse_entities([MessageEntity.BOT_COMMAND]) == {private.entities[0]: "/start"}
    assert group.chat.type == "supergroup" and group.from_user.id == 55
    assert {e.type: group.parse_entity(e) for e in group.entities} == {
        MessageEntity.MENTION: "@arium_test_bot",
        MessageEntity.BOT_COMMAND: "/help@arium_test_bot",
    }
    assert group.entities[1].offset == 24  # the emoji counts as two UTF-16 units
    # not confirmed yet, so they come again; an offset confirms them
    assert len(await bot.get_updates(timeout=0)) == 2
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == (updates[1],)
    assert await bot.get_updates(offset=updates[1].update_id + 1, timeout=0) == ()
    assert tg.pending_updates() == 0


async def test_message_ids_are_shared_per_chat(bot: Bot, tg: FakeTelegram) -> None:
    first = tg.user_text("hi")
    reply = await bot.send_message(CHAT, "hello", reply_to_message_id=first["message"]["message_id"])
    second = tg.user_text("thanks", reply_to_message_id=reply.message_id)
    assert reply.message_id == first["message"]["message_id"] + 1
    assert second["message"]["message_id"] == reply.message_id + 1
    assert reply.reply_to_message.text == "hi"


async def test_long_poll_wakes_when_update_arrives(bot: Bot, tg: FakeTelegram) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await tg.wait_for(lambda: any(c.status == 0 for c in tg.calls_of("getUpdates")))
    assert not poll.done()
    tg.user_text("ping")
    updates = await asyncio.wait_for(poll, 10)  # liveness bound, far below the poll timeout
    assert [u.message.text for u in updates] == ["ping"]


async def test_second_bot_instance_gets_conflict(bot: Bot, tg: FakeTelegram) -> None:
    # PTB allows one getUpdates connection per Bot, so this takes two instances
    first = asyncio.create_task(bot.get_updates(timeout=30))
    await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) == 1)
    async with make_bot(tg) as other:
        second = asyncio.create_task(other.get_updates(timeout=30))
        with pytest.raises(Conflict):
            await first
        tg.user_text("x")
        assert len(await second) == 1


async def test_callback_query(bot: Bot, tg: FakeTelegram) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("yes", callback_data="yes")]])
    sent = await bot.send_message(CHAT, "sure?", reply_markup=keyboard)
    tg.callback_query("yes", message_id=sent.message_id)
    (update,) = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert query.data == "yes" and query.message.message_id == sent.message_id
    assert await bot.answer_callback_query(query.id) is True
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query.id)


# ---------------------------------------------------------------- files & deletion


async def test_send_document_and_delete(bot: Bot, tg: FakeTelegram) -> None:
    doc = await bot.send_document(
        CHAT, io.BytesIO(b"payload"), filename="notes.txt", caption="<b>c</b>", parse_mode="HTML"
    )
    assert doc.document.file_name == "notes.txt" and doc.document.file_size == 7
    assert doc.caption == "c" and doc.caption_entities[0].type == MessageEntity.BOLD
    stored = tg.messages(CHAT)[0]
    assert stored.file is not None and stored.file.data == b"payload"
    assert await bot.delete_message(CHAT, doc.message_id) is True
    assert tg.messages(CHAT) == [] and len(tg.messages(CHAT, include_deleted=True)) == 1
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await bot.delete_message(CHAT, doc.message_id)


async def _downloaded(medium: Voice | Audio | VideoNote) -> bytes:
    file = await medium.get_file()
    return bytes(await file.download_as_bytearray())


async def test_user_voice_audio_and_video_note_can_be_downloaded(bot: Bot, tg: FakeTelegram) -> None:
    tg.user_voice(b"OggS voice", duration=7, caption="@arium_test_bot listen")
    tg.user_audio(b"ID3 song", duration=95, file_name="song.mp3", title="Song", performer="Band", declare_size=False)
    tg.user_video_note(b"\x00\x00\x00\x18ftypmp42", duration=12, length=384)
    voice, audio, note = [u.message for u in await bot.get_updates(timeout=0)]
    assert voice is not None and voice.voice is not None
    assert (voice.voice.mime_type, voice.voice.file_size, voice.caption) == ("audio/ogg", 10, "@arium_test_bot listen")
    assert voice.caption_entities[0].type == MessageEntity.MENTION
    assert audio is not None and audio.audio is not None
    assert (audio.audio.file_name, audio.audio.title, audio.audio.performer, audio.audio.file_size) == (
        "song.mp3", "Song", "Band", None
    )
    assert note is not None and note.video_note is not None and note.video_note.length == 384
    with warnings.catch_warnings():  # PTB announces that durations become timedeltas
        warnings.simplefilter("ignore")
        durations = [voice.voice.duration, audio.audio.duration, note.video_note.duration]
    assert [d.total_seconds() if isinstance(d, dtm.timedelta) else d for d in durations] == [7, 95, 12]
    assert await _downloaded(voice.voice) == b"OggS voice"
    assert await _downloaded(audio.audio) == b"ID3 song"
    assert await _downloaded(note.video_note) == b"\x00\x00\x00\x18ftypmp42"
    assert len(tg.downloads) == 3


# ---------------------------------------------------------------- a real Application


async def test_application_polls_and_replies(tg: FakeTelegram) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_html(f"hi <b>{' '.join(context.args or [])}</b>")

    app: Application = (  # type: ignore[type-arg]
        ApplicationBuilder().token(tg.token).base_url(tg.base_url).base_file_url(tg.base_file_url)
        .request(HTTPXRequest(httpx_kwargs={"verify": _TLS}))
        .get_updates_request(HTTPXRequest(httpx_kwargs={"verify": _TLS}))
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=10)
        tg.user_text("/start Ann")
        (reply,) = await tg.wait_messages(CHAT, 1)
        await app.updater.stop()
        await app.stop()
    # PTB 22 quotes the original only in groups, so no reply_to in a private chat
    assert (reply.text, reply.html, reply.reply_to_message_id) == ("hi Ann", "hi <b>Ann</b>", None)
    assert tg.pending_updates() == 0  # the shutdown getUpdates confirmed it


# ---------------------------------------------------------------- faults


def _retry_seconds(err: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB deprecates the int form of retry_after
        warnings.simplefilter("ignore")
        value = err.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def test_fail_next_429_surfaces_as_retry_after(bot: Bot, tg: FakeTelegram) -> None:
    tg.fail_next("sendmessage", status=429, retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "first")
    assert _retry_seconds(caught.value) == 3
    assert tg.calls[-1].error == "Too Many Requests: retry after 3"
    await bot.send_message(CHAT, "second")  # consumed
    assert tg.too_many_requests == 1 and [m.text for m in tg.messages(CHAT)] == ["second"]


async def test_fail_next_with_predicate_and_times(bot: Bot, tg: FakeTelegram) -> None:
    tg.fail_next("sendMessage", description="Forbidden: bot was blocked by the user", status=403,
                 times=2, when=lambda p: p["chat_id"] == 2002)
    await bot.send_message(CHAT, "unaffected")
    for _ in range(2):
        with pytest.raises(Exception, match="blocked"):
            await bot.send_message(2002, "x")
    await bot.send_message(2002, "through")
    assert [m.text for m in tg.messages(2002)] == ["through"]


async def test_rate_limit(bot: Bot, tg: FakeTelegram) -> None:
    tg.rate_limit = (2, 60.0)
    await bot.send_message(CHAT, "a")
    await bot.send_message(CHAT, "b")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(CHAT, "c")
    assert 1 <= _retry_seconds(caught.value) <= 60
    assert await bot.send_chat_action(CHAT, "typing")  # not a send method
    assert tg.too_many_requests == 1


async def test_wait_for_timeout_dumps_calls(bot: Bot, tg: FakeTelegram) -> None:
    await bot.send_message(CHAT, "visible in dump")
    with pytest.raises(AssertionError, match="sendMessage"):
        await tg.wait_for(lambda: False, timeout=0.05)
