"""`python -m bot doctor`: check every outside dependency and say what is wrong."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from bot.errors import AriumError
from bot.settings import EndpointSettings, McpServerSettings, Settings

Report = Callable[[str], None]
CHECK_TIMEOUT = 15.0
# The nightly backup runs once a day; two days without one means it fails.
BACKUP_STALE_AFTER = timedelta(hours=48)
# Free space below twice the data (a backup's worth plus room to grow) plus this fails.
DISK_MARGIN = 100 * 1024 * 1024


async def _check(
    report: Report, label: str, probe: Callable[[], Awaitable[str]], timeout: float = CHECK_TIMEOUT
) -> bool:
    try:
        detail = await asyncio.wait_for(probe(), timeout)
    except TimeoutError:
        report(f"FAIL {label}: no answer within {timeout:.0f} s")
        return False
    except AriumError as exc:
        report(f"FAIL {label}: {exc}")
        return False
    except Exception as exc:  # a doctor reports every failure instead of crashing on it
        report(f"FAIL {label}: {exc.__class__.__name__}: {exc}")
        return False
    report(f"ok   {label}: {detail}")
    return True


async def run_doctor(settings: Settings, report: Report, *, plugin_packages: tuple[str, ...] | None = None) -> int:
    ok = True
    missing = settings.missing_for_run(telegram=settings.serves_telegram)
    if missing:
        report(f"FAIL settings: missing {', '.join(missing)}")
        ok = False
    else:
        report("ok   settings: everything `run` needs is set")
    ok &= await _check(report, "data dir", lambda: _data_dir(settings.bot_data_dir))
    ok &= await _check(report, "database", lambda: _database(settings))
    ok &= await _check(report, "log dir", lambda: _writable_dir(settings.log_file.parent))
    ok &= await _check(report, "backups dir", lambda: _writable_dir(settings.backups_dir))
    ok &= _last_backup(settings, report)
    ok &= await _check(report, "disk", lambda: _disk(settings))
    ok &= await _check(report, "prompts", _prompts)
    ok &= await _check(report, "embedding model", lambda: _embedding_model(settings))
    ok &= _plugins(settings, report, plugin_packages)
    for name, server in settings.mcp.servers.items():
        if not server.enabled:
            report(f"info mcp {name}: disabled in the configuration")
            continue
        ok &= await _check(
            report, f"mcp {name}", lambda n=name, c=server: _mcp_server(settings, n, c), server.connect_timeout + 15
        )
    for tier in settings.tiers():
        for endpoint in tier.endpoints:
            label = f"model {endpoint.provider}:{endpoint.model}"
            ok &= await _check(report, label, lambda e=endpoint: _model(settings, e))
    if settings.telegram_bot_token:
        ok &= await _check(report, "telegram", lambda: _telegram(settings))
    # The scaled mode (BROKER_URL, REDIS_URL): RabbitMQ, Redis, PostgreSQL, the leader.
    from bot.scale.doctor import check_scaled_mode

    ok &= await check_scaled_mode(settings, report)
    _report_running_bot(settings, report)
    report("all checks passed" if ok else "some checks failed")
    return 0 if ok else 1


async def _embedding_model(settings: Settings) -> str:
    """A provider is asked for one vector; a local model is only looked up
    (loading it takes seconds on a first start, and the bot does that)."""
    from bot.memory.embedder import resolve_model
    from bot.memory.provider_embedder import ProviderEmbedder, configured_endpoint

    remote = configured_endpoint(settings)
    if remote is not None:
        embedder = await asyncio.to_thread(ProviderEmbedder, remote)
        return f"{embedder.name} answers ({embedder.dim} dimensions)"
    path, name = resolve_model(settings.embedding_model)
    if Path(path).is_dir():
        return f"{name} at {path}"
    if "/" in path and not path.startswith(("/", ".")):
        return f"{name}: a model name, loaded from the local Hugging Face cache only (never downloaded)"
    raise AriumError(f"{path} is not a folder (EMBEDDING_MODEL); memory would use keyword search only")


async def _data_dir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise AriumError(f"{path} is not writable")
    return f"{path.resolve()} is writable"


async def _writable_dir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".doctor-probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise AriumError(f"{path} is not writable ({exc.strerror})") from None
    return f"{path} is writable"


def _last_backup(settings: Settings, report: Report) -> bool:
    from bot.admin.backup import backup_age, list_backups

    found = backup_age(settings.backups_dir)
    if found is None:
        report(f"info last backup: none yet (nightly at {settings.bot_backup_time}, or /backup, or `python -m bot backup`)")
        return True
    path, age = found
    hours = age.total_seconds() / 3600
    kept = len(list_backups(settings.backups_dir))
    detail = f"{path.name}, {hours:.0f} h ago ({kept} kept, at most {settings.bot_backup_keep})"
    if age > BACKUP_STALE_AFTER:
        report(f"FAIL last backup: {detail}; the nightly backup at {settings.bot_backup_time} has not run since (is the bot running? see the log)")
        return False
    report(f"ok   last backup: {detail}")
    return True


async def _disk(settings: Settings) -> str:
    from bot.admin.backup import sqlite_path, tree_size
    from bot.runtime.units import human_size

    data_dir = settings.bot_data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(data_dir)

    def data_size() -> int:
        size = 0
        database = sqlite_path(settings.effective_database_url)
        if database is not None:
            size += sum(tree_size(p) for p in (database, Path(f"{database}-wal")) if p.is_file())
        for part in ("memory", "files"):
            if (data_dir / part).is_dir():
                size += tree_size(data_dir / part)
        return size

    data = await asyncio.to_thread(data_size)
    need = 2 * data + DISK_MARGIN
    free = f"{human_size(usage.free)} free of {human_size(usage.total)} under {data_dir}"
    if usage.free < need:
        raise AriumError(
            f"{free}: a backup needs about {human_size(data)} plus room to grow; "
            "free some space (older backups in backups/, old logs)"
        )
    return f"{free}; the data takes {human_size(data)}"


async def _database(settings: Settings) -> str:
    from bot.storage.db import check_database_url
    from bot.storage.db import Database

    check_database_url(settings.effective_database_url)
    db = Database(settings.effective_database_url)
    try:
        await db.ping()
        pending = await db.pending_migrations()
    finally:
        await db.dispose()
    if pending:
        return f"reachable; {len(pending)} migration(s) pending, applied at start or by `python -m bot migrate`"
    return "reachable, schema up to date"


async def _prompts() -> str:
    from bot.prompts import PromptRegistry

    names = PromptRegistry().names()
    return ", ".join(f"{name} v{max(versions)}" for name, versions in sorted(names.items()))


def load_for_report(settings: Settings, packages: tuple[str, ...] | None = None) -> tuple[list[Any], Any]:
    """Load every plugin as `run` would (without starting anything): the
    plugin reports and the registry they filled."""
    from bot.tools.plugins import PLUGIN_PACKAGES, load_plugins
    from bot.tools.registry import ToolRegistry
    from bot.tools.sandbox import FileSandbox, SandboxLimits

    registry = ToolRegistry(
        {FileSandbox: FileSandbox(settings.bot_data_dir / "files", SandboxLimits())},
        disabled=settings.bot_tools_disabled,
    )
    return load_plugins(registry, packages or PLUGIN_PACKAGES), registry


def _plugins(settings: Settings, report: Report, packages: tuple[str, ...] | None) -> bool:
    """A broken plugin is named with its error; the rest are listed."""
    infos, registry = load_for_report(settings, packages)
    for info in infos:
        if not info.ok:
            report(f"FAIL plugin {info.name}: {info.error} (skipped at run time)")
    loaded = [f"{info.name.removeprefix('plugins.')} ({', '.join(info.tools) or 'no tools'})" for info in infos if info.ok]
    disabled = f"; disabled: {', '.join(registry.skipped)}" if registry.skipped else ""
    report(f"ok   plugins: {'; '.join(loaded) or 'none'}{disabled}")
    return all(info.ok for info in infos)


async def _mcp_server(settings: Settings, name: str, config: McpServerSettings) -> str:
    """Starts (or reaches) the server as the bot would, lists its tools, stops it."""
    from bot.tools.mcp.server import probe_server

    view = await probe_server(name, config, settings.log_file.parent)
    shown = ", ".join(view.tools[:12]) + (f" … +{len(view.tools) - 12}" if len(view.tools) > 12 else "")
    skipped = f"; not offered: {'; '.join(view.skipped)}" if view.skipped else ""
    return f"{view.transport}, {len(view.tools)} tools: {shown or 'none'}{skipped}"


async def _model(settings: Settings, endpoint: EndpointSettings) -> str:
    from bot.llm.service import build_provider

    provider = build_provider(endpoint, settings)
    try:
        models = await provider.list_models()
    finally:
        await provider.aclose()
    if models and endpoint.model not in models and not endpoint.model.endswith("-latest"):
        return f"reachable, but {endpoint.model!r} is not among the {len(models)} models it lists"
    return f"reachable at {provider.endpoint}"


async def _telegram(settings: Settings) -> str:
    from bot.channels.telegram.probe import get_me

    assert settings.telegram_bot_token is not None
    return await get_me(settings.telegram_bot_token.get_secret_value(), settings.telegram_api_url)


def _report_running_bot(settings: Settings, report: Report) -> None:
    """Live model health from the running bot's status file, if it runs."""
    from bot.runtime.status import read_status

    status = read_status(settings.bot_data_dir)
    if status is None:
        report("info running bot: none (no fresh status file)")
        return
    report(f"info running bot: pid {status.get('pid')}, version {status.get('version')}")
    errors = status.get("errors") or {}
    last = errors.get("last") if isinstance(errors, dict) else None
    if isinstance(last, dict):
        report(f"info   errors since start: {errors.get('count')}; last at {last.get('at')}: {last.get('summary')}")
    for model in status.get("models", []):
        errors = ", ".join(f"{k} {v}" for k, v in (model.get("errors") or {}).items()) or "none"
        latency = model.get("latency_p50")
        timing = f", p50 {latency * 1000:.0f} ms" if isinstance(latency, (int, float)) else ""
        report(
            f"info   {model.get('tier')} {model.get('model')}: breaker {model.get('breaker')}, "
            f"{model.get('requests')} requests{timing}, errors: {errors}"
        )
