"""``eval compare``: the metrics of one variant of a run, and how a run moved
against a baseline (or variant B against variant A of one run).

Only tasks present on both sides are compared, so a suite that grew or shrank
between the runs does not pass for a better or worse assistant; the tasks on
one side only are named under the table.

Each metric row gets a verdict:

- ✅ better
- ➖ unchanged, or a change inside the metric's noise band (latency and
  token counts wobble from run to run without anything having changed)
- ⚠️ worse, but not past the metric's threshold (or the metric has none)
- ❌ worse past its threshold: the comparison ``regressed`` and the CLI
  exits 1

Gated metrics and their default thresholds (``Thresholds``): overall success
rate drop > 5 percentage points, median total latency rise > 25%, tokens per
task rise > 20%, cost per task rise > 20% (over the tasks priced on both
sides, so a fallback to an unpriced model does not pass for a price change).
The other rows (means, first token, tokens in/out, tool calls, errors,
success per category) inform but never fail a comparison: a category of four
tasks moves 25 points when one task flips, and the flipped tasks are listed
by id anyway.

In multi-agent mode two more kinds of rows follow, also informative only:
routing accuracy (over the tasks with ``expect.agent``) and each agent's
share of the turns (a shift in routing is news, not better or worse).
"""

from __future__ import annotations

import enum
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bot.errors import ConfigError
from bot.eval.suite import AGENT_CHECK
from bot.storage.evals import RunRecord, TaskOutcome

# Relative changes smaller than these are noise, not news (see module doc).
LATENCY_NOISE = 0.05
COUNT_NOISE = 0.02  # tokens, cost, tool calls

# Rounding before comparing with a threshold: 0.90 - 0.85 is
# 0.05000000000000004 in floats, which must not count as "more than 5 pp".
_PRECISION = 9


@dataclass(frozen=True)
class Thresholds:
    """How much worse a gated metric may get before the comparison regresses.
    All in percent: ``success_drop`` in percentage points of success rate,
    the others as a relative rise of the run over the base. None disables
    that metric's gate (its row can then be ⚠️ but never ❌)."""

    success_drop: float | None = 5.0  # percentage points of overall success rate
    latency_rise: float | None = 25.0  # percent, median total latency
    tokens_rise: float | None = 20.0  # percent, tokens in + out per task
    cost_rise: float | None = 20.0  # percent, cost per task

    def __post_init__(self) -> None:
        for name in ("success_drop", "latency_rise", "tokens_rise", "cost_rise"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"threshold {name} must be a number >= 0 or unset, not {value!r}")


@dataclass(frozen=True)
class VariantMetrics:
    """One variant of one run, summarized. Rates are fractions (0..1),
    latencies milliseconds, means per task."""

    tasks: int
    passed: int
    success_rate: float
    success_by_category: dict[str, float]
    tasks_by_category: dict[str, int]
    mean_total_ms: float
    median_total_ms: float
    median_first_token_ms: float | None  # None: no task reported a first token
    mean_tokens_in: float
    mean_tokens_out: float
    mean_cost: float | None  # over the priced tasks; None when none is priced
    priced_tasks: int
    mean_tool_calls: float
    errors: int
    # Multi-agent mode: turns each agent answered (empty in single-agent mode),
    # and the share of expect.agent checks that held (None: no task has one).
    agent_turns: dict[str, int] = field(default_factory=dict)
    routing_accuracy: float | None = None
    routed_tasks: int = 0

    @property
    def mean_tokens(self) -> float:
        return self.mean_tokens_in + self.mean_tokens_out


def summarize(outcomes: Sequence[TaskOutcome]) -> VariantMetrics:
    """The metrics of a set of task results (normally one variant of a run).
    ConfigError when there is none: a rate of nothing is not 0%."""
    if not outcomes:
        raise ConfigError("no task results to measure")
    by_category: dict[str, list[TaskOutcome]] = {}
    for outcome in outcomes:
        by_category.setdefault(outcome.category, []).append(outcome)
    first_tokens = [o.first_token_ms for o in outcomes if o.first_token_ms is not None]
    # A task answered by an unpriced model has no cost; averaging only the
    # priced ones keeps one unknown price from hiding the rest.
    costs = [o.cost for o in outcomes if o.cost is not None]
    passed = sum(o.passed for o in outcomes)
    routing = _routing_checks(outcomes)
    return VariantMetrics(
        tasks=len(outcomes),
        passed=passed,
        success_rate=passed / len(outcomes),
        success_by_category={c: _pass_rate(items) for c, items in sorted(by_category.items())},
        tasks_by_category={c: len(items) for c, items in sorted(by_category.items())},
        mean_total_ms=statistics.fmean(o.total_ms for o in outcomes),
        median_total_ms=statistics.median(o.total_ms for o in outcomes),
        median_first_token_ms=statistics.median(first_tokens) if first_tokens else None,
        mean_tokens_in=statistics.fmean(o.tokens_in for o in outcomes),
        mean_tokens_out=statistics.fmean(o.tokens_out for o in outcomes),
        mean_cost=statistics.fmean(costs) if costs else None,
        priced_tasks=len(costs),
        mean_tool_calls=statistics.fmean(o.tool_calls for o in outcomes),
        errors=sum(o.error is not None for o in outcomes),
        agent_turns=agent_turns(outcomes),
        routing_accuracy=sum(routing) / len(routing) if routing else None,
        routed_tasks=len(routing),
    )


def agent_turns(outcomes: Iterable[TaskOutcome]) -> dict[str, int]:
    """Turns answered per agent (routing counts), most first."""
    counts = Counter(agent for o in outcomes for agent in o.agents if agent)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _routing_checks(outcomes: Iterable[TaskOutcome]) -> list[bool]:
    """The verdict of every expect.agent check (one per task that has one)."""
    return [c.passed for o in outcomes for c in o.checks if c.check.startswith(AGENT_CHECK)]


def routing_summary(outcomes: Sequence[TaskOutcome]) -> str | None:
    """One line for ``eval run``'s summary: turns per agent and routing
    accuracy; None when no turn had an agent and no task expected one."""
    counts = agent_turns(outcomes)
    routing = _routing_checks(outcomes)
    if not counts and not routing:
        return None
    parts = [", ".join(f"{agent} {n}" for agent, n in counts.items()) or "no agent recorded"]
    if routing:
        parts.append(f"accuracy {sum(routing)}/{len(routing)} ({_percent(sum(routing) / len(routing))})")
    return "; ".join(parts)


def variant_metrics(record: RunRecord, variant: str = "A") -> VariantMetrics:
    """The metrics of one variant of a run; ConfigError when the run has no
    result of that variant."""
    return summarize(_outcomes_of(record, variant))


def _pass_rate(outcomes: Sequence[TaskOutcome]) -> float:
    return sum(o.passed for o in outcomes) / len(outcomes)


class Verdict(enum.Enum):
    BETTER = "✅"
    SAME = "➖"
    WORSE = "⚠️"
    REGRESSED = "❌"
    UNKNOWN = ""  # one side has no value (no prices, no first-token timing)


@dataclass(frozen=True)
class MetricChange:
    """One row of the comparison table."""

    metric: str
    base: float | None
    run: float | None
    base_text: str
    run_text: str
    change_text: str  # "+5 pp", "-12%", "n/a"
    verdict: Verdict
    threshold: float | None = None  # the gate, in the change's unit; None: not gated

    def markdown_row(self) -> str:
        change = f"{self.change_text} {self.verdict.value}".rstrip()
        return f"| {_cell(self.metric)} | {self.base_text} | {self.run_text} | {change} |"


@dataclass(frozen=True)
class Comparison:
    """How ``run`` moved against ``base`` over the tasks both hold.

    ``base`` and ``run`` are each side's metrics over those shared tasks.
    The cost row compares only the tasks priced on both sides, so it can
    differ from ``base.mean_cost``/``run.mean_cost`` (each side's own priced
    tasks); ``notes`` says so. Task id lists are sorted, so the output of
    two comparisons of the same runs is the same text."""

    base_label: str
    run_label: str
    base: VariantMetrics
    run: VariantMetrics
    rows: tuple[MetricChange, ...]
    thresholds: Thresholds
    flipped_to_fail: tuple[str, ...] = ()  # task ids: passed in base, fail in run
    flipped_to_pass: tuple[str, ...] = ()
    only_in_base: tuple[str, ...] = ()  # task ids the run does not have
    only_in_run: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def regressed(self) -> bool:
        """True when any gated metric got worse past its threshold."""
        return any(row.verdict is Verdict.REGRESSED for row in self.rows)

    @property
    def regressions(self) -> tuple[MetricChange, ...]:
        return tuple(row for row in self.rows if row.verdict is Verdict.REGRESSED)

    def markdown(self) -> str:
        """The comparison as Markdown: a title, the metric table, the verdict
        and the tasks that flipped or are missing on one side."""
        lines = [
            f"### {self.base_label} → {self.run_label}",
            "",
            f"{self.base.tasks} tasks compared.",
            "",
            "| Metric | Base | Run | Change |",
            "| --- | ---: | ---: | --- |",
            *(row.markdown_row() for row in self.rows),
            "",
            "✅ better · ➖ unchanged or within noise · ⚠️ worse, within threshold · ❌ regressed past threshold",
            "",
        ]
        if self.regressed:
            lines.append("**Regressed:** " + "; ".join(_regression_text(row) for row in self.regressions) + ".")
        else:
            lines.append("No metric regressed past its threshold.")
        lines.extend(_task_list("Flipped pass → fail", self.flipped_to_fail))
        lines.extend(_task_list("Flipped fail → pass", self.flipped_to_pass))
        lines.extend(_task_list(f"Only in base (missing from {self.run_label})", self.only_in_base))
        lines.extend(_task_list(f"Only in run (missing from {self.base_label})", self.only_in_run))
        lines.extend(f"\n_{note}_" for note in self.notes)
        return "\n".join(lines) + "\n"


def compare(
    base: RunRecord,
    run: RunRecord,
    *,
    thresholds: Thresholds = Thresholds(),
    base_variant: str = "A",
    run_variant: str = "A",
) -> Comparison:
    """``run``'s ``run_variant`` against ``base``'s ``base_variant``, over the
    tasks both hold. ConfigError when either side has no result of its
    variant or the two share no task."""
    base_outcomes = _by_task(_outcomes_of(base, base_variant))
    run_outcomes = _by_task(_outcomes_of(run, run_variant))
    common = [task_id for task_id in base_outcomes if task_id in run_outcomes]
    base_label, run_label = _label(base, base_variant), _label(run, run_variant)
    if not common:
        raise ConfigError(f"{base_label} and {run_label} share no task: nothing to compare")
    base_common = [base_outcomes[t] for t in common]
    run_common = [run_outcomes[t] for t in common]
    base_metrics, run_metrics = summarize(base_common), summarize(run_common)
    priced = _priced_on_both_sides(base_common, run_common)
    return Comparison(
        base_label=base_label,
        run_label=run_label,
        base=base_metrics,
        run=run_metrics,
        rows=tuple(_rows(base_metrics, run_metrics, _mean_costs(priced), thresholds)),
        thresholds=thresholds,
        flipped_to_fail=tuple(sorted(t for t in common if base_outcomes[t].passed and not run_outcomes[t].passed)),
        flipped_to_pass=tuple(sorted(t for t in common if not base_outcomes[t].passed and run_outcomes[t].passed)),
        only_in_base=tuple(sorted(base_outcomes.keys() - run_outcomes.keys())),
        only_in_run=tuple(sorted(run_outcomes.keys() - base_outcomes.keys())),
        notes=tuple(_cost_notes(len(priced), len(common))),
    )


def compare_variants(run: RunRecord, thresholds: Thresholds = Thresholds()) -> Comparison:
    """Variant B of an A/B run against its variant A."""
    return compare(run, run, thresholds=thresholds, base_variant="A", run_variant="B")


def _outcomes_of(record: RunRecord, variant: str) -> list[TaskOutcome]:
    outcomes = [o for o in record.results if o.variant == variant]
    if not outcomes:
        present = sorted({o.variant for o in record.results})
        has = f"it has {', '.join(present)}" if present else "it has no results"
        raise ConfigError(f"run {record.id} has no results of variant {variant} ({has})")
    return outcomes


def _by_task(outcomes: Iterable[TaskOutcome]) -> dict[str, TaskOutcome]:
    # Task ids are unique in a suite, so one result per task and variant.
    return {o.task_id: o for o in outcomes}


def _label(record: RunRecord, variant: str) -> str:
    name = f"{record.name} ({record.id})" if record.name else record.id
    return f"{name} · {variant}"


def _priced_on_both_sides(
    base: Sequence[TaskOutcome], run: Sequence[TaskOutcome]
) -> list[tuple[TaskOutcome, TaskOutcome]]:
    """The (base, run) pairs of one task each where both sides have a cost.
    Cost is compared over these only: averaging each side over its own priced
    tasks would compare different task mixes whenever a fallback landed on an
    unpriced model on one side, and call that a price change."""
    return [(b, r) for b, r in zip(base, run, strict=True) if b.cost is not None and r.cost is not None]


def _mean_costs(pairs: Sequence[tuple[TaskOutcome, TaskOutcome]]) -> tuple[float | None, float | None]:
    if not pairs:
        return None, None
    return statistics.fmean(b.cost or 0.0 for b, _ in pairs), statistics.fmean(r.cost or 0.0 for _, r in pairs)


def _rows(
    base: VariantMetrics,
    run: VariantMetrics,
    costs: tuple[float | None, float | None],
    thresholds: Thresholds,
) -> list[MetricChange]:
    rows = [
        _rate_row("Success rate", base.success_rate, run.success_rate, thresholds.success_drop),
        _relative_row("Mean latency", base.mean_total_ms, run.mean_total_ms, _duration, LATENCY_NOISE, None),
        _relative_row(
            "Median latency", base.median_total_ms, run.median_total_ms, _duration, LATENCY_NOISE,
            thresholds.latency_rise,
        ),
        _relative_row(
            "Median first token", base.median_first_token_ms, run.median_first_token_ms, _duration, LATENCY_NOISE,
            None,
        ),
        _relative_row(
            "Tokens per task", base.mean_tokens, run.mean_tokens, _whole, COUNT_NOISE, thresholds.tokens_rise
        ),
        _relative_row("Tokens in per task", base.mean_tokens_in, run.mean_tokens_in, _whole, COUNT_NOISE, None),
        _relative_row("Tokens out per task", base.mean_tokens_out, run.mean_tokens_out, _whole, COUNT_NOISE, None),
        _relative_row("Cost per task", *costs, _money, COUNT_NOISE, thresholds.cost_rise),
        # Fewer tool calls count as better: extra calls cost tokens and time,
        # and a model that skips a needed tool shows up in the success rate.
        _relative_row("Tool calls per task", base.mean_tool_calls, run.mean_tool_calls, _tenths, COUNT_NOISE, None),
        _count_row("Errors", base.errors, run.errors),
        *_routing_rows(base, run),
    ]
    for category in sorted(base.success_by_category.keys() | run.success_by_category.keys()):
        tasks = base.tasks_by_category.get(category) or run.tasks_by_category.get(category, 0)
        rows.append(
            _rate_row(
                f"Success: {category} ({tasks})",
                base.success_by_category.get(category),
                run.success_by_category.get(category),
                None,
            )
        )
    return rows


def _routing_rows(base: VariantMetrics, run: VariantMetrics) -> list[MetricChange]:
    """Routing accuracy and each agent's share of turns; no rows at all in
    single-agent mode, so those tables stay as they were."""
    rows = []
    if base.routed_tasks or run.routed_tasks:
        tasks = base.routed_tasks or run.routed_tasks
        rows.append(_rate_row(f"Routing accuracy ({tasks})", base.routing_accuracy, run.routing_accuracy, None))
    base_total, run_total = sum(base.agent_turns.values()), sum(run.agent_turns.values())
    for agent in sorted(base.agent_turns.keys() | run.agent_turns.keys()):
        rows.append(
            _share_row(f"Turns: {agent}", base.agent_turns.get(agent, 0), base_total,
                       run.agent_turns.get(agent, 0), run_total)
        )
    return rows


def _share_row(metric: str, base: int, base_total: int, run: int, run_total: int) -> MetricChange:
    """A count with its share of the total, the change in share points; no
    verdict, since more turns for one agent is neither better nor worse."""
    base_share = base / base_total if base_total else 0.0
    run_share = run / run_total if run_total else 0.0
    change_pp = round((run_share - base_share) * 100, _PRECISION)
    return MetricChange(
        metric, base, run, f"{base:,} ({_percent(base_share)})", f"{run:,} ({_percent(run_share)})",
        f"{_signed(change_pp)} pp", Verdict.UNKNOWN,
    )


def _rate_row(metric: str, base: float | None, run: float | None, drop_gate_pp: float | None) -> MetricChange:
    if base is None or run is None:
        return _unknown_row(metric, base, run, _percent)
    change_pp = round((run - base) * 100, _PRECISION)
    if change_pp > 0:
        verdict = Verdict.BETTER
    elif change_pp == 0:
        verdict = Verdict.SAME
    elif drop_gate_pp is not None and -change_pp > drop_gate_pp:
        verdict = Verdict.REGRESSED
    else:
        verdict = Verdict.WORSE
    return MetricChange(
        metric, base, run, _percent(base), _percent(run), f"{_signed(change_pp)} pp", verdict, drop_gate_pp
    )


def _relative_row(
    metric: str,
    base: float | None,
    run: float | None,
    show: Callable[[float], str],
    noise: float,
    rise_gate_pct: float | None,
) -> MetricChange:
    """A lower-is-better metric compared by relative change."""
    if base is None or run is None:
        return _unknown_row(metric, base, run, show)
    change = _relative_change(base, run)
    change_pct = round(change * 100, _PRECISION) if math.isfinite(change) else change
    if rise_gate_pct is not None and change_pct > rise_gate_pct:
        verdict = Verdict.REGRESSED  # the gate wins over the noise band
    elif abs(change) <= noise:
        verdict = Verdict.SAME
    elif change < 0:
        verdict = Verdict.BETTER
    else:
        verdict = Verdict.WORSE
    return MetricChange(metric, base, run, show(base), show(run), _percent_change(change_pct), verdict, rise_gate_pct)


def _count_row(metric: str, base: int, run: int) -> MetricChange:
    """A lower-is-better count compared by its difference (errors)."""
    verdict = Verdict.SAME if run == base else Verdict.BETTER if run < base else Verdict.WORSE
    return MetricChange(metric, base, run, f"{base:,}", f"{run:,}", _signed(run - base), verdict)


def _unknown_row(metric: str, base: float | None, run: float | None, show: Callable[[float], str]) -> MetricChange:
    def text(value: float | None) -> str:
        return "n/a" if value is None else show(value)

    return MetricChange(metric, base, run, text(base), text(run), "n/a", Verdict.UNKNOWN)


def _relative_change(base: float, run: float) -> float:
    if base == 0:
        # From nothing to something is an unbounded rise: past any gate.
        return 0.0 if run == 0 else math.inf
    return (run - base) / base


def _cost_notes(priced_tasks: int, tasks: int) -> Iterable[str]:
    if priced_tasks == 0:
        yield "Cost is not compared: no task has a price on both sides (models missing from MODEL_PRICES)."
    elif priced_tasks < tasks:
        yield (
            f"Cost per task covers the {priced_tasks} of {tasks} tasks priced on both sides; "
            "the others ran on a model without a price."
        )


def _regression_text(row: MetricChange) -> str:
    unit = " pp" if row.change_text.endswith("pp") else "%"
    return f"{row.metric} {row.change_text} (threshold {_number(row.threshold or 0)}{unit})"


def _task_list(title: str, task_ids: Sequence[str]) -> list[str]:
    if not task_ids:
        return []
    return ["", f"**{title} ({len(task_ids)}):** " + ", ".join(f"`{task_id}`" for task_id in task_ids)]


# Formatting ----------------------------------------------------------------


def _number(value: float) -> str:
    """Whole numbers without decimals, others with one: 85, 66.7."""
    rounded = round(value, 1)
    return f"{rounded:,.0f}" if rounded == int(rounded) else f"{rounded:,.1f}"


def _signed(value: float) -> str:
    text = _number(value)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def _percent(rate: float) -> str:
    return f"{_number(rate * 100)}%"


def _percent_change(change_pct: float) -> str:
    if math.isinf(change_pct):
        return "+∞%"
    # Rounded to whole percents from 10% up: "+12.3%" promises a precision
    # that run-to-run variance does not have.
    return f"{_signed(round(change_pct) if abs(change_pct) >= 10 else change_pct)}%"


def _whole(value: float) -> str:
    return f"{round(value):,}"


def _tenths(value: float) -> str:
    return f"{value:,.1f}"


def _duration(ms: float) -> str:
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.1f} s"


def _money(value: float) -> str:
    if value >= 1:
        return f"${value:,.2f}"
    if value <= 0:
        return "$0"
    # Per-task costs are often fractions of a cent: three significant digits
    # keep them apart, in fixed notation (no "1.5e-05" in a table).
    decimals = min(10, max(2, 2 - math.floor(math.log10(value))))
    return f"${value:.{decimals}f}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (category names are free text)."""
    return text.replace("|", "\\|").replace("\n", " ")

