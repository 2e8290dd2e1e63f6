"""The mistralai SDK's per-request pydantic classes, reused per type while a
MistralProvider is open (bot/llm/mistral_sdk.py): the same request bytes,
the classes built once, and the stock SDK back after the last provider closed."""

from __future__ import annotations

from typing import Any, List, Optional

import pydantic
from mistralai.client import models as mistral_models
from mistralai.client.utils import serializers

from bot.llm import mistral_sdk
from bot.llm.mistral_provider import MistralProvider


def request_body(messages: list[Any]) -> str:
    request = mistral_models.ChatCompletionStreamRequest(model="mistral-small-latest", messages=messages)
    return serializers.marshal_json(request, mistral_models.ChatCompletionStreamRequest)


MESSAGES = [mistral_models.SystemMessage(content="be brief"), mistral_models.UserMessage(content="hello")]


def test_the_sdk_sends_the_same_bytes_and_builds_each_class_once(monkeypatch: Any) -> None:
    stock = request_body(MESSAGES)
    built: list[str] = []
    real = pydantic.create_model

    def counting(name: str, /, **fields: Any) -> Any:
        built.append(name)
        return real(name, **fields)

    monkeypatch.setattr(serializers, "create_model", counting)
    mistral_sdk.reuse_sdk_models()
    try:
        first = request_body(MESSAGES)
        again = request_body([*MESSAGES, mistral_models.AssistantMessage(content="hi")])
        assert serializers.unmarshal(None, Optional[List[str]]) is None
        assert serializers.unmarshal(None, Optional[List[str]]) is None
    finally:
        mistral_sdk.release_sdk_models()
    assert first == stock
    assert '"role":"assistant"' in again
    assert built.count("Marshaller") == 1 and built.count("Unmarshaller") == 1
    assert serializers.create_model is counting, "the SDK's own create_model is back"


async def test_providers_share_the_reuse_and_the_last_one_to_close_ends_it() -> None:
    stock = serializers.create_model
    one = MistralProvider("m", api_key="k", server_url="http://127.0.0.1:9", timeout=1.0, max_connections=1)
    two = MistralProvider("m", api_key="k", server_url="http://127.0.0.1:9", timeout=1.0, max_connections=1)
    assert serializers.create_model is not stock
    await one.aclose()
    await one.aclose()  # closing twice releases once
    assert serializers.create_model is not stock
    await two.aclose()
    assert serializers.create_model is stock
