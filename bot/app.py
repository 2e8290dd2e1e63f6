"""The composition root: the one place that builds every service, wires them,
starts them and stops them. Conflicting settings are rejected here."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path
from datetime import time, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytz
from apscheduler.schedulers.asyncio import AsyncIOScheduler


from bot import __version__
from bot.admin.tools import ToolControl
from bot.admin.runtime import ModelControl, PluginControl, PromptControl, RuntimeControl
from bot.admin.health import HealthMonitor
from bot.admin.stats import AdminStats, UserDirectory, prices_from
from bot.gates.access import (
    INVITE_NOTICE_INTERVAL,
    REFUSAL_NOTICE_INTERVAL,
    AccessControl,
    AccessMode,
    AllowListCheck,
    BanCheck,
)
from bot.admin.audit import AuditView
from bot.gates.chain import GateChain, NoticeLimiter
from bot.gates.limits import DailyBudget, QuotaCheck, RateLimitCheck, RateLimiter
from bot.runtime.alerts import AdminAlerts
from bot.auth import AuthProvider
from bot.channels.telegram.access_handlers import AccessCommands
from bot.channels.telegram.agent_handlers import AgentCommands
from bot.channels.telegram.apikey_handlers import ApiKeyCommands
from bot.admin.broadcast import BroadcastConfig, Broadcaster
from bot.channels.telegram.broadcast_handlers import BroadcastCommands, TelegramBulkSender
from bot.channels.base import Channel
from bot.channels.inbound import InboundPath
from bot.channels.console import ConsoleChannel
from bot.channels.console.channel import ConsoleServices
from bot.channels.telegram.channel import TelegramChannel, TelegramConfig
from bot.channels.telegram.inbox import UpdateInbox
from bot.channels.telegram.photos import PhotoSettings
from bot.channels.telegram.voice import VoiceLimits, VoiceSettings
from bot.channels.telegram.link_handlers import LinkCommands
from bot.channels.telegram.memory_handlers import MemoryCommands
from bot.channels.telegram.reminders_handlers import ReminderHandlers, TelegramReminderNotifier
from bot.channels.telegram.runtime_handlers import RuntimeCommands
from bot.channels.telegram.stats_handlers import StatsCommands
from bot.admin.backup import BackupConfig, BackupService
from bot.channels.telegram.backup_handlers import BackupCommands
from bot.channels.telegram.eval_handlers import EvalPageCommands
from bot.context import ContextMiddleware, Redactor
from bot.conversation import Conversation, ConversationConfig
from bot.runtime.cpus import CpuPlan
from bot.runtime.errorlog import ErrorReporter
from bot.errors import ConfigError
from bot.eval.links import EvalLinks
from bot.runtime.events import AdminAction, BatchWriter, EventBus, Publisher, TurnFinished
from bot.llm.service import ModelService
from bot.memory.embedder import Embedder, EmbeddingService, load_embedder
from bot.memory.provider_embedder import ProviderEmbedder, configured_endpoint
from bot.memory.relevance import RecallPolicy
from bot.memory.extraction import MemoryWriter
from bot.memory.repository import MemoryRepository
from bot.memory.service import MemoryConfig, MemoryService
from bot.memory.summary import HistorySummarizer, SummaryConfig
from bot.memory.tools import MemoryTools
from bot.memory.turn import EXTRACTION_LOOKBACK, MAX_BATCH_EXCHANGES, TurnMemory
from bot.runtime.pacing import Pacer
from bot.periodic import PeriodicTasks, RetentionConfig, SystemJobs
from bot.prompts import PROMPTS_DIR, PromptRegistry
from bot.identity import CONSOLE, TELEGRAM
from bot.linking import Linker
from bot.recovery import TurnRecovery
from bot.reminders.clock import Clock, SystemClock
from bot.reminders.notifier import ReminderRouter
from bot.reminders.scheduler import ReminderScheduler, SchedulerConfig
from bot.reminders.service import ReminderService
from bot.reminders.tools import ReminderTools
from bot.settings import Settings
from bot.storage.admin import AuditRepository, UsageRepository
from bot.storage.agents import AgentRepository
from bot.storage.api_keys import ApiKeyRepository
from bot.storage.broadcasts import BroadcastRepository
from bot.storage.db import Database, check_database_url
from bot.storage.identities import IdentityRepository
from bot.storage.tool_rounds import ToolRoundRepository
from bot.storage.invites import InviteRepository
from bot.runtime.status import StatusWriter
from bot.storage.reminders import ReminderRepository
from bot.storage.runtime import RuntimeSettingsRepository
from bot.storage.repositories import MessageRepository, UserRepository
from bot.storage.tool_events import ToolEventRecord, ToolEventRepository
from bot.storage.updates import UpdateClaims
from bot.storage.userdata import UserDataRepository
from bot.runtime.tasks import TaskTracker
from bot.tools.events import ToolEventRecorder
from bot.tools.executor import ToolExecutor
from bot.tools.manager import ToolCallManager, ToolLoopConfig
from bot.tools.plugins import PLUGIN_PACKAGES, PluginInfo, load_plugins
from bot.tools.registry import ToolRegistry
from bot.tools.sandbox import FileSandbox, SandboxLimits
from bot.tools.web import register_web_tools
from bot.media.document_reader import DocumentLimits, DocumentReader
from bot.media.images import ImageLimits
from bot.media.transcription import Transcriber
from bot.personal_data import FilesSection, RemindersSection, core_sections

if TYPE_CHECKING:
    from bot.agents.desk import AgentDesk
    from bot.scale.runner import ScaledWorker
    from bot.scale.state import ScaledState
    from bot.channels.api.channel import ApiChannel, HttpChannel
    from bot.channels.api.eval_pages import EvalPageServices
    from bot.metrics import Metrics
    from bot.tools.mcp.servers import McpServers
    from bot.tools.mcp.views import ServerView

log = logging.getLogger(__name__)

REMINDER_HINTS = {"en": "⏳ working on your reminders…", "ru": "⏳ занимаюсь напоминаниями…"}
MEMORY_HINTS = {"en": "⏳ checking my memory…", "ru": "⏳ вспоминаю…"}

def image_limits(settings: Settings) -> ImageLimits:
    """How large a photo may be when it goes to a model (Telegram and the API alike)."""
    return ImageLimits(settings.bot_image_max_side, settings.bot_image_max_kb * 1024)


def check_worker_settings(settings: Settings) -> None:
    """The scaled mode's worker: PostgreSQL, a broker and a bot token, each
    refused in one line when missing."""
    from bot.scale.leader import require_postgres

    require_postgres(settings.effective_database_url)
    if settings.broker_url is None:
        raise ConfigError("a worker needs BROKER_URL (the RabbitMQ the gateway publishes updates to)")
    if not settings.telegram_configured:
        raise ConfigError("a worker needs TELEGRAM_BOT_TOKEN: it answers through the bot")


def check_run_settings(settings: Settings, *, telegram: bool = True) -> None:
    """``telegram``: the Telegram channel will run (it needs its token)."""
    missing = settings.missing_for_run(telegram=telegram)
    if missing:
        raise ConfigError(f"missing setting{'s' if len(missing) > 1 else ''}: {', '.join(missing)} (see .env.example)")
    check_database_url(settings.effective_database_url)
    if telegram and (problem := settings.webhook_problem()):
        raise ConfigError(problem)
    if settings.reminder_refill_interval * 2 > settings.reminder_horizon:
        raise ConfigError(
            "REMINDER_REFILL_INTERVAL must be at most half of REMINDER_HORIZON "
            f"(now {settings.reminder_refill_interval} s and {settings.reminder_horizon} s), "
            "or reminders due just after a refill would be late"
        )


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


class Arium:
    """Every long-lived service, built once."""

    def __init__(
        self,
        settings: Settings,
        *,
        models: ModelService | None = None,
        plugin_packages: tuple[str, ...] = PLUGIN_PACKAGES,
        prompts_dir: Path = PROMPTS_DIR,
        clock: Clock | None = None,
        embedder: Embedder | None = None,
        console: ConsoleChannel | None = None,
        headless: bool = False,
        worker: str | None = None,
    ) -> None:
        """``embedder``: an already loaded model to use instead of loading
        EMBEDDING_MODEL (tests share one across many bots). ``prompts_dir``
        and ``plugin_packages``: where /reload reads templates and plugins.
        ``console``: chat in the terminal instead of serving Telegram
        (``python -m bot console``). ``headless``: no channel, no scheduled
        work, nothing counted in /stats: the core alone, for the evaluation
        harness (``python -m bot eval``), beside a bot that may be running.
        ``worker``: this process is a worker of the scaled mode, by that name
        (``python -m bot worker``): Telegram updates come from the broker, and
        the scheduled work runs only while this worker leads."""
        self._console = console
        self._headless = headless
        self._worker = worker
        if worker is not None:
            check_worker_settings(settings)
        # Telegram posts to this process (`run` with WEBHOOK_URL); a worker's
        # updates come from the broker, the gateway owns the webhook.
        self._webhook_mode = settings.webhook_mode and worker is None
        wants_telegram = console is None and not headless and settings.serves_telegram
        wants_api = console is None and not headless and settings.api_enabled
        check_run_settings(settings, telegram=wants_telegram)
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        # The one error handler: logs with the request id, keeps the last
        # error (self.error_log, for /health), alerts the admins (rate limited).
        self.masker = Redactor(settings.secrets())
        self.errors = ErrorReporter(self.masker, window=settings.bot_alert_window)
        self.error_log = self.errors.log
        self.tasks = TaskTracker(self.errors.report)
        self.cpus = CpuPlan.for_process(settings.bot_pin_threads)
        self.db = Database(
            settings.effective_database_url, worker_cpus=self.cpus.storage, pool_size=settings.bot_db_pool_size
        )
        self.users = UserRepository(self.db, settings.bot_timezone)
        self.api_keys = ApiKeyRepository(self.db)
        self.identities = IdentityRepository(self.db)
        self.eval_links = EvalLinks(settings.bot_data_dir.resolve())  # /eval's links to the results page
        self.messages = MessageRepository(self.db)
        admins = settings.bot_admin_ids
        if console is not None and settings.bot_console_admin:
            admins = admins | {console.user_id}  # the owner at their own terminal
        self.auth = AuthProvider(admins)
        self.prompts = PromptRegistry(prompts_dir)
        self.models = models or ModelService.from_settings(settings)
        self.files = FileSandbox(
            settings.bot_data_dir.resolve() / "files",
            SandboxLimits(
                max_bytes=int(settings.bot_files_quota_mb * 1024 * 1024),
                max_entries=settings.bot_files_max_entries,
                max_file_bytes=settings.bot_files_max_file_kb * 1024,
            ),
        )
        # Documents users send: read, kept in their files, offered to the model.
        self.documents = DocumentReader(
            self.files,
            DocumentLimits(
                max_bytes=settings.bot_document_max_mb * 1024 * 1024,
                max_pages=settings.bot_document_max_pages,
                prompt_chars=settings.bot_document_prompt_chars,
            ),
        )
        self.tool_registry = ToolRegistry({FileSandbox: self.files}, disabled=settings.bot_tools_disabled)
        plugins = load_plugins(self.tool_registry, plugin_packages)
        register_web_tools(self.tool_registry, settings)  # read_url, web_search: only those the settings enable
        self.tool_executor = ToolExecutor(
            workers=settings.bot_tool_workers,
            queue_size=settings.bot_tool_queue,
            timeout=settings.bot_tool_timeout,
            per_user=settings.bot_tool_user_concurrency,
        )
        # MCP tool servers: their tools join the registry while they are up.
        self.mcp = self._build_mcp(settings)
        self.tool_event_store = ToolEventRepository(self.db)
        self.tool_events = ToolEventRecorder(self.tool_event_store, self.tasks)
        self._build_events()
        self.tools = ToolCallManager(
            models=self.models,
            registry=self.tool_registry,
            executor=self.tool_executor,
            events=Publisher(self.events),
            config=ToolLoopConfig(
                max_rounds=settings.bot_tool_max_rounds, result_chars=settings.bot_tool_result_chars
            ),
            journal=ToolRoundRepository(self.db),
        )
        self.stuck_tools: list[str] = []
        # /models, /prompts, /reload: run-time changes, kept in runtime_settings.
        self.runtime_settings = RuntimeSettingsRepository(self.db)
        self.runtime = RuntimeControl(
            ModelControl(self.models, self.runtime_settings),
            PromptControl(self.prompts, self.runtime_settings),
            PluginControl(self.tool_registry, plugins, plugin_packages),
            ToolControl(self.tool_registry, self.runtime_settings, self._mcp_views),
        )
        self._build_access(settings)
        self.alerts = AdminAlerts(self.tasks)
        self.errors.connect(self.alerts)
        self.models.observe(self.alerts)
        self._build_memory(settings, embedder)
        self.turn_memory = TurnMemory(
            self.memory,
            MemoryWriter(self.memory, self.models, self.prompts),
            self.tasks,
            extraction=settings.bot_memory_extraction,
            quiet=settings.bot_memory_extract_after,
            read_until=self.users.memory_read_until,
        )
        self.agents = self._build_agents(settings)
        self.conversation = Conversation(
            messages=self.messages,
            prompts=self.prompts,
            models=self.models,
            config=ConversationConfig(
                history_tokens=settings.bot_history_tokens,
                max_answer_tokens=settings.bot_max_answer_tokens,
            ),
            tools=self.tools,
            memory=self.turn_memory,
            summarizer=(
                HistorySummarizer(
                    self.messages, self.models, self.prompts, self.tasks,
                    SummaryConfig(history_tokens=settings.bot_history_tokens),
                )
                if settings.bot_history_summary
                else None
            ),
            events=self.events,
            agents=self.agents,
        )
        # The one path every channel's message takes into the core.
        middleware = ContextMiddleware(self.users, self.auth)
        self.inbound = InboundPath(middleware, self.gates, self.conversation)
        # Turns a crash cut short are finished at start (bot/recovery.py).
        self.recovery = TurnRecovery(
            self.messages, self.users, middleware, self.conversation, self.clock,
            window=timedelta(seconds=settings.bot_recovery_window),
        )
        # One person, several channels: /link joins their users.
        self.linker = Linker(self.identities, self.users, self.memory, self.files, self.clock)
        self._build_reminders(settings)
        # What /export writes and /deleteme erases, one section per kind of data.
        self.userdata = core_sections(UserDataRepository(self.db), self.memory)
        self.userdata.add(RemindersSection(UserDataRepository(self.db)))
        self.userdata.add(FilesSection(self.files))
        self.channels: list[Channel] = []
        self.telegram: TelegramChannel | None = None
        self.transcriber: Transcriber | None = None  # voice notes: Telegram with TRANSCRIPTION_MODEL set
        self.api: ApiChannel | None = None
        self.webhook_server: HttpChannel | None = None  # webhook mode without the HTTP API
        self.metrics: Metrics | None = None  # with the API, which serves /metrics
        self.broadcaster: Broadcaster | None = None
        if wants_telegram:
            self._build_telegram(settings)
        if wants_api:
            self._build_api(settings)
        if self.telegram is not None and self._webhook_mode:
            self._serve_webhook(settings, self.telegram)
        if console is not None:
            console.connect(
                ConsoleServices(self.inbound, self.reminders, self.memory, self.linker, self.userdata, self.agents)
            )
            # Only a console serving alone delivers reminders at all (see _delivers_reminders).
            self.reminder_router.add(CONSOLE, console.reminder_notifier(), last_resort=True)
            self.channels.append(console)
        self.status = StatusWriter(settings.bot_data_dir, self._status)
        self.scaled: ScaledWorker | None = self._build_scaled(settings, worker) if worker is not None else None
        self._started = False

    def _build_scaled(self, settings: Settings, name: str) -> ScaledWorker:
        """The broker's consumer and the scheduler's election of a worker."""
        from bot.channels.telegram.inbound import update_request_id
        from bot.scale.runner import ScaledWorker
        from bot.scale.worker import UpdateWorker

        worker = UpdateWorker(
            name=name,
            target=self._telegram_channel(),
            claims=UpdateClaims(self.db),
            messages=self.messages,
            recovery=self.recovery,
            request_id_of=update_request_id,
        )
        return ScaledWorker(settings, worker, self.tasks, on_elected=self._lead, on_deposed=self._stop_leading)

    async def _scaled_state(self) -> ScaledState | None:
        return await self.scaled.state() if self.scaled is not None else None

    async def _lead(self) -> None:
        """This worker was elected: it runs the scheduled work from now on."""
        log.warning("this worker leads: reminders, periodic jobs and broadcasts run here")
        await self._start_scheduler()
        if self.broadcaster is not None:
            await self.broadcaster.start()

    async def _stop_leading(self) -> None:
        if self.broadcaster is not None:
            await self.broadcaster.stop()
        await self.reminder_scheduler.stop(timeout=5)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _build_agents(self, settings: Settings) -> AgentDesk | None:
        """Specialist agents from [agents.NAME]; None when there are none
        (single-agent mode is all there is, at no cost)."""
        if not settings.agents:
            return None
        from bot.agents.desk import AgentDesk, DeskConfig
        from bot.agents.profiles import AgentBook
        from bot.agents.router import AgentRouter, RouterConfig

        book = AgentBook.from_settings(settings.agents)
        tiers = [tier.name for tier in self.models.tiers()]
        book.check_tiers(tiers)
        if settings.bot_agents_router_tier is not None and settings.bot_agents_router_tier not in tiers:
            raise ConfigError(
                f"BOT_AGENTS_ROUTER_TIER {settings.bot_agents_router_tier!r} is not a tier of the chain "
                f"(tiers: {', '.join(tiers)})"
            )
        router = AgentRouter(
            book,
            self.models,
            self.prompts,
            RouterConfig(timeout=settings.bot_agents_route_timeout, tier=settings.bot_agents_router_tier),
        )
        return AgentDesk(
            book,
            router,
            AgentRepository(self.db),
            self.runtime_settings,
            self.prompts,
            self.tasks,
            DeskConfig(
                multi_at_start=settings.bot_agents_mode == "multi",
                max_tool_calls=settings.bot_agents_max_tool_calls,
                plan_seconds=settings.bot_agents_plan_seconds,
                max_answer_tokens=settings.bot_max_answer_tokens,
            ),
        )

    def _build_mcp(self, settings: Settings) -> McpServers | None:
        if not settings.mcp.servers:
            return None  # the MCP SDK is imported only by bots that use it
        from bot.tools.mcp.servers import McpServers

        return McpServers(settings.mcp.servers, self.tool_registry, log_dir=settings.log_file.parent)

    def _mcp_views(self) -> list[ServerView]:
        return self.mcp.views() if self.mcp is not None else []

    def _build_api(self, settings: Settings) -> None:
        # The web framework and the metrics library are imported only by bots
        # that serve the API (where /metrics is).
        from bot.channels.api.app import ApiImages, ApiServices
        from bot.channels.api.channel import ApiChannel
        from bot.metrics import MetricSources, Metrics

        self.metrics = Metrics(
            self.events,
            MetricSources(
                endpoints=self.models.health,
                reminders=self.reminder_scheduler.health,
                errors=lambda: self.error_log.count,
                refusals=lambda: dict(self.gates.refusals),
            ),
        )
        self.api = ApiChannel(
            ApiServices(
                keys=self.api_keys,
                users=self.users,
                inbound=self.inbound,
                memory=self.memory,
                reminders=self.reminders,
                userdata=self.userdata,
                tasks=self.tasks,
                metrics=self.metrics,
                linker=self.linker,
                max_body_bytes=settings.api_max_body_kb * 1024,
                images=ApiImages(image_limits(settings), self.models.can_see),
                eval_pages=self._eval_pages(settings),
            ),
            host=settings.api_host,
            port=settings.api_port,
            tasks=self.tasks,
        )
        self.channels.append(self.api)

    def _serve_webhook(self, settings: Settings, telegram: TelegramChannel) -> None:
        """Webhook mode: Telegram's updates arrive on API_HOST:API_PORT at
        WEBHOOK_URL's path, beside the HTTP API or on a server of their own."""
        from bot.channels.api.channel import HttpChannel
        from bot.channels.api.webhook import add_webhook_route, webhook_app

        assert settings.webhook_secret is not None
        if self.api is not None:
            app = self.api.app
        else:
            self.webhook_server = HttpChannel(
                webhook_app(), host=settings.api_host, port=settings.api_port, tasks=self.tasks
            )
            # After Telegram in the list: its stop refuses webhooks (503) before the server closes.
            self.channels.append(self.webhook_server)
            app = self.webhook_server.app
        add_webhook_route(
            app, settings.webhook_path, secret=settings.webhook_secret.get_secret_value(), accept=telegram.accept_update
        )

    def _eval_pages(self, settings: Settings) -> EvalPageServices:
        """The evaluation results page: it reads the runs that `eval run`
        (another process) writes to the database."""
        from bot.channels.api.eval_pages import AdminIds, EvalPageServices
        from bot.storage.eval_views import EvalPageQueries
        from bot.storage.evals import EvalRepository

        public = urlsplit(settings.api_public_root)
        return EvalPageServices(
            runs=EvalRepository(self.db),
            queries=EvalPageQueries(self.db),
            links=self.eval_links,
            keys=self.api_keys,
            is_admin=AdminIds(settings.bot_admin_ids, self.identities),
            prefix=public.path.rstrip("/"),
            secure_cookie=public.scheme == "https",
        )

    def _build_telegram(self, settings: Settings) -> None:
        assert settings.telegram_bot_token is not None
        self._build_broadcasts(settings)
        assert self.broadcaster is not None
        self.telegram = TelegramChannel(
            TelegramConfig(
                token=settings.telegram_bot_token.get_secret_value(),
                api_url=settings.telegram_api_url,
                max_concurrent_updates=settings.bot_max_concurrent_updates,
                draft_interval=settings.bot_draft_interval,
                edit_interval=settings.bot_edit_interval,
                paste_merge_window=settings.bot_paste_merge_window,
                poll_timeout=settings.bot_poll_timeout,
                admin_ids=settings.bot_admin_ids,
                webhook_url=settings.webhook_url if self._webhook_mode else None,
                webhook_secret=(
                    settings.webhook_secret.get_secret_value()
                    if self._webhook_mode and settings.webhook_secret else None
                ),
                redis_url=settings.redis_url.get_secret_value() if settings.redis_url else None,
                redis_prefix=settings.redis_prefix,
            ),
            inbound=self.inbound,
            tasks=self.tasks,
            documents=self.documents,
            photos=PhotoSettings(image_limits(settings), self.models.can_see),
            features=[
                ReminderHandlers(self.reminders),
                MemoryCommands(self.memory, self.userdata),
                RuntimeCommands(self.runtime, self.events),
                self._stats_commands(settings),
                AccessCommands(self.events, self.access, self.budget, self.audit_view),
                BackupCommands(self.events, lambda: self.periodic.run_guarded("backup", report=False), self.masker),
                BroadcastCommands(self.events, self.broadcaster),
                ApiKeyCommands(self.events, self.api_keys, self.users, settings.bot_admin_ids),
                LinkCommands(self.linker),
                AgentCommands(self.events, self.agents),
                EvalPageCommands(
                    self.events, self.eval_links, settings.api_public_root if settings.api_enabled else None
                ),
            ],
            voice=self._voice_settings(settings),
            inbox=self._telegram_inbox(),
        )
        # The bot exists once the channel has started; reminders fire after that.
        self.reminder_router.add(TELEGRAM, TelegramReminderNotifier(lambda: self._telegram_channel().application.bot))
        self.alerts.connect(self.telegram.send_to_admins)
        self.channels.append(self.telegram)

    def _telegram_inbox(self) -> UpdateInbox | None:
        """A single process keeps every update until handled; a worker's come
        from the broker, which keeps them itself."""
        if self._worker is not None:
            return None
        return UpdateInbox(UpdateClaims(self.db), self.messages, self.tasks)

    def _voice_settings(self, settings: Settings) -> VoiceSettings:
        # One Transcriber (its HTTP clients) serves every voice note; None: voice is not enabled.
        self.transcriber = Transcriber.from_settings(settings)
        return VoiceSettings(
            self.transcriber,
            VoiceLimits(settings.bot_voice_max_seconds, int(settings.bot_voice_max_mb * 1024 * 1024)),
            language_hint=settings.bot_voice_language_hint,
        )

    @property
    def plugins(self) -> list[PluginInfo]:
        """The plugins as last loaded (at start or by /reload)."""
        return self.runtime.plugins.plugins

    def _stats_commands(self, settings: Settings) -> StatsCommands:
        """/stats, /users and /health."""
        self.admin_stats = AdminStats(
            self.db,
            usage=self.usage,
            tool_events=self.tool_event_store,
            reminders=self.reminder_store,
            models=self.models,
            prices=prices_from(settings.model_prices),
            now=self.clock.now,
            # Always: the table exists in single-agent mode too, and turns
            # answered before agents were switched off still belong in /stats.
            agents=AgentRepository(self.db),
        )
        self.health = HealthMonitor(
            self.db, tasks=self.tasks, tools=self.tool_executor, errors=self.error_log, models=self.models,
            recovered=lambda: self.recovery.last,
            embedder=lambda: self.memory.embeddings.state(),
            mcp_servers=self._mcp_views,
            scaled=self._scaled_state,
        )
        return StatsCommands(
            self.events,
            stats=self.admin_stats,
            users=UserDirectory(self.db),
            health=self.health,
            secrets=settings.secrets(),
        )

    def _status(self) -> dict[str, object]:
        return {"version": __version__, "models": self.models.health(), "errors": self.error_log.snapshot()}

    def _build_events(self) -> None:
        # Statistics and audit writers: subscribers that write in batches.
        self.events = EventBus()
        self.usage = UsageRepository(self.db)
        self.audit_log = AuditRepository(self.db)
        self.usage_writer: BatchWriter[TurnFinished] = BatchWriter(self.usage.add_turns, self.tasks, name="usage")
        self.audit_writer: BatchWriter[AdminAction] = BatchWriter(
            self.audit_log.add_many, self.tasks, name="audit entries", flush_interval=0.2
        )
        self.events.subscribe(AdminAction, self.audit_writer.record)
        if not self._headless:  # evaluation turns stay out of usage and tool statistics
            self.events.subscribe(TurnFinished, self.usage_writer.record)
            self.events.subscribe(ToolEventRecord, self.tool_events.record)

    def _build_access(self, settings: Settings) -> None:
        # The gates of every message, in DESIGN.md's order: banned, allow-list,
        # rate limit, daily quota; and what the access admin commands change.
        refusal_notices = NoticeLimiter(REFUSAL_NOTICE_INTERVAL)
        mode = AccessMode(settings.bot_access_mode)
        self.invites = InviteRepository(self.db)
        self.access = AccessControl(
            mode=mode,
            users=self.users,
            invites=self.invites,
            auth=self.auth,
            refusal_notices=refusal_notices,
            invite_ttl=timedelta(hours=settings.bot_invite_ttl_hours) if settings.bot_invite_ttl_hours else None,
            now=self.clock.now,
        )
        self.rate_limiter = RateLimiter(settings.bot_rate_per_minute, settings.bot_rate_burst)
        self.budget = DailyBudget(
            self.usage.tokens_on, lambda: self.usage_writer.pending, default=settings.bot_daily_tokens, now=self.clock.now
        )
        self.audit_view = AuditView(self.audit_log, lambda: self.audit_writer.pending, self.users)
        self.gates = GateChain([
            BanCheck(refusal_notices),
            AllowListCheck(mode, self.invites, refusal_notices, NoticeLimiter(INVITE_NOTICE_INTERVAL), self.clock.now),
            RateLimitCheck(self.rate_limiter),
            QuotaCheck(self.budget),
        ])

    def _build_memory(self, settings: Settings, embedder: Embedder | None) -> None:
        remote = configured_endpoint(settings)

        def load() -> Embedder:
            if embedder is not None:
                return embedder
            if remote is not None:
                return ProviderEmbedder(remote)
            return load_embedder(
                settings.embedding_model,
                onnx=settings.bot_embedding_onnx,
                int8=settings.bot_embedding_int8,
                cache_dir=settings.bot_data_dir.resolve() / "models",
            )

        self.memory = MemoryService(
            MemoryRepository(self.db),
            EmbeddingService(load, self.tasks, cpus=self.cpus.embedder),
            self.tasks,
            MemoryConfig(
                index_dir=settings.bot_data_dir.resolve() / "memory",
                max_per_user=settings.bot_memory_max_per_user,
                policy=RecallPolicy(k=settings.bot_memory_recall_k),
                recall_wait=settings.bot_memory_recall_wait,
                cache_vectors=settings.bot_memory_cache_vectors,
                exact_search_max=settings.bot_memory_exact_search_max,
                ephemeral_days=settings.bot_memory_ephemeral_days,
            ),
            on_user_deletion=self.users.memory_read_until,
        )
        # The model's remember / recall / forget.
        self.memory_tools = MemoryTools(self.memory)
        for tool in self.memory_tools.functions():
            self.tool_registry.register(tool, plugin="memory", hints=MEMORY_HINTS)

    def _build_reminders(self, settings: Settings) -> None:
        # One APScheduler for reminder timers and periodic system tasks.
        self.scheduler = AsyncIOScheduler(timezone=pytz.utc)
        # Shared by every bulk sender (fired reminders and broadcasts).
        self.bulk_pacer = Pacer(settings.reminder_send_rate)
        self.reminder_store = ReminderRepository(self.db)
        # Each reminder goes out through the channel owning its chat; the
        # channels add themselves once built.
        self.reminder_router = ReminderRouter(self._telegram_chat_of)
        self.reminder_scheduler = ReminderScheduler(
            self.reminder_store,
            self.reminder_router,
            scheduler=self.scheduler,
            clock=self.clock,
            pacer=self.bulk_pacer,
            tasks=self.tasks,
            on_error=self.tasks.report_error,
            config=SchedulerConfig(
                horizon=timedelta(seconds=settings.reminder_horizon),
                refill_interval=float(settings.reminder_refill_interval),
                late_after=timedelta(seconds=settings.reminder_late_after),
                workers=settings.reminder_workers,
            ),
        )
        self.reminders = ReminderService(
            self.reminder_store, self.reminder_scheduler, self.clock, max_per_user=settings.reminder_max_per_user
        )
        # The model's create_reminder / list_reminders / cancel_reminder (registered by the tool registry).
        self.reminder_tools = ReminderTools(self.reminders)
        for tool in (self.reminder_tools.create_reminder, self.reminder_tools.list_reminders, self.reminder_tools.cancel_reminder):
            self.tool_registry.register(tool, plugin="reminders", hints=REMINDER_HINTS)
        self.periodic = PeriodicTasks(self.scheduler, self.clock, self.tasks.report_error)
        self.backups = BackupService(BackupConfig.from_settings(settings))
        self.system_jobs = SystemJobs(
            self.periodic, self.reminder_store, self.reminder_scheduler, self.clock,
            RetentionConfig(settings.reminder_retention_days, settings.bot_message_retention_days),
            backup=self.backups.run,
        )

    def _build_broadcasts(self, settings: Settings) -> None:
        # /broadcast: its own connection pool, paced by the shared bulk Pacer.
        assert settings.telegram_bot_token is not None
        self.bulk_sender = TelegramBulkSender(
            settings.telegram_bot_token.get_secret_value(), settings.telegram_api_url,
            connections=settings.broadcast_workers,
        )
        self.broadcaster = Broadcaster(
            BroadcastRepository(self.db, allow_list=settings.bot_access_mode == "allowlist"),
            self.bulk_sender,
            pacer=self.bulk_pacer,
            tasks=self.tasks,
            config=BroadcastConfig(
                batch=settings.broadcast_batch,
                workers=settings.broadcast_workers,
                progress_interval=settings.broadcast_progress_interval,
                max_attempts=settings.broadcast_max_attempts,
                retry_delay=settings.broadcast_retry_delay,
            ),
        )

    async def start(self) -> None:
        await self.db.migrate()
        await self.runtime.restore()  # before the first update: the chain and prompts as the admin left them
        if self.agents is not None:
            await self.agents.restore()  # multi-agent mode and the chats' pinned agents as they were
            for warning in self.agents.book.unknown_tools(self.tool_registry.tools()):
                log.warning("%s", warning)
        if self.mcp is not None:
            self.mcp.start(self.tasks)  # in the background: the bot answers before the servers are up
        self.memory.start()  # the embedder loads in the background; replies do not wait for it
        for channel in self.channels:
            await channel.start()
        if self.scaled is not None:
            # A worker: no start-up recovery (a cut-short turn is another
            # worker's until the broker hands its update over) and no polling.
            await self.scaled.start()
            self._started = True
            log.info("Arium worker %s is running (%s)", self._worker, self.cpus.describe())
            return
        if self._is_the_service:
            await self._start_scheduler()
        if self.broadcaster is not None:
            await self.broadcaster.start()  # broadcasts that were running when the bot stopped
        if not self._headless:
            await self._finish_cut_short_turns()  # before any chat's new messages
        if self._is_the_service and self.settings.bot_memory_extraction:
            await self._read_what_extraction_missed()
        for channel in self.channels:
            await channel.start_receiving()
        if self._console is None and not self._headless:  # the status file describes the bot's service process
            self.tasks.spawn(self.status.run(), "status-writer")
        self._started = True
        log.info("Arium is running: %s (%s)", ", ".join(c.name for c in self.channels), self.cpus.describe())

    async def _finish_cut_short_turns(self) -> None:
        report = await self.recovery.run(self.channels)
        if self.telegram is not None:
            # Then the updates received but never stored: after the turns above, before new ones.
            report = self.recovery.add_replayed(await self.telegram.handle_kept_updates())
        if report.total and self.telegram is not None:
            await self.telegram.send_to_admins(
                f"At start: {report.total} interrupted turn(s) finished (a crash, or a stop that ran out of time) "
                f"({report.answered} answered late, {report.noted} too old: asked to resend, {report.failed} failed, "
                f"{report.replayed} received but not yet stored, handled now)."
            )

    async def _read_what_extraction_missed(self) -> None:
        """Exchanges a crash left waiting for extraction (in the background:
        the start does not wait for the model)."""
        since = self.clock.now() - EXTRACTION_LOOKBACK
        backlog = await self.messages.extraction_backlog(since, per_user=MAX_BATCH_EXCHANGES)
        if started := self.turn_memory.recover(backlog):
            log.info("memory extraction picks up what %d user(s) said before the last stop", started)

    @property
    def _is_the_service(self) -> bool:
        """This process runs the scheduled work (backups, pruning, the daily
        check, reminders): it is `run`, or a console with no Telegram bot
        beside it. A console next to a configured bot leaves that to the bot."""
        if self._headless:
            return False
        return self._console is None or not self.settings.telegram_configured

    @property
    def _delivers_reminders(self) -> bool:
        """Telegram or the console deliver reminders; an API-only bot keeps
        them for its clients to list."""
        runs_schedules = self._is_the_service or self._worker is not None  # a worker: while it leads
        return runs_schedules and (self.telegram is not None or self._console is not None)

    async def _telegram_chat_of(self, user_id: int) -> int | None:
        """The private Telegram chat of a user, for reminders set where the
        bot cannot send (the API) or in a console that is not running."""
        telegram_id = (await self.identities.channels_of(user_id)).get(TELEGRAM)
        return int(telegram_id) if telegram_id is not None else None

    def _telegram_channel(self) -> TelegramChannel:
        assert self.telegram is not None
        return self.telegram

    async def _start_scheduler(self) -> None:
        settings = self.settings
        # APScheduler logs every job it adds and runs at INFO: one line per reminder.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        self.scheduler.start()
        self.system_jobs.schedule(
            timezone=settings.bot_timezone,
            prune_at=_hhmm(settings.bot_prune_time),
            backup_at=_hhmm(settings.bot_backup_time),
            health_at=_hhmm(settings.bot_health_time),
        )
        if self._delivers_reminders:
            await self.reminder_scheduler.start()

    async def _stop_scheduler(self) -> None:
        if self._delivers_reminders:
            await self.reminder_scheduler.stop(timeout=5)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def stop(self) -> None:
        """Stop taking messages, let replies in flight finish (bounded), release everything."""
        timeout = self.settings.bot_shutdown_timeout
        if self._started and self.scaled is not None:
            await self.scaled.stop()  # no new updates, then steps down (the scheduled work stops here)
        if self._started:
            if self.broadcaster is not None:
                await self.broadcaster.stop()  # sends in flight finish; unsent claims go back to pending
            await self._stop_scheduler()
            for channel in self.channels:
                await channel.stop(timeout)
            self.status.stop()
            if self.mcp is not None:
                await self.mcp.stop()  # no turn calls them now; a stdio server's process ends here
            self.turn_memory.flush_all()  # no new turns now; the drain below awaits these extractions
            await self.tasks.drain(timeout=5)
            for channel in self.channels:
                await channel.close()
            self._started = False
        writers: list[BatchWriter[Any]] = [self.tool_events, self.usage_writer, self.audit_writer]
        if self.agents is not None:
            writers.append(self.agents.records)
        for writer in writers:
            await writer.flush()
        if self.broadcaster is not None:
            await self.bulk_sender.close()
        if self.mcp is not None:
            await self.mcp.stop()  # again, for a start that failed before the drain: a no-op otherwise
        self.stuck_tools = await self.tool_executor.shutdown(grace=min(timeout, 5.0))
        await self.memory.close()  # after the drain: extraction in flight has written its vectors
        await self.models.aclose()
        if self.transcriber is not None:
            await self.transcriber.aclose()
        await self.db.dispose()

    async def freeze_startup_heap(self, embedder_wait: float = 300.0) -> None:
        """Move what start-up built (modules, the embedding model's ~600k
        objects) out of the garbage collector's reach. Otherwise every full
        collection walks them all: measured 0.48 s per gen-2 pass during a
        200-chat burst, a stall of every chat at once. Done twice: now, and
        once the embedder (loading in a thread) is ready. Only for a real run:
        tests build many apps in one process and need theirs collected."""
        gc.freeze()
        await self.memory.embeddings.wait_ready(embedder_wait)
        gc.freeze()

    async def run_console(self) -> None:
        """``python -m bot console``: serve the terminal until end of input
        (Ctrl-D, or the end of piped input), then stop like the service does."""
        assert self._console is not None, "built without a console"
        await self.start()
        try:
            await self._console.serve()
        finally:
            await self.stop()

    async def run_until_signal(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        self.tasks.spawn(self.freeze_startup_heap(), "gc-freeze")
        try:
            await stop.wait()
            log.info("stopping: finishing replies in flight")
        finally:
            await self.stop()
        log.info("stopped")
