"""Settings: environment variables, then ``.env``, then an optional TOML file
named by ``BOT_CONFIG``; earlier sources win. Every name is documented in
``.env.example``."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pytz
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.errors import ConfigError
from bot.identity import USER_ID_LIMIT

Provider = Literal["mistral", "openai"]
PROVIDERS: tuple[str, ...] = ("mistral", "openai")
# setWebhook's secret_token: what Telegram accepts.
WEBHOOK_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class ModelRef:
    """One entry of BOT_MODELS: which SDK to use and which model to ask for."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


def parse_models(value: str) -> list[ModelRef]:
    """Parse ``provider:model,provider:model`` into ModelRefs, naming any bad entry."""
    refs: list[ModelRef] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        provider, sep, model = entry.partition(":")
        provider, model = provider.strip().lower(), model.strip()
        if not sep or not model or provider not in PROVIDERS:
            raise ValueError(
                f"BOT_MODELS entry {entry!r} must look like 'mistral:MODEL' or 'openai:MODEL'"
            )
        refs.append(ModelRef(provider, model))
    if not refs:
        raise ValueError("BOT_MODELS names no model")
    return refs


# Price per 1M tokens: (input, output), finite and not negative.
PricePerMillion = Annotated[float, Field(ge=0, allow_inf_nan=False)]
ModelPrices = dict[str, tuple[PricePerMillion, PricePerMillion]]


def parse_model_prices(value: str) -> dict[str, Any]:
    """MODEL_PRICES from the environment: JSON (``{"openai:gpt-4o-mini": [0.15, 0.6]}``)
    or ``provider:model=input/output,...``. Keys and numbers are checked by the field."""
    text = value.strip()
    if not text:
        return {}
    if text.startswith(("{", "[")):
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValueError("MODEL_PRICES is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise ValueError("MODEL_PRICES must map 'provider:model' to [input, output]")
        return parsed
    prices: dict[str, Any] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, pair = entry.rpartition("=")
        price_in, slash, price_out = pair.partition("/")
        if not sep or not slash:
            raise ValueError(f"MODEL_PRICES entry {entry!r} must look like 'openai:gpt-4o-mini=0.15/0.60'")
        prices[name.strip()] = (price_in.strip(), price_out.strip())
    return prices


def _check_price_key(key: str) -> str:
    """A price is keyed like a BOT_MODELS entry (``provider:model``), which is
    how /stats matches it to the model that answered."""
    provider, sep, model = key.strip().partition(":")
    provider, model = provider.strip().lower(), model.strip()
    if not sep or not model or provider not in PROVIDERS:
        raise ValueError(f"model_prices key {key!r} must look like 'mistral:MODEL' or 'openai:MODEL'")
    return f"{provider}:{model}"


class EndpointSettings(BaseModel):
    """One endpoint of a tier (TOML only): a model at a URL with a key."""

    provider: Provider
    model: str
    api_key: SecretStr | None = None  # default: MISTRAL_API_KEY / OPENAI_API_KEY
    base_url: str | None = None  # default: MISTRAL_BASE_URL / OPENAI_BASE_URL
    weight: float = Field(default=1.0, gt=0)
    vision: bool = False  # the model takes images (photos go only to such endpoints)


class TierSettings(BaseModel):
    """A tier of the fallback chain: endpoints of one model, balanced by load."""

    name: str | None = None
    context_window: int | None = Field(default=None, gt=0)
    endpoints: list[EndpointSettings] = Field(min_length=1)


def parse_transcription_model(value: str) -> ModelRef | None:
    """TRANSCRIPTION_MODEL: one ``openai:MODEL`` (speech to text speaks
    OpenAI's /v1/audio/transcriptions, whatever serves it); empty: unset."""
    entry = value.strip()
    if not entry:
        return None
    if "," in entry:
        raise ValueError(
            "TRANSCRIPTION_MODEL names one model; list further ones as [[transcription_endpoints]] in the TOML file"
        )
    provider, sep, model = entry.partition(":")
    provider, model = provider.strip().lower(), model.strip()
    if not sep or not model or provider not in PROVIDERS:
        raise ValueError(f"TRANSCRIPTION_MODEL {entry!r} must look like 'openai:MODEL', e.g. openai:whisper-1")
    if provider != "openai":
        raise ValueError(
            f"TRANSCRIPTION_MODEL {entry!r}: only 'openai:' is supported (an OpenAI-compatible "
            "/v1/audio/transcriptions endpoint: OpenAI, Groq, a local whisper server)"
        )
    return ModelRef(provider, model)


class TranscriptionEndpointSettings(BaseModel):
    """A further speech-to-text endpoint (TOML only: ``[[transcription_endpoints]]``),
    asked when TRANSCRIPTION_MODEL and the entries before it fail. It speaks
    the OpenAI API, like TRANSCRIPTION_MODEL."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key fails at start, not at the first voice note

    model: str = Field(min_length=1)
    base_url: str | None = None  # default: OPENAI_BASE_URL
    api_key: SecretStr | None = None  # default: OPENAI_API_KEY

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f"transcription endpoint base_url {value!r} must start with http:// or https://")
        return value.strip() if value is not None else None


MCP_SERVER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,23}$")


class McpServerSettings(BaseModel):
    """One MCP tool server (TOML only: ``[mcp.servers.NAME]``). Either a
    ``command`` Arium starts and talks to over stdio, or the ``url`` of a
    streamable HTTP server."""

    model_config = ConfigDict(extra="forbid")

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, SecretStr] = Field(default_factory=dict)  # values may be tokens: kept out of logs
    cwd: Path | None = None
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    enabled: bool = True
    # Seconds one call may take; the turn gets a timeout result past it.
    timeout: float = Field(default=30.0, gt=0, le=600)
    # Seconds to start (or reach) the server and list its tools.
    connect_timeout: float = Field(default=30.0, gt=0, le=600)
    # Calls in flight at once; more are answered "busy" at once (backpressure).
    max_concurrent: int = Field(default=8, ge=1, le=256)
    # Who may use its tools: ["admin"] keeps a shell or git server to admins.
    roles: list[Literal["admin", "user"]] = Field(default_factory=lambda: ["admin", "user"], min_length=1)
    tools: list[str] | None = None  # only these of its tools (default: all)
    tools_disabled: list[str] = Field(default_factory=list)
    # Send the user's id, language and time zone with each call (request
    # metadata). Off: a server learns nothing about who is asking.
    send_user_context: bool = False

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerSettings:
        if bool(self.command) == bool(self.url):
            raise ValueError("an MCP server needs exactly one of `command` (stdio) or `url` (streamable HTTP)")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"MCP server url {self.url!r} must start with http:// or https://")
        if not self.url and self.headers:
            raise ValueError("`headers` are for a server reached by `url`")
        return self

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    @property
    def admin_only(self) -> bool:
        return "user" not in self.roles


class McpSettings(BaseModel):
    """``[mcp.servers.NAME]`` tables of the TOML file."""

    model_config = ConfigDict(extra="forbid")

    servers: dict[str, McpServerSettings] = Field(default_factory=dict)

    @field_validator("servers")
    @classmethod
    def _check_names(cls, value: dict[str, McpServerSettings]) -> dict[str, McpServerSettings]:
        for name in value:
            if not MCP_SERVER_NAME.match(name):
                raise ValueError(
                    f"MCP server name {name!r}: use up to 24 lowercase letters, digits, '-' or single '_'"
                )
        return value


AGENT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,23}$")
# Names an agent cannot take: the default agent's, and /agent's own words.
RESERVED_AGENT_NAMES = frozenset({"assistant", "auto", "default", "off", "on"})


class AgentSettings(BaseModel):
    """One specialist agent (TOML only: ``[agents.NAME]``). The default agent
    is the assistant itself and needs no entry."""

    model_config = ConfigDict(extra="forbid")

    # What it is for: shown in /agent and given to the router's classifier.
    description: str = Field(min_length=1, max_length=300)
    # Added to the system prompt: inline text, or the name of a prompt template in prompts/.
    instructions: str = ""
    # The tools it may use (names or groups as in /tools); unset: every tool (an orchestrator: none
    # besides create_plan and delegate); [] none.
    tools: list[str] | None = None
    # The tier of the chain it asks first (a model_tiers name or a BOT_MODELS entry); the rest stay fallbacks.
    models: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=16, le=32_000)
    # Words that route a message here without asking a model (whole words, any case).
    keywords: list[str] = Field(default_factory=list)
    # Plans a complex request and delegates its steps to the other agents (create_plan, delegate).
    orchestrator: bool = False


def check_agent_names(agents: dict[str, AgentSettings]) -> dict[str, AgentSettings]:
    for name in agents:
        if not AGENT_NAME.match(name):
            raise ValueError(
                f"agent name {name!r}: start with a lowercase letter; up to 24 lowercase letters, digits, '-' or '_'"
            )
        if name in RESERVED_AGENT_NAMES:
            raise ValueError(f"agent name {name!r} is reserved; choose another")
    return agents


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # `MISTRAL_BASE_URL=` in .env means "not set", not "the empty URL".
        env_ignore_empty=True,
    )

    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    bot_models: Annotated[list[ModelRef], NoDecode] = Field(
        default_factory=lambda: [ModelRef("mistral", "mistral-small-latest")]
    )
    mistral_api_key: SecretStr | None = None
    mistral_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    bot_admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    bot_data_dir: Path = Path("./data")
    database_url: str | None = None
    bot_timezone: str = "UTC"
    embedding_model: str | None = None
    # Run the embedding model on ONNX Runtime (same vectors, ~3x faster per
    # query on a small CPU); false keeps torch.
    bot_embedding_onnx: bool = True
    # On ONNX Runtime, run the model's feed-forward layers in int8: a query
    # embedding (most of a recall's cost) about a third faster, vectors within
    # cosine 0.98 of fp32, the same recall on bench's evaluation set. Its
    # vectors are another model's: switching re-embeds in the background.
    bot_embedding_int8: bool = True
    # Keep the embedding thread and SQLite's threads on different CPUs (see
    # bot/runtime/cpus.py); only where at least two CPUs are available.
    bot_pin_threads: bool = True

    # The fallback chain in full (TOML only): several endpoints per tier, weights.
    model_tiers: list[TierSettings] | None = None
    # Prices per 1M input / output tokens, keyed "provider:model", for the
    # cost estimate in /stats. TOML: model_prices = {"openai:gpt-4o-mini" = [0.15, 0.60]}.
    model_prices: Annotated[ModelPrices, NoDecode] = Field(default_factory=dict)
    # Entries of the chain (provider:model, as in BOT_MODELS) whose model takes
    # images; photos are answered only by these. TOML endpoints can say vision = true.
    bot_vision_models: Annotated[frozenset[str], NoDecode] = frozenset()
    # Photos sent to a model: the longest side in pixels and the most bytes
    # (Telegram's largest size that fits, re-encoded as JPEG if none does).
    bot_image_max_side: int = Field(default=1568, ge=256, le=8192)
    bot_image_max_kb: int = Field(default=1536, ge=64, le=20 * 1024)
    # MCP tool servers (TOML only): [mcp.servers.NAME] with command/args/env or url/headers.
    mcp: McpSettings = Field(default_factory=McpSettings)
    # Specialist agents (TOML only): [agents.NAME]; see bot/agents/.
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    # Multi-agent mode at the first start (admins switch it with /agents; their choice is kept).
    bot_agents_mode: Literal["single", "multi"] = "single"
    # Seconds the router's classifying model call may take before the default agent answers.
    bot_agents_route_timeout: float = Field(default=4.0, gt=0, le=60)
    # The tier the router's classifier asks first (a cheap, fast model); unset: the chain's order.
    bot_agents_router_tier: str | None = None
    # An orchestrated turn's caps: tool calls in all (its own and its steps'), and seconds for the plan.
    bot_agents_max_tool_calls: int = Field(default=16, ge=1, le=200)
    bot_agents_plan_seconds: float = Field(default=180.0, gt=0, le=3600)

    @field_validator("agents")
    @classmethod
    def _check_agent_names(cls, value: dict[str, AgentSettings]) -> dict[str, AgentSettings]:
        return check_agent_names(value)

    # Beyond the DESIGN.md contract: tuning with safe defaults.
    bot_log_level: str = "INFO"
    bot_history_tokens: int = Field(default=4000, ge=200)
    bot_max_answer_tokens: int = Field(default=1500, ge=16)
    bot_max_concurrent_updates: int = Field(default=256, ge=1)
    bot_model_timeout: float = Field(default=120.0, gt=0)
    bot_draft_interval: float = Field(default=0.6, ge=0)
    bot_edit_interval: float = Field(default=1.5, ge=0)
    bot_paste_merge_window: float = Field(default=1.2, ge=0)
    bot_shutdown_timeout: float = Field(default=30.0, ge=0)
    # A turn a crash cut short is answered again at the next start if it is
    # younger than this (seconds); older ones get a note to send it again.
    bot_recovery_window: int = Field(default=900, ge=0)
    bot_poll_timeout: int = Field(default=10, ge=0, le=50)
    # `python -m bot console`: who chats there. The user id defaults to the
    # lowest id in BOT_ADMIN_IDS (the owner: the same memories, reminders and
    # conversation as in Telegram), else 1; the console user is an admin
    # unless BOT_CONSOLE_ADMIN=false.
    bot_console_user_id: int | None = Field(default=None, ge=1, lt=USER_ID_LIMIT)
    bot_console_user_name: str = "Owner"
    bot_console_admin: bool = True
    # The HTTP API (OpenAI-compatible chat completions, memories, reminders).
    # Webhook mode (instead of long polling): Telegram posts updates to this
    # public URL; they are served on API_HOST:API_PORT at its path, and a
    # request without the secret (X-Telegram-Bot-Api-Secret-Token) gets 401.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # The scaled mode (python -m bot gateway / worker): RabbitMQ, the number of
    # partition queues (each chat's updates go to one, in order), the prefix of
    # the exchange's and queues' names, and Redis for Telegram's shared limits.
    broker_url: SecretStr | None = None
    # PostgreSQL connections this process keeps (up to twice as many at a peak).
    # Workers x 2 x this (+1 each for the leader election) must stay under the
    # server's max_connections (100 by default).
    bot_db_pool_size: int = Field(default=20, ge=1, le=200)
    broker_partitions: int = Field(default=64, ge=1, le=1024)
    broker_prefix: str = Field(default="arium", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="arium", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    api_enabled: bool = False
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    api_max_body_kb: int = Field(default=1024, ge=1)
    # Where a browser reaches the API (a proxy's address, say): the root of
    # the eval results page's links that /eval sends. Unset: API_HOST:API_PORT.
    api_public_url: str | None = None
    # Long-term memory and history summaries.
    bot_memory_max_per_user: int = Field(default=10_000, ge=1)
    bot_memory_recall_k: int = Field(default=8, ge=0, le=50)
    # Seconds a turn waits for the semantic half of recall (the embedder
    # still loading after a start, a cold index, the query embedding) before
    # it goes on with keyword hits alone.
    bot_memory_recall_wait: float = Field(default=1.0, ge=0, le=30)
    bot_memory_extraction: bool = True
    # Seconds without a new private message before extraction reads the
    # turns since its last run (one model call per conversation spell, not
    # per turn); 0 extracts after every turn.
    bot_memory_extract_after: float = Field(default=60.0, ge=0, le=3600)
    bot_memory_ephemeral_days: int = Field(default=7, ge=1, le=365)
    bot_memory_cache_vectors: int = Field(default=500_000, ge=1)
    # Past this many memories a user's index turns approximate (see bot/memory/index.py).
    bot_memory_exact_search_max: int = Field(default=20_000, ge=1_000)
    bot_history_summary: bool = True

    # Voice notes, audio files and video notes, answered as if typed (see
    # bot/media/transcription.py). TRANSCRIPTION_MODEL=openai:MODEL sends them
    # to the OpenAI-compatible /v1/audio/transcriptions at OPENAI_BASE_URL
    # with OPENAI_API_KEY; unset, voice gets a friendly "not enabled". The
    # TOML file can add endpoints tried in order when the ones before fail:
    # [[transcription_endpoints]] with model, base_url and api_key.
    transcription_model: Annotated[ModelRef | None, NoDecode] = None
    transcription_endpoints: list[TranscriptionEndpointSettings] = Field(default_factory=list)
    # Longer or larger recordings are refused before they are downloaded
    # (the Bot API lets a bot download 20 MB; OpenAI takes 25 MB).
    bot_voice_max_seconds: int = Field(default=600, ge=1, le=24 * 3600)
    bot_voice_max_mb: float = Field(default=20.0, gt=0, le=2000)
    # Seconds one endpoint may take to transcribe before the next is asked.
    bot_voice_timeout: float = Field(default=60.0, gt=0, le=600)
    # Pass the user's interface language (en, ru) as the endpoint's hint. Off
    # by default: people do not always speak the language their Telegram app
    # is set to, and a wrong hint garbles what a right guess would get.
    bot_voice_language_hint: bool = False

    @field_validator("transcription_model", mode="before")
    @classmethod
    def _parse_transcription_model(cls, value: Any) -> Any:
        return parse_transcription_model(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _transcription_fallbacks_follow_a_first(self) -> Settings:
        if self.transcription_endpoints and self.transcription_model is None:
            raise ValueError(
                "[[transcription_endpoints]] are tried after TRANSCRIPTION_MODEL fails; set TRANSCRIPTION_MODEL too"
            )
        return self

    # Tools (see bot/tools/): the executor, the per-turn loop, the file sandbox.
    bot_tool_workers: int = Field(default=8, ge=1, le=256)
    bot_tool_queue: int = Field(default=32, ge=0)
    bot_tool_timeout: float = Field(default=20.0, gt=0)
    bot_tool_user_concurrency: int = Field(default=4, ge=1)
    bot_tool_max_rounds: int = Field(default=5, ge=1, le=50)
    bot_tool_result_chars: int = Field(default=6000, ge=200)
    bot_tools_disabled: Annotated[frozenset[str], NoDecode] = frozenset()
    bot_files_quota_mb: float = Field(default=20.0, gt=0)
    bot_files_max_entries: int = Field(default=500, ge=1)
    bot_files_max_file_kb: int = Field(default=1024, ge=1)
    # Documents users send (bot/media/): the largest file read (checked before
    # the download when Telegram says the size; the cloud Bot API serves 20 MB
    # at most), the PDF pages read, and how much of the text goes into the turn
    # itself. Their text is saved in the user's files, up to the size above.
    # The prompt share stays well under the inbound limit of 40,000 characters.
    bot_document_max_mb: int = Field(default=20, ge=1, le=2000)
    bot_document_max_pages: int = Field(default=200, ge=1)
    bot_document_prompt_chars: int = Field(default=12_000, ge=0, le=30_000)
    # Web tools (bot/tools/web/), off unless enabled: read_url reads a page
    # the model names, web_search asks a SearXNG instance or Brave Search.
    web_read_enabled: bool = False
    # read_url reaches public addresses only. WEB_ALLOW_PRIVATE=true lifts
    # that for every private, loopback and link-local address (a bot that
    # reads an intranet); WEB_ALLOWED_NETWORKS for the networks named only
    # (comma-separated, e.g. 10.1.2.0/24,fd00:1::/64).
    web_allow_private: bool = False
    web_allowed_networks: Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode] = ()
    # The most of one page read_url downloads (after decompression), and the
    # seconds a fetch may take, redirects included (also a search's deadline).
    web_max_kb: int = Field(default=2048, ge=1, le=100 * 1024)
    web_timeout: float = Field(default=10.0, gt=0, le=120)
    # Characters of a page's text the model gets (BOT_TOOL_RESULT_CHARS still caps a result).
    web_excerpt_chars: int = Field(default=5000, ge=200, le=100_000)
    web_search_provider: Literal["searxng", "brave"] | None = None
    # SearXNG: the instance's root URL (required). Brave: the API's root
    # (default https://api.search.brave.com); WEB_SEARCH_KEY is its token.
    web_search_url: str | None = None
    web_search_key: SecretStr | None = None
    web_search_results: int = Field(default=5, ge=1, le=20)
    # read_url and web_search calls per user and minute, the two together; 0: no limit.
    web_calls_per_minute: float = Field(default=10.0, ge=0, le=600)

    @field_validator("web_allowed_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        items = value.replace(";", ",").split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple, set, frozenset)):
            return value
        networks = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text))
            except ValueError:
                raise ValueError(
                    f"WEB_ALLOWED_NETWORKS: {text!r} is not a network; write e.g. 10.1.2.0/24 or 192.168.1.5"
                ) from None
        return tuple(networks)

    @field_validator("web_search_provider", mode="before")
    @classmethod
    def _normalize_search_provider(cls, value: Any) -> Any:
        if isinstance(value, str):
            spelled = value.strip().lower()
            return None if spelled in ("", "none", "off") else spelled
        return value

    @field_validator("web_search_url")
    @classmethod
    def _check_search_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(f"WEB_SEARCH_URL {value!r} must start with http:// or https://")
        return value.strip().rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _web_search_is_complete(self) -> Settings:
        if self.web_search_provider == "searxng" and not self.web_search_url:
            raise ValueError(
                "WEB_SEARCH_URL is required when WEB_SEARCH_PROVIDER=searxng (the instance's root, e.g. http://127.0.0.1:8888)"
            )
        if self.web_search_provider == "brave" and not (
            self.web_search_key and self.web_search_key.get_secret_value()
        ):
            raise ValueError("WEB_SEARCH_KEY (the Brave Search API token) is required when WEB_SEARCH_PROVIDER=brave")
        return self

    # Fallback chain: retries, timeouts, circuit breakers, cache.
    bot_retry_attempts: int = Field(default=3, ge=1, le=10)
    bot_retry_budget: float = Field(default=8.0, ge=0)
    bot_retry_after_cap: float = Field(default=10.0, ge=0)
    bot_connect_timeout: float = Field(default=5.0, gt=0)
    bot_first_token_timeout: float = Field(default=30.0, gt=0)
    bot_idle_timeout: float = Field(default=30.0, gt=0)
    bot_breaker_failures: int = Field(default=3, ge=1)
    bot_breaker_window: float = Field(default=60.0, gt=0)
    bot_breaker_cooldown: float = Field(default=30.0, gt=0)
    bot_breaker_auth_cooldown: float = Field(default=300.0, gt=0)
    bot_cache_size: int = Field(default=256, ge=0)
    bot_cache_ttl: float = Field(default=600.0, ge=0)
    bot_cache_chat: bool = False

    @model_validator(mode="after")
    def _one_way_to_name_models(self) -> Settings:
        if self.model_tiers and "bot_models" in self.model_fields_set:
            raise ValueError("set either BOT_MODELS or model_tiers (TOML), not both: they both define the chain")
        return self
    # Reminders and periodic tasks (see .env.example).
    reminder_horizon: int = Field(default=600, ge=30)
    reminder_refill_interval: int = Field(default=60, ge=1)
    reminder_send_rate: float = Field(default=28.0, gt=0)
    reminder_workers: int = Field(default=8, ge=1, le=64)
    reminder_late_after: int = Field(default=300, ge=0)
    reminder_max_per_user: int = Field(default=500, ge=1)
    reminder_retention_days: int = Field(default=30, ge=0)
    bot_message_retention_days: int = Field(default=0, ge=0)
    # Broadcasts (/broadcast); their rate is the shared REMINDER_SEND_RATE.
    broadcast_batch: int = Field(default=30, ge=1, le=500)
    broadcast_workers: int = Field(default=8, ge=1, le=64)
    broadcast_progress_interval: float = Field(default=2.0, ge=0.05)
    broadcast_max_attempts: int = Field(default=3, ge=1, le=10)
    broadcast_retry_delay: float = Field(default=2.0, ge=0)
    bot_backup_time: str = "03:30"
    bot_prune_time: str = "04:15"
    bot_health_time: str = "09:00"
    # Access control and per-user limits (see bot/gates/access.py, limits.py).
    bot_access_mode: Literal["open", "allowlist"] = "open"
    bot_rate_per_minute: float = Field(default=20.0, ge=0, le=6000)
    bot_rate_burst: int = Field(default=10, ge=1, le=1000)
    bot_daily_tokens: int = Field(default=0, ge=0)
    bot_invite_ttl_hours: float = Field(default=72.0, ge=0, le=24 * 366)

    @field_validator("bot_access_mode", mode="before")
    @classmethod
    def _normalize_access_mode(cls, value: Any) -> Any:
        if isinstance(value, str):
            spelled = value.strip().lower().replace("-", "").replace("_", "")
            if spelled not in ("open", "allowlist"):
                raise ValueError(f"BOT_ACCESS_MODE {value!r} must be 'open' or 'allowlist'")
            return spelled
        return value
    # Operations: backups, log file rotation, admin error alerts.
    bot_backup_keep: int = Field(default=7, ge=1, le=1000)
    bot_backup_files: bool = True
    bot_log_max_mb: float = Field(default=10.0, ge=0)
    bot_log_backups: int = Field(default=5, ge=1, le=1000)
    bot_log_stderr: bool | None = None  # None: also to stderr when it is a terminal
    bot_alert_window: float = Field(default=600.0, ge=0)

    @field_validator("bot_models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_models(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return parse_models(",".join(value))
        return value

    @field_validator("model_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: Any) -> Any:
        return parse_model_prices(value) if isinstance(value, str) else value

    @field_validator("model_prices")
    @classmethod
    def _check_prices(cls, value: ModelPrices) -> ModelPrices:
        return {_check_price_key(key): price for key, price in value.items()}

    @field_validator("bot_admin_ids", mode="before")
    @classmethod
    def _parse_admin_ids(cls, value: Any) -> Any:
        if isinstance(value, int):
            return frozenset({value})
        if isinstance(value, str):
            parts = [p.strip() for p in value.replace(";", ",").split(",") if p.strip()]
            try:
                return frozenset(int(p) for p in parts)
            except ValueError:
                raise ValueError("BOT_ADMIN_IDS must be comma-separated numeric Telegram user ids") from None
        return value

    @field_validator("api_public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value.strip()):
            raise ValueError("API_PUBLIC_URL must be an http:// or https:// address, e.g. https://bot.example.com")
        return value.strip()

    @field_validator("bot_vision_models", mode="before")
    @classmethod
    def _parse_vision_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(str(ref) for ref in parse_models(value)) if value.strip() else frozenset()
        return value

    @field_validator("bot_tools_disabled", mode="before")
    @classmethod
    def _parse_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(p.strip() for p in value.replace(";", ",").split(",") if p.strip())
        return value

    @field_validator("bot_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        if value not in pytz.all_timezones_set:
            raise ValueError(f"BOT_TIMEZONE {value!r} is not a known time zone (e.g. Europe/Berlin)")
        return value

    @field_validator("bot_backup_time", "bot_prune_time", "bot_health_time")
    @classmethod
    def _check_clock_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
            raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 03:30")
        return value.strip()

    @field_validator("telegram_api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        toml_path = os.environ.get("BOT_CONFIG")
        if toml_path:
            if not Path(toml_path).is_file():
                raise ConfigError(f"BOT_CONFIG names {toml_path!r}, which is not a readable file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # Derived values -----------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.bot_data_dir.resolve() / 'arium.db'}"

    @property
    def log_file(self) -> Path:
        return self.bot_data_dir.resolve() / "logs" / "arium.log"

    @property
    def backups_dir(self) -> Path:
        return self.bot_data_dir.resolve() / "backups"

    def tiers(self) -> list[TierSettings]:
        """The fallback chain: model_tiers if given, else one tier per BOT_MODELS entry."""
        if self.model_tiers:
            return self.model_tiers
        return [
            TierSettings(name=str(ref), endpoints=[EndpointSettings(provider=ref.provider, model=ref.model)])  # type: ignore[arg-type]
            for ref in self.bot_models
        ]

    def sees_images(self, endpoint: EndpointSettings) -> bool:
        return endpoint.vision or f"{endpoint.provider}:{endpoint.model}" in self.bot_vision_models

    def endpoint_key(self, endpoint: EndpointSettings) -> str | None:
        key = endpoint.api_key or (self.mistral_api_key if endpoint.provider == "mistral" else self.openai_api_key)
        return key.get_secret_value() if key and key.get_secret_value() else None

    def endpoint_url(self, endpoint: EndpointSettings) -> str | None:
        return endpoint.base_url or (self.mistral_base_url if endpoint.provider == "mistral" else self.openai_base_url)

    def secrets(self) -> list[str]:
        """Every secret value, so log filters can hide them."""
        values = [self.telegram_bot_token, self.mistral_api_key, self.openai_api_key, self.web_search_key]
        values += [self.webhook_secret, self.broker_url, self.redis_url]
        values += [e.api_key for tier in self.model_tiers or [] for e in tier.endpoints]
        values += [e.api_key for e in self.transcription_endpoints]
        for server in self.mcp.servers.values():
            values += [*server.env.values(), *server.headers.values()]
        return [v.get_secret_value() for v in values if v and v.get_secret_value()]

    @property
    def api_public_root(self) -> str:
        """The root of links to the HTTP server, without a trailing slash."""
        if self.api_public_url:
            return self.api_public_url.rstrip("/")
        # A wildcard address is where the server listens, not where a browser can go.
        host = "127.0.0.1" if self.api_host in ("0.0.0.0", "::", "") else self.api_host
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal
        return f"http://{host}:{self.api_port}"

    def console_user_id(self) -> int:
        if self.bot_console_user_id is not None:
            return self.bot_console_user_id
        return min(self.bot_admin_ids) if self.bot_admin_ids else 1

    @property
    def telegram_configured(self) -> bool:
        return bool(self.telegram_bot_token and self.telegram_bot_token.get_secret_value())

    @property
    def serves_telegram(self) -> bool:
        """`run` serves Telegram when a token is set and the HTTP API when it
        is enabled; with neither, Telegram is what is missing (its token is named)."""
        return self.telegram_configured or not self.api_enabled

    @property
    def webhook_mode(self) -> bool:
        """Telegram posts updates to WEBHOOK_URL instead of being long-polled
        (an empty value in .env means unset)."""
        return bool(self.webhook_url and self.webhook_secret and self.webhook_secret.get_secret_value())

    @property
    def webhook_path(self) -> str:
        """Where the webhook is served on API_HOST:API_PORT: WEBHOOK_URL's path
        (a reverse proxy in front usually forwards that path unchanged)."""
        return urlsplit(self.webhook_url or "").path or "/"

    def webhook_problem(self) -> str | None:
        """One line on why WEBHOOK_URL and WEBHOOK_SECRET cannot be used, or None."""
        url = self.webhook_url or ""
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if bool(url) != bool(secret):
            given, lacking = ("WEBHOOK_URL", "WEBHOOK_SECRET") if url else ("WEBHOOK_SECRET", "WEBHOOK_URL")
            return f"{given} is set but {lacking} is not: set both for webhook mode, or neither to long-poll"
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "WEBHOOK_URL must be a full URL Telegram can reach, such as https://bot.example.com/telegram/webhook"
        if not WEBHOOK_SECRET_PATTERN.fullmatch(secret):
            return "WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)"
        return None

    def missing_for_run(self, *, telegram: bool = True) -> list[str]:
        """Names of settings that `run` needs and that are not set
        (``telegram``: the Telegram channel will run)."""
        missing: list[str] = []
        if telegram and (not self.telegram_bot_token or not self.telegram_bot_token.get_secret_value()):
            missing.append("TELEGRAM_BOT_TOKEN")
        for tier in self.tiers():
            for endpoint in tier.endpoints:
                if self.endpoint_key(endpoint):
                    continue
                # A self-hosted OpenAI-compatible server (Ollama, vLLM...) usually needs no key.
                if endpoint.provider == "openai" and self.endpoint_url(endpoint):
                    continue
                name = "MISTRAL_API_KEY" if endpoint.provider == "mistral" else "OPENAI_API_KEY"
                if name not in missing:
                    missing.append(name)
        if telegram and self._transcription_lacks_key() and "OPENAI_API_KEY" not in missing:
            missing.append("OPENAI_API_KEY")
        return missing

    def _transcription_lacks_key(self) -> bool:
        """TRANSCRIPTION_MODEL would go to api.openai.com without a key (a
        server at OPENAI_BASE_URL may need none)."""
        if self.transcription_model is None or self.openai_base_url:
            return False
        return not (self.openai_api_key and self.openai_api_key.get_secret_value())


def load_settings(**overrides: Any) -> Settings:
    """Build Settings, turning validation errors into one readable ConfigError."""
    import tomllib

    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"BOT_CONFIG {os.environ.get('BOT_CONFIG')!r} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{name}: {msg}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
