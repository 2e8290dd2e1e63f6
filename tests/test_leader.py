"""One scheduler leader among several workers (bot/scale/leader.py), against a
real PostgreSQL: elections share this run's database, each test in its own
namespace, with short intervals so a handover takes a fraction of a second."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy import make_url

from bot.errors import ConfigError
from bot.runtime.tasks import TaskTracker
from bot.scale.leader import APPLICATION_PREFIX, LeaderElection, lock_key, require_postgres
from tests.conftest import eventually
from tests.limits import WAIT_LIMIT

INTERVAL = 0.2
# A slow check counts as a lost connection; generous here so a busy test
# machine never deposes a healthy leader (the kills below fail at once anyway).
CHECK_TIMEOUT = 5.0
TAKEOVER_LIMIT = 10.0  # the promise: a dead leader is replaced within 10 s
ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@dataclass
class Candidate:
    name: str  # in the log; the election's identity adds the namespace
    election: LeaderElection
    events: list[str] = field(default_factory=list)

    @property
    def identity(self) -> str:
        return self.election.identity


class Campaign:
    """Elections on one database and namespace, sharing one log of callbacks in
    the order they ran, and one error handler."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.log: list[str] = []
        self.errors: list[tuple[BaseException, str]] = []
        self.tasks = TaskTracker(on_error=lambda exc, name: self.errors.append((exc, name)))
        self.candidates: list[Candidate] = []

    async def join(
        self, name: str, namespace: str | None = None, deposing_takes: float = 0.0,
        check_timeout: float = CHECK_TIMEOUT,
    ) -> Candidate:
        """``deposing_takes``: how long on_deposed works, like a scheduler finishing its sends."""
        candidate: Candidate

        async def elected() -> None:
            candidate.events.append("elected")
            self.log.append(f"{name} elected")

        async def deposed() -> None:
            await asyncio.sleep(deposing_takes)
            candidate.events.append("deposed")
            self.log.append(f"{name} deposed")

        election = LeaderElection(
            self.url, tasks=self.tasks, on_elected=elected, on_deposed=deposed,
            namespace=self.namespace if namespace is None else namespace,
            interval=INTERVAL, check_timeout=check_timeout, identity=self.identity(name),
        )
        candidate = Candidate(name, election)
        self.candidates.append(candidate)
        await election.start()
        return candidate

    def identity(self, name: str) -> str:
        """Unique on the server: pg_stat_activity shows every database's sessions,
        other runs' included."""
        return f"{name}.{self.namespace}"

    def leaders(self) -> list[Candidate]:
        return [c for c in self.candidates if c.election.is_leader]

    async def one_leader(self, among: list[Candidate] | None = None, timeout: float = WAIT_LIMIT) -> Candidate:
        pool = self.candidates if among is None else among

        async def leading() -> list[Candidate]:
            return [c for c in pool if c.election.is_leader]

        (leader,) = await eventually(leading, lambda found: len(found) == 1, timeout=timeout)
        return leader

    async def rounds_pass(self, rounds: int = 3) -> None:
        """Wait until every running election has tried (or checked) ``rounds``
        more times: whatever could still change has had its chances."""
        running = [c for c in self.candidates if c.election.campaigning]
        targets = [c.election.rounds + rounds for c in running]

        async def counts() -> list[int]:
            return [c.election.rounds for c in running]

        await eventually(counts, lambda now: all(n >= t for n, t in zip(now, targets)))

    async def stop(self) -> None:
        for candidate in self.candidates:
            await candidate.election.stop()
        await self.tasks.drain(5.0)


@pytest.fixture
def database(postgres_url: str | None) -> str:
    if not postgres_url:
        pytest.skip("TEST_DATABASE_URL not set: the leader election needs a real PostgreSQL")
    return postgres_url


@pytest.fixture
async def campaign(database: str) -> AsyncIterator[Campaign]:
    running = Campaign(database, namespace=f"test-{secrets.token_hex(4)}")
    yield running
    await running.stop()
    assert running.errors == [], "no callback or loop failed unless a test expects it"


async def now(value: T) -> T:
    """For ``eventually`` on state this process holds in memory."""
    return value


async def admin_connection(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(**make_url(url).translate_connect_args(username="user"))


async def lock_holders(url: str, namespace: str) -> int:
    """Sessions holding this namespace's lock, as PostgreSQL itself sees it."""
    unsigned = lock_key(namespace) & 0xFFFF_FFFF_FFFF_FFFF
    conn = await admin_connection(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid = $1::oid AND objid = $2::oid"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            unsigned >> 32, unsigned & 0xFFFF_FFFF,
        ))
    finally:
        await conn.close()


async def backends_named(url: str, identity: str) -> list[int]:
    conn = await admin_connection(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_PREFIX + identity,
        )
        return [row["pid"] for row in rows]
    finally:
        await conn.close()


# --- one leader -------------------------------------------------------------------------


async def test_of_three_elections_exactly_one_leads(campaign: Campaign) -> None:
    for name in ("a", "b", "c"):
        await campaign.join(name)
    leader = await campaign.one_leader()
    await campaign.rounds_pass()  # the two others have tried again and again meanwhile

    assert campaign.leaders() == [leader]
    assert campaign.log == [f"{leader.name} elected"]
    assert await lock_holders(campaign.url, campaign.namespace) == 1
    follower = next(c for c in campaign.candidates if c is not leader)
    assert await follower.election.current_leader() == leader.identity  # /health on any worker
    assert leader.election.health()["leader"] is True
    assert follower.election.health()["leader"] is False


async def test_a_stopping_leader_hands_over_after_it_stopped_scheduling(campaign: Campaign) -> None:
    # The leader's on_deposed takes a while (finishing its sends): nobody may
    # lead before it returns, or two schedulers would run at once.
    first = await campaign.join("first", deposing_takes=5 * INTERVAL)
    await campaign.one_leader()
    others = [await campaign.join(name) for name in ("b", "c")]

    await first.election.stop()

    assert first.events == ["elected", "deposed"]
    successor = await campaign.one_leader(among=others, timeout=TAKEOVER_LIMIT)
    assert campaign.log == ["first elected", "first deposed", f"{successor.name} elected"]
    assert await first.election.current_leader() == successor.identity


# --- the leader dies --------------------------------------------------------------------


async def test_a_leader_whose_connection_is_killed_steps_down_and_is_replaced(campaign: Campaign) -> None:
    for name in ("a", "b", "c"):
        await campaign.join(name)
    leader = await campaign.one_leader()
    (pid,) = await backends_named(campaign.url, leader.identity)

    conn = await admin_connection(campaign.url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()

    await eventually(lambda: now(leader.events), lambda e: e == ["elected", "deposed"], timeout=TAKEOVER_LIMIT)
    others = [c for c in campaign.candidates if c is not leader]
    successor = await campaign.one_leader(among=others, timeout=TAKEOVER_LIMIT)
    assert not leader.election.is_leader
    # The old leader campaigns again, on a new connection, as a follower.
    await eventually(lambda: backends_named(campaign.url, leader.identity), lambda pids: len(pids) == 1 and pids != [pid])
    await campaign.rounds_pass()
    assert campaign.leaders() == [successor]
    assert await lock_holders(campaign.url, campaign.namespace) == 1


async def test_a_leader_whose_database_stops_answering_steps_down_first(campaign: Campaign) -> None:
    """A hung link (the leader's backend frozen, like a network partition): the
    leader's check times out and it stops scheduling while PostgreSQL still
    holds its lock, so nobody else leads until the old session is really gone."""
    frozen = await campaign.join("frozen", check_timeout=0.5)
    await campaign.one_leader()
    await campaign.join("b")
    (pid,) = await backends_named(campaign.url, frozen.identity)
    try:
        os.kill(pid, signal.SIGSTOP)
    except (PermissionError, ProcessLookupError):
        pytest.skip("PostgreSQL runs on another machine or as a user this test cannot signal")
    try:
        await eventually(lambda: now(frozen.events), lambda e: e == ["elected", "deposed"], timeout=TAKEOVER_LIMIT)
        assert campaign.leaders() == []
        assert await lock_holders(campaign.url, campaign.namespace) == 1  # the frozen session's
    finally:
        os.kill(pid, signal.SIGCONT)  # it finds its client gone and ends, freeing the lock
    await campaign.one_leader(timeout=TAKEOVER_LIMIT)
    assert campaign.log[:2] == ["frozen elected", "frozen deposed"]


CHILD = """
import asyncio, sys
from bot.runtime.tasks import TaskTracker
from bot.scale.leader import LeaderElection

async def main() -> None:
    async def elected() -> None:
        print("elected", flush=True)

    async def deposed() -> None:
        print("deposed", flush=True)

    url, namespace, identity = sys.argv[1:4]
    election = LeaderElection(
        url, tasks=TaskTracker(), on_elected=elected, on_deposed=deposed,
        namespace=namespace, interval=0.2, check_timeout=5.0, identity=identity,
    )
    await election.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_leader_process_killed_with_sigkill_is_replaced(campaign: Campaign) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, campaign.url, campaign.namespace, campaign.identity("child"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), WAIT_LIMIT)
        assert line.strip() == b"elected"
        here = await campaign.join("here")
        await campaign.rounds_pass()
        # Another process with the same namespace holds it: the key is the same in every process.
        assert not here.election.is_leader
        assert await here.election.current_leader() == campaign.identity("child")

        child.send_signal(signal.SIGKILL)  # no goodbye: only PostgreSQL can free the lock
        await child.wait()

        await campaign.one_leader(timeout=TAKEOVER_LIMIT)
        assert here.events == ["elected"]
        assert await here.election.current_leader() == here.identity
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


# --- isolation and configuration --------------------------------------------------------


async def test_two_namespaces_do_not_block_each_other(campaign: Campaign) -> None:
    assert lock_key("bot-one") != lock_key("bot-two")
    one = await campaign.join("one", namespace=f"{campaign.namespace}-one")
    two = await campaign.join("two", namespace=f"{campaign.namespace}-two")

    await eventually(lambda: now(campaign.leaders()), lambda found: len(found) == 2)
    assert one.events == two.events == ["elected"]


async def test_a_failing_on_elected_is_reported_undone_and_retried(database: str) -> None:
    campaign = Campaign(database, namespace=f"test-{secrets.token_hex(4)}")
    calls: list[str] = []

    async def elected() -> None:
        calls.append("elected")
        if len(calls) == 1:
            raise RuntimeError("scheduler failed to start")

    async def deposed() -> None:
        calls.append("deposed")

    election = LeaderElection(
        database, tasks=campaign.tasks, on_elected=elected, on_deposed=deposed,
        namespace=campaign.namespace, interval=INTERVAL, check_timeout=CHECK_TIMEOUT, identity="flaky",
    )
    await election.start()
    try:
        await eventually(lambda: now(list(calls)), lambda c: c == ["elected", "deposed", "elected"])
        assert election.is_leader
        assert [(str(exc), name) for exc, name in campaign.errors] == [
            ("scheduler failed to start", "leader election on_elected")
        ]
    finally:
        await election.stop()
        await campaign.tasks.drain(5.0)
    assert calls[-1] == "deposed"
    assert await lock_holders(database, campaign.namespace) == 0  # stop() released it


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///data/arium.db", "sqlite+aiosqlite:///:memory:"])
def test_the_scaled_mode_refuses_sqlite(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        require_postgres(url)
    assert str(refused.value) == (
        "the scaled mode (gateway, worker) needs PostgreSQL: set DATABASE_URL=postgresql+asyncpg://..."
    )
    with pytest.raises(ConfigError):
        LeaderElection(url, tasks=TaskTracker(), on_elected=_nothing, on_deposed=_nothing)


def test_the_scaled_mode_takes_postgres_with_its_async_driver() -> None:
    require_postgres("postgresql+asyncpg://arium@db.internal:5432/arium")
    with pytest.raises(ConfigError, match="async driver"):
        require_postgres("postgresql://arium@db.internal:5432/arium")


async def _nothing() -> None:
    return None
