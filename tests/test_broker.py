"""The scaled mode's broker parts against the real RabbitMQ on 127.0.0.1:
the topology keeps each chat's updates in one partition, in order; a
partition has one active consumer, and its unacknowledged updates go to
another consumer when the first one's connection dies; the gateway answers
200 only for confirmed updates, 503 while the broker is down, 401 to a
wrong secret."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest

from bot.runtime.tasks import TaskTracker
from bot.scale.broker import BrokerUnavailable, PartitionConsumer, Topology, UpdatePublisher, chat_of, remove
from bot.scale.gateway import Gateway
from bot.settings import Settings
from tests.limits import WAIT_LIMIT
from tests.support.broker import BROKER, broker_up

REFUSED = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    """Exchange and queues of this test alone (a unique prefix), deleted afterwards."""
    if not await broker_up():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    made = Topology(f"test-{uuid.uuid4().hex[:10]}", 8)
    yield made
    connection = await aio_pika.connect(BROKER)
    await remove(await connection.channel(), made)
    await connection.close()


def message(update_id: int, chat_id: int, text: str = "hi") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {"message_id": update_id, "date": 0, "chat": {"id": chat_id, "type": "private"},
                    "from": {"id": chat_id, "is_bot": False, "first_name": "A"}, "text": text},
    }


class Recorder:
    def __init__(self, *, hold: asyncio.Event | None = None) -> None:
        self.seen: list[tuple[int, int, bool]] = []  # (chat, update_id, redelivered)
        self._hold = hold

    async def __call__(self, update: dict[str, Any], redelivered: bool) -> None:
        self.seen.append((chat_of(update), update["update_id"], redelivered))
        if self._hold is not None:
            await self._hold.wait()


async def eventually(check: Any, timeout: float = WAIT_LIMIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_the_routing_key_is_the_chat() -> None:
    assert chat_of(message(1, -100)) == -100
    assert chat_of({"update_id": 2, "callback_query": {"id": "x", "from": {"id": 5}, "message": {"chat": {"id": 7}}}}) == 7
    assert chat_of({"update_id": 3, "inline_query": {"id": "q", "from": {"id": 9}}}) == 9
    assert chat_of({"update_id": 4}) == 0


async def test_each_chat_keeps_its_order_in_one_partition(topology: Topology) -> None:
    publisher = UpdatePublisher(BROKER, topology)
    recorder = Recorder()
    consumer = PartitionConsumer(BROKER, topology, recorder, prefetch=64)
    await consumer.start()
    chats = [1000 + n for n in range(20)]
    for round_ in range(5):
        for chat in chats:
            await publisher.publish(message(round_ * 100 + chat, chat))
    await eventually(lambda: len(recorder.seen) == 100)
    await consumer.close()
    await publisher.close()
    for chat in chats:
        ids = [update_id for seen_chat, update_id, _ in recorder.seen if seen_chat == chat]
        assert ids == sorted(ids) and len(ids) == 5, chat
    connection = await aio_pika.connect(BROKER)
    channel = await connection.channel()
    used = 0
    for name in topology.queues():
        queue = await channel.declare_queue(name, durable=True, passive=True)
        used += queue.declaration_result.message_count == 0
    await connection.close()
    assert used == topology.partitions, "every message was acknowledged"


async def test_a_dead_consumer_s_partitions_and_unacknowledged_updates_go_to_the_other(topology: Topology) -> None:
    publisher = UpdatePublisher(BROKER, topology)
    stuck = Recorder(hold=asyncio.Event())  # takes updates and never finishes them
    first = PartitionConsumer(BROKER, topology, stuck)
    await first.start()
    second_recorder = Recorder()
    second = PartitionConsumer(BROKER, topology, second_recorder)
    await second.start()
    for n in range(16):
        await publisher.publish(message(n + 1, 500 + n))
    await eventually(lambda: len(stuck.seen) == 16)
    assert second_recorder.seen == [], "single active consumer: the first one holds every partition"
    await first._connection.close()  # type: ignore[union-attr]  # as a kill -9 would, without the drain
    await eventually(lambda: len(second_recorder.seen) == 16)
    assert all(redelivered for _, _, redelivered in second_recorder.seen)
    assert sorted(update_id for _, update_id, _ in second_recorder.seen) == list(range(1, 17))
    await second.close()
    await publisher.close()


async def test_a_publisher_without_a_broker_says_so() -> None:
    publisher = UpdatePublisher(REFUSED, Topology("nowhere", 2), timeout=2)
    await publisher.start()  # does not raise: a gateway starts and answers 503s
    with pytest.raises(BrokerUnavailable):
        await publisher.publish(message(1, 1))


def gateway_settings(topology: Topology, broker: str, **values: Any) -> Settings:
    defaults: dict[str, Any] = {
        "telegram_bot_token": "123:abc",
        "webhook_url": "https://bot.example.com/telegram/hook",
        "webhook_secret": "s3cret-token",
        "broker_url": broker,
        "broker_prefix": topology.prefix,
        "broker_partitions": topology.partitions,
        "api_host": "127.0.0.1",
        "api_port": 0,
    }
    return Settings(_env_file=None, **{**defaults, **values})  # type: ignore[call-arg]


async def test_the_gateway_confirms_refuses_and_asks_for_redelivery(topology: Topology) -> None:
    recorder = Recorder()
    consumer = PartitionConsumer(BROKER, topology, recorder)
    await consumer.start()
    answers: dict[str, int] = {}
    for label, broker in (("up", BROKER), ("down", REFUSED)):
        gateway = Gateway(gateway_settings(topology, broker), TaskTracker())
        await gateway.publisher.start()
        await gateway.http.start()
        await gateway.http.start_receiving()
        url = f"http://127.0.0.1:{gateway.http.port}/telegram/hook"
        async with httpx.AsyncClient(timeout=10) as client:
            good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
            answers[label] = (await client.post(url, json=message(77, 42), headers=good)).status_code
            if label == "up":
                metrics = (await client.get(f"http://127.0.0.1:{gateway.http.port}/metrics")).text
                assert 'arium_gateway_updates_total{outcome="published"} 1.0' in metrics
                assert "arium_gateway_confirm_seconds_count 1.0" in metrics
                bad = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
                answers["bad secret"] = (await client.post(url, json=message(78, 42), headers=bad)).status_code
                answers["no json"] = (await client.post(url, content=b"{", headers=good)).status_code
        await gateway.stop()
    # A last update of the same chat: once it is in, anything published
    # before it for that chat is in too (one partition, in order).
    publisher = UpdatePublisher(BROKER, topology)
    await publisher.publish(message(99, 42))
    await eventually(lambda: any(update_id == 99 for _, update_id, _ in recorder.seen))
    await publisher.close()
    await consumer.close()
    assert answers == {"up": 200, "bad secret": 401, "no json": 400, "down": 503}
    assert recorder.seen == [(42, 77, False), (42, 99, False)], "the refused ones were never published"


async def test_partitions_are_handed_to_their_preferred_worker(topology: Topology) -> None:
    """The first consumer holds every partition (single active consumer);
    handing over the ones the second should hold spreads the chats."""
    publisher = UpdatePublisher(BROKER, topology)
    first_seen, second_seen = Recorder(), Recorder()
    first = PartitionConsumer(BROKER, topology, first_seen)
    second = PartitionConsumer(BROKER, topology, second_seen)
    await first.start()
    await second.start()
    chats = list(range(700, 740))
    for chat in chats:
        await publisher.publish(message(chat, chat))
    await eventually(lambda: len(first_seen.seen) == len(chats))
    assert second_seen.seen == [], "before: the first consumer holds every partition"
    seconds = {queue for queue in topology.queues() if int(queue.rsplit(".", 1)[-1]) % 2}
    moved = await first.hand_over(lambda queue: queue not in seconds)
    assert set(moved) <= seconds and moved, "only partitions the first served and should not keep"
    for chat in chats:
        await publisher.publish(message(1000 + chat, chat))
    await eventually(lambda: len(first_seen.seen) + len(second_seen.seen) == 2 * len(chats))
    by_second = {chat for chat, _, _ in second_seen.seen}
    first_again = {chat for chat, update_id, _ in first_seen.seen if update_id >= 1000}
    assert by_second, "the second consumer holds the partitions handed over"
    assert first_again and not by_second & first_again, "each chat stays in one partition, on one consumer"
    assert by_second | first_again == set(chats)
    await first.close()
    await second.close()
    await publisher.close()


class Proxy:
    """A TCP relay to RabbitMQ that the test can cut and restore: the
    broker going away and coming back, as the gateway sees it, without
    stopping the RabbitMQ other tests use."""

    def __init__(self, target_port: int = 5672) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._links):
            writer.close()
        self._links.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        self._links |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_updates_sent_while_the_broker_is_away_arrive_once_it_is_back(topology: Topology) -> None:
    """Telegram (the fake) posts to the gateway while the broker is cut off:
    503s, and Telegram keeps the updates; once the broker is back they are
    published, in order, each once."""
    from tests.fakes.telegram_server import FakeTelegram

    proxy = Proxy()
    await proxy.open()
    recorder = Recorder()
    consumer = PartitionConsumer(BROKER, topology, recorder)  # directly: only the gateway's side is cut
    await consumer.start()
    async with FakeTelegram() as tg:
        port = _free_port()
        settings = gateway_settings(
            topology, f"amqp://guest:guest@127.0.0.1:{proxy.port}/",
            telegram_api_url=tg.url, telegram_bot_token=tg.TOKEN, api_port=port,
            webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        )
        gateway = Gateway(settings, TaskTracker())
        await gateway.start()
        tg.user_text("before", chat_id=42, user_id=42)
        await eventually(lambda: len(recorder.seen) == 1)
        await proxy.cut()
        tg.user_text("during 1", chat_id=42, user_id=42)
        tg.user_text("during 2", chat_id=42, user_id=42)
        await eventually(lambda: any(d.status == 503 for d in tg.webhook_deliveries))
        assert len(recorder.seen) == 1, "nothing published while the broker is away"
        await proxy.open()  # the same port again
        await eventually(lambda: len(recorder.seen) == 3)
        await gateway.stop()
    await consumer.close()
    await proxy.cut()
    ids = [update_id for _, update_id, _ in recorder.seen]
    assert ids == sorted(ids) and len(set(ids)) == 3, "in order, each once"
    assert gateway.refused >= 1 and gateway.published == 3


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_each_live_worker_is_preferred_for_an_equal_share_of_partitions() -> None:
    from collections import Counter

    from bot.scale.runner import preferred_owner

    queues = Topology("arium", 64).queues()
    for members in (["a"], ["b", "a", "c"], ["w1", "w2", "w3", "w4"]):
        shares = Counter(preferred_owner(queue, members) for queue in queues)
        assert set(shares) == set(members) and max(shares.values()) - min(shares.values()) <= 1, shares
    # Every worker computes the same owner from the same members, in whatever order it read them.
    assert [preferred_owner(q, ["x", "y"]) for q in queues] == [preferred_owner(q, ["y", "x"]) for q in queues]
