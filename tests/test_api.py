"""The HTTP API end to end: the real `openai` SDK (and httpx for Arium's own
resources) against the bot's real server on 127.0.0.1, the model behind it
the fake model server, Telegram the fake Bot API; one process serves both."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import Arium
from bot.memory.embedder import Embedder
from bot.memory.records import NewMemory
from bot.storage.repositories import UserProfile
from tests.conftest import BotFactory
from tests.fakes.model_server import Fault, FakeModelServer, Reply, StreamFault
from tests.fakes.telegram_server import FakeTelegram
from tests.support.api import ANN, BOB, Api, error_of, key_for
from tests.support.chat import system_prompt
from tests.support.processes import cli


@pytest.fixture
async def api_bot(start_bot: BotFactory) -> AsyncIterator[tuple[Arium, Api]]:
    app = await start_bot(api_enabled=True, api_port=0)
    yield app, Api(app)


async def test_the_openai_sdk_chats_with_the_user_s_memories_streamed_or_not(
    api_bot: tuple[Arium, Api], model: FakeModelServer
) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "ann-laptop")
    await app.memory.add(ANN, [NewMemory("Ann's cat is called Tom")])
    model.responder = lambda request: Reply(chunks=["Your cat ", "is Tom."], usage=(120, 5))
    client = api.sdk(key)
    messages: list[Any] = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is my cat called?"},
    ]
    whole = await client.chat.completions.create(model="arium", messages=messages)
    assert whole.choices[0].message.content == "Your cat is Tom."
    assert whole.usage is not None and (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (120, 5)
    [request] = model.chat_requests()
    assert "Ann's cat is called Tom" in system_prompt(request), "Arium's system prompt, with her memories, first"
    assert request.messages[1:] == [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is my cat called?"},
    ], "then the client's conversation as it came"

    stream = await client.chat.completions.create(
        model="arium", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == "Your cat is Tom." and len(pieces) >= 2
    assert usage is not None and usage.total_tokens == 125
    models = await client.models.list()
    assert [m.id for m in models.data] == ["arium"]
    await client.close()


async def test_two_keys_never_see_each_other_s_data(api_bot: tuple[Arium, Api]) -> None:
    app, api = api_bot
    ann, bob = await key_for(app, ANN, "ann"), await key_for(app, BOB, "bob")
    [bobs_memory] = await app.memory.add(BOB, [NewMemory("Bob's bank PIN hint is his dog's name")])
    created = await api.call("POST", "/v1/reminders", bob, json={"text": "tomorrow at 9 call the bank"})
    assert created.status_code == 201, created.text
    bobs_reminder = created.json()["id"]

    assert (await api.call("GET", "/v1/memories", ann)).json()["data"] == []
    assert (await api.call("GET", "/v1/reminders", ann)).json()["data"] == []
    for method, path in (("DELETE", f"/v1/memories/{bobs_memory.id}"), ("DELETE", f"/v1/reminders/{bobs_reminder}")):
        response = await api.call(method, path, ann)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    export = (await api.call("GET", "/v1/export", ann)).json()
    assert export["user_id"] == ANN and "bank" not in str(export)
    # Bob still has both, and sees them.
    assert [m["id"] for m in (await api.call("GET", "/v1/memories", bob)).json()["data"]] == [bobs_memory.id]
    assert [r["id"] for r in (await api.call("GET", "/v1/reminders", bob)).json()["data"]] == [bobs_reminder]
    assert (await api.call("DELETE", f"/v1/reminders/{bobs_reminder}", bob)).status_code == 200


async def test_a_reminder_set_through_the_api_is_the_telegram_user_s(
    api_bot: tuple[Arium, Api], tg: FakeTelegram
) -> None:
    """One key belongs to one user: a Telegram user's key sets reminders
    that their Telegram chat lists (and the bot delivers there)."""
    app, api = api_bot
    tg.user_text("/timezone Europe/Berlin", chat_id=ANN, user_id=ANN)
    await tg.wait_messages(ANN, 1)
    key = await key_for(app, ANN, "ann-phone")
    created = await api.call("POST", "/v1/reminders", key, json={"text": "tomorrow at 9 water the plants"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["local"].endswith("09:00 (Europe/Berlin)") and body["fire_at"].endswith(("+01:00", "+02:00"))
    tg.user_text("/reminders", chat_id=ANN, user_id=ANN)
    [_, listing] = await tg.wait_messages(ANN, 2)
    assert "water the plants" in listing.text


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_api_key"), ({"Authorization": "Bearer ak-not-a-real-key"}, "invalid_api_key"),
     ({"Authorization": "Basic abc"}, "missing_api_key")],
)
async def test_requests_without_a_valid_key_get_401(
    api_bot: tuple[Arium, Api], headers: dict[str, str], code: str
) -> None:
    _, api = api_bot
    for path in ("/v1/models", "/v1/memories", "/v1/reminders", "/v1/export"):
        response = await api.call("GET", path, headers=headers)
        assert response.status_code == 401 and error_of(response)["code"] == code


async def test_a_revoked_key_is_refused_at_once(api_bot: tuple[Arium, Api]) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "old")
    assert (await api.call("GET", "/v1/memories", key)).status_code == 200
    assert await app.api_keys.revoke("old")
    assert (await api.call("GET", "/v1/memories", key)).status_code == 401


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "arium", "messages": []}, "invalid_request"),
        ({"model": "arium"}, "invalid_request"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_request"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}]}, "tool_messages"),
        ({"messages": [{"role": "system", "content": "only a system message"}]}, "no_user_message"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "unsupported_content"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "unsupported_content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "invalid_request"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:image/png;base64,%%"}]}]},
            "bad_image",
        ),
        (  # a valid image, but no configured model can see
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]},
            "vision_unavailable",
        ),
        ({"messages": [{"role": "user", "content": "   "}]}, "bad_input"),
        ({"messages": [{"role": "user", "content": "x" * 50_000}]}, "bad_input"),
        ({"messages": "hello"}, "invalid_request"),
        # A lone surrogate (an emoji cut in half by a JavaScript client) is the
        # client's error, not a model outage: no request, no retries, no breaker.
        ({"messages": [{"role": "user", "content": "hi \ud800 there"}]}, "invalid_text"),
        ({"messages": [{"role": "system", "content": "be \udfff"}, {"role": "user", "content": "hi"}]}, "invalid_text"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a \ud83d"}]}]}, "invalid_text"),
    ],
)
async def test_bad_chat_requests_get_a_clear_400(
    api_bot: tuple[Arium, Api], model: FakeModelServer, body: dict[str, Any], code: str
) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    # JSON with \u escapes, as a client's encoder writes a lone surrogate.
    encoded = json.dumps(body, ensure_ascii=True)
    response = await api.call(
        "POST", "/v1/chat/completions", key, content=encoded, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == code
    assert model.chat_requests() == []


async def test_malformed_json_oversized_bodies_and_unknown_paths(api_bot: tuple[Arium, Api]) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    broken = await api.call(
        "POST", "/v1/chat/completions", key, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400 and error_of(broken)["type"] == "invalid_request_error"
    huge = await api.call("POST", "/v1/reminders", key, content=b"x" * (2 * 1024 * 1024))
    assert huge.status_code == 413 and error_of(huge)["code"] == "body_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(4):
            yield b"x" * (512 * 1024)

    huge_chunked = await api.call(
        "POST", "/v1/chat/completions", key, content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert huge_chunked.status_code == 413 and error_of(huge_chunked)["code"] == "body_too_large"
    missing = await api.call("GET", "/v1/nothing-here", key)
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    not_a_number = await api.call("DELETE", "/v1/memories/abc", key)
    assert not_a_number.status_code == 400
    unparsed = await api.call("POST", "/v1/reminders", key, json={"text": "sometime maybe"})
    assert unparsed.status_code == 400 and error_of(unparsed)["code"].startswith("reminder_")


async def test_a_model_outage_is_a_503_not_a_hang(api_bot: tuple[Arium, Api], model: FakeModelServer) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    model.responder = lambda request: Fault(401)  # the server refuses our model key: nothing can answer
    for stream in (False, True):
        response = await api.call(
            "POST", "/v1/chat/completions", key,
            json={"model": "arium", "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 503 and error_of(response)["code"] == "model_unavailable"


async def test_an_answer_cut_off_mid_stream_says_so_streamed_or_not(
    api_bot: tuple[Arium, Api], model: FakeModelServer
) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    body = {"model": "arium", "messages": [{"role": "user", "content": "tell me a long story"}]}
    model.script(StreamFault(mode="drop", text_before="Once upon a time"))
    whole = await api.call("POST", "/v1/chat/completions", key, json=body)
    assert whole.status_code == 200, whole.text
    [choice] = whole.json()["choices"]
    assert choice["finish_reason"] == "length", "a client can tell the answer is not whole"
    content = choice["message"]["content"]
    assert content.startswith("Once upon a time") and content != "Once upon a time", "with the cut-off note"
    model.script(StreamFault(mode="drop", text_before="Once upon a time"))
    streamed = await api.call("POST", "/v1/chat/completions", key, json={**body, "stream": True})
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == content


async def test_the_user_s_rate_limit_answers_429_with_retry_after(start_bot: BotFactory) -> None:
    app = await start_bot(api_enabled=True, api_port=0, bot_rate_per_minute=1, bot_rate_burst=2)
    api = Api(app)
    key = await key_for(app, ANN, "k")
    statuses = [(await api.call("GET", "/v1/reminders", key)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert error_of(statuses[2])["type"] == "rate_limit_error"
    assert int(statuses[2].headers["Retry-After"]) >= 1


async def test_a_banned_user_s_key_is_refused(api_bot: tuple[Arium, Api]) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    await app.users.touch(UserProfile(ANN, "User"), "banned")
    response = await api.call("GET", "/v1/memories", key)
    assert response.status_code == 403 and error_of(response)["type"] == "permission_error"


async def test_health_needs_no_key(api_bot: tuple[Arium, Api]) -> None:
    _, api = api_bot
    response = await api.call("GET", "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_metrics_count_turns_and_show_the_endpoints_without_a_key(
    api_bot: tuple[Arium, Api], model: FakeModelServer
) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    model.responder = lambda request: Reply(text="fine")
    client = api.sdk(key)
    await client.chat.completions.create(model="arium", messages=[{"role": "user", "content": "how are you?"}])
    await client.close()
    await api.call("GET", "/v1/reminders")  # refused without a key: not a turn
    response = await api.call("GET", "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in response.text.splitlines() if line and not line.startswith("#")}
    assert samples['arium_turns_total{status="complete"}'] == 1
    assert samples["arium_turn_seconds_count"] == 1
    [closed] = [name for name in samples if name.startswith("arium_model_breaker_state") and 'state="closed"' in name]
    assert samples[closed] == 1
    assert samples["arium_reminders_delivered_total"] == 0
    assert samples["arium_errors_total"] == 0


async def test_a_failing_request_is_a_500_counted_and_reported_like_any_error(api_bot: tuple[Arium, Api]) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    async with app.db.engine.begin() as conn:  # a database broken under the running bot
        await conn.exec_driver_sql("DROP TABLE reminders")
    response = await api.call("GET", "/v1/reminders", key)
    assert response.status_code == 500 and error_of(response)["code"] == "internal_error"
    assert "reminders" not in response.text, "no SQL or traceback reaches the client"
    metrics = (await api.call("GET", "/metrics")).text
    assert "arium_errors_total 1.0" in metrics.splitlines()


async def test_keys_from_the_command_line_work_once_and_are_listed_and_revoked(
    tmp_path: Path, start_bot: BotFactory
) -> None:
    created = cli(tmp_path, "apikey", "create", "--name", "laptop", "--user-id", str(ANN))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ak-") and key not in cli(tmp_path, "apikey", "list").stdout
    again = cli(tmp_path, "apikey", "create", "--name", "laptop")
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr
    assert cli(tmp_path, "apikey", "create", "--name", "no spaces").returncode == 1
    # The name as the usage line shows it, without --name.
    positional = cli(tmp_path, "apikey", "create", "phone", "--user-id", str(ANN))
    assert positional.returncode == 0, positional.stderr
    assert "phone\tuser 2001" in cli(tmp_path, "apikey", "list").stdout

    app = await start_bot(api_enabled=True, api_port=0)
    api = Api(app)
    assert (await api.call("GET", "/v1/memories", key)).status_code == 200
    assert "laptop\tuser 2001" in cli(tmp_path, "apikey", "list").stdout
    assert cli(tmp_path, "apikey", "revoke", "laptop").returncode == 0
    assert (await api.call("GET", "/v1/memories", key)).status_code == 401
    assert cli(tmp_path, "apikey", "revoke", "laptop").returncode == 1, "nothing left to revoke"
    # A revoked key's name can be given to a new key; the old key stays refused.
    renewed = cli(tmp_path, "apikey", "create", "--name", "laptop", "--user-id", str(ANN))
    assert renewed.returncode == 0, renewed.stderr
    new_key = renewed.stdout.strip().splitlines()[-1]
    assert (await api.call("GET", "/v1/memories", new_key)).status_code == 200
    assert (await api.call("GET", "/v1/memories", key)).status_code == 401


async def test_erasing_a_user_erases_their_keys(api_bot: tuple[Arium, Api]) -> None:
    app, api = api_bot
    key = await key_for(app, ANN, "k")
    await app.userdata.erase(ANN)
    assert (await api.call("GET", "/v1/memories", key)).status_code == 401
    assert await app.api_keys.listed() == []


async def test_admins_manage_keys_with_apikey_in_their_private_chat(
    start_bot: BotFactory, tg: FakeTelegram
) -> None:
    admin, group = 4242, -100777
    app = await start_bot(api_enabled=True, api_port=0, bot_admin_ids=str(admin))
    api = Api(app)
    tg.user_text("/apikey create phone", chat_id=group, user_id=admin, chat_type="group")
    [refused] = await tg.wait_messages(group, 1)
    assert "private chat" in refused.text and "ak-" not in refused.text
    tg.user_text("/apikey create phone", chat_id=admin)
    [created] = await tg.wait_messages(admin, 1)
    key = created.text.splitlines()[-1]
    assert key.startswith("ak-") and "user 4242" in created.text
    assert (await api.call("GET", "/v1/reminders", key)).status_code == 200
    tg.user_text("/apikey create phone", chat_id=admin)
    tg.user_text("/apikey list", chat_id=admin)
    tg.user_text("/apikey revoke phone", chat_id=admin)
    tg.user_text("/apikey", chat_id=admin)
    [_, taken, listing, revoked, usage] = await tg.wait_messages(admin, 5)
    assert "exists already" in taken.text
    assert listing.text.startswith("phone\tuser 4242") and "ak-" not in listing.text
    assert "revoked" in revoked.text and "/apikey list" in usage.text
    assert (await api.call("GET", "/v1/reminders", key)).status_code == 401
    tg.user_text("/apikey list", chat_id=5151)
    [stranger] = await tg.wait_messages(5151, 1)
    assert "don't know the command /apikey" in stranger.text
    await app.audit_writer.flush()
    entries = [f"{e.action} {e.arguments} {e.outcome}" for e in await app.audit_log.latest(20)]
    assert "apikey create phone created phone for user 4242" in entries
    assert all(key not in entry for entry in entries), "the key never reaches the audit log"


async def test_an_api_only_bot_keeps_its_scheduled_work_but_times_no_reminders(
    tmp_path: Path, model: FakeModelServer, embedder: Embedder
) -> None:
    from bot.settings import Settings

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, bot_models="openai:gpt-4o-mini", openai_api_key="test-key",
        openai_base_url=model.openai_base_url, bot_data_dir=tmp_path / "data", api_enabled=True, api_port=0,
    )
    app = Arium(settings, embedder=embedder)
    await app.start()
    try:
        assert [c.name for c in app.channels] == ["api"] and app.telegram is None
        jobs = {job.id for job in app.scheduler.get_jobs()}
        assert {"system:backup", "system:prune"} <= jobs, jobs
        assert app.reminder_scheduler.health()["running"] is False, "no channel here could deliver a reminder"
    finally:
        await app.stop()
