from __future__ import annotations

from pathlib import Path

import pytest

from pydantic import ValidationError

from bot.agents.profiles import AgentBook
from bot.errors import ConfigError
from bot.settings import ModelRef, Settings, load_settings, parse_models


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_follow_the_design_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOT_MODELS", "BOT_TIMEZONE", "TELEGRAM_API_URL", "BOT_DATA_DIR", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = make()
    assert settings.bot_models == [ModelRef("mistral", "mistral-small-latest")]
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.bot_timezone == "UTC"
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.effective_database_url.endswith("data/arium.db")


def test_environment_parses_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_MODELS", "mistral:mistral-large-latest, openai:gpt-4o-mini")
    monkeypatch.setenv("BOT_ADMIN_IDS", "12, 34")
    settings = make()
    assert [str(r) for r in settings.bot_models] == ["mistral:mistral-large-latest", "openai:gpt-4o-mini"]
    assert settings.bot_admin_ids == frozenset({12, 34})


@pytest.mark.parametrize(
    "value",
    ["", "gpt-4", "anthropic:claude", "mistral:", " , "],
)
def test_bad_models_are_named(value: str) -> None:
    with pytest.raises(ValueError):
        parse_models(value)


def test_bad_values_become_one_readable_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_TIMEZONE", "Mars/Olympus")
    monkeypatch.setenv("BOT_ADMIN_IDS", "12,abc")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert "BOT_TIMEZONE" in message and "Mars/Olympus" in message
    assert "BOT_ADMIN_IDS" in message


def test_missing_for_run_names_each_setting() -> None:
    settings = make(bot_models="mistral:m,openai:gpt")
    assert settings.missing_for_run() == ["TELEGRAM_BOT_TOKEN", "MISTRAL_API_KEY", "OPENAI_API_KEY"]
    local = make(telegram_bot_token="1:x", bot_models="openai:llama3", openai_base_url="http://127.0.0.1:11434/v1")
    assert local.missing_for_run() == []  # a self-hosted server needs no key


def test_toml_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "arium.toml"
    config.write_text('bot_timezone = "Europe/Berlin"\nbot_models = "openai:gpt-4o"\nbot_admin_ids = [7]\n')
    monkeypatch.setenv("BOT_CONFIG", str(config))
    monkeypatch.setenv("BOT_TIMEZONE", "Asia/Tokyo")
    monkeypatch.delenv("BOT_MODELS", raising=False)
    monkeypatch.delenv("BOT_ADMIN_IDS", raising=False)
    settings = make()
    assert settings.bot_timezone == "Asia/Tokyo"
    assert settings.bot_models == [ModelRef("openai", "gpt-4o")]
    assert settings.bot_admin_ids == frozenset({7})


def test_missing_toml_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOT_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="nope.toml"):
        make()


def test_secrets_are_listed_for_redaction() -> None:
    settings = make(telegram_bot_token="123:SECRET-TOKEN", mistral_api_key="mk-secret")
    assert set(settings.secrets()) == {"123:SECRET-TOKEN", "mk-secret"}
    assert "SECRET-TOKEN" not in repr(settings)


def test_empty_values_in_env_file_mean_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MISTRAL_BASE_URL", "OPENAI_BASE_URL", "DATABASE_URL", "MISTRAL_API_KEY", "BOT_ADMIN_IDS"):
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text((Path(__file__).resolve().parents[1] / ".env.example").read_text())
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.mistral_base_url is None and settings.openai_base_url is None
    assert settings.database_url is None and settings.mistral_api_key is None
    assert settings.bot_admin_ids == frozenset()
    assert settings.missing_for_run() == ["TELEGRAM_BOT_TOKEN", "MISTRAL_API_KEY"]


def test_example_toml_defines_a_chain_of_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "arium.example.toml"
    monkeypatch.setenv("BOT_CONFIG", str(example))
    monkeypatch.delenv("BOT_MODELS", raising=False)
    settings = make(mistral_api_key="mk")
    tiers = settings.tiers()
    assert [t.name for t in tiers] == ["primary", "local", "eyes"]
    assert [settings.sees_images(t.endpoints[0]) for t in tiers] == [False, False, True]
    assert [e.weight for e in tiers[0].endpoints] == [2, 1]
    assert settings.endpoint_key(tiers[0].endpoints[0]) == "mk"
    assert settings.endpoint_key(tiers[0].endpoints[1]) == "second-key-for-more-rate-limit"
    assert "second-key-for-more-rate-limit" in settings.secrets()
    assert settings.missing_for_run() == ["TELEGRAM_BOT_TOKEN"]  # the local tier needs no key
    assert list(settings.mcp.servers) == ["time", "tracker"]
    assert settings.mcp.servers["tracker"].admin_only and "Bearer your-token" in settings.secrets()
    assert list(settings.agents) == ["coder", "travel", "planner"]
    book = AgentBook.from_settings(settings.agents)
    book.check_tiers(t.name or "" for t in tiers)  # the coder's models = "primary" is a tier
    assert book.get("coder").tools == {"calculate", "files"}  # type: ignore[union-attr]
    assert book.get("planner").orchestrator and book.get("planner").tools == frozenset()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("agents", "problem"),
    [
        ({"assistant": {"description": "x"}}, "reserved"),
        ({"Coder": {"description": "x"}}, "start with a lowercase letter"),
        ({"coder": {"description": "x", "instructons": "typo"}}, "instructons"),
        ({"coder": {}}, "description"),
        ({"coder": {"description": "x", "temperature": 5}}, "temperature"),
    ],
)
def test_agent_tables_are_checked_at_start(agents: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        make(agents=agents)


def test_an_agent_naming_a_tier_the_chain_lacks_fails_at_start() -> None:
    book = AgentBook.from_settings(make(agents={"coder": {"description": "x", "models": "fast"}}).agents)
    with pytest.raises(ConfigError, match="agent 'coder' uses models = 'fast'.*no such tier"):
        book.check_tiers(["mistral:mistral-small-latest"])


def test_bot_models_and_model_tiers_together_are_a_conflict(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[1] / "arium.example.toml"
    monkeypatch.setenv("BOT_CONFIG", str(example))
    monkeypatch.setenv("BOT_MODELS", "openai:gpt-4o")
    with pytest.raises(ConfigError, match="either BOT_MODELS or model_tiers"):
        load_settings(_env_file=None)


def test_transcription_model_is_one_openai_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSCRIPTION_MODEL", " openai:whisper-large-v3 ")
    assert make().transcription_model == ModelRef("openai", "whisper-large-v3")
    monkeypatch.setenv("TRANSCRIPTION_MODEL", "")
    assert make().transcription_model is None  # empty in .env: unset, voice not enabled


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mistral:voxtral-mini", "only 'openai:' is supported"),
        ("whisper-1", "must look like 'openai:MODEL'"),
        ("openai:", "must look like 'openai:MODEL'"),
        ("openai:whisper-1,openai:whisper-large", "names one model"),
    ],
)
def test_bad_transcription_models_are_explained(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"TRANSCRIPTION_MODEL: .*{problem}"):
        load_settings(_env_file=None, transcription_model=value)


def test_transcription_endpoints_are_validated_and_their_keys_are_secrets() -> None:
    settings = make(
        transcription_model="openai:whisper-1",
        openai_api_key="ok",
        transcription_endpoints=[{"model": "whisper-large-v3", "base_url": "https://api.groq.com/openai/v1", "api_key": "gk"}],
    )
    assert "gk" in settings.secrets() and "gk" not in repr(settings.transcription_endpoints)
    with pytest.raises(ConfigError, match="set TRANSCRIPTION_MODEL too"):
        load_settings(_env_file=None, transcription_endpoints=[{"model": "whisper-1"}])
    with pytest.raises(ConfigError, match="must start with http"):
        load_settings(_env_file=None, transcription_model="openai:w", transcription_endpoints=[{"model": "w", "base_url": "groq.com"}])
    with pytest.raises(ConfigError, match="(?i)extra"):  # a misspelt key is named, not ignored
        load_settings(_env_file=None, transcription_model="openai:w", transcription_endpoints=[{"model": "w", "base-url": "x"}])
    for bad in ({"bot_voice_max_seconds": 0}, {"bot_voice_max_mb": 0}, {"bot_voice_timeout": -1}):
        with pytest.raises(ConfigError):
            load_settings(_env_file=None, **bad)


def test_transcription_at_openai_needs_the_openai_key() -> None:
    base = {"telegram_bot_token": "t", "mistral_api_key": "mk", "transcription_model": "openai:whisper-1"}
    assert make(**base).missing_for_run() == ["OPENAI_API_KEY"]
    assert make(**base).missing_for_run(telegram=False) == []  # only the Telegram channel takes voice
    assert make(**base, openai_base_url="http://127.0.0.1:8000/v1").missing_for_run() == []  # a local server
    assert make(**base, openai_api_key="ok").missing_for_run() == []
