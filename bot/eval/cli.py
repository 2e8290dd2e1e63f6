"""``python -m bot eval run|export|compare|report``: the command line of the
evaluation harness (DESIGN.md section 3, "Evaluation")."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.settings import Settings, load_settings

def add_arguments(command: argparse.ArgumentParser) -> None:
    actions = command.add_subparsers(dest="eval_action", required=True)
    run = actions.add_parser("run", help="run a suite; the run id is the last line")
    run.add_argument("suite", type=Path, help="a suite file (see evals/)")
    run.add_argument("--config-b", type=Path, help="a TOML file for variant B (A/B in one run)")
    run.add_argument("--concurrency", type=int, default=4, help="tasks at once (default 4)")
    run.add_argument("--name", help="a name for the run")
    export = actions.add_parser("export", help="write a run's task results as csv, json or parquet")
    export.add_argument("run_id")
    export.add_argument("--format", choices=["csv", "json", "parquet"], required=True)
    export.add_argument("--out", type=Path, required=True)
    compare = actions.add_parser("compare", help="a Markdown table of metric changes; exit 1 on a regression")
    compare.add_argument("base")
    compare.add_argument("run")
    compare.add_argument("--variant", default="A", help="which variant of each run (default A)")
    compare.add_argument("--max-success-drop", type=float, default=5.0, help="percentage points (default 5)")
    compare.add_argument("--max-latency-rise", type=float, default=25.0, help="percent (default 25)")
    compare.add_argument("--max-tokens-rise", type=float, default=20.0, help="percent (default 20)")
    compare.add_argument("--max-cost-rise", type=float, default=20.0, help="percent (default 20)")
    report = actions.add_parser("report", help="PNG charts of a run (and of earlier runs of its suite)")
    report.add_argument("run_id")
    report.add_argument("--out", type=Path, required=True)


def main(settings: Settings, args: argparse.Namespace) -> int:
    action = args.eval_action
    if action == "run":
        return asyncio.run(_run(settings, args))
    if action == "export":
        return asyncio.run(_export(settings, args))
    if action == "compare":
        return asyncio.run(_compare(settings, args))
    return asyncio.run(_report(settings, args))


# eval run ------------------------------------------------------------------------------


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import Arium
    from bot.eval.runner import EvalRunner, Variant
    from bot.eval.suite import load_suite
    from bot.storage.evals import EvalRepository

    suite = load_suite(args.suite)
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    apps = [Arium(settings, headless=True)]
    labels = {"A": describe(settings, "the configuration")}
    if args.config_b is not None:
        apps.append(Arium(variant_settings(args.config_b), headless=True))
        labels["B"] = describe(apps[1].settings, str(args.config_b))
    started: list[Arium] = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        variants = [Variant.of(label, app, labels[label]) for label, app in zip(labels, apps)]
        runner = EvalRunner(
            EvalRepository(apps[0].db), variants, concurrency=args.concurrency, on_progress=_progress_printer()
        )
        run_id = await runner.run(suite, name=args.name)
        record = await EvalRepository(apps[0].db).run(run_id)
    finally:
        for app in reversed(started):
            await app.stop()
    assert record is not None
    print(summary(record))
    print(run_id)
    return 0


def variant_settings(path: Path) -> Settings:
    """Variant B: this process's settings with the file's values on top (the
    file wins here, unlike BOT_CONFIG, so one file can change what the
    environment set)."""
    try:
        overrides = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    with _without_env("BOT_MODELS" if "model_tiers" in overrides else None):
        return load_settings(**overrides)


@contextmanager
def _without_env(name: str | None) -> Iterator[None]:
    """A chain named by model_tiers in the file replaces BOT_MODELS from the
    environment (the two may not be set together)."""
    saved = os.environ.pop(name, None) if name else None
    try:
        yield
    finally:
        if name and saved is not None:
            os.environ[name] = saved


def describe(settings: Settings, source: str) -> str:
    """What configured a variant: where it came from and its model chain."""
    tiers = [t.name or ", ".join(f"{e.provider}:{e.model}" for e in t.endpoints) for t in settings.tiers()]
    return f"{source}: {' > '.join(tiers)}"


def _progress_printer() -> Any:
    terminal = sys.stderr.isatty()

    def show(progress: Any) -> None:
        if terminal:
            end = "\n" if progress.done == progress.total else ""
            print(f"\r{progress.line()}", end=end, file=sys.stderr, flush=True)

    return show


def summary(record: Any) -> str:
    from bot.eval.compare import routing_summary

    lines = [f"suite {record.suite}: {len(record.results)} task results"]
    for label, description in record.variants.items():
        results = [r for r in record.results if r.variant == label]
        passed = sum(r.passed for r in results)
        tokens = sum(r.tokens_in + r.tokens_out for r in results)
        costs = [r.cost for r in results if r.cost is not None]
        cost = f", cost {sum(costs):.4f}" if costs else ""
        lines.append(f"  {label} ({description}): {passed}/{len(results)} passed, {tokens} tokens{cost}")
        routing = routing_summary(results)
        if routing is not None:  # multi-agent mode only
            lines.append(f"    turns per agent: {routing}")
        for result in results:
            if not result.passed:
                why = result.error or "; ".join(c.check for c in result.checks if not c.passed)
                lines.append(f"    failed {result.task_id}: {why[:160]}")
    if len(record.variants) == 2:
        from bot.eval.compare import Thresholds, compare_variants

        lines += ["", compare_variants(record, Thresholds()).markdown()]
    return "\n".join(lines)


# export, compare, report --------------------------------------------------------------


async def _load(settings: Settings, *run_ids: str, with_history: bool = False) -> tuple[list[Any], list[Any]]:
    """The runs named, with their results; and, for ``with_history`` (the
    report), the earlier runs of the last one's suite, oldest first."""
    from bot.storage.db import Database
    from bot.storage.evals import EvalRepository

    db = Database(settings.effective_database_url)
    try:
        await db.migrate()
        repository = EvalRepository(db)
        records = [await repository.run(run_id) for run_id in run_ids]
        for run_id, record in zip(run_ids, records):
            if record is None:
                raise ConfigError(f"no evaluation run {run_id!r} (python -m bot eval run prints the id)")
        history: list[Any] = []
        if with_history:
            last = records[-1]
            earlier = [
                r for r in await repository.runs(limit=50) if r.suite == last.suite and r.started_at <= last.started_at
            ]
            history = [await repository.run(r.id) for r in reversed(earlier)]
    finally:
        await db.dispose()
    return records, [h for h in history if h is not None]


async def _export(settings: Settings, args: argparse.Namespace) -> int:
    from bot.eval.export import export_run

    [record], _ = await _load(settings, args.run_id)
    rows = export_run(record, args.format, args.out)
    print(f"{rows} task results written to {args.out}")
    return 0


async def _compare(settings: Settings, args: argparse.Namespace) -> int:
    from bot.eval.compare import Thresholds, compare

    [base, run], _ = await _load(settings, args.base, args.run)
    thresholds = Thresholds(
        success_drop=args.max_success_drop, latency_rise=args.max_latency_rise,
        tokens_rise=args.max_tokens_rise, cost_rise=args.max_cost_rise,
    )
    comparison = compare(base, run, thresholds=thresholds, base_variant=args.variant, run_variant=args.variant)
    print(comparison.markdown())
    return 1 if comparison.regressed else 0


async def _report(settings: Settings, args: argparse.Namespace) -> int:
    from bot.eval.report import write_report

    [record], history = await _load(settings, args.run_id, with_history=True)
    written = write_report(record, args.out, history)
    for path in written:
        print(path)
    return 0
