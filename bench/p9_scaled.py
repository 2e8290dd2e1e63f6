"""P9: the scaled mode (`python -m bot gateway` + `python -m bot worker`),
beside the same bot as one process in webhook mode (`python -m bot run`).

Every bot is a real subprocess against the protocol fakes of this process
(tests/fakes: the fake Bot API in webhook mode POSTs updates to the bot one
at a time, in order, each waiting for the 200; the fake model server) and
the real RabbitMQ, PostgreSQL and Redis on 127.0.0.1. Each deployment gets
its own database (created here, dropped at the end), its own broker prefix
(queues and exchange deleted at the end) and its own Redis prefix.

1. Throughput, model instant: for the single process, 1, 2 and 4 workers
   (and 2 workers with Redis's shared Telegram limits), a fresh deployment
   each; start-up excluded: the chats are greeted first and, with several
   workers, warm-up rounds run until the partitions are spread (every
   worker claims updates, and the chat -> worker map is the same in two
   rounds a balance interval apart). Then 600 updates (200 chats x 3),
   enqueued at once: updates/s from the first enqueued to the last answer,
   and the gateway's intake (updates/s the webhook accepted), so the table
   shows which side limits; CPU per update of each process.
2. The P2 burst on the same deployment afterwards: 200 new chats, one
   message each, the model answering in 2 s: wall time to the last answer,
   as a ratio to the single process.
3. Added latency: the single process, gateway + 1 worker, and gateway + 1
   worker with Redis, all running at once (each on its own fake Bot API),
   one message at a time, rounds interleaved in a shuffled order: enqueue
   -> answer per update; p50/p99 of each and of the per-round difference.

4. RabbitMQ alone: publish -> confirm (transient, persistent, and the
   gateway's own UpdatePublisher.publish), to split the added latency.

Redis (Telegram's limits shared by the workers) is off except in the
"+ Redis" rows: its limiter paces every reply to 30/s overall and 1/s per
chat, which would hide what the workers can do. BROKER_PARTITIONS is the
default; BOT_DB_POOL_SIZE too, unless workers x 2 x pool (+1 each) would not
fit PostgreSQL's max_connections (settings.py's rule): then the largest pool
that fits (10 for 4 workers on a default server). Each deployment's
warnings and errors are counted from its logs; CPU per update is read from
/proc for the bot's processes, this database's PostgreSQL backends, the
whole RabbitMQ and Redis servers, and this process (the fakes), beside the
whole machine's busy time.

    .venv/bin/python -m bench.p9_scaled            # ~5-6 minutes
    .venv/bin/python -m bench.p9_scaled --quick    # fewer updates and rounds (~3 min)
    .venv/bin/python -m bench.p9_scaled --workers 1,2 --only throughput   # some deployments, no burst or latency
    .venv/bin/python -m bench.p9_scaled --py-spy /tmp/p9 --keep-logs /tmp/p9logs   # py-spy the 1-worker run (py-spy on PATH)

PostgreSQL: P9_DATABASE_SERVER (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg

from bot.scale.broker import Topology, remove
from bench.harness import percentile
from tests.fakes.model_server import FakeModelServer, Reply, Request
from tests.fakes.telegram_server import Call, FakeTelegram
from tests.test_operations import FAKE_EMBEDDINGS, REPO, clean_env
from tests.test_scaled import BROKER, REDIS, SECRET, broker_up, free_port, redis_up

SERVER = os.environ.get("P9_DATABASE_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE_PREFIX = "arium_bench_"
BALANCE_INTERVAL = 3.0  # bot/scale/runner.py
MODEL_SECONDS = 2.0  # P2
ANSWER = "re:"
CLK = os.sysconf("SC_CLK_TCK")
DEFAULT_POOL = 20  # BOT_DB_POOL_SIZE's default (bot/settings.py)
RESERVED_CONNECTIONS = 3  # PostgreSQL's superuser_reserved_connections default
SPARE_CONNECTIONS = 10

Process = asyncio.subprocess.Process


def instant(request: Request) -> Reply:
    return Reply(text=f"{ANSWER} {request.last_user_text}")


def slow(request: Request) -> Reply:
    return Reply(text=f"{ANSWER} {request.last_user_text}", delay=MODEL_SECONDS)


# --------------------------------------------------------------------------- CPU of processes


def _ticks(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def _pids_named(match: Callable[[str], bool]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match(cmdline):
            pids.append(int(entry.name))
    return pids


def _machine_busy() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK


@dataclass
class CpuMeter:
    """CPU seconds of each part over an interval: the bot's processes, this
    process (the fakes), PostgreSQL's backends of this deployment's database,
    and the whole RabbitMQ and Redis servers (shared with anything else
    running on the machine)."""

    processes: dict[str, int]  # name -> pid
    database: str
    start: dict[int, int] = field(default_factory=dict)
    fakes_start: float = 0.0
    machine_start: float = 0.0
    wall_start: float = 0.0
    wall: float = 0.0
    machine: float = 0.0  # CPU seconds the whole machine was busy over the interval (all processes)

    def _groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for name, pid in self.processes.items():
            group = "worker" if name.startswith("w") else name
            groups.setdefault(group, []).append(pid)
        groups["postgres"] = _pids_named(lambda c: c.startswith("postgres:") and f" {self.database} " in c)
        groups["rabbitmq"] = _pids_named(lambda c: "beam.smp" in c and "rabbit" in c)
        groups["redis"] = _pids_named(lambda c: c.startswith("redis-server"))
        return groups

    def begin(self) -> None:
        self.machine_start = _machine_busy()
        self.wall_start = time.monotonic()
        self.start = {pid: t for pids in self._groups().values() for pid in pids if (t := _ticks(pid)) is not None}
        self.fakes_start = time.process_time()

    def end(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for group, pids in self._groups().items():
            total = 0
            for pid in pids:
                now = _ticks(pid)
                if now is not None:
                    total += now - self.start.get(pid, 0)
            used[group] = total / CLK
        used["fakes"] = time.process_time() - self.fakes_start
        self.wall = time.monotonic() - self.wall_start
        self.machine = _machine_busy() - self.machine_start
        return used


# --------------------------------------------------------------------------- answers seen by the fake


class Inbox:
    """The fake Bot API's sendMessage calls, in arrival order (Call.at: the
    fake's time.monotonic() when the request arrived)."""

    def __init__(self, tg: FakeTelegram) -> None:
        self.tg = tg
        self._seen = 0
        self._pending: list[Call] = []
        self.sent: list[tuple[int, float, str]] = []  # (chat, at, text), answered 200
        self.refused: list[Call] = []  # sendMessage answered otherwise (429 ...)

    def scan(self) -> None:
        # A call is recorded on arrival, its params once read and its status
        # once answered: one still unanswered is looked at again next time.
        calls = self.tg.calls
        waiting = [call for call in self._pending if not call.status]
        done = [call for call in self._pending if call.status]
        for call in calls[self._seen :]:
            if call.method == "sendMessage":
                (done if call.status else waiting).append(call)
        self._seen = len(calls)
        self._pending = waiting
        for call in sorted(done, key=lambda c: c.at):
            if call.status == 200:
                self.sent.append((int(call.params.get("chat_id", 0)), call.at, str(call.params.get("text", ""))))
            else:
                self.refused.append(call)

    def mark(self) -> int:
        self.scan()
        return len(self.sent)

    def since(self, mark: int) -> list[tuple[int, float, str]]:
        self.scan()
        return self.sent[mark:]

    async def wait(self, mark: int, count: int, timeout: float, interval: float = 0.02) -> list[tuple[int, float, str]]:
        deadline = time.monotonic() + timeout
        while len(got := self.since(mark)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} answers after {timeout:.0f} s")
            await asyncio.sleep(interval)
        return got


# --------------------------------------------------------------------------- deployments


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(SERVER)


async def max_connections() -> int:
    conn = await _admin()
    try:
        return int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()


async def create_database() -> str:
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    conn = await _admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(name: str) -> None:
    conn = await _admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def database_url(name: str) -> str:
    rest = SERVER.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{rest}/{name}"


class Deployment:
    """One bot: `python -m bot run` in webhook mode (workers=0), or a
    gateway and `workers` workers; on PostgreSQL either way."""

    def __init__(
        self, label: str, tg: FakeTelegram, model: FakeModelServer, tmp: Path, *, workers: int, redis: bool,
        max_connections: int = 100,
    ) -> None:
        self.label = label
        self.tg = tg
        self.workers = workers
        self.tmp = tmp
        self.prefix = f"bench-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.processes: dict[str, Process] = {}
        self.database = ""
        self.inbox = Inbox(tg)
        self._conn: asyncpg.Connection | None = None  # this bench's own, opened first: never starved
        self.peak_connections = 0  # of this database, sampled while traffic runs
        env = dict(
            PYTHONPATH=str(REPO), TELEGRAM_BOT_TOKEN=tg.TOKEN, TELEGRAM_API_URL=tg.url,
            BOT_MODELS="openai:gpt-4o-mini", OPENAI_API_KEY="test-key", OPENAI_BASE_URL=model.openai_base_url,
            BOT_MEMORY_EXTRACTION="false", EMBEDDING_MODEL=FAKE_EMBEDDINGS,
            WEBHOOK_URL=f"http://127.0.0.1:{self.port}/telegram/{uuid.uuid4().hex[:8]}", WEBHOOK_SECRET=SECRET,
            API_HOST="127.0.0.1", API_PORT=str(self.port), BOT_ADMIN_IDS="", BOT_LOG_STDERR="false",
        )
        self.pool = DEFAULT_POOL
        if workers:
            env.update(BROKER_URL=BROKER, BROKER_PREFIX=self.prefix)  # BROKER_PARTITIONS: the default (64)
            # settings.py: workers x 2 x BOT_DB_POOL_SIZE (+1 each for the leader election) must stay
            # under max_connections; the default where it fits, else the largest pool that does
            # (keeping SPARE_CONNECTIONS for this bench and anything else on the server).
            fitting = (max_connections - RESERVED_CONNECTIONS - SPARE_CONNECTIONS - workers) // (2 * workers)
            if fitting < DEFAULT_POOL:
                self.pool = fitting
                env.update(BOT_DB_POOL_SIZE=str(fitting))
        if redis:
            env.update(REDIS_URL=REDIS, REDIS_PREFIX=self.prefix)
        self._env = env

    @property
    def partitions(self) -> int:
        from bot.settings import Settings

        return int(Settings.model_fields["broker_partitions"].default)

    async def start(self) -> None:
        self.database = await create_database()
        self._env["DATABASE_URL"] = database_url(self.database)
        self._conn = await asyncpg.connect(database_url(self.database).replace("+asyncpg", ""))
        if self.workers:
            await self._spawn("gateway", "gateway")
            for number in range(1, self.workers + 1):
                await self._spawn(f"w{number}", "worker", "--name", f"w{number}")
        else:
            await self._spawn("bot", "run")

    async def _spawn(self, name: str, *command: str) -> None:
        folder = self.tmp / f"{self.prefix}-{name}"
        folder.mkdir()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *command,
            cwd=folder, env=clean_env(folder, **self._env),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=open(folder / "stderr.log", "wb"),  # noqa: SIM115 - the child owns it
        )
        self.processes[name] = process

    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def logs(self) -> str:
        parts = []
        for name in self.processes:
            folder = self.tmp / f"{self.prefix}-{name}"
            text = (folder / "stderr.log").read_text(errors="replace")[-1500:]
            parts.append(f"--- {name}\n{text}")
        return "\n".join(parts)

    async def consumers(self) -> list[int]:
        connection = await aio_pika.connect(BROKER)
        counts = []
        try:
            for number in range(self.partitions):
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(f"{self.prefix}.updates.{number}", passive=True)
                    counts.append(int(queue.declaration_result.consumer_count or 0))
                    await channel.close()
                except aio_pika.exceptions.ChannelClosed:
                    counts.append(0)
        finally:
            await connection.close()
        return counts

    async def ready(self, timeout: float = 90.0) -> None:
        """The webhook set, every worker consuming every partition, one answer through."""
        deadline = time.monotonic() + timeout
        while True:
            for name, process in self.processes.items():
                if process.returncode is not None:
                    raise RuntimeError(f"{self.label}: {name} exited with {process.returncode}\n{self.logs()}")
            if self.tg.webhook is not None and (
                not self.workers or all(count == self.workers for count in await self.consumers())
            ):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label} not ready after {timeout:.0f} s\n{self.logs()}")
            await asyncio.sleep(0.2)

    async def claims(self, update_ids: list[int]) -> dict[int, str]:
        """update id -> the worker that claimed it (telegram_updates)."""
        assert self._conn is not None
        rows = await self._conn.fetch(
            "SELECT update_id, worker FROM telegram_updates WHERE update_id = ANY($1::bigint[])", update_ids
        )
        return {int(row["update_id"]): str(row["worker"]) for row in rows}

    async def sample_connections(self) -> None:
        """Until cancelled: the most connections this database had at once (this bench's own not counted)."""
        assert self._conn is not None
        while True:
            count = await self._conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            self.peak_connections = max(self.peak_connections, int(count) - 1)
            await asyncio.sleep(0.25)

    def problems(self) -> dict[str, int]:
        """Warning and error lines in the bot's logs (its data dirs), by level,
        and the kinds of exception that ended their tracebacks."""
        found: dict[str, int] = {}
        for name in self.processes:
            for log_file in (self.tmp / f"{self.prefix}-{name}").rglob("*.log*"):
                lines = log_file.read_text(errors="replace").splitlines()
                for number, line in enumerate(lines):
                    for level in (" ERROR ", " WARNING ", " CRITICAL "):
                        if level in line:
                            found[level.strip()] = found.get(level.strip(), 0) + 1
                    following = lines[number + 1] if number + 1 < len(lines) else ""
                    # The last line of a traceback: "SomeError: message", then a new record (or the end).
                    if (line and not line[0].isspace() and ": " in line and line.split(":", 1)[0].endswith(("Error", "Exception", "Timeout"))
                            and (not following or following[:2].isdigit())):
                        kind = line.split(":", 1)[0].rsplit(".", 1)[-1]
                        key = "too many clients" if "too many clients" in line else kind
                        found[key] = found.get(key, 0) + 1
        return found

    def keep_logs(self, folder: Path) -> None:
        for name in self.processes:
            source = self.tmp / f"{self.prefix}-{name}"
            target = folder / f"{self.label.replace(' ', '_').replace('+', 'plus')}-{name}"
            shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.db*", "*.onnx"))

    async def stop(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self.workers:
            with contextlib.suppress(Exception):
                connection = await aio_pika.connect(BROKER)
                await remove(await connection.channel(), Topology(self.prefix, self.partitions))
                await connection.close()
        if self._env.get("REDIS_URL"):
            with contextlib.suppress(Exception):
                await _redis_delete_prefix(self.prefix)
        if self._conn is not None:
            await self._conn.close()
        if self.database:
            await drop_database(self.database)

    # ------------------------------------------------------------------ traffic

    async def send_round(self, chats: list[int], text: str, timeout: float = 60.0) -> tuple[list[int], list[tuple[int, float, str]]]:
        """One message to each chat; waits for as many answers. Returns the update ids and the answers."""
        mark = self.inbox.mark()
        ids = [self.tg.user_text(f"{text} {chat}", chat_id=chat, user_id=chat)["update_id"] for chat in chats]
        answers = await self.inbox.wait(mark, len(chats), timeout)
        return ids, answers

    async def warm_up(self, greet: list[int], spare: list[int], limit: float = 45.0) -> tuple[bool, float]:
        """Greets ``greet`` (their first contact), then with several workers
        runs rounds on ``spare`` until every worker claims updates and the
        chat -> worker map is the same in two rounds a balance interval
        apart. Returns (spread, seconds it took)."""
        begun = time.monotonic()
        if greet:
            await self.send_round(greet, "hello from", timeout=120)
        await self.send_round(spare, "warm", timeout=60)
        if self.workers < 2:
            return True, time.monotonic() - begun
        previous: dict[int, str] | None = None
        while time.monotonic() - begun < limit:
            round_start = time.monotonic()
            ids, _ = await self.send_round(spare, "spread")
            await asyncio.sleep(0.3)  # the claims are committed before the answer; margin for the last one
            claimed = await self.claims(ids)
            mapping = {chat: claimed.get(update_id, "?") for chat, update_id in zip(spare, ids, strict=True)}
            if len(set(mapping.values()) - {"?"}) == self.workers and mapping == previous:
                return True, time.monotonic() - begun
            previous = mapping
            await asyncio.sleep(max(0.0, BALANCE_INTERVAL + 0.5 - (time.monotonic() - round_start)))
        return False, time.monotonic() - begun


async def _redis_delete_prefix(prefix: str) -> None:
    """Drop the keys the limiter left under this run's prefix (SCAN + DEL over RESP)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", 6379)

    async def command(*parts: str) -> object:
        writer.write(f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts))
        await writer.drain()
        return await _read_resp(reader)

    cursor = "0"
    try:
        while True:
            reply = await command("SCAN", cursor, "MATCH", f"{prefix}*", "COUNT", "1000")
            assert isinstance(reply, list)
            cursor, keys = str(reply[0]), reply[1]
            if keys:
                await command("DEL", *keys)
            if cursor == "0":
                break
    finally:
        writer.close()


async def _read_resp(reader: asyncio.StreamReader) -> object:
    line = (await reader.readline()).rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [await _read_resp(reader) for _ in range(int(rest))]
    raise ValueError(f"unexpected Redis reply {line!r}")


# --------------------------------------------------------------------------- 1 + 2: throughput and the burst


@dataclass
class Throughput:
    label: str
    workers: int
    updates: int
    seconds: float  # first enqueued -> last answer
    intake_seconds: float  # first enqueued -> last accepted by the webhook
    answers_ok: int  # answers that are the model's (not a notice)
    notices: dict[str, int]  # the other replies, by their first words
    shares: dict[str, int]  # worker -> measured updates claimed
    cpu: dict[str, float]
    spread: bool
    warm_seconds: float
    machine_cores: float = 0.0  # cores busy on the whole machine during the run (ours and anything else)
    our_cores: float = 0.0  # cores the processes in ``cpu`` used, over the same interval
    pool: int = 20  # BOT_DB_POOL_SIZE of each bot process
    peak_connections: int = 0  # PostgreSQL connections of the deployment at once (throughput and burst)
    problems: dict[str, int] = field(default_factory=dict)  # log lines of the whole deployment

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    @property
    def intake(self) -> float:
        return self.updates / self.intake_seconds


@dataclass
class Burst:
    label: str
    chats: int
    wall: float | None  # first enqueued -> last answer
    answered: int
    notices: dict[str, int]
    intake_seconds: float
    first_model_request: float | None
    last_model_request: float | None
    p50: float | None


async def run_deployment(
    label: str, workers: int, redis: bool, *, chats: int, per_chat: int, burst_chats: int, tmp: Path,
    py_spy: Path | None = None, keep_logs: Path | None = None,
) -> tuple[Throughput, Burst | None]:
    async with FakeTelegram() as tg, FakeModelServer() as model:
        model.responder = instant
        deployment = Deployment(label, tg, model, tmp, workers=workers, redis=redis, max_connections=await max_connections())
        try:
            await deployment.start()
            await deployment.ready()
            measured = [100_000 + n for n in range(chats)]
            spare = [900_000 + n for n in range(48)]
            spread, warm_seconds = await deployment.warm_up(measured, spare)
            sampler = asyncio.ensure_future(deployment.sample_connections())
            try:
                throughput = await _throughput(deployment, measured, per_chat, spread, warm_seconds, py_spy)
                burst = None
                if burst_chats:
                    await asyncio.sleep(1.0)
                    model.responder = slow
                    burst = await _burst(deployment, model, [200_000 + n for n in range(burst_chats)])
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            throughput.peak_connections = deployment.peak_connections
        finally:
            await deployment.stop()
        throughput.problems = deployment.problems()
        if keep_logs is not None:
            deployment.keep_logs(keep_logs)
        return throughput, burst


async def _throughput(
    deployment: Deployment, chats: list[int], per_chat: int, spread: bool, warm_seconds: float, py_spy: Path | None
) -> Throughput:
    tg, inbox = deployment.tg, deployment.inbox
    await asyncio.sleep(0.5)  # the warm-up's trailing writes and acks
    meter = CpuMeter(deployment.pids(), deployment.database)
    spy = _start_py_spy(py_spy, deployment) if py_spy else None
    meter.begin()
    mark = inbox.mark()
    started = time.monotonic()
    ids = [
        tg.user_text(f"message {turn} of {chat}", chat_id=chat, user_id=chat)["update_id"]
        for turn in range(per_chat) for chat in chats
    ]
    answers = await inbox.wait(mark, len(ids), timeout=180, interval=0.05)
    cpu = meter.end()
    if spy is not None:
        await _stop_py_spy(spy)
    last = max(at for _, at, _ in answers)
    wanted = set(ids)
    accepted = [d.at for d in tg.webhook_deliveries if d.update_id in wanted and d.status == 200]
    shares: dict[str, int] = {}
    if deployment.workers:
        for worker in (await deployment.claims(ids)).values():
            shares[worker] = shares.get(worker, 0) + 1
    return Throughput(
        deployment.label, deployment.workers, len(ids), last - started, max(accepted) - started,
        sum(text.startswith(ANSWER) for _, _, text in answers), _notices(answers), shares, cpu, spread, warm_seconds,
        machine_cores=meter.machine / meter.wall, our_cores=sum(cpu.values()) / meter.wall, pool=deployment.pool,
    )


def _notices(answers: list[tuple[int, float, str]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for _, _, text in answers:
        if not text.startswith(ANSWER):
            key = text[:50]
            found[key] = found.get(key, 0) + 1
    return found


async def _burst(deployment: Deployment, model: FakeModelServer, chats: list[int]) -> Burst:
    tg, inbox = deployment.tg, deployment.inbox
    asked_before = len(model.chat_requests())
    mark = inbox.mark()
    started = time.monotonic()
    ids = {tg.user_text(f"question from {chat}", chat_id=chat, user_id=chat)["update_id"] for chat in chats}
    try:
        answers = await inbox.wait(mark, len(chats), timeout=60, interval=0.05)
    except TimeoutError:
        answers = inbox.since(mark)
    answered = [at for _, at, text in answers if text.startswith(ANSWER)]
    accepted = [d.at for d in tg.webhook_deliveries if d.update_id in ids and d.status == 200]
    arrivals = sorted(r.at for r in model.chat_requests()[asked_before:])
    latencies = [at - started for at in answered]
    return Burst(
        deployment.label, len(chats), max(latencies) if len(answered) == len(chats) else None, len(answered),
        _notices(answers), max(accepted) - started if accepted else float("nan"),
        arrivals[0] - started if arrivals else None, arrivals[-1] - started if arrivals else None,
        statistics.median(latencies) if latencies else None,
    )


def _start_py_spy(folder: Path, deployment: Deployment) -> list[asyncio.subprocess.Process] | None:
    binary = shutil.which("py-spy")
    if binary is None:
        print("py-spy not found on PATH: no profile", file=sys.stderr)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in deployment.pids().items():
        out = folder / f"{deployment.label.replace(' ', '_').replace(',', '')}-{name}.txt"
        spies.append(asyncio.ensure_future(asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking",
            "--output", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )))
    return spies  # type: ignore[return-value]


async def _stop_py_spy(spies: list[asyncio.Future[asyncio.subprocess.Process]]) -> None:
    for future in spies:
        process = await future
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()


# --------------------------------------------------------------------------- 3: added latency


@dataclass
class Latency:
    label: str
    total: list[float]  # enqueue -> answer
    intake: list[float]  # enqueue -> the webhook's 200


async def added_latency(rounds: int, tmp: Path) -> list[Latency]:
    variants = (("single process", 0, False), ("gateway + 1 worker", 1, False), ("gateway + 1 worker + Redis", 1, True))
    async with contextlib.AsyncExitStack() as stack:
        model = await stack.enter_async_context(FakeModelServer())
        model.responder = instant
        deployments = []
        for label, workers, redis in variants:
            tg = await stack.enter_async_context(FakeTelegram())
            deployment = Deployment(label, tg, model, tmp, workers=workers, redis=redis)
            stack.push_async_callback(deployment.stop)
            await deployment.start()
            deployments.append(deployment)
        for deployment in deployments:
            await deployment.ready()
        chats = [300_000 + n for n in range(50)]
        for deployment in deployments:
            await deployment.warm_up(chats, [])
        await asyncio.sleep(1.0)
        results = {d.label: Latency(d.label, [], []) for d in deployments}
        rng = random.Random(9)
        for number in range(rounds):
            chat = chats[number % len(chats)]
            order = deployments[:]
            rng.shuffle(order)
            for deployment in order:
                mark = deployment.inbox.mark()
                sent = time.monotonic()
                update_id = deployment.tg.user_text(f"ping {number}", chat_id=chat, user_id=chat)["update_id"]
                [(_, at, _)] = await deployment.inbox.wait(mark, 1, timeout=30, interval=0.002)
                taken = next(d.at for d in deployment.tg.webhook_deliveries if d.update_id == update_id and d.status == 200)
                results[deployment.label].total.append(at - sent)
                results[deployment.label].intake.append(taken - sent)
                await asyncio.sleep(0.05)  # the turn's trailing writes (and the ack) before the next one
        return list(results.values())


async def broker_confirms(count: int) -> dict[str, list[float]]:
    """RabbitMQ alone, one at a time, interleaved: publish -> confirm of an
    update-sized message to a durable queue, transient and persistent; and
    the gateway's own call (UpdatePublisher.publish: persistent, mandatory,
    through a consistent-hash exchange of as many partitions as the bot's)."""
    from bot.scale.broker import UpdatePublisher
    from bot.settings import Settings

    update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"},
                                          "from": {"id": 5, "is_bot": False, "first_name": "Ann"}, "text": "x" * 400}}
    body = b"x" * 600
    name = f"bench-confirms-{uuid.uuid4().hex[:10]}"
    topology = Topology(name, int(Settings.model_fields["broker_partitions"].default))
    publisher = UpdatePublisher(BROKER, topology)
    times: dict[str, list[float]] = {"transient": [], "persistent": [], "the gateway's publish": []}
    connection = await aio_pika.connect(BROKER)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True)
        await publisher.start()
        for number in range(count):
            modes = list(times)
            modes = modes[number % 3:] + modes[:number % 3]
            for mode in modes:
                started = time.perf_counter()
                if mode == "the gateway's publish":
                    update["update_id"] = number
                    update["message"]["chat"]["id"] = number  # type: ignore[index]
                    await publisher.publish(update)
                else:
                    delivery = aio_pika.DeliveryMode.PERSISTENT if mode == "persistent" else aio_pika.DeliveryMode.NOT_PERSISTENT
                    await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=delivery), routing_key=name)
                times[mode].append(time.perf_counter() - started)
    finally:
        await publisher.close()
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(name)
            await remove(channel, topology)
        await connection.close()
    return times


# --------------------------------------------------------------------------- the table


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def cpu_line(run: Throughput) -> str:
    parts = [f"{name} {seconds / run.updates * 1000:.1f}" for name, seconds in run.cpu.items() if seconds > 0.0]
    total = sum(run.cpu.values())
    return f"{', '.join(parts)}; total {total / run.updates * 1000:.1f} ms"


def report(
    throughputs: list[Throughput], bursts: list[Burst], latencies: list[Latency], confirms: dict[str, list[float]],
    args: argparse.Namespace,
) -> None:
    print(f"\nP9, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}\n")
    if throughputs:
        print(f"Throughput, model instant: {throughputs[0].updates} updates ({args.chats} chats x {args.per_chat}), "
              "first enqueued -> last answer; intake = updates/s the webhook accepted\n")
        print("| deployment | updates/s | vs single | intake/s | CPU ms per update (by process) | cores busy: ours / machine |"
              " worker shares | spread (warm-up s) | DB pool, peak PG connections | log warnings/errors |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        base = next((t.rate for t in throughputs if t.workers == 0), None)
        for run in throughputs:
            ratio = f"{run.rate / base:.2f}x" if base else "-"
            shares = " / ".join(str(n) for _, n in sorted(run.shares.items())) or "-"
            ok = "" if run.answers_ok == run.updates else f" ({run.updates - run.answers_ok} not the model's answer)"
            print(f"| {run.label} | {run.rate:.1f}{ok} | {ratio} | {run.intake:.0f} | {cpu_line(run)} | "
                  f"{run.our_cores:.2f} / {run.machine_cores:.2f} | {shares} | "
                  f"{'yes' if run.spread else 'NO'} ({run.warm_seconds:.0f} s) | {run.pool}, {run.peak_connections} | "
                  f"{', '.join(f'{k} {v}' for k, v in sorted(run.problems.items())) or 'none'} |")
    if bursts:
        print(f"\nP2 burst: {bursts[0].chats} new chats, one message each, model {MODEL_SECONDS:.0f} s\n")
        print("| deployment | answered | wall | vs single | median | intake done | model requests arrived |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        single = next((b.wall for b in bursts if b.label == "single process"), None)
        for b in bursts:
            wall = f"{b.wall:.2f} s" if b.wall is not None else "-"
            ratio = f"{b.wall / single:.2f}x" if b.wall and single else "-"
            arrived = (f"{b.first_model_request:.2f}-{b.last_model_request:.2f} s"
                       if b.first_model_request is not None and b.last_model_request is not None else "-")
            median = f"{b.p50:.2f} s" if b.p50 is not None else "-"
            print(f"| {b.label} | {b.answered}/{b.chats} | {wall} | {ratio} | {median} | {b.intake_seconds:.2f} s | {arrived} |")
    odd = [(f"{run.label}, throughput", run.notices) for run in throughputs] + [(f"{b.label}, burst", b.notices) for b in bursts]
    odd = [(label, notices) for label, notices in odd if notices]
    if odd:
        print("\nReplies that were not the model's answer:")
        for label, notices in odd:
            print(f"- {label}: " + "; ".join(f"{n} x {text!r}" for text, n in sorted(notices.items(), key=lambda kv: -kv[1])))
    if latencies:
        rounds = len(latencies[0].total)
        print(f"\nAdded latency: enqueue -> answer, one message at a time, {rounds} interleaved rounds (model instant)\n")
        print("| deployment | p50 | p99 | intake p50 (enqueue -> 200) | rest p50 (200 -> answer) | added p50 (paired) |"
              " added p99 (paired) | budget | result |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        single = latencies[0]
        for run in latencies:
            rest = [total - intake for total, intake in zip(run.total, run.intake, strict=True)]
            line = (f"| {run.label} | {ms(percentile(run.total, 50))} | {ms(percentile(run.total, 99))} | "
                    f"{ms(percentile(run.intake, 50))} | {ms(percentile(rest, 50))} |")
            if run is single:
                print(line + " - | - | - | - |")
                continue
            diffs = [a - b for a, b in zip(run.total, single.total, strict=True)]
            added = percentile(diffs, 50)
            print(line + f" {ms(added)} | {ms(percentile(diffs, 99))} | <= 5 ms | {'PASS' if added <= 0.005 else 'FAIL'} |")
    if confirms:
        print(f"\nRabbitMQ alone: publish -> confirm, one at a time, {len(confirms['persistent'])} each, interleaved: "
              + "; ".join(f"{mode} p50 {ms(percentile(t, 50))}, p99 {ms(percentile(t, 99))}" for mode, t in confirms.items()))


async def main_async(args: argparse.Namespace) -> None:
    if not await broker_up() or not await redis_up():
        raise SystemExit("P9 needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379")
    begun = time.monotonic()
    throughputs: list[Throughput] = []
    bursts: list[Burst] = []
    latencies: list[Latency] = []
    confirms: dict[str, list[float]] = {}
    configs = []
    for item in args.workers.split(","):
        workers, redis = int(item.rstrip("r")), item.endswith("r")
        label = "single process" if not workers else f"{workers} worker{'s' if workers > 1 else ''}"
        configs.append((label + (" + Redis" if redis else ""), workers, redis))
    with tempfile.TemporaryDirectory(prefix="arium-p9-") as folder:
        tmp = Path(folder)
        if "throughput" in args.only:
            for label, workers, redis in configs:
                print(f"[{time.monotonic() - begun:5.0f} s] {label} ...", file=sys.stderr, flush=True)
                spy = args.py_spy if (args.py_spy and workers == 1 and not redis) else None
                throughput, burst = await run_deployment(
                    label, workers, redis, chats=args.chats, per_chat=args.per_chat,
                    burst_chats=args.burst_chats if "burst" in args.only else 0, tmp=tmp, py_spy=spy,
                    keep_logs=args.keep_logs,
                )
                throughputs.append(throughput)
                if burst is not None:
                    bursts.append(burst)
        if "latency" in args.only:
            print(f"[{time.monotonic() - begun:5.0f} s] added latency ...", file=sys.stderr, flush=True)
            latencies = await added_latency(args.rounds, tmp)
            confirms = await broker_confirms(args.rounds)
    report(throughputs, bursts, latencies, confirms, args)
    print(f"\n(whole run {time.monotonic() - begun:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--per-chat", type=int, default=3)
    parser.add_argument("--burst-chats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--only", default="throughput,burst,latency", help="throughput,burst,latency (burst runs with throughput)")
    parser.add_argument("--quick", action="store_true", help="100 chats x 2, a 100-chat burst, 60 rounds")
    parser.add_argument("--py-spy", type=Path, default=None, help="folder for py-spy raw profiles of the 1-worker run")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy each deployment's logs to this folder")
    parser.add_argument("--workers", default="0,1,2,4,2r", help="deployments: 0 = single process, N workers, Nr = with Redis")
    args = parser.parse_args()
    if args.quick:
        args.chats, args.per_chat, args.burst_chats, args.rounds = 100, 2, 100, 60
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
