"""What /health shows of the scaled mode (a worker's view)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScaledState:
    worker: str  # this worker's name
    leader: str | None  # the leading worker's identity (host:pid:name); None: nobody leads now
    leads: bool  # this worker runs the scheduled work
    workers: int  # consumers registered on the partitions (one per live worker)
    partitions: int
    held: tuple[str, ...]  # partitions this worker served lately
    waiting: int  # updates waiting over all partitions
    busiest: tuple[str, int] | None  # the partition with most waiting, and how many
    handled: int
    duplicates: int  # deliveries of updates already handled, dropped
    resumed: int  # turns a dead worker left, finished here
