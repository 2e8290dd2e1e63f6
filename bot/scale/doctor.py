"""`python -m bot doctor`, the scaled mode's part: RabbitMQ (BROKER_URL),
Redis (REDIS_URL), PostgreSQL as the database, and which worker leads.
Nothing is reported when neither BROKER_URL nor REDIS_URL is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from bot.errors import AriumError
from bot.settings import Settings

Report = Callable[[str], None]
HASH_EXCHANGE = "x-consistent-hash"  # the same as bot.scale.broker's
PLUGIN_HINT = "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"
CONNECT_TIMEOUT = 5.0
PARTITIONS_PER_LINE = 16


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def where(url: str, default_port: int) -> str:
    """host:port/path of a URL, never its user or password."""
    parts = urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError:
        raise AriumError("the URL's port is not a number") from None
    return f"{parts.hostname or '?'}:{port}{parts.path or '/'}"


async def check_scaled_mode(settings: Settings, report: Report, *, exchange_type: str = HASH_EXCHANGE) -> bool:
    """Every check of the scaled mode; True when all passed (also when there
    is nothing to check). ``exchange_type``: tests name a missing one."""
    from bot.doctor import _check

    broker, redis_url = _secret(settings.broker_url), _secret(settings.redis_url)
    if not broker and not redis_url:
        return True
    postgres = await _check(report, "scaled mode database", lambda: _postgres(settings))
    ok = postgres
    if broker:
        lines: list[str] = []
        ok &= await _check(report, "rabbitmq", lambda: _rabbitmq(settings, lines, exchange_type))
        for line in lines:
            report(line)
        if postgres:  # who runs the reminders and the other scheduled work
            ok &= await _check(report, "scheduler leader", lambda: _leader(settings))
    if redis_url:
        ok &= await _check(report, "redis", lambda: _redis(redis_url))
    return ok


async def _postgres(settings: Settings) -> str:
    from bot.scale.leader import require_postgres

    try:
        require_postgres(settings.effective_database_url)
    except AriumError as exc:
        raise AriumError(f"{exc} (workers refuse SQLite; a machine that runs only the gateway needs no database)") from None
    return "PostgreSQL, as the workers need"


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The AMQP client logs a refused declaration as a crash; the doctor says it in one line."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


async def _rabbitmq(settings: Settings, lines: list[str], exchange_type: str) -> str:
    """Connects, declares a throwaway exchange of the consistent-hash type,
    and reads each partition queue's messages and consumers (passive
    declarations: nothing is created). Per-partition counts go to ``lines``."""
    import aio_pika
    from aiormq.exceptions import ChannelNotFoundEntity, ConnectionCommandInvalid

    url = _secret(settings.broker_url)
    at = where(url, 5672)
    with _quiet("aiormq", "aio_pika"):
        connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
        try:
            channel = await connection.channel()
            probe = f"{settings.broker_prefix}.doctor-{uuid.uuid4().hex[:8]}"
            try:
                exchange = await channel.declare_exchange(probe, exchange_type, auto_delete=True)
            except ConnectionCommandInvalid:
                raise AriumError(
                    f"{at} has no {exchange_type} exchange type; on the RabbitMQ server run: {PLUGIN_HINT}"
                ) from None
            await exchange.delete()
            counts = await _partition_counts(connection, settings, ChannelNotFoundEntity)
        finally:
            await connection.close()
    found = {number: c for number, c in counts.items() if c is not None and number < settings.broker_partitions}
    exchange_name = f"{settings.broker_prefix}.updates"
    if not found:
        return f"{at} reachable, {exchange_type} available; no partition queues of {exchange_name} yet (the first gateway or worker declares them)"
    for start in range(0, settings.broker_partitions, PARTITIONS_PER_LINE):
        stop = min(start + PARTITIONS_PER_LINE, settings.broker_partitions) - 1
        shown = " ".join("-" if counts.get(n) is None else "{}/{}".format(*counts[n]) for n in range(start, stop + 1))
        lines.append(f"info   {exchange_name}.{start}-{stop} (messages/consumers): {shown}")
    if counts.get(settings.broker_partitions) is not None:
        raise AriumError(
            f"{exchange_name}.{settings.broker_partitions} exists, beyond BROKER_PARTITIONS={settings.broker_partitions}: "
            "an earlier, larger setting? Updates hashed to it are never consumed; use the same BROKER_PARTITIONS "
            "everywhere (or delete the extra queues once they are empty)"
        )
    missing = settings.broker_partitions - len(found)
    if missing:
        raise AriumError(
            f"{missing} of the {settings.broker_partitions} partition queues of {exchange_name} are missing; "
            "starting a gateway or worker declares them"
        )
    waiting = sum(messages for messages, _ in found.values())
    consumers = [consumers for _, consumers in found.values()]
    attached = (
        "no worker is consuming them"
        if not any(consumers)
        else f"{min(consumers)}-{max(consumers)} workers attached to each"
        if min(consumers) != max(consumers)
        else f"{consumers[0]} worker(s) attached to each (one active per partition)"
    )
    return (
        f"{at} reachable, {exchange_type} available; {len(found)} partition queues, "
        f"{waiting} updates waiting, {attached}"
    )


async def _partition_counts(
    connection: Any, settings: Settings, not_found: type[Exception]
) -> dict[int, tuple[int, int] | None]:
    """(messages, consumers) of queues 0..partitions (one past the setting:
    a sign of an earlier, larger one); None for a queue that does not exist."""
    counts: dict[int, tuple[int, int] | None] = {}
    channel = await connection.channel()
    for number in range(settings.broker_partitions + 1):
        try:
            queue = await channel.declare_queue(f"{settings.broker_prefix}.updates.{number}", passive=True)
        except not_found:
            counts[number] = None
            channel = await connection.channel()  # a failed passive declaration closes the channel
            continue
        result = queue.declaration_result
        counts[number] = (result.message_count or 0, result.consumer_count or 0)
    return counts


async def _leader(settings: Settings) -> str:
    from bot.runtime.tasks import TaskTracker
    from bot.scale.leader import LeaderElection

    async def nothing() -> None:
        return None

    election = LeaderElection(
        settings.effective_database_url,
        tasks=TaskTracker(),
        on_elected=nothing,
        on_deposed=nothing,
        namespace=settings.broker_prefix,  # as the workers elect
    )
    leader = await election.current_leader()
    if leader is None:
        return "none: no worker runs (reminders and broadcasts wait for one)"
    return f"{leader} runs reminders, periodic jobs and broadcasts"


async def _redis(url: str) -> str:
    at = where(url, 6379)
    try:
        import redis.asyncio as aioredis
    except ImportError:
        await raw_ping(url)
        return f"{at} answers PING"
    client = aioredis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=CONNECT_TIMEOUT)
    try:
        await client.ping()
        info = await client.info("server")
    finally:
        close = getattr(client, "aclose", None) or client.close
        await close()
    return f"{at} answers PING (Redis {info.get('redis_version', '?')})"


def _command(*words: str) -> bytes:
    """One command in RESP, Redis's protocol."""
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def raw_ping(url: str) -> None:
    """PING over a plain socket (AUTH first when the URL has a password),
    for when the redis package is not installed."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise AriumError(f"REDIS_URL must start with redis:// or rediss:// to be checked without the redis package (not {parts.scheme}://)")
    context = ssl.create_default_context() if parts.scheme == "rediss" else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context), CONNECT_TIMEOUT
    )
    try:
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            writer.write(_command("AUTH", *([user] if user else []), unquote(parts.password)))
            # A server without a password refuses AUTH yet serves; the redis package goes on too.
            await _expect(reader, b"+OK", unless=b"without any password configured")
        writer.write(_command("PING"))
        await _expect(reader, b"+PONG")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _expect(reader: asyncio.StreamReader, answer: bytes, *, unless: bytes | None = None) -> None:
    line = (await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)).rstrip(b"\r\n")
    if line != answer and not (unless and unless in line):
        text = line.decode(errors="replace").lstrip("-") or "the connection closed"
        raise AriumError(f"answered {text[:200]!r} instead of {answer.decode()[1:]}")
