"""Which CPUs the two busiest worker threads run on.

A memory recall runs the query embedding (one thread, several milliseconds
of pure compute) and the keyword search (SQLite's worker thread) side by
side. Left to itself, Linux often wakes both threads on the same core while
the other core idles, and the embedding then waits for the search to
finish (on 2 cores: up to 4 ms more in the p99 of a recall at 100k
memories, bench/MEMORY_RESULTS.md). Pinning the embedder to one CPU and the
SQLite workers to the others keeps them apart. Every other thread (the
event loop, FAISS, tools) still runs anywhere, so an idle embedder's CPU is
not wasted.

Only where the process may use at least two CPUs and the platform can pin
threads (Linux); BOT_PIN_THREADS=false turns it off.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuPlan:
    """CPU sets for the embedder thread and the SQLite worker threads;
    None means "anywhere" (no pinning)."""

    embedder: frozenset[int] | None = None
    storage: frozenset[int] | None = None

    @classmethod
    def for_process(cls, enabled: bool, allowed: frozenset[int] | None = None) -> CpuPlan:
        """The embedder gets the highest allowed CPU to itself, storage the
        rest. ``allowed`` defaults to the CPUs this process may use now (a
        container's cpuset included)."""
        if not enabled:
            return cls()
        if allowed is None:
            allowed = allowed_cpus()
        if allowed is None or len(allowed) < 2:
            return cls()
        embedder = max(allowed)
        return cls(frozenset({embedder}), allowed - {embedder})

    @property
    def active(self) -> bool:
        return self.embedder is not None

    def describe(self) -> str:
        if self.embedder is None or self.storage is None:
            return "threads not pinned"
        return f"embedder on CPU {_cpu_list(self.embedder)}, SQLite on CPU {_cpu_list(self.storage)}"


def allowed_cpus() -> frozenset[int] | None:
    """CPUs this process may run on, or None where the platform cannot say."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return None
    return frozenset(getaffinity(0))


def pin_current_thread(cpus: frozenset[int] | None) -> None:
    """Restrict the calling thread (not the process) to ``cpus``; a no-op for
    None. A refusal (a CPU taken away since the plan was made, a sandbox
    without the call) is logged and the thread keeps running anywhere."""
    if cpus is None:
        return
    try:
        os.sched_setaffinity(0, cpus)  # 0: the calling thread on Linux
    except (OSError, AttributeError) as exc:
        log.warning("could not pin a worker thread to CPU %s (%s); it runs anywhere", _cpu_list(cpus), exc)


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))
