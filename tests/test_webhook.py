"""Webhook mode of `python -m bot run`: Telegram (the fake Bot API) POSTs
updates to the bot's own HTTP server instead of being long-polled. End to
end with the real bot; the receiver alone (bot/channels/api/webhook.py,
reused by the gateway) against a real FastAPI app."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bot.app import Arium, check_run_settings
from bot.channels.api.webhook import SECRET_HEADER, UpdateNotAccepted, add_webhook_route
from bot.errors import ConfigError
from bot.settings import Settings
from bot.storage.updates import UpdateClaims
from tests.conftest import BotFactory, handled_so_far, stop_bot
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram

SECRET = "s3cret_Token-for-tests"
PATH = "/telegram/webhook-path"
ANN = 1001


def free_port() -> int:
    """A port nobody listens on, so WEBHOOK_URL can name it before the bot starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_env(**more: Any) -> dict[str, Any]:
    port = free_port()
    return {"webhook_url": f"http://127.0.0.1:{port}{PATH}", "webhook_secret": SECRET, "api_port": port, **more}


def text_update(update_id: int, chat_id: int, text: str) -> dict[str, Any]:
    """A private text message as Telegram sends it."""
    user = {"id": chat_id, "is_bot": False, "first_name": "Eve", "language_code": "en"}
    message = {
        "message_id": 1, "date": int(time.time()), "chat": {"id": chat_id, "type": "private", "first_name": "Eve"},
        "from": user, "text": text,
    }
    return {"update_id": update_id, "message": message}


async def post(url: str, body: Any = None, *, secret: str | None = SECRET, content: bytes | None = None) -> httpx.Response:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with httpx.AsyncClient(timeout=30) as client:
        if content is not None:
            return await client.post(url, content=content, headers=headers | {"Content-Type": "application/json"})
        return await client.post(url, json=body, headers=headers)


def polled(tg: FakeTelegram) -> bool:
    return bool(tg.calls_of("getUpdates"))


# --- end to end -------------------------------------------------------------------------------


async def test_a_private_message_is_answered_through_the_webhook(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    env = webhook_env()
    app = await start_bot(**env)
    [set_webhook] = tg.calls_of("setWebhook")
    assert set_webhook.params["url"] == env["webhook_url"]
    assert set_webhook.params["secret_token"] == SECRET
    assert set_webhook.params["allowed_updates"] == ["message", "edited_message", "callback_query"]
    assert set_webhook.params["drop_pending_updates"] is False
    assert tg.webhook is not None and tg.webhook.url == env["webhook_url"]

    tg.user_text("hello over the webhook")
    [answer] = await tg.wait_messages(ANN, 1)
    assert answer.text == "echo: hello over the webhook"
    assert [d.status for d in tg.webhook_deliveries] == [200]
    assert not polled(tg), "webhook mode must never call getUpdates"
    # Without API_ENABLED the server has the webhook and /healthz, nothing of the API.
    assert app.api is None and app.webhook_server is not None
    root = f"http://127.0.0.1:{env['api_port']}"
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"{root}/healthz")).status_code == 200
        assert (await client.get(f"{root}/v1/models")).status_code == 404


async def test_a_wrong_or_missing_secret_gets_401_and_reaches_nobody(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    env = webhook_env(api_enabled=True)
    app = await start_bot(**env)
    url, eve = env["webhook_url"], 3001
    assert (await post(url, text_update(900, eve, "let me in"), secret="wrong-secret")).status_code == 401
    assert (await post(url, text_update(901, eve, "let me in"), secret=None)).status_code == 401
    assert (await post(url, text_update(902, eve, "let me in"), secret=SECRET + "x")).status_code == 401
    await handled_so_far(tg, ANN)  # the bot handled what it was given since
    assert model.chat_requests() == [] and tg.messages(eve) == []

    # The very same body with the right secret is taken: the 401s were the secret's.
    assert (await post(url, text_update(903, eve, "let me in"), secret=SECRET)).status_code == 200
    [answer] = await tg.wait_messages(eve, 1)
    assert answer.text == "echo: let me in"
    # The API is served beside the webhook, with its own authentication.
    assert app.api is not None
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(f"http://127.0.0.1:{app.api.port}/v1/models")).status_code == 401


async def test_telegram_retries_a_refused_delivery_until_the_secret_matches(
    start_bot: BotFactory, tg: FakeTelegram
) -> None:
    await start_bot(**webhook_env())
    assert tg.webhook is not None
    tg.webhook.secret_token = "not-the-bots-secret"
    tg.user_text("first")
    tg.user_text("second")
    await tg.wait_for(lambda: len(tg.webhook_deliveries) >= 2)
    assert {d.status for d in tg.webhook_deliveries} == {401}
    assert tg.messages(ANN) == [], "nothing refused may be answered"
    tg.webhook.secret_token = SECRET
    answers = await tg.wait_messages(ANN, 2)
    assert [m.text for m in answers] == ["echo: first", "echo: second"]


async def test_malformed_bodies_get_400_and_huge_ones_413(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    env = webhook_env()
    await start_bot(**env)
    url = env["webhook_url"]
    for content in (b"not json", b"[1, 2]", b'"text"', b'{"message": {}}', b'{"update_id": "7"}', b'{"update_id": true}'):
        response = await post(url, content=content)
        assert response.status_code == 400, content
    huge = b'{"update_id": 5, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert (await post(url, content=huge)).status_code == 413
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.get(url)).status_code == 405  # POST only
    # An update PTB cannot read is dropped with 200: a retry would bring the same bytes.
    for broken in ({"update_id": 70, "message": "garbage"}, {"update_id": 71, "message": {"text": "no date"}}):
        assert (await post(url, broken)).status_code == 200
    await handled_so_far(tg, ANN)  # and the updates after them still flow
    assert model.chat_requests() == []


async def test_two_chats_in_parallel_each_in_order(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    slow_chat, ordered_chat = 2001, 2003

    def responder(request):  # type: ignore[no-untyped-def]
        text = request.last_user_text
        return Reply(text=f"re: {text}", delay=3.0 if text.startswith("slow") else 0.1)

    model.responder = responder
    await start_bot(**webhook_env())
    tg.user_text("slow question", chat_id=slow_chat)
    for i in range(3):
        tg.user_text(f"ordered {i}", chat_id=ordered_chat)
    answers = await tg.wait_messages(ordered_chat, 3)
    assert not tg.messages(slow_chat), "a slow chat must not hold up another chat"
    assert [m.text for m in answers] == ["re: ordered 0", "re: ordered 1", "re: ordered 2"]
    ordered = [r for r in model.chat_requests() if r.last_user_text.startswith("ordered")]
    # Each turn of one chat starts after the previous one was answered, and sees it in history.
    assert [len(r.messages) for r in ordered] == [2, 4, 6]
    [slow] = await tg.wait_messages(slow_chat, 1)
    assert slow.text == "re: slow question"
    assert model.max_in_flight >= 2, "the two chats' turns ran at the same time"
    assert not polled(tg)


async def test_an_update_delivered_twice_is_answered_once_and_kept_until_handled(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    """Telegram delivers an update again when it did not get our 200 (a
    dropped connection): the second delivery is answered 200 and dropped.
    The 200 of the first came after the update was written down."""
    env = webhook_env()
    app = await start_bot(**env)
    url = env["webhook_url"]
    update = text_update(900_001, 2005, "only once, please")
    first = await post(url, update)
    assert first.status_code == 200
    kept = await UpdateClaims(app.db).highest()
    assert kept == 900_001, "written down before the 200"
    assert (await post(url, update)).status_code == 200
    await handled_so_far(tg, 2005)
    assert [m.text for m in tg.messages(2005)][:1] == ["echo: only once, please"]
    assert sum(r.last_user_text == "only once, please" for r in model.chat_requests()) == 1


async def test_a_restart_in_polling_mode_deletes_the_webhook_first(
    start_bot: BotFactory, tg: FakeTelegram
) -> None:
    app = await start_bot(**webhook_env())
    tg.user_text("before the restart")
    await tg.wait_messages(ANN, 1)
    await stop_bot(app)
    assert not tg.calls_of("deleteWebhook"), "a stopping bot keeps its webhook: Telegram holds the updates"
    assert tg.webhook is not None

    tg.user_text("while the bot is down")
    await tg.wait_for(lambda: any(d.status == 0 for d in tg.webhook_deliveries))  # nobody listens now
    assert tg.pending_updates() == 1, "Telegram keeps an update it could not deliver"

    await start_bot()  # WEBHOOK_URL unset: long polling
    answers = await tg.wait_messages(ANN, 2)
    assert answers[-1].text == "echo: while the bot is down"
    assert tg.webhook is None
    methods = [c.method for c in tg.calls if c.method in ("getWebhookInfo", "deleteWebhook", "getUpdates")]
    assert methods[:2] == ["getWebhookInfo", "deleteWebhook"], methods
    assert tg.calls_of("deleteWebhook")[0].params.get("drop_pending_updates") in (None, False)
    assert all(c.status != 409 for c in tg.calls_of("getUpdates")), "getUpdates never met the webhook"


async def test_a_polling_bot_with_no_webhook_set_deletes_nothing(start_bot: BotFactory, tg: FakeTelegram) -> None:
    await start_bot()
    tg.user_text("hi")
    await tg.wait_messages(ANN, 1)
    [info] = tg.calls_of("getWebhookInfo")
    assert info.status == 200
    assert not tg.calls_of("setWebhook")


# --- settings ------------------------------------------------------------------------------------


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {"telegram_bot_token": "1:x", "mistral_api_key": "k", "bot_models": "mistral:m"}
    return Settings(_env_file=None, **(base | values))  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"webhook_url": "https://bot.example.com/hook"}, "WEBHOOK_URL is set but WEBHOOK_SECRET is not"),
        ({"webhook_secret": "abc"}, "WEBHOOK_SECRET is set but WEBHOOK_URL is not"),
        ({"webhook_url": "https://bot.example.com/hook", "webhook_secret": "has space"}, "WEBHOOK_SECRET must be"),
        ({"webhook_url": "https://bot.example.com/hook", "webhook_secret": "a" * 257}, "WEBHOOK_SECRET must be"),
        ({"webhook_url": "bot.example.com/hook", "webhook_secret": "abc"}, "WEBHOOK_URL must be a full URL"),
    ],
)
def test_webhook_settings_must_come_in_a_valid_pair(values: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_run_settings(settings(**values))
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message
    assert "has space" not in message, "the secret never appears in an error"


def test_webhook_settings_accepted_and_empty_means_polling() -> None:
    good = settings(webhook_url="https://bot.example.com/tg/hook", webhook_secret="A-z_09" * 40)
    check_run_settings(good)
    assert good.webhook_mode and good.webhook_path == "/tg/hook"
    empty = settings(webhook_url="", webhook_secret="")  # WEBHOOK_URL= in .env
    check_run_settings(empty)
    assert not empty.webhook_mode


async def test_a_webhook_path_the_api_serves_is_refused(tmp_path: Any, tg: FakeTelegram, model: FakeModelServer) -> None:
    from tests.conftest import fake_settings

    env = webhook_env(api_enabled=True)
    env["webhook_url"] = f"http://127.0.0.1:{env['api_port']}/healthz"
    with pytest.raises(ConfigError, match="already served"):
        Arium(fake_settings(tmp_path, tg, model, **env))


# --- the receiver alone (what the gateway reuses) ---------------------------------------------


class Taker:
    """An accept callback that records updates, or refuses them for now."""

    def __init__(self) -> None:
        self.taken: list[dict[str, Any]] = []
        self.refusing = False

    async def __call__(self, update: dict[str, Any]) -> None:
        if self.refusing:
            raise UpdateNotAccepted("the broker is down")
        await asyncio.sleep(0)
        self.taken.append(update)


async def receiver_call(app: FastAPI, body: bytes, secret: str | bytes | None = SECRET) -> httpx.Response:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hook") as client:
        return await client.post("/in", content=body, headers=headers)


async def test_the_receiver_answers_200_only_after_accept_took_the_update() -> None:
    app, taker = FastAPI(), Taker()
    add_webhook_route(app, "/in", secret=SECRET, accept=taker, max_body_bytes=1000)
    ok = await receiver_call(app, b'{"update_id": 7, "message": {"text": "hi"}}')
    assert ok.status_code == 200 and taker.taken == [{"update_id": 7, "message": {"text": "hi"}}]
    taker.refusing = True
    assert (await receiver_call(app, b'{"update_id": 8}')).status_code == 503  # Telegram redelivers it
    taker.refusing = False
    assert (await receiver_call(app, b'{"update_id": 9}', secret="\u00e9t\u00e9".encode())).status_code == 401  # non-ASCII: no crash
    assert (await receiver_call(app, b'{"update_id": 10, "pad": "' + b"x" * 1000 + b'"}')).status_code == 413
    assert (await receiver_call(app, b"[" * 2000)).status_code == 413
    assert [u["update_id"] for u in taker.taken] == [7]


async def test_the_receiver_refuses_what_is_not_an_update_with_400() -> None:
    app, taker = FastAPI(), Taker()
    add_webhook_route(app, "/in", secret=SECRET, accept=taker)
    for body in (b"", b"{", b"[" * 200_000, b"\xff\xfe", b"null", b'{"update_id": 1.5}', b'{"update_id": null}'):
        assert (await receiver_call(app, body)).status_code == 400, body[:20]
    assert taker.taken == []


def test_the_receiver_needs_a_secret() -> None:
    with pytest.raises(ConfigError):
        add_webhook_route(FastAPI(), "/in", secret="", accept=Taker())
