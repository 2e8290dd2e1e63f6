"""Photos for models that can see: the image reaches a vision endpoint in its
API's wire format (OpenAI image_url parts, Mistral image chunks), bounded in
size; text-only endpoints are skipped for such turns; history keeps a note,
not the bytes; bad images get a clear answer."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from bot.media.images import ImageLimits, ImageUnreadable, fit_image
from tests.conftest import BotFactory
from tests.fakes.model_server import Fault, FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support.api import ANN, Api, error_of, key_for
from tests.support.chat import GROUP, PRIVATE

BOTH = "mistral:mistral-small-latest,openai:gpt-4o-mini"


def picture(width: int, height: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30))
    for x in range(0, width, 7):  # some detail, so JPEG sizes are realistic
        image.putpixel((x, (x * 3) % height), (0, 0, 0, 255) if mode == "RGBA" else (0, 0, 0))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def image_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [p for p in content if p.get("type") == "image_url"] if isinstance(content, list) else []


def decoded(part: dict[str, Any]) -> Image.Image:
    url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
    header, data = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def last_user(model: FakeModelServer, index: int = -1) -> dict[str, Any]:
    return [m for m in model.chat_requests()[index].messages if m.get("role") == "user"][-1]


# Bounding the image -----------------------------------------------------------------


LIMITS = ImageLimits(max_side=1000, max_bytes=200 * 1024)


def test_an_image_within_the_limits_is_passed_on_as_it_is() -> None:
    data = picture(640, 480)
    image = fit_image(data, LIMITS)
    assert (image.data, image.mime_type) == (data, "image/jpeg")
    png = picture(300, 200, "PNG")
    assert fit_image(png, LIMITS).mime_type == "image/png"


def test_a_large_image_is_scaled_and_re_encoded_to_fit() -> None:
    image = fit_image(picture(4000, 2500, "PNG"), LIMITS)
    shrunk = Image.open(io.BytesIO(image.data))
    assert image.mime_type == "image/jpeg" and shrunk.format == "JPEG"
    assert max(shrunk.size) == 1000 and len(image.data) <= LIMITS.max_bytes


def test_transparency_is_flattened_and_other_formats_become_jpeg() -> None:
    rgba = fit_image(picture(200, 200, "PNG", mode="RGBA"), ImageLimits(max_side=100, max_bytes=LIMITS.max_bytes))
    assert Image.open(io.BytesIO(rgba.data)).mode == "RGB"
    gif = fit_image(picture(50, 50, "GIF"), LIMITS)
    assert gif.mime_type == "image/jpeg"


def test_a_tight_byte_limit_is_met_by_lower_quality_then_smaller_sides() -> None:
    noisy = Image.effect_noise((1500, 1500), 120).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    image = fit_image(out.getvalue(), ImageLimits(max_side=1500, max_bytes=64 * 1024))
    assert len(image.data) <= 64 * 1024


@pytest.mark.parametrize("data", [b"", b"not an image at all", picture(100, 100)[:200], b"%PDF-1.7\n..."])
def test_what_is_not_an_image_is_refused(data: bytes) -> None:
    with pytest.raises(ImageUnreadable):
        fit_image(data, LIMITS)


# Through the bot --------------------------------------------------------------------------


async def test_a_photo_reaches_a_vision_endpoint_and_history_keeps_a_note(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="A red square."), Reply(text="It was red."))
    app = await start_bot(bot_models="openai:gpt-4o-mini", bot_vision_models="openai:gpt-4o-mini")
    tg.user_photo(picture(3000, 2000), caption="what is this?")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text == "A red square."
    user = last_user(model)
    assert user["content"][0] == {"type": "text", "text": "[The user sent a photo.]\nwhat is this?"}
    [part] = image_parts(user)
    sent = decoded(part)
    # Telegram's 1280 px size fits the 1568 px limit; its 2560 px size does not.
    assert sent.size == (1280, 853) and len(tg.downloads) == 1
    history = await app.messages.history(PRIVATE, 10_000)
    assert history[0].content == "[The user sent a photo.]\nwhat is this?"
    tg.user_text("what colour was it?")
    await tg.wait_messages(PRIVATE, 2)
    assert all(not image_parts(m) for m in model.chat_requests()[-1].messages)  # the bytes are not kept
    assert any(m.get("content") == "[The user sent a photo.]\nwhat is this?" for m in model.chat_requests()[-1].messages)


async def test_mistral_gets_the_image_as_its_own_chunk(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="A red square."))
    await start_bot(bot_models="mistral:mistral-small-latest", bot_vision_models="mistral:mistral-small-latest")
    tg.user_photo(picture(200, 200))
    await tg.wait_messages(PRIVATE, 1)
    request = model.chat_requests()[0]
    assert request.dialect == "mistral"
    user = last_user(model)
    assert user["content"][0] == {"type": "text", "text": "[The user sent a photo.]"}
    [part] = image_parts(user)
    assert isinstance(part["image_url"], str) and decoded(part).size == (200, 200)


async def test_text_only_endpoints_are_skipped_for_a_photo(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.vision_models = {"gpt-4o-mini"}  # the text-only model would refuse the image, as real APIs do
    model.script(Reply(text="A photo answer."), Reply(text="A text answer."))
    await start_bot(bot_models=BOTH, bot_vision_models="openai:gpt-4o-mini")
    tg.user_photo(picture(100, 100), caption="look")
    await tg.wait_messages(PRIVATE, 1)
    tg.user_text("and now plain text")
    await tg.wait_messages(PRIVATE, 2)
    photo_turn, text_turn = model.chat_requests()
    assert (photo_turn.dialect, text_turn.dialect) == ("openai", "mistral")  # text keeps the chain's order


async def test_when_every_vision_endpoint_fails_the_text_only_ones_are_not_asked(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(*[Fault(status=500)] * 10)
    await start_bot(bot_models=BOTH, bot_vision_models="openai:gpt-4o-mini", bot_retry_attempts=1)
    tg.user_photo(picture(100, 100))
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert "unavailable" in answer.text
    assert {r.dialect for r in model.chat_requests()} == {"openai"}


async def test_without_a_vision_model_a_photo_gets_a_clear_answer_and_nothing_is_kept(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot()
    tg.user_photo(picture(100, 100), caption="what is this?", language_code="ru")
    [answer] = await tg.wait_messages(PRIVATE, 1)
    assert answer.text.startswith("Модели этого бота не умеют смотреть на изображения")
    assert model.chat_requests() == [] and tg.downloads == []
    assert await app.messages.history(PRIVATE, 10_000) == []


async def test_an_image_sent_as_a_file_is_looked_at_too(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="A diagram."))
    await start_bot(bot_models="openai:gpt-4o-mini", bot_vision_models="openai:gpt-4o-mini")
    tg.user_document("diagram.png", picture(300, 200, "PNG"), mime_type="image/png", caption="explain")
    await tg.wait_messages(PRIVATE, 1)
    [part] = image_parts(last_user(model))
    assert decoded(part).format == "PNG"


async def test_a_broken_image_file_gets_a_clear_answer(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    app = await start_bot(bot_models="openai:gpt-4o-mini", bot_vision_models="openai:gpt-4o-mini")
    tg.user_document("photo.jpg", b"\xff\xd8\xff\xe0 truncated", mime_type="image/jpeg")
    tg.user_document("empty.png", b"", mime_type="image/png")
    first, second = await tg.wait_messages(PRIVATE, 2)
    assert first.text == second.text == "I couldn't open that image. Please send it as a normal photo (JPEG or PNG)."
    assert model.chat_requests() == [] and await app.messages.history(PRIVATE, 10_000) == []


async def test_a_photo_in_a_group_counts_only_when_it_addresses_the_bot(
    start_bot: BotFactory, tg: FakeTelegram, model: FakeModelServer
) -> None:
    model.script(Reply(text="Nice cat."))
    await start_bot(bot_models="openai:gpt-4o-mini", bot_vision_models="openai:gpt-4o-mini")
    tg.user_photo(picture(100, 100), caption="our holiday", chat_id=GROUP, user_id=5)
    tg.user_photo(picture(100, 100), caption="@arium_test_bot what is it?", chat_id=GROUP, user_id=5)
    await tg.wait_for(lambda: any(m.text == "Nice cat." for m in tg.messages(GROUP)))
    [request] = model.chat_requests()
    user = [m for m in request.messages if m.get("role") == "user"][-1]
    assert user["content"][0]["text"].endswith("[The user sent a photo.]\nwhat is it?")
    assert len(tg.downloads) == 1  # one chat's updates run in order: the first photo was already passed over


async def test_the_http_api_takes_images_as_data_urls(start_bot: BotFactory, model: FakeModelServer) -> None:
    model.script(Reply(text="A red square."))
    app = await start_bot(
        api_enabled=True, api_port=0, bot_models="openai:gpt-4o-mini", bot_vision_models="openai:gpt-4o-mini"
    )
    api = Api(app)
    key = await key_for(app, ANN, "ann")
    url = "data:image/png;base64," + base64.b64encode(picture(2000, 1000, "PNG")).decode()
    client = api.sdk(key)
    answer = await client.chat.completions.create(
        model="arium",
        messages=[{"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": {"url": url}}]}],
    )
    await client.close()
    assert answer.choices[0].message.content == "A red square."
    user = last_user(model)
    assert user["content"][0] == {"type": "text", "text": "what is it?"}
    [part] = image_parts(user)
    assert decoded(part).size == (1568, 784)  # bounded like a Telegram photo
    for content, code in (
        ([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}], "unsupported_content"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,bm90IGFuIGltYWdl"}}], "bad_image"),
    ):
        refused = await api.call("POST", "/v1/chat/completions", key, json={"messages": [{"role": "user", "content": content}]})
        assert refused.status_code == 400 and error_of(refused)["code"] == code
    from_assistant = [
        {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": url}}]},
        {"role": "user", "content": "and?"},
    ]
    refused = await api.call("POST", "/v1/chat/completions", key, json={"messages": from_assistant})
    assert refused.status_code == 400 and "user messages only" in error_of(refused)["message"]
