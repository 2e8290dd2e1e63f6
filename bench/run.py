"""Run the benchmarks and print one markdown table.

    .venv/bin/python -m bench.run                 # everything (about five minutes; P3 alone takes two)
    .venv/bin/python -m bench.run --only P1       # one benchmark (P1, P2, P3, P6)
    .venv/bin/python -m bench.run --profile out.prof   # also cProfile the run

The bot runs in this process and one event loop, against fakes on 127.0.0.1:
for P1 and P2 the fakes run in a child process by default (--fakes), for P3
and P6 in this process. The run stops by itself (each benchmark has a time
limit)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import platform
import pstats
import sys
import time

from bench.harness import FAKES_MODES, Row, bounded
from bench.p1_overhead import MEMORIES, run_p1
from bench.p2_burst import run_p2
from bench.p3_broadcast import DEFAULT_RATE, run_p3
from bench.p6_failover import run as run_p6

PROVIDERS = ("openai", "mistral")
# Per benchmark and provider; P3 (3,000 messages at ~28/s) is most of the run.
# P1 and P2 run the thinnest bot and Arium one after the other.
LIMIT_SECONDS = {"P1": 180.0, "P2": 80.0, "P3": 200.0, "P6": 60.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=str.upper, choices=("P1", "P2", "P3", "P6"), help="run one benchmark")
    parser.add_argument("--turns", type=int, default=200, help="P1 measured turns per bot (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="P1 warm-up turns (default 20)")
    parser.add_argument(
        "--chats", type=lambda v: [int(n) for n in v.split(",")], default=[100, 200],
        help="P2 simultaneous chats, comma-separated (default 100,200)",
    )
    parser.add_argument("--users", type=int, default=3000, help="P3 broadcast recipients (default 3,000)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help=f"P3 bulk send rate (default {DEFAULT_RATE:g}/s)")
    parser.add_argument("--provider", choices=PROVIDERS, help="only this provider")
    parser.add_argument(
        "--fakes", choices=(*FAKES_MODES, "both"), default="process",
        help="P1/P2: fakes in a child process (default), in the bot's process and loop (the old way), or both side by side",
    )
    parser.add_argument("--memories", type=int, default=MEMORIES, help=f"P1 stored memories (default {MEMORIES:,})")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the run, write stats to FILE")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> list[Row]:
    providers = [args.provider] if args.provider else list(PROVIDERS)
    modes = list(FAKES_MODES) if args.fakes == "both" else [args.fakes]
    rows: list[Row] = []
    # Side by side in one run: ratios between rows hold even on a noisy machine.
    if args.only in (None, "P1"):
        for provider in providers:
            for mode in modes:
                rows += await bounded(
                    run_p1(provider, args.turns, args.warmup, mode, args.memories), LIMIT_SECONDS["P1"], "P1",
                    f"{provider}, fakes {mode}",
                )
    if args.only in (None, "P2"):
        for provider in providers:
            for mode in modes:
                for chats in args.chats:
                    rows += await bounded(
                        run_p2(provider, chats, mode), LIMIT_SECONDS["P2"], "P2", f"{provider}, fakes {mode}"
                    )
    if args.only in (None, "P3"):
        # No model involved: one row set, whatever the provider.
        rows += await bounded(run_p3(args.users, args.rate), LIMIT_SECONDS["P3"], "P3", "-")
    if args.only in (None, "P6"):
        rows += await bounded(run_p6(), LIMIT_SECONDS["P6"], "P6", "openai")
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| bench | provider | measure | value | budget | result |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.bench} | {r.provider} | {r.measure} | {r.value} | {r.budget} | {r.result} |" for r in rows]
    return "\n".join(lines)


def header() -> str:
    return (
        f"Arium benchmarks, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The bot's warnings still reach stderr; its per-turn INFO lines would only add noise and CPU.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    rows = asyncio.run(run_all(args))
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
        pstats.Stats(args.profile, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    print(header())
    print()
    print(table(rows))
    print()
    print(
        "P1/P2 'fakes process': the fake Bot API and model server run in a child process, so the bot "
        "process CPU is the bot's own; P3 and P6 keep the fakes in-process. Recall alone at 1k/10k/100k "
        "memories is P4: python -m bench.memory."
    )
    return 1 if any(r.result == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
