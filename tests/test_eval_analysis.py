"""The analysis half of the evaluation harness: export (JSON, CSV, Parquet),
compare (metrics, verdicts, regression gates) and report (PNG charts), over
RunRecord objects built here: no database, no bot, no model."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from bot.errors import ConfigError
from bot.eval.compare import (
    Comparison,
    MetricChange,
    Thresholds,
    Verdict,
    compare,
    compare_variants,
    summarize,
    variant_metrics,
)
from bot.eval.export import EXPORT_COLUMNS, export_rows, export_run
from bot.eval.report import CHART_HEIGHT, CHART_WIDTH, render_charts, runs_over_time, write_report
from bot.storage.evals import CheckOutcome, RunRecord, TaskOutcome

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTED = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
CATEGORIES = ("chat", "memory", "reminders", "tools")


def outcome(
    task_id: str,
    category: str = "chat",
    variant: str = "A",
    passed: bool = True,
    *,
    total_ms: int = 1000,
    first_token_ms: int | None = 200,
    tokens_in: int = 800,
    tokens_out: int = 400,
    cost: float | None = 0.002,
    tools: tuple[str, ...] = (),
    error: str | None = None,
    checks: tuple[CheckOutcome, ...] | None = None,
    transcript: tuple[tuple[str, str], ...] = (("hello", "hi there"),),
) -> TaskOutcome:
    return TaskOutcome(
        task_id=task_id, category=category, variant=variant, passed=passed,
        checks=checks if checks is not None else (CheckOutcome("contains: 'hi'", passed),),
        transcript=transcript, total_ms=total_ms, first_token_ms=first_token_ms, tokens_in=tokens_in,
        tokens_out=tokens_out, cost=cost, tools=tools, model="mistral:mistral-small-latest", fallbacks=0, error=error,
    )


def run_record(run_id: str, results: list[TaskOutcome], *, name: str | None = None, day: int = 0) -> RunRecord:
    variants = {v: f"config {v}" for v in sorted({o.variant for o in results})}
    started = STARTED + timedelta(days=day)
    return RunRecord(
        id=run_id, suite="smoke", name=name, status="finished", variants=variants,
        tasks_total=len({o.task_id for o in results}), concurrency=4, started_at=started,
        finished_at=started + timedelta(minutes=3), results=results,
    )


def ab_run() -> RunRecord:
    """A run with the awkward cases: A and B, four categories, priced and
    unpriced results, an error, tools, Russian text and CSV-hostile strings."""
    results = [
        outcome("greet", "chat", "A", tools=()),
        outcome("greet", "chat", "B", tokens_in=900, cost=None),
        outcome(
            "remind_ru", "reminders", "A", tools=("create_reminder",), first_token_ms=None,
            transcript=(("напомни завтра в 9 позвонить маме", 'Хорошо, "завтра 09:00", напомню.'),),
            checks=(CheckOutcome("tool: create_reminder", True), CheckOutcome("contains: 09:00", True, "found, twice")),
        ),
        outcome("remind_ru", "reminders", "B", passed=False, tools=("create_reminder", "list_reminders"),
                checks=(CheckOutcome("regex: 0?9:00", False, "no match in:\n'tomorrow, 9'"),)),
        outcome("fact_recall", "memory", "A", passed=False, error="TimeoutError: task over 180 s", cost=None,
                tools=("remember", "recall", "recall")),
        outcome("fact_recall", "memory", "B", tools=("remember", "recall")),
        outcome("calc", "tools", "A", tools=("calculate",), cost=0.0000125),
        outcome("calc", "tools", "B", tools=("calculate",), total_ms=4200),
    ]
    return run_record("run-ab", results, name="nightly, A|B")


def suite_run(
    run_id: str,
    *,
    tasks: int = 100,
    passed: int = 90,
    total_ms: int = 1000,
    tokens_in: int = 800,
    tokens_out: int = 400,
    cost: float | None = 0.002,
    variant: str = "A",
    day: int = 0,
) -> RunRecord:
    """``tasks`` tasks spread over the categories, the first ``passed`` of
    them passing, every other measurement the same for each task."""
    results = [
        outcome(f"t{i:03d}", CATEGORIES[i % len(CATEGORIES)], variant, passed=i < passed, total_ms=total_ms,
                tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, tools=("calculate",) * (i % 3))
        for i in range(tasks)
    ]
    return run_record(run_id, results, day=day)


def row(comparison: Comparison, metric: str) -> MetricChange:
    matches = [r for r in comparison.rows if r.metric == metric]
    assert len(matches) == 1, f"no single row {metric!r} in {[r.metric for r in comparison.rows]}"
    return matches[0]


# Export ----------------------------------------------------------------------


def expected_rows(record: RunRecord) -> list[dict[str, Any]]:
    return [{"run_id": record.id, **o.as_dict()} for o in record.results]


def test_export_columns_are_the_run_id_and_as_dict_keys() -> None:
    record = ab_run()
    assert list(EXPORT_COLUMNS) == ["run_id", *record.results[0].as_dict()]
    assert export_rows(record) == expected_rows(record)


def test_json_export_round_trips(tmp_path: Path) -> None:
    record = ab_run()
    out = tmp_path / "run.json"

    assert export_run(record, "json", out) == len(record.results)

    rows = json.loads(out.read_text(encoding="utf-8"))
    assert rows == expected_rows(record)
    verdicts = {(r["task_id"], r["variant"], r["passed"]) for r in rows}
    assert verdicts >= {("remind_ru", "B", False), ("greet", "A", True)}
    assert "напомни" in out.read_text(encoding="utf-8")  # not \u-escaped


def _decode_csv_cell(column: str, text: str) -> Any:
    """The CSV export's documented encoding, reversed."""
    if column in ("tools", "checks", "transcript"):
        return json.loads(text)
    if text == "":
        return None
    if column == "passed":
        return {"true": True, "false": False}[text]
    if column in ("first_token_ms", "total_ms", "tokens_in", "tokens_out", "tool_calls", "fallbacks"):
        return int(text)
    if column == "cost":
        return float(text)
    return text


def test_csv_export_round_trips(tmp_path: Path) -> None:
    record = ab_run()
    out = tmp_path / "run.csv"

    assert export_run(record, "csv", out) == len(record.results)

    with out.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == list(EXPORT_COLUMNS)
        rows = [{column: _decode_csv_cell(column, text) for column, text in line.items()} for line in reader]
    assert rows == expected_rows(record)


def test_parquet_export_round_trips_with_typed_and_list_columns(tmp_path: Path) -> None:
    record = ab_run()
    out = tmp_path / "run.parquet"

    assert export_run(record, "parquet", out) == len(record.results)

    table = pq.read_table(out)
    assert table.column_names == list(EXPORT_COLUMNS)
    assert table.to_pylist() == expected_rows(record)
    schema = table.schema
    assert schema.field("passed").type == pa.bool_()
    assert schema.field("total_ms").type == pa.int64()
    assert schema.field("cost").type == pa.float64()
    assert schema.field("tools").type == pa.list_(pa.string())
    assert pa.types.is_struct(schema.field("checks").type.value_type)
    assert table.column("cost").null_count == 2


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_an_empty_run_exports_zero_rows_in_a_readable_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"empty.{fmt}"

    assert export_run(run_record("empty", []), fmt, out) == 0  # type: ignore[arg-type]

    if fmt == "json":
        assert json.loads(out.read_text()) == []
    elif fmt == "csv":
        assert out.read_text().strip() == ",".join(EXPORT_COLUMNS)
    else:
        table = pq.read_table(out)
        assert table.num_rows == 0 and table.column_names == list(EXPORT_COLUMNS)


def test_an_unknown_format_is_a_config_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run.xlsx"
    with pytest.raises(ConfigError, match="unknown export format 'xlsx'.*csv, json, parquet"):
        export_run(ab_run(), "xlsx", out)  # type: ignore[arg-type]
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_an_unwritable_path_raises_oserror_for_the_cli_to_report(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(OSError):
        export_run(ab_run(), fmt, tmp_path / "no-such-dir" / f"run.{fmt}")  # type: ignore[arg-type]


# Metrics ---------------------------------------------------------------------


def test_variant_metrics_of_one_variant() -> None:
    record = ab_run()

    a = variant_metrics(record, "A")

    assert (a.tasks, a.passed, a.success_rate) == (4, 3, 0.75)
    assert a.success_by_category == {"chat": 1.0, "memory": 0.0, "reminders": 1.0, "tools": 1.0}
    assert a.median_total_ms == 1000 and a.mean_total_ms == 1000
    assert a.median_first_token_ms == 200  # the task without a first token is left out
    assert (a.mean_tokens_in, a.mean_tokens_out, a.mean_tokens) == (800, 400, 1200)
    assert a.priced_tasks == 3
    assert a.mean_cost == pytest.approx((0.002 + 0.002 + 0.0000125) / 3)  # unpriced task left out
    assert a.mean_tool_calls == pytest.approx((0 + 1 + 3 + 1) / 4)
    assert a.errors == 1

    b = variant_metrics(record, "B")
    assert b.median_total_ms == 1000 and b.mean_total_ms == pytest.approx((1000 * 3 + 4200) / 4)


def test_metrics_of_nothing_are_refused() -> None:
    with pytest.raises(ConfigError):
        summarize([])
    with pytest.raises(ConfigError, match="no results of variant B.*it has A"):
        variant_metrics(suite_run("only-a"), "B")


def test_unpriced_everywhere_gives_no_cost() -> None:
    assert variant_metrics(suite_run("free", cost=None)).mean_cost is None


# Compare -----------------------------------------------------------------------


def test_the_spec_example_rows() -> None:
    base = suite_run("base", passed=85, tokens_in=800, tokens_out=400)
    run = suite_run("run", passed=90, tokens_in=880, tokens_out=440)

    table = compare(base, run).markdown()

    assert "| Success rate | 85% | 90% | +5 pp ✅ |" in table
    assert "| Tokens per task | 1,200 | 1,320 | +10% ⚠️ |" in table


def test_a_ten_point_success_drop_regresses() -> None:
    comparison = compare(suite_run("base", passed=90), suite_run("run", passed=80))

    success = row(comparison, "Success rate")
    assert success.verdict is Verdict.REGRESSED and success.change_text == "-10 pp"
    assert comparison.regressed
    assert comparison.regressions == (success,)
    assert "| Success rate | 90% | 80% | -10 pp ❌ |" in comparison.markdown()
    assert "**Regressed:** Success rate -10 pp (threshold 5 pp)." in comparison.markdown()


def test_a_three_point_drop_is_worse_but_not_a_regression() -> None:
    comparison = compare(suite_run("base", passed=90), suite_run("run", passed=87))

    assert row(comparison, "Success rate").verdict is Verdict.WORSE
    assert "| Success rate | 90% | 87% | -3 pp ⚠️ |" in comparison.markdown()
    assert not comparison.regressed
    assert "No metric regressed past its threshold." in comparison.markdown()


def test_a_drop_of_exactly_the_threshold_does_not_regress() -> None:
    # 0.90 - 0.85 is a hair above 0.05 in floats; the gate is "more than 5 pp".
    comparison = compare(suite_run("base", passed=90), suite_run("run", passed=85))
    assert row(comparison, "Success rate").verdict is Verdict.WORSE
    assert not comparison.regressed


def test_disabled_thresholds_never_regress() -> None:
    base = suite_run("base", passed=90)
    worse_everywhere = suite_run("run", passed=40, total_ms=9000, tokens_in=8000, tokens_out=4000, cost=0.2)
    off = Thresholds(success_drop=None, latency_rise=None, tokens_rise=None, cost_rise=None)

    comparison = compare(base, worse_everywhere, thresholds=off)

    assert not comparison.regressed
    assert {r.verdict for r in comparison.rows} <= {Verdict.WORSE, Verdict.SAME}
    assert row(comparison, "Success rate").verdict is Verdict.WORSE
    # With the defaults the same run regresses on all four gates.
    gated = compare(base, worse_everywhere).regressions
    assert [r.metric for r in gated] == ["Success rate", "Median latency", "Tokens per task", "Cost per task"]


def test_latency_gate_uses_the_median() -> None:
    base = suite_run("base")
    assert row(compare(base, suite_run("slow", total_ms=1300)), "Median latency").verdict is Verdict.REGRESSED
    assert row(compare(base, suite_run("bit-slow", total_ms=1200)), "Median latency").verdict is Verdict.WORSE
    assert row(compare(base, suite_run("noise", total_ms=1030)), "Median latency").verdict is Verdict.SAME
    assert row(compare(base, suite_run("fast", total_ms=700)), "Median latency").verdict is Verdict.BETTER
    # Mean latency informs but is not gated.
    assert row(compare(base, suite_run("slow", total_ms=1300)), "Mean latency").verdict is Verdict.WORSE


def test_token_and_cost_gates() -> None:
    base = suite_run("base")
    heavy = compare(base, suite_run("heavy", tokens_in=1040, tokens_out=520))  # +30%
    assert row(heavy, "Tokens per task").verdict is Verdict.REGRESSED and heavy.regressed

    pricey = compare(base, suite_run("pricey", cost=0.003))  # +50%
    assert row(pricey, "Cost per task").verdict is Verdict.REGRESSED
    assert row(pricey, "Cost per task").change_text == "+50%"
    assert not compare(base, suite_run("pricey", cost=0.003), thresholds=Thresholds(cost_rise=None)).regressed

    cheaper = compare(base, suite_run("cheap", cost=0.001))
    assert row(cheaper, "Cost per task").verdict is Verdict.BETTER and not cheaper.regressed


def test_a_side_without_prices_is_not_compared_on_cost() -> None:
    comparison = compare(suite_run("base"), suite_run("unpriced", cost=None))

    cost = row(comparison, "Cost per task")
    assert cost.verdict is Verdict.UNKNOWN and not comparison.regressed
    assert "| Cost per task | n/a | n/a | n/a |" in comparison.markdown()
    assert "Cost is not compared: no task has a price on both sides" in comparison.markdown()


def test_cost_is_compared_over_the_tasks_priced_on_both_sides() -> None:
    base = suite_run("base")
    base.results[:] = [replace(o, cost=0.001 if i < 50 else 0.003) for i, o in enumerate(base.results)]
    # Same prices, but the expensive half fell back to an unpriced model: a
    # mean over each side's own priced tasks would call that 50% cheaper.
    run = suite_run("run")
    run.results[:] = [replace(o, cost=0.001 if i < 50 else None) for i, o in enumerate(run.results)]

    comparison = compare(base, run)

    cost = row(comparison, "Cost per task")
    assert (cost.base, cost.run, cost.verdict) == (pytest.approx(0.001), pytest.approx(0.001), Verdict.SAME)
    assert "covers the 50 of 100 tasks priced on both sides" in comparison.markdown()


def test_flipped_tasks_are_listed_by_id() -> None:
    base = suite_run("base", passed=90)
    run = suite_run("run", passed=88)
    # t095 failed in the base and passes now.
    run.results[95] = replace(run.results[95], passed=True)

    comparison = compare(base, run)

    assert comparison.flipped_to_fail == ("t088", "t089")
    assert comparison.flipped_to_pass == ("t095",)
    assert "**Flipped pass → fail (2):** `t088`, `t089`" in comparison.markdown()
    assert "**Flipped fail → pass (1):** `t095`" in comparison.markdown()


def test_only_tasks_on_both_sides_are_compared_and_the_rest_named() -> None:
    base = suite_run("base", tasks=10, passed=10)
    run = suite_run("run", tasks=12, passed=12)
    del run.results[3]  # t003 is missing from the run; t010 and t011 are new

    comparison = compare(base, run)

    assert comparison.base.tasks == comparison.run.tasks == 9
    assert comparison.only_in_base == ("t003",)
    assert comparison.only_in_run == ("t010", "t011")
    table = comparison.markdown()
    assert "**Only in base (missing from run · A) (1):** `t003`" in table
    assert "**Only in run (missing from base · A) (2):** `t010`, `t011`" in table


def test_sides_that_share_no_task_cannot_be_compared() -> None:
    other = run_record("other", [outcome("unrelated")])
    with pytest.raises(ConfigError, match="share no task"):
        compare(suite_run("base", tasks=4), other)


def test_category_rows_follow_the_overall_ones_and_never_fail_the_comparison() -> None:
    base = suite_run("base", tasks=8, passed=8)
    run = suite_run("run", tasks=8, passed=8)
    run.results[1] = replace(run.results[1], passed=False)  # memory: 2/2 -> 1/2, -50 pp

    comparison = compare(base, run, thresholds=Thresholds(success_drop=20))

    metrics = [r.metric for r in comparison.rows]
    first_category = metrics.index("Success: chat (2)")
    assert metrics[first_category:] == [
        "Success: chat (2)", "Success: memory (2)", "Success: reminders (2)", "Success: tools (2)"
    ]
    assert "Errors" in metrics[:first_category] and metrics[0] == "Success rate"
    assert row(comparison, "Success: memory (2)").verdict is Verdict.WORSE
    assert row(comparison, "Success rate").change_text == "-12.5 pp"
    assert not comparison.regressed


def test_variant_b_against_variant_a_of_one_run() -> None:
    comparison = compare_variants(ab_run())

    assert comparison.base_label == "nightly, A|B (run-ab) · A"
    assert comparison.run_label == "nightly, A|B (run-ab) · B"
    assert comparison.flipped_to_fail == ("remind_ru",)
    assert comparison.flipped_to_pass == ("fact_recall",)
    assert row(comparison, "Success rate").verdict is Verdict.SAME
    assert row(comparison, "Errors").change_text == "-1"
    assert row(comparison, "Errors").verdict is Verdict.BETTER
    table = comparison.markdown()
    assert table.startswith("### nightly, A|B (run-ab) · A → nightly, A|B (run-ab) · B\n")
    # greet (B unpriced) and fact_recall (A unpriced) are left out of the cost.
    assert "Cost per task covers the 2 of 4 tasks priced on both sides" in table
    assert row(comparison, "Cost per task").base == pytest.approx((0.002 + 0.0000125) / 2)


def test_compare_variants_needs_a_b_variant() -> None:
    with pytest.raises(ConfigError, match="no results of variant B"):
        compare_variants(suite_run("only-a"))


def test_table_shape() -> None:
    table = compare(suite_run("base"), suite_run("run")).markdown()
    table_lines = [line for line in table.splitlines() if line.startswith("|")]
    assert table_lines[0] == "| Metric | Base | Run | Change |"
    assert all(line.count(" | ") == 3 for line in table_lines)
    assert "| Median latency | 1.0 s | 1.0 s | 0% ➖ |" in table


def test_a_pipe_in_a_category_cannot_break_the_table() -> None:
    base = run_record("base", [outcome("t1", "chat|small talk")])
    table = compare(base, base).markdown()
    assert "| Success: chat\\|small talk (1) | 100% | 100% | 0 pp ➖ |" in table


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_thresholds_must_be_sensible(bad: float) -> None:
    with pytest.raises(ConfigError, match="tokens_rise"):
        Thresholds(tokens_rise=bad)


# Report ------------------------------------------------------------------------


def assert_pngs(paths: list[Path]) -> None:
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size == (CHART_WIDTH, CHART_HEIGHT), path
            # A chart, not a blank canvas: more than a handful of colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10


def test_report_of_a_single_variant_run(tmp_path: Path) -> None:
    out_dir = tmp_path / "charts" / "nested"  # created on demand

    paths = write_report(suite_run("solo", tasks=20, passed=15), out_dir)

    assert [p.name for p in paths] == [
        "success_by_category.png", "tokens_per_task.png", "tool_calls.png", "latency.png"
    ]
    assert all(p.parent == out_dir for p in paths)
    assert_pngs(paths)


def test_report_of_an_ab_run_with_history(tmp_path: Path) -> None:
    record = ab_run()
    history = [
        suite_run("old-1", tasks=8, passed=5, day=-3),
        run_record("old-running", [], day=-2),  # no results yet: a gap in the lines
        suite_run("old-2", tasks=8, passed=7, cost=None, day=-1),  # unpriced: a gap in the cost line
    ]

    paths = write_report(record, tmp_path, history)

    assert [p.name for p in paths][-1] == "history.png" and len(paths) == 5
    assert_pngs(paths)


def test_report_without_tools_timings_or_prices(tmp_path: Path) -> None:
    results = [outcome(f"t{i}", passed=i % 2 == 0, first_token_ms=None, cost=None) for i in range(5)]

    paths = write_report(run_record("bare", results), tmp_path, [run_record("bare-0", results, day=-1)])

    assert len(paths) == 5
    assert_pngs(paths)


def test_history_that_holds_the_run_itself_does_not_plot_it_twice() -> None:
    record = suite_run("now", tasks=4)
    before = suite_run("before", tasks=4, day=-1)

    assert [r.id for r in runs_over_time(record, [before, record])] == ["before", "now"]
    charts = render_charts(record, [before, record])
    assert list(charts)[-1] == "history.png" and charts["history.png"].startswith(PNG_SIGNATURE)


def test_an_empty_run_has_nothing_to_chart(tmp_path: Path) -> None:
    out_dir = tmp_path / "charts"
    with pytest.raises(ConfigError, match="run empty has no task results"):
        write_report(run_record("empty", []), out_dir)
    assert not out_dir.exists()
