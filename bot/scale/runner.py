"""A worker process's scaled-mode parts together: the broker's consumer of
the partition queues, and the election of the one worker that runs the
scheduled work."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from bot.runtime.tasks import TaskTracker
from bot.scale.broker import PartitionConsumer, Topology
from bot.errors import AriumError
from bot.scale.leader import APPLICATION_PREFIX, LeaderElection
from bot.scale.state import ScaledState
from bot.scale.worker import UpdateWorker
from bot.settings import Settings

log = logging.getLogger(__name__)

BALANCE_INTERVAL = 3.0  # seconds between two looks at the live workers
PRUNE_INTERVAL = 3600.0  # seconds between two prunings of old update claims


class ScaledWorker:
    def __init__(
        self,
        settings: Settings,
        worker: UpdateWorker,
        tasks: TaskTracker,
        *,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ) -> None:
        assert settings.broker_url is not None  # check_worker_settings
        self.worker = worker
        self.topology = Topology(settings.broker_prefix, settings.broker_partitions)
        self.consumer = PartitionConsumer(
            settings.broker_url.get_secret_value(),
            self.topology,
            worker.handle,
            prefetch=settings.bot_max_concurrent_updates,
        )
        self._drain = settings.bot_shutdown_timeout
        self.leader = LeaderElection(
            settings.effective_database_url,
            tasks=tasks,
            on_elected=on_elected,
            on_deposed=on_deposed,
            namespace=settings.broker_prefix,  # two bots on one database elect their own leaders
            # Starts with the prefix: the members of this bot, read from PostgreSQL, spread the partitions.
            identity=f"{settings.broker_prefix}:{socket.gethostname()}:{os.getpid()}:{worker.name}",
        )
        self._member_prefix = f"{settings.broker_prefix}:"
        self._balancing: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._next_prune = 0.0
        self._tasks = tasks

    async def start(self) -> None:
        await self.leader.start()
        await self.consumer.start()
        self._balancing = self._tasks.spawn(self._balance(), "partition-balance")
        log.info(
            "worker %s consumes %d partitions of %s", self.worker.name, self.topology.partitions, self.topology.exchange
        )

    async def stop(self) -> None:
        """Stop taking updates (turns in flight finish with the channel's
        stop), then step down so another worker leads at once."""
        self._stopping.set()
        if self._balancing is not None:
            # Not cancelled halfway: a cancelled consume or cancel call makes the
            # broker client close the channel, and the acks of the turns still
            # finishing would be lost.
            _, late = await asyncio.wait({self._balancing}, timeout=10)
            for task in late:
                task.cancel()
        await self.consumer.close(self._drain)
        await self.leader.stop()

    async def state(self) -> ScaledState:
        """For /health; what cannot be read now (the broker or the database
        unreachable) shows as unknown rather than failing /health."""
        try:
            depths = await self.consumer.depths()
        except Exception:  # noqa: BLE001 - the broker being down is what /health should then show
            log.warning("could not read the partition queues for /health", exc_info=True)
            depths = []
        try:
            leader = await self.leader.current_leader()
        except AriumError:
            leader = None
        busiest = max(depths, key=lambda row: row[1], default=None)
        counts = self.worker.counts
        return ScaledState(
            worker=self.worker.name,
            leader=leader,
            leads=self.leader.is_leader,
            workers=max((consumers for _, _, consumers in depths), default=0),
            partitions=self.topology.partitions,
            held=tuple(self.consumer.held()),
            waiting=sum(waiting for _, waiting, _ in depths),
            busiest=(busiest[0], busiest[1]) if busiest is not None and busiest[1] else None,
            handled=counts.handled,
            duplicates=counts.duplicates,
            resumed=counts.resumed,
        )

    async def _prune_claims(self) -> None:
        """The leader forgets old update claims now and then (any worker could; one is enough)."""
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        try:
            pruned = await self.worker.prune()
        except Exception as exc:  # noqa: BLE001 - the next hour tries again; balancing goes on
            log.warning("could not prune old update claims: %s", exc)
            return
        if pruned:
            log.info("pruned %d update claims older than two days", pruned)

    async def _balance(self, interval: float = BALANCE_INTERVAL) -> None:
        """Now and then, hand the partitions other live workers should hold
        to them (PartitionConsumer.hand_over)."""
        # As PostgreSQL lists it: the name is cut at 63 characters.
        me = self.leader.application_name.removeprefix(APPLICATION_PREFIX)
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            if self.leader.is_leader and time.monotonic() >= self._next_prune:
                await self._prune_claims()
            try:
                members = await self.leader.members(self._member_prefix)
            except Exception:  # noqa: BLE001 - the database unreachable: keep what is held, try later
                log.warning("could not read the live workers; partitions stay where they are", exc_info=True)
                continue
            if len(members) < 2 or me not in members:
                continue
            try:
                await self.consumer.hand_over(lambda queue: preferred_owner(queue, members) == me)
            except Exception:  # noqa: BLE001 - the broker's connection is being restored: next round
                log.warning("could not hand partitions over this round", exc_info=True)


def preferred_owner(queue: str, members: list[str]) -> str:
    """The worker a partition belongs to: partition N to the (N mod W)-th of
    the W live workers in name order, so each holds an equal share (to one
    partition). When a worker comes or goes most partitions change owner;
    they move one by one as each goes idle, and it happens seldom."""
    number = int(queue.rsplit(".", 1)[-1])
    ordered = sorted(members)
    return ordered[number % len(ordered)]
