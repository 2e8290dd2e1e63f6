"""The scaled mode end to end: `python -m bot gateway` and three
`python -m bot worker` processes against the fake Bot API (in webhook
mode), the fake model server, and the real RabbitMQ and PostgreSQL on
127.0.0.1. Many chats answered once each and in order; a worker killed with
SIGKILL in the middle of turns loses nothing and repeats nothing; the
scheduler's leader killed with reminders due: they fire once, on another
worker."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bot.scale.broker import Topology, remove
from tests.conftest import reset_postgres
from tests.fakes.model_server import FakeModelServer, Reply, Request
from tests.fakes.telegram_server import FakeTelegram
from tests.limits import WAIT_LIMIT
from tests.support.broker import BROKER, broker_up
from tests.support.processes import FAKE_EMBEDDINGS, REPO, clean_env

REDIS = "redis://127.0.0.1:6379/0"
SECRET = "scaled-test-secret"
WORKERS = 3
PARTITIONS = 8

Process = asyncio.subprocess.Process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def redis_up() -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", 6379), 3)
    except (OSError, TimeoutError):
        return False
    writer.write(b"PING\r\n")
    answer = await reader.readline()
    writer.close()
    return answer.startswith(b"+PONG")


class Cluster:
    """The processes of one scaled bot: a gateway and workers sharing one
    database, one broker prefix and the fakes."""

    def __init__(self, tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, database_url: str) -> None:
        self.prefix = f"test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.processes: dict[str, Process] = {}
        self._tmp = tmp_path
        self._env = dict(
            PYTHONPATH=str(REPO), TELEGRAM_BOT_TOKEN=tg.TOKEN, TELEGRAM_API_URL=tg.url,
            BOT_MODELS="openai:gpt-4o-mini", OPENAI_API_KEY="test-key", OPENAI_BASE_URL=model.openai_base_url,
            BOT_MEMORY_EXTRACTION="false", EMBEDDING_MODEL=FAKE_EMBEDDINGS, DATABASE_URL=database_url,
            WEBHOOK_URL=f"http://127.0.0.1:{self.port}/telegram/{uuid.uuid4().hex[:8]}", WEBHOOK_SECRET=SECRET,
            BROKER_URL=BROKER, BROKER_PREFIX=self.prefix, BROKER_PARTITIONS=str(PARTITIONS),
            API_HOST="127.0.0.1", API_PORT=str(self.port), BOT_ADMIN_IDS="",
            REMINDER_REFILL_INTERVAL="1", BOT_DB_POOL_SIZE="4",  # three workers under max_connections, beside other runs
            # Telegram's limits shared by the workers (the fake enforces them: 429 past them).
            REDIS_URL=REDIS, REDIS_PREFIX=f"test-{uuid.uuid4().hex[:10]}",
        )

    async def start(self, name: str, *command: str) -> Process:
        folder = self._tmp / name
        folder.mkdir(exist_ok=True)
        env = clean_env(folder, **self._env)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *command,
            cwd=folder, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=open(folder / "stderr.log", "wb"),  # noqa: SIM115 - the child owns it
        )
        self.processes[name] = process
        return process

    async def kill(self, name: str) -> None:
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.wait_for(process.wait(), WAIT_LIMIT)

    async def stop_all(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), WAIT_LIMIT)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def consumers(self) -> list[int]:
        """How many consumers each partition queue has (0 for one not declared yet)."""
        connection = await aio_pika.connect(BROKER)
        counts = []
        try:
            for number in range(PARTITIONS):
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(f"{self.prefix}.updates.{number}", passive=True)
                    counts.append(queue.declaration_result.consumer_count)
                except aio_pika.exceptions.ChannelClosed:
                    counts.append(0)
        finally:
            await connection.close()
        return counts

    async def delete_topology(self) -> None:
        connection = await aio_pika.connect(BROKER)
        await remove(await connection.channel(), Topology(self.prefix, PARTITIONS))
        await connection.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{(self._tmp / name / 'stderr.log').read_text(errors='replace')[-3000:]}"
            for name in self.processes
        )


@pytest.fixture
async def cluster(
    tmp_path: Path, tg: FakeTelegram, model: FakeModelServer, postgres_url: str | None
) -> AsyncIterator[Cluster]:
    if postgres_url is None:
        pytest.skip("the scaled mode needs PostgreSQL: set TEST_DATABASE_URL")
    if not await broker_up():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    if not await redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    await reset_postgres(postgres_url)
    made = Cluster(tmp_path, tg, model, postgres_url)
    try:
        yield made
    finally:
        await made.stop_all()
        await made.delete_topology()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, cluster: Cluster, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached\n{cluster.logs()}")
        await asyncio.sleep(0.1)


async def leader_of(database_url: str) -> str | None:
    """The worker whose connection holds the scheduler's lock, by the name in its application_name."""
    connection = await connect(database_url)
    try:
        names = await connection.fetch(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'arium-leader%'"
        )
    finally:
        await connection.close()
    return next((row["application_name"].rsplit(":", 1)[-1] for row in names), None)


def answer_to(request: Request) -> Reply:
    """Each message answered with itself, a moment later (turns overlap)."""
    return Reply(text=f"re: {request.last_user_text}", delay=0.3)


# Four processes start, 212 turns, a worker and then the leader killed: more than the default 120 s on a busy machine.
@pytest.mark.timeout(300)
async def test_a_gateway_and_three_workers_answer_every_message_once_in_order_through_crashes(
    cluster: Cluster, tg: FakeTelegram, model: FakeModelServer, postgres_url: str
) -> None:
    model.responder = answer_to
    tg.enforce_limits()  # 429 past Telegram's limits, as Telegram does
    await cluster.start("gateway", "gateway")
    for number in range(1, WORKERS + 1):
        await cluster.start(f"w{number}", "worker", "--name", f"w{number}")

    async def ready() -> bool:
        return tg.webhook is not None and all(count == WORKERS for count in await cluster.consumers())

    await wait_until(ready, "the gateway's webhook and every worker consuming", cluster, WAIT_LIMIT * 6)

    # The first worker to start holds every partition until the others take
    # their share: chats keep coming, one message each, until all three answer.
    chats = [10_000 + n for n in range(50)]
    rounds = 0

    async def spread() -> bool:
        nonlocal rounds
        rounds += 1
        for chat in chats:
            tg.user_text(f"hello {rounds} from {chat}", chat_id=chat, user_id=chat)
        await tg.wait_for(lambda: all(len(tg.messages(chat)) >= rounds for chat in chats), timeout=WAIT_LIMIT * 3)
        return len(await workers_that_claimed(postgres_url)) == WORKERS

    await wait_until(spread, "the chats spread over the three workers", cluster, WAIT_LIMIT * 6)
    for chat in chats:
        assert [m.text for m in tg.messages(chat)] == [f"re: hello {n} from {chat}" for n in range(1, rounds + 1)]
    greeted = rounds

    # 50 chats x 4 messages, all at once.
    for turn in range(4):
        for chat in chats:
            tg.user_text(f"message {turn} of {chat}", chat_id=chat, user_id=chat)

    async def all_answered() -> bool:
        return all(len(tg.messages(chat)) >= greeted + 4 for chat in chats)

    await wait_until(all_answered, "200 answers", cluster, WAIT_LIMIT * 6)
    for chat in chats:
        texts = [m.text for m in tg.messages(chat)][greeted:]
        assert texts == [f"re: message {turn} of {chat}" for turn in range(4)], chat

    # A worker killed with turns in flight: each of them is still answered once.
    slow_chats = [20_000 + n for n in range(12)]
    model.responder = lambda request: Reply(text=f"re: {request.last_user_text}", delay=2.0)
    for chat in slow_chats:
        tg.user_text(f"slow question of {chat}", chat_id=chat, user_id=chat)
    asked = len(model.chat_requests())

    async def turns_in_flight() -> bool:
        return len(model.chat_requests()) >= asked + 6

    await wait_until(turns_in_flight, "turns in flight", cluster, WAIT_LIMIT * 3)
    leading = await leader_of(postgres_url)
    victim = next(name for name in ("w1", "w2", "w3") if name != leading)
    await cluster.kill(victim)

    async def slow_answered() -> bool:
        return all(len(tg.messages(chat)) >= 1 for chat in slow_chats)

    await wait_until(slow_answered, "every slow question answered", cluster, WAIT_LIMIT * 6)
    for chat in slow_chats:
        texts = [m.text for m in tg.messages(chat)]
        assert len(texts) == 1 and texts[0].endswith(f"re: slow question of {chat}"), (chat, texts)

    # The leader killed with reminders due: they fire once, on another worker.
    model.responder = answer_to
    leader = await leader_of(postgres_url)
    assert leader is not None and leader != victim
    owners = [30_000 + n for n in range(5)]
    for chat in owners:
        tg.user_text("hello", chat_id=chat, user_id=chat)  # users and chats the reminders belong to

    async def greeted() -> bool:
        return all(len(tg.messages(chat)) >= 1 for chat in owners)

    await wait_until(greeted, "the owners greeted", cluster, WAIT_LIMIT * 3)
    await insert_reminders(postgres_url, owners, due_in=6.0)
    await cluster.kill(leader)

    async def new_leader() -> bool:
        return (await leader_of(postgres_url)) not in (None, leader)

    await wait_until(new_leader, "another leader", cluster, 10 + WAIT_LIMIT)

    async def fired() -> bool:
        return all(len(tg.messages(chat)) >= 2 for chat in owners)

    await wait_until(fired, "the reminders fired", cluster, WAIT_LIMIT * 4)
    for chat in owners:
        texts = [m.text for m in tg.messages(chat)]
        assert len(texts) == 2 and "stretch your legs" in texts[1], (chat, texts)
    async def recorded_once() -> bool:  # the leader records deliveries in batches, after the sends
        return await fired_counts(postgres_url) == [1] * len(owners)

    await wait_until(recorded_once, "each reminder recorded as fired once", cluster, WAIT_LIMIT * 2)
    # Every answer arrived once and in order although the fake answered 429
    # past Telegram's limits: a worker told to wait did, and sent again. (That
    # workers sharing the limits through Redis stay under them, measured at
    # the sender, is tests/test_shared_limits.py's: here, with five
    # processes on two busy cores, sends spaced right at a worker can arrive
    # bunched at the fake.)

async def connect(database_url: str) -> asyncpg.Connection:
    url = make_url(database_url)
    return await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )


async def insert_reminders(database_url: str, chats: list[int], *, due_in: float) -> None:
    connection = await connect(database_url)
    try:
        await connection.executemany(
            "INSERT INTO reminders (user_id, chat_id, channel, text, timezone, status, next_fire_at, revision,"
            " attempts, fire_count, created_at, updated_at)"
            " VALUES ($1, $1, 'telegram', 'stretch your legs', 'UTC', 'active',"
            " now() + make_interval(secs => $2), 0, 0, 0, now(), now())",
            [(chat, due_in) for chat in chats],
        )
    finally:
        await connection.close()


async def fired_counts(database_url: str) -> list[int]:
    connection = await connect(database_url)
    try:
        return [row["fire_count"] for row in await connection.fetch("SELECT fire_count FROM reminders ORDER BY id")]
    finally:
        await connection.close()


async def workers_that_claimed(database_url: str) -> set[str]:
    connection = await connect(database_url)
    try:
        return {row["worker"] for row in await connection.fetch("SELECT DISTINCT worker FROM telegram_updates")}
    finally:
        await connection.close()
