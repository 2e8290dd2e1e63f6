"""``eval report``: PNG charts of a run, drawn with matplotlib.

Charts (file names as ``write_report`` writes them):

- ``success_by_category.png``: success rate overall and per category, A and
  B side by side when the run has both
- ``tokens_per_task.png``: tokens in and out of every task, per variant
- ``tool_calls.png``: how many tool calls tasks made, and the most used tools
- ``latency.png``: total and first-token latency distributions
- ``history.png`` (only with ``history``): success rate and cost per task of
  the earlier runs and this one, oldest first

Rendering is synchronous and takes a second or so: call it in a thread from
async code. matplotlib is imported on first use, drawn on the Agg canvas
directly (no pyplot and its global figure registry, so nothing leaks between
calls), and a lock serializes renders because matplotlib is not thread-safe.
``render_charts`` returns the PNG bytes for a caller that serves them instead
of writing files (the results page).
"""

from __future__ import annotations

import io
import math
import statistics
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError
from bot.eval.compare import VariantMetrics, summarize
from bot.storage.evals import RunRecord, TaskOutcome

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CHART_WIDTH = 1200  # pixels
CHART_HEIGHT = 700
CHART_DPI = 100
TOP_TOOLS = 12  # bars in "most used tools"
VARIANT_COLORS = {"A": "#3b7dd8", "B": "#e08a2c"}
OTHER_COLOR = "#6a9f58"  # a variant named neither A nor B
TOKENS_OUT_ALPHA = 0.55  # the "out" part of a stacked token bar, lighter
OVERALL = "all tasks"  # the first group of the success chart

_render_lock = threading.Lock()


def write_report(record: RunRecord, out_dir: Path, history: Sequence[RunRecord] = ()) -> list[Path]:
    """Write the run's charts as PNG files into ``out_dir`` (created when
    missing) and return their paths. ``history``: earlier runs of the same
    suite with their results, oldest first; adds ``history.png``.
    ConfigError when the run has no results; OSError when ``out_dir`` cannot
    be written."""
    charts = render_charts(record, history)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, png in charts.items():
        path = out_dir / file_name
        path.write_bytes(png)
        written.append(path)
    return written


def render_charts(record: RunRecord, history: Sequence[RunRecord] = ()) -> dict[str, bytes]:
    """The run's charts as PNG bytes by file name, in the order listed in the
    module doc. ConfigError when the run has no results."""
    if not record.results:
        raise ConfigError(f"run {record.id} has no task results: there is nothing to chart")
    by_variant = _by_variant(record.results)
    charts = {
        "success_by_category.png": _render(lambda figure: _draw_success_by_category(figure, by_variant)),
        "tokens_per_task.png": _render(lambda figure: _draw_tokens_per_task(figure, by_variant)),
        "tool_calls.png": _render(lambda figure: _draw_tool_calls(figure, by_variant)),
        "latency.png": _render(lambda figure: _draw_latency(figure, by_variant)),
    }
    if history:
        runs = runs_over_time(record, history)
        charts["history.png"] = _render(lambda figure: _draw_history(figure, runs))
    return charts


def runs_over_time(record: RunRecord, history: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs the history chart plots: ``history`` then ``record``, with
    ``record`` once even when the caller's history already holds it."""
    return [run for run in history if run.id != record.id] + [record]


def _by_variant(outcomes: Sequence[TaskOutcome]) -> dict[str, list[TaskOutcome]]:
    grouped: dict[str, list[TaskOutcome]] = {}
    for outcome in outcomes:
        grouped.setdefault(outcome.variant, []).append(outcome)
    return dict(sorted(grouped.items()))


def _render(draw: Callable[[Figure], None]) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _render_lock:
        figure = Figure(figsize=(CHART_WIDTH / CHART_DPI, CHART_HEIGHT / CHART_DPI), dpi=CHART_DPI,
                        layout="constrained")
        FigureCanvasAgg(figure)
        draw(figure)
        buffer = io.BytesIO()
        # No bbox_inches="tight": every chart keeps the same pixel size.
        figure.savefig(buffer, format="png", dpi=CHART_DPI)
        return buffer.getvalue()


def _color(variant: str) -> str:
    return VARIANT_COLORS.get(variant, OTHER_COLOR)


def _group_offsets(count: int, width: float) -> list[float]:
    """Where each of ``count`` side-by-side bars sits around its group's
    centre."""
    return [(index - (count - 1) / 2) * width for index in range(count)]


# Charts ----------------------------------------------------------------------


def _draw_success_by_category(figure: Figure, by_variant: dict[str, list[TaskOutcome]]) -> None:
    axes = figure.subplots()
    tallies = {variant: _pass_tally(outcomes) for variant, outcomes in by_variant.items()}
    categories = sorted({category for tally in tallies.values() for category in tally} - {OVERALL})
    groups = [OVERALL, *categories]
    width = 0.8 / len(tallies)
    for offset, (variant, tally) in zip(_group_offsets(len(tallies), width), tallies.items(), strict=True):
        counts = [tally.get(group) for group in groups]
        rates = [100 * passed / total if (passed, total) != (0, 0) else math.nan
                 for passed, total in (count or (0, 0) for count in counts)]
        positions = [index + offset for index in range(len(groups))]
        bars = axes.bar(positions, rates, width, label=f"variant {variant}", color=_color(variant))
        # "7/9" over each bar: a rate means little without the task count.
        axes.bar_label(bars, labels=[f"{c[0]}/{c[1]}" if c else "" for c in counts], fontsize=8, padding=2)
    crowded = len(groups) > 8
    axes.set_xticks(range(len(groups)), groups, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    axes.set_ylim(0, 110)  # room above 100% for the bar labels
    axes.set_ylabel("success rate, %")
    axes.set_title("Success by category")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper right")


def _pass_tally(outcomes: Sequence[TaskOutcome]) -> dict[str, tuple[int, int]]:
    """(passed, tasks) per category, and over all tasks under OVERALL."""
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for outcome in outcomes:
        for group in (OVERALL, outcome.category):
            total[group] += 1
            passed[group] += outcome.passed
    return {group: (passed[group], total[group]) for group in total}


def _draw_tokens_per_task(figure: Figure, by_variant: dict[str, list[TaskOutcome]]) -> None:
    axes = figure.subplots()
    # Tasks in suite order (the order the first variant lists them), so A
    # and B of one task stand next to each other.
    task_ids = list(dict.fromkeys(o.task_id for outcomes in by_variant.values() for o in outcomes))
    index = {task_id: position for position, task_id in enumerate(task_ids)}
    width = 0.8 / len(by_variant)
    for offset, (variant, outcomes) in zip(_group_offsets(len(by_variant), width), by_variant.items(), strict=True):
        positions = [index[o.task_id] + offset for o in outcomes]
        tokens_in = [o.tokens_in for o in outcomes]
        color = _color(variant)
        axes.bar(positions, tokens_in, width, color=color, label=f"{variant}: in")
        axes.bar(positions, [o.tokens_out for o in outcomes], width, bottom=tokens_in, color=color,
                 alpha=TOKENS_OUT_ALPHA, label=f"{variant}: out")
    # Task ids get smaller as the suite grows, and stay readable to ~80 tasks.
    font_size = 8 if len(task_ids) <= 40 else 6 if len(task_ids) <= 80 else 4
    axes.set_xticks(range(len(task_ids)), task_ids, rotation=90, fontsize=font_size)
    axes.set_xlim(-0.6, len(task_ids) - 0.4)
    axes.set_ylabel("tokens")
    axes.set_title("Tokens per task (in, and out stacked on top)")
    axes.yaxis.set_major_formatter(_compact_formatter())
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper right", ncols=len(by_variant))


def _draw_tool_calls(figure: Figure, by_variant: dict[str, list[TaskOutcome]]) -> None:
    from matplotlib.ticker import MaxNLocator

    calls_axes, tools_axes = figure.subplots(1, 2, width_ratios=(1, 1.2))

    # Histogram of tool calls per task: one bar per call count, variants side by side.
    most_calls = max(o.tool_calls for outcomes in by_variant.values() for o in outcomes)
    call_counts = range(most_calls + 1)
    width = 0.8 / len(by_variant)
    for offset, (variant, outcomes) in zip(_group_offsets(len(by_variant), width), by_variant.items(), strict=True):
        tally = Counter(o.tool_calls for o in outcomes)
        calls_axes.bar([n + offset for n in call_counts], [tally[n] for n in call_counts], width,
                       color=_color(variant), label=f"variant {variant}")
    calls_axes.set_xticks(list(call_counts))
    calls_axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    calls_axes.set_xlabel("tool calls in the task")
    calls_axes.set_ylabel("tasks")
    calls_axes.set_title("Tool calls per task")
    calls_axes.grid(axis="y", alpha=0.3)
    calls_axes.legend(loc="upper right")

    # The most used tools over both variants, each variant's count beside the other.
    usage = {variant: Counter(tool for o in outcomes for tool in o.tools) for variant, outcomes in by_variant.items()}
    overall: Counter[str] = sum(usage.values(), Counter())
    top = [tool for tool, _ in overall.most_common(TOP_TOOLS)]
    tools_axes.set_title("Most used tools")
    if not top:
        _say_nothing(tools_axes, "no task called a tool")
        return
    height = 0.8 / len(usage)
    for offset, (variant, counts) in zip(_group_offsets(len(usage), height), usage.items(), strict=True):
        tools_axes.barh([position + offset for position in range(len(top))], [counts[t] for t in top], height,
                        color=_color(variant), label=f"variant {variant}")
    tools_axes.set_yticks(range(len(top)), top, fontsize=8)
    tools_axes.invert_yaxis()  # the most used on top
    tools_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    tools_axes.set_xlabel("calls")
    tools_axes.grid(axis="x", alpha=0.3)


def _draw_latency(figure: Figure, by_variant: dict[str, list[TaskOutcome]]) -> None:
    total_axes, first_axes = figure.subplots(1, 2)
    _latency_histogram(total_axes, {v: [o.total_ms / 1000 for o in outs] for v, outs in by_variant.items()},
                       "Total latency per task")
    first_tokens = {
        v: [o.first_token_ms / 1000 for o in outs if o.first_token_ms is not None] for v, outs in by_variant.items()
    }
    _latency_histogram(first_axes, {v: s for v, s in first_tokens.items() if s}, "First-token latency per task")


def _latency_histogram(axes: Axes, seconds: dict[str, list[float]], title: str) -> None:
    axes.set_title(title)
    if not seconds:
        _say_nothing(axes, "no first-token timings recorded")
        return
    values = [s for series in seconds.values() for s in series]
    # Shared bin edges, so the variants' bars are comparable; at least a
    # tenth of a second wide, so equal latencies make one bar, not a sliver.
    low, high = min(values), max(max(values), min(values) + 0.1)
    bins = [low + (high - low) * step / 20 for step in range(21)]
    for variant, series in seconds.items():
        median = statistics.median(series)
        axes.hist(series, bins=bins, histtype="stepfilled", alpha=0.45, color=_color(variant),
                  label=f"{variant}: median {median:.2f} s")
        axes.axvline(median, color=_color(variant), linestyle="--", linewidth=1.2)
    axes.set_xlabel("seconds")
    axes.set_ylabel("tasks")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(loc="upper right")


def _draw_history(figure: Figure, runs: Sequence[RunRecord]) -> None:
    success_axes, cost_axes = figure.subplots(2, 1, sharex=True)
    variants = sorted({o.variant for run in runs for o in run.results})
    positions = list(range(len(runs)))
    any_cost = False
    for variant in variants:
        # A run without this variant (or still without results) is a gap in
        # the line, not a fall to zero.
        metrics = [_metrics_or_none(run, variant) for run in runs]
        success = [m.success_rate * 100 if m else math.nan for m in metrics]
        cost = [m.mean_cost if m and m.mean_cost is not None else math.nan for m in metrics]
        any_cost = any_cost or any(not math.isnan(c) for c in cost)
        style: dict[str, Any] = {"color": _color(variant), "marker": "o", "label": f"variant {variant}"}
        success_axes.plot(positions, success, **style)
        cost_axes.plot(positions, cost, **style)
    success_axes.set_ylim(0, 105)
    success_axes.set_ylabel("success rate, %")
    success_axes.set_title(f"Runs of suite {runs[-1].suite}, oldest first")
    success_axes.legend(loc="lower left")
    cost_axes.set_ylabel("cost per task, $")
    if not any_cost:
        _say_nothing(cost_axes, "no priced results")
    for axes in (success_axes, cost_axes):
        axes.grid(alpha=0.3)
    # Label every few runs so a long history does not pile labels on each
    # other; counted from the newest, which is always labelled.
    step = max(1, len(runs) // 12)
    ticks = positions[::-1][::step][::-1]
    cost_axes.set_xticks(ticks, [_run_label(runs[i]) for i in ticks], rotation=30, ha="right", fontsize=8)
    cost_axes.set_xlim(-0.5, len(runs) - 0.5)


def _metrics_or_none(run: RunRecord, variant: str) -> VariantMetrics | None:
    outcomes = [o for o in run.results if o.variant == variant]
    return summarize(outcomes) if outcomes else None


def _run_label(run: RunRecord) -> str:
    return f"{run.name or run.id}\n{run.started_at:%Y-%m-%d %H:%M}"


def _say_nothing(axes: Axes, text: str) -> None:
    """An empty panel that says why it is empty, instead of blank axes."""
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#777777")
    axes.set_xticks([])
    axes.set_yticks([])


def _compact_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    def compact(value: float, _: object) -> str:
        for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= limit:
                return f"{value / limit:.3g}{suffix}"
        return f"{value:.0f}"

    return FuncFormatter(compact)
