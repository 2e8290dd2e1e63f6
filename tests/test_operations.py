"""The command line and the VPS scripts, run as a person would run them."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bot.doctor import run_doctor
from tests.conftest import fake_settings
from tests.fakes.model_server import FakeModelServer, Reply
from tests.fakes.telegram_server import FakeTelegram
from tests.support.broker import BROKER
from tests.support.processes import FAKE_EMBEDDINGS, REPO, clean_env, cli


def test_run_without_token_exits_with_one_clear_line(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", MISTRAL_API_KEY="k")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TELEGRAM_BOT_TOKEN" in lines[0] and "Traceback" not in result.stderr


def test_run_without_model_key_names_it(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", TELEGRAM_BOT_TOKEN="1:abc", BOT_MODELS="mistral:mistral-small-latest")
    assert result.returncode == 2 and "MISTRAL_API_KEY" in result.stderr


def test_sync_database_url_is_rejected_with_the_fix(tmp_path: Path) -> None:
    result = cli(tmp_path, "migrate", DATABASE_URL="postgresql://u@localhost/db")
    assert result.returncode == 2 and "postgresql+asyncpg://" in result.stderr


@pytest.mark.parametrize(
    ("setup", "args", "code", "said"),
    [
        pytest.param({"toml": "this is [not toml"}, ("doctor",), 2, "is not valid TOML", id="broken-toml"),
        pytest.param(
            {"DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/nope"}, ("migrate",), 1, "Connect call failed",
            id="database-down",
        ),
        pytest.param({"BOT_DATA_DIR": "/proc/nope"}, ("migrate",), 1, "/proc/nope", id="data-dir-impossible"),
        pytest.param(
            {}, ("apikey", "create", "--name", "huge", "--user-id", "99999999999999999999"), 1, "below 2**52",
            id="key-for-a-huge-id",
        ),
        pytest.param(
            {"BOT_CONSOLE_USER_ID": "99999999999999999999"}, ("migrate",), 2, "BOT_CONSOLE_USER_ID", id="huge-console-id"
        ),
    ],
)
def test_what_the_operator_got_wrong_is_one_line_not_a_traceback(
    tmp_path: Path, setup: dict[str, str], args: tuple[str, ...], code: int, said: str
) -> None:
    env = dict(setup)
    if "toml" in env:
        (tmp_path / "bot.toml").write_text(env.pop("toml"))
        env["BOT_CONFIG"] = str(tmp_path / "bot.toml")
    result = cli(tmp_path, *args, **env)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr


def test_migrate_alone_creates_the_database(tmp_path: Path) -> None:
    result = cli(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "arium.db").is_file()


async def test_doctor_reports_each_check(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeModelServer() as model:
        good = fake_settings(tmp_path / "data", tg, model, bot_models="openai:gpt-4o-mini,mistral:mistral-small-latest")
        lines: list[str] = []
        assert await run_doctor(good, lines.append) == 0
        assert any(line.startswith("ok   telegram") and "@arium_test_bot" in line for line in lines)
        assert sum(line.startswith("ok   model") for line in lines) == 2
        bad = fake_settings(tmp_path / "data", tg, model, openai_api_key="wrong", telegram_bot_token="1:wrong")
        lines.clear()
        assert await run_doctor(bad, lines.append) == 1
        failures = [line for line in lines if line.startswith("FAIL")]
        assert any("model openai:gpt-4o-mini" in f and "authentication" in f for f in failures)
        assert any("telegram" in f for f in failures)
        assert all("wrong" not in f for f in failures), "doctor must not echo secrets"


async def run_script(name: str, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", str(REPO / "scripts" / name), *args,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, output.decode()


async def test_start_and_stop_scripts_run_the_bot_in_the_background(tmp_path: Path) -> None:
    async with FakeTelegram() as tg, FakeModelServer() as model:
        env = clean_env(
            tmp_path,
            TELEGRAM_BOT_TOKEN=tg.TOKEN,
            TELEGRAM_API_URL=tg.url,
            BOT_MODELS="openai:gpt-4o-mini",
            OPENAI_API_KEY="test-key",
            OPENAI_BASE_URL=model.openai_base_url,
            BOT_POLL_TIMEOUT="1",
            EMBEDDING_MODEL=FAKE_EMBEDDINGS,
        )
        code, output = await run_script("start.sh", env)
        assert code == 0, output
        assert "Arium started" in output and "arium.log" in output
        pid = int((tmp_path / "data" / "arium.pid").read_text())
        try:
            code, output = await run_script("start.sh", env)
            assert code == 0 and "already running" in output

            # A reply in flight when the stop arrives is still delivered.
            model.script(Reply(text="finished despite the stop", delay=1.5))
            tg.user_text("hello from a real process")
            await model.wait_requests(1, timeout=30)
            code, output = await run_script("stop.sh", env)
            assert code == 0 and "stopped" in output, output
            assert [m.text for m in tg.messages(1001)] == ["finished despite the stop"]
            assert not (tmp_path / "data" / "arium.pid").exists()
            code, output = await run_script("stop.sh", env)
            assert code == 0 and "not running" in output
            log = (tmp_path / "data" / "logs" / "arium.log").read_text()
            assert tg.TOKEN.split(":")[1] not in log
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def test_doctor_shows_the_running_bots_model_health(
    start_bot, tg: FakeTelegram, model: FakeModelServer, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    app = await start_bot()
    tg.user_text("hello")
    await tg.wait_messages(1001, 1)
    app.status.write_now()
    lines: list[str] = []
    await run_doctor(app.settings, lines.append)
    running = [line for line in lines if line.startswith("info")]
    assert any("running bot: pid" in line for line in running)
    assert any("openai:gpt-4o-mini: breaker closed, 1 requests" in line for line in running), running


async def test_a_started_bot_freezes_its_start_up_heap(start_bot) -> None:  # type: ignore[no-untyped-def]
    """`python -m bot run` moves start-up objects out of the collector's
    reach once the embedder is ready, so full collections stay short."""
    import gc

    app = await start_bot()
    gc.unfreeze()
    try:
        await app.freeze_startup_heap(embedder_wait=30)
        assert app.memory.embeddings.ready
        assert gc.get_freeze_count() > 10_000  # the bot, its libraries and the model
    finally:
        gc.unfreeze()  # the test process keeps collecting its own garbage


# --- doctor, the scaled mode: against the real RabbitMQ (5672, guest/guest),
# Redis (6379) and PostgreSQL (TEST_DATABASE_URL) on 127.0.0.1, each skipped
# when it does not answer.

SCALED_REDIS = "redis://127.0.0.1:6379/0"


async def _rabbitmq_prefix() -> str:
    """A prefix of this test alone; skips without RabbitMQ."""
    import uuid

    import aio_pika

    try:
        connection = await aio_pika.connect(BROKER, timeout=3)
    except Exception:  # noqa: BLE001 - any failure means no broker here
        import pytest

        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    await connection.close()
    return f"doctor-{uuid.uuid4().hex[:10]}"


async def _delete_topology(prefix: str, partitions: int) -> None:
    import aio_pika

    from bot.scale.broker import Topology, remove

    connection = await aio_pika.connect(BROKER)
    await remove(await connection.channel(), Topology(prefix, partitions))
    await connection.close()


def _scaled(tmp_path: Path, **values: object):  # type: ignore[no-untyped-def]
    from bot.settings import Settings

    return Settings(_env_file=None, bot_data_dir=tmp_path / "data", **values)  # type: ignore[call-arg, arg-type]


async def test_doctor_checks_nothing_of_the_scaled_mode_without_its_settings(tmp_path: Path) -> None:
    from bot.scale.doctor import check_scaled_mode

    lines: list[str] = []
    assert await check_scaled_mode(_scaled(tmp_path), lines.append)
    assert lines == []


async def test_doctor_reports_rabbitmq_partitions(tmp_path: Path) -> None:
    import aio_pika

    from bot.scale.doctor import check_scaled_mode
    from bot.scale.broker import Topology, declare

    prefix = await _rabbitmq_prefix()
    settings = _scaled(tmp_path, broker_url=BROKER, broker_prefix=prefix, broker_partitions=4)
    lines: list[str] = []
    # SQLite: the scaled mode's database check fails, RabbitMQ's passes.
    assert not await check_scaled_mode(settings, lines.append)
    assert lines[0].startswith("FAIL scaled mode database") and "PostgreSQL" in lines[0]
    assert lines[1].startswith("ok   rabbitmq: 127.0.0.1:5672/ reachable, x-consistent-hash available; no partition queues")
    assert "guest" not in "".join(lines)

    connection = await aio_pika.connect(BROKER)
    try:
        channel = await connection.channel()
        await declare(channel, Topology(prefix, 4))
        for text in (b"1", b"2"):  # straight into partition 3 through the default exchange
            await channel.default_exchange.publish(aio_pika.Message(text), routing_key=f"{prefix}.updates.3")
        queue = await channel.get_queue(f"{prefix}.updates.0", ensure=False)

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            return None  # a worker attached to partition 0 (it is empty)

        await queue.consume(hold)
        lines.clear()
        await check_scaled_mode(settings, lines.append)
        rabbit = [line for line in lines if "rabbitmq" in line or "updates." in line]
        assert rabbit[0] == (
            "ok   rabbitmq: 127.0.0.1:5672/ reachable, x-consistent-hash available; "
            "4 partition queues, 2 updates waiting, 0-1 workers attached to each"
        ), lines
        assert rabbit[1] == f"info   {prefix}.updates.0-3 (messages/consumers): 0/1 0/0 0/0 2/0"

        # A queue past BROKER_PARTITIONS (an earlier, larger setting) is named.
        await channel.declare_queue(f"{prefix}.updates.4", durable=True)
        lines.clear()
        await check_scaled_mode(settings, lines.append)
        assert any(line.startswith(f"FAIL rabbitmq: {prefix}.updates.4 exists, beyond BROKER_PARTITIONS=4") for line in lines), lines
    finally:
        await connection.close()
        await _delete_topology(prefix, 5)


async def test_doctor_names_the_missing_consistent_hash_plugin(tmp_path: Path) -> None:
    from bot.scale.doctor import check_scaled_mode

    prefix = await _rabbitmq_prefix()
    settings = _scaled(tmp_path, broker_url=BROKER, broker_prefix=prefix)
    lines: list[str] = []
    assert not await check_scaled_mode(settings, lines.append, exchange_type="x-arium-not-installed")
    assert (
        "FAIL rabbitmq: 127.0.0.1:5672/ has no x-arium-not-installed exchange type; on the RabbitMQ server run: "
        "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"
    ) in lines, lines
    refused = _scaled(tmp_path, broker_url="amqp://guest:guest@127.0.0.1:1/")
    lines.clear()
    assert not await check_scaled_mode(refused, lines.append)
    assert any(line.startswith("FAIL rabbitmq:") for line in lines) and "guest" not in "".join(lines)


async def test_doctor_pings_redis(tmp_path: Path) -> None:
    import socket

    import pytest

    from bot.scale.doctor import check_scaled_mode, raw_ping

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16).startswith(b"+PONG")
    except (OSError, AssertionError):
        pytest.skip("Redis does not answer PING on 127.0.0.1:6379")
    await raw_ping(SCALED_REDIS)  # the path without the redis package
    lines: list[str] = []
    await check_scaled_mode(_scaled(tmp_path, redis_url=SCALED_REDIS), lines.append)
    assert any(line.startswith("ok   redis: 127.0.0.1:6379/0 answers PING") for line in lines), lines
    assert any(line.startswith("FAIL scaled mode database") for line in lines)
    lines.clear()
    assert not await check_scaled_mode(_scaled(tmp_path, redis_url="redis://:s3cret@127.0.0.1:1/0"), lines.append)
    assert any(line.startswith("FAIL redis:") for line in lines) and "s3cret" not in "".join(lines)


async def test_doctor_names_the_scheduler_leader(tmp_path: Path, postgres_url: str | None) -> None:
    import pytest

    from bot.scale.doctor import check_scaled_mode
    from bot.runtime.tasks import TaskTracker
    from bot.scale.leader import LeaderElection

    if not postgres_url:
        pytest.skip("TEST_DATABASE_URL not set: the leader is read from a real PostgreSQL")
    prefix = await _rabbitmq_prefix()
    settings = _scaled(tmp_path, broker_url=BROKER, broker_prefix=prefix, database_url=postgres_url)
    lines: list[str] = []
    assert await check_scaled_mode(settings, lines.append), lines
    assert lines[0] == "ok   scaled mode database: PostgreSQL, as the workers need"
    assert "ok   scheduler leader: none: no worker runs (reminders and broadcasts wait for one)" in lines

    elected = asyncio.Event()

    async def on_elected() -> None:
        elected.set()

    async def on_deposed() -> None:
        return None

    election = LeaderElection(
        postgres_url, tasks=TaskTracker(), on_elected=on_elected, on_deposed=on_deposed,
        namespace=prefix, interval=0.2, identity="host-a:42:worker-1",
    )
    await election.start()
    try:
        await asyncio.wait_for(elected.wait(), 30)
        lines.clear()
        await check_scaled_mode(settings, lines.append)
        assert "ok   scheduler leader: host-a:42:worker-1 runs reminders, periodic jobs and broadcasts" in lines, lines
    finally:
        await election.stop()
