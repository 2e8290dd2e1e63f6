"""How long the embedding model takes to be ready at a (re)start, and the
memory the process then holds: the fast start (the ONNX export an earlier
start checked, with its manifest: ONNX Runtime and the fast tokenizer, no
torch) against loading through sentence-transformers and torch (what every
start did before). Each run is a fresh interpreter, the two kinds
alternated, so both see the same machine.

    .venv/bin/python -m bench.embedder_start            # 5 runs of each (~1 min)
    .venv/bin/python -m bench.embedder_start --runs 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# Runs in the child: the clock starts before the first import of ours, and the
# model must answer one query (the first recall's embedding) before it stops.
CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from pathlib import Path
from bot.memory.embedder import SentenceTransformerEmbedder, load_embedder
cache = Path(sys.argv[2])
# int8: as the bot runs it (BOT_EMBEDDING_INT8)
embedder = (load_embedder(cache_dir=cache, int8=True) if sys.argv[1] == "fast"
            else SentenceTransformerEmbedder(cache_dir=cache, int8=True))
embedder.encode(["What kind of car do I have?"])
print(json.dumps({
    "seconds": time.perf_counter() - start,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "kind": type(embedder).__name__,
    "torch": "torch" in sys.modules,
}))
"""


def run_child(kind: str, cache: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(cache)],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arium-bench-embedder-") as tmp:
        cache = Path(tmp)
        first = run_child("torch", cache)  # the first start: exports, checks, writes the manifest
        results: dict[str, list[dict[str, object]]] = {"fast": [], "torch": []}
        for _ in range(args.runs):
            for kind in ("fast", "torch"):
                results[kind].append(run_child(kind, cache))
    print(f"first start (export + check + manifest): {first['seconds']:.2f} s, peak RSS {first['rss_mb']:.0f} MB\n")
    print("| start | loaded as | torch imported | ready + one query, median (min-max) | peak RSS median |")
    print("| --- | --- | --- | --- | --- |")
    medians = {}
    for kind, runs in results.items():
        seconds = [float(r["seconds"]) for r in runs]
        rss = [float(r["rss_mb"]) for r in runs]
        medians[kind] = statistics.median(seconds)
        print(f"| {kind} | {runs[0]['kind']} | {runs[0]['torch']} | {medians[kind]:.2f} s ({min(seconds):.2f}-{max(seconds):.2f}) "
              f"| {statistics.median(rss):.0f} MB |")
    print(f"\nfast / torch: {medians['fast'] / medians['torch']:.2f}x the time ({args.runs} alternated runs each)")


if __name__ == "__main__":
    main()
