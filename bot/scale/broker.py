"""RabbitMQ for the scaled mode: the topology, the gateway's publisher and
the workers' consumer.

Topology (declared idempotently by every gateway and worker at start): one
durable consistent-hash exchange ``{prefix}.updates``; ``partitions``
durable queues ``{prefix}.updates.N``, each bound to it with weight 1 and
declared with single-active-consumer. An update is published with its chat
id as routing key, so every update of a chat lands in the same queue, in
order; RabbitMQ gives each queue to one consumer at a time, and hands it to
another worker when that consumer's connection dies (unacknowledged
messages are delivered again, marked redelivered). Nothing here is our own
coordination: ordering, ownership and failover are the broker's."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from bot.errors import AriumError

log = logging.getLogger(__name__)

HASH_EXCHANGE = "x-consistent-hash"
# Points of each partition on the exchange's hash ring (the binding key is the
# weight): with a few points per partition, chats spread unevenly over them.
PARTITION_WEIGHT = "20"
RETRY_PAUSE = 1.0  # seconds before an update that failed on our side goes back to the queue


class BrokerUnavailable(AriumError):
    """The broker did not take (or confirm) an update; the sender should try again later."""


@dataclass(frozen=True)
class Topology:
    prefix: str
    partitions: int

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.updates"

    def queue(self, number: int) -> str:
        return f"{self.prefix}.updates.{number}"

    def queues(self) -> list[str]:
        return [self.queue(number) for number in range(self.partitions)]


async def declare(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """The exchange and the partition queues, bound; the same declaration
    from every process (RabbitMQ refuses a differing one, which names the
    mistake: a gateway and workers configured with different partitions)."""
    exchange = await channel.declare_exchange(topology.exchange, HASH_EXCHANGE, durable=True)
    for name in topology.queues():
        queue = await channel.declare_queue(name, durable=True, arguments={"x-single-active-consumer": True})
        await queue.bind(exchange, routing_key=PARTITION_WEIGHT)
    return exchange


async def remove(channel: AbstractChannel, topology: Topology) -> None:
    """``declare``'s inverse: the partition queues (their messages too) and
    the exchange (tests and benchmarks clean up their own prefix with it)."""
    for name in topology.queues():
        await channel.queue_delete(name)
    await channel.exchange_delete(topology.exchange)


def chat_of(update: dict[str, Any]) -> int:
    """The chat an update belongs to (its routing key): a message's chat, a
    button's message's chat, a member change's chat; else the sender (an
    inline query); else 0 (all such updates share one partition, in order)."""
    for key, value in update.items():
        if key == "update_id" or not isinstance(value, dict):
            continue
        chat = value.get("chat") or (value.get("message") or {}).get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            return chat["id"]
        sender = value.get("from")
        if isinstance(sender, dict) and isinstance(sender.get("id"), int):
            return sender["id"]
    return 0


class UpdatePublisher:
    """The gateway's side: one robust connection, a channel with publisher
    confirms; ``publish`` returns only once the broker has the update on
    disk (persistent message, confirmed), else raises BrokerUnavailable."""

    def __init__(self, url: str, topology: Topology, *, timeout: float = 5.0) -> None:
        self._url = url
        self._topology = topology
        self._timeout = timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None

    async def start(self) -> None:
        """Connect now if the broker answers; if not, the first publish tries
        again (a gateway must start and answer 503s while the broker is down)."""
        try:
            await self._connect()
        except BrokerUnavailable as exc:
            log.warning("broker not reachable at start: %s", exc)

    async def _connect(self) -> AbstractExchange:
        if self._exchange is not None and self._connection is not None and not self._connection.is_closed:
            return self._exchange
        try:
            self._connection = await aio_pika.connect_robust(self._url, timeout=self._timeout)
            channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await declare(channel, self._topology)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker is the same to a caller
            await self._drop()
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return self._exchange

    async def publish(self, update: dict[str, Any]) -> None:
        exchange = await self._connect()
        message = aio_pika.Message(
            json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=str(update.get("update_id", "")),
        )
        try:
            # With confirms on, this returns when the broker confirmed; mandatory:
            # an update no queue took (no binding yet) is an error, not a silent drop.
            await exchange.publish(
                message, routing_key=str(chat_of(update)), mandatory=True, timeout=self._timeout
            )
        except Exception as exc:  # noqa: BLE001 - not confirmed is not delivered, whatever the cause
            await self._drop()
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass

    async def close(self) -> None:
        await self._drop()


Handler = Callable[[dict[str, Any], bool], Awaitable[None]]  # (update, redelivered)


class PartitionConsumer:
    """The worker's side: consumes every partition queue (RabbitMQ makes it
    the active consumer of those no other worker holds); each message is
    acknowledged after ``handle`` returned, i.e. after its turn is stored."""

    def __init__(self, url: str, topology: Topology, handle: Handler, *, prefetch: int = 32) -> None:
        self._url = url
        self._topology = topology
        self._handle = handle
        self._prefetch = prefetch
        self._connection: AbstractRobustConnection | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._channel: AbstractChannel | None = None
        # Queue -> when this worker last took a message from it: RabbitMQ
        # does not tell a consumer whether it is the active one, so /health
        # shows the partitions this worker served lately.
        self.taken_at: dict[str, float] = {}
        self._queue_of: dict[str, str] = {}  # consumer tag -> queue
        self._busy: dict[str, int] = {}  # queue -> its messages taken here and not yet acknowledged
        self._release_when_idle: set[str] = set()  # to hand over once their messages in flight are done
        self._closing = False
        self.handed_over = 0

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self._url)
        channel = self._channel = await self._connection.channel()
        # Unacknowledged messages per channel: how many turns of the
        # partitions this worker holds may run at once.
        await channel.set_qos(prefetch_count=self._prefetch)
        await declare(channel, self._topology)
        for name in self._topology.queues():
            await self._subscribe(await channel.get_queue(name, ensure=False))

    async def _subscribe(self, queue: AbstractQueue) -> None:
        tag = await queue.consume(self._on_message, no_ack=False)
        self._consumers.append((queue, tag))
        self._queue_of[tag] = queue.name

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        queue = self._queue_of.get(message.consumer_tag or "", "")
        self.taken_at[queue] = time.monotonic()
        self._busy[queue] = self._busy.get(queue, 0) + 1
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._take(message)
        finally:
            self._busy[queue] -= 1
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        if not self._busy[queue] and queue in self._release_when_idle:
            await self._release(queue)

    async def _take(self, message: AbstractIncomingMessage) -> None:
        try:
            update = json.loads(message.body)
        except ValueError:
            log.error("dropping a message that is not JSON from %s", message.routing_key)
            await message.reject(requeue=False)
            return
        try:
            await self._handle(update, bool(message.redelivered))
        except Exception:
            # Our failure, not the update's (the database unreachable, say): it
            # goes back for another try, after a pause rather than at once.
            log.exception("update %s failed; requeued in %.0f s", update.get("update_id"), RETRY_PAUSE)
            await asyncio.sleep(RETRY_PAUSE)
            await message.nack(requeue=True)
            return
        await message.ack()

    async def hand_over(self, keep: Callable[[str], bool]) -> list[str]:
        """Spread the partitions over the workers. Single-active-consumer
        makes the first consumer of a queue its active one, so the first
        worker to start would hold every partition. For each partition this
        worker should not keep (another live worker is its preferred owner)
        and that has nothing in flight here (so a chat's next update cannot
        overtake the one still running): cancel the consumer and subscribe
        again, at the back of the line. If this worker was the active one,
        RabbitMQ activates the next consumer; every worker that is not the
        preferred owner does the same, so within a few rounds the preferred
        one holds it and keeps it. (RabbitMQ does not tell a consumer whether
        it is the active one, so standby subscriptions are moved too: a
        cancel and a consume, cheap.) Returns the queues moved."""
        moved = []
        self._release_when_idle.clear()
        for queue, _ in list(self._consumers):
            name = queue.name
            if keep(name):
                continue
            if self._busy.get(name, 0):
                self._release_when_idle.add(name)  # as soon as its last message here is acknowledged
            elif await self._release(name):
                moved.append(name)
        return moved

    async def _release(self, name: str) -> bool:
        """Cancel this worker's consumer of queue ``name`` and subscribe
        again, at the back of the line."""
        self._release_when_idle.discard(name)
        if self._closing:
            return False
        entry = next(((queue, tag) for queue, tag in self._consumers if queue.name == name), None)
        if entry is None:
            return False
        queue, tag = entry
        self._consumers.remove(entry)
        self._queue_of.pop(tag, None)
        self.taken_at.pop(name, None)
        try:
            await queue.cancel(tag)
            await self._subscribe(queue)
        except Exception:  # noqa: BLE001 - a lost connection: the robust connection subscribes again
            log.warning("could not hand partition %s over; it stays where it is", name, exc_info=True)
            return False
        self.handed_over += 1
        return True

    def held(self, within: float = 600.0) -> list[str]:
        """The partitions this worker took a message from in the last ``within`` seconds."""
        since = time.monotonic() - within
        return sorted((q for q, at in self.taken_at.items() if at >= since), key=_partition_number)

    async def depths(self) -> list[tuple[str, int, int]]:
        """(queue, messages waiting, consumers) of every partition."""
        if self._connection is None:
            return []
        channel = await self._connection.channel()
        try:
            rows = []
            for name in self._topology.queues():
                queue = await channel.declare_queue(name, passive=True)
                result = queue.declaration_result
                rows.append((name, int(result.message_count or 0), int(result.consumer_count or 0)))
            return rows
        finally:
            await channel.close()

    async def close(self, timeout: float = 30.0) -> None:
        """Stop taking messages, let the ones taken finish and be
        acknowledged (bounded by ``timeout``), then disconnect: closing
        first would hand their updates to another worker while this one
        still answers them."""
        self._closing = True
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception:  # noqa: BLE001 - a lost connection cancelled it already
                pass
        self._consumers.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("%d updates still running at stop; the broker hands them to another worker", self._in_flight)
        if self._connection is not None:
            await self._connection.close()
            self._connection = None


def _partition_number(queue: str) -> int:
    return int(queue.rsplit(".", 1)[-1])
