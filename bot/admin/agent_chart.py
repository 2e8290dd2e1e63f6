"""The /stats chart of the agents side by side: turns (failed ones marked)
and mean latency per agent, drawn with matplotlib into PNG bytes.

Same rules as bot/admin/charts.py: synchronous, call it in a thread;
matplotlib is imported on first use; the Agg canvas without pyplot; and
the same lock, because matplotlib is not thread-safe across figures either."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from bot.admin.agent_stats import AgentLine
from bot.admin.charts import CHART_DPI, CHART_HEIGHT, CHART_WIDTH, _render_lock

TURNS_COLOR = "#3b7dd8"
FAILED_COLOR = "#d8453b"
LATENCY_COLOR = "#e08a2c"


@dataclass(frozen=True)
class AgentChartLabels:
    """The chart's words, in the reader's language."""

    title: str
    turns: str
    failed: str
    latency: str  # the axis of mean latency, unit included


def render_agents_chart(
    agents: Sequence[AgentLine],
    labels: AgentChartLabels,
    *,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
    dpi: int = CHART_DPI,
) -> bytes:
    """A PNG of exactly ``width`` x ``height`` pixels: turns per agent (the
    failed part in red) on the left, mean latency in seconds on the right,
    agents in the order given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    with _render_lock:
        figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
        FigureCanvasAgg(figure)
        left, right = figure.subplots(1, 2)
        names = [line.agent for line in agents]
        positions = list(range(len(agents)))
        answered = [line.turns - line.failures for line in agents]
        failed = [line.failures for line in agents]
        left.bar(positions, answered, color=TURNS_COLOR, label=labels.turns)
        left.bar(positions, failed, bottom=answered, color=FAILED_COLOR, label=labels.failed)
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_ylabel(labels.turns)
        if any(failed):
            left.legend(loc="upper right")
        latency = [line.mean_latency_ms / 1000 for line in agents]
        right.bar(positions, latency, color=LATENCY_COLOR)
        right.set_ylabel(labels.latency)
        for axes, values in ((left, [line.turns for line in agents]), (right, latency)):
            axes.set_xticks(positions, names, rotation=30 if len(names) > 4 else 0)
            axes.grid(axis="y", alpha=0.3)
            # All zeros still get a readable 0..1 scale (matplotlib warns on equal limits).
            axes.set_ylim(0, None if any(values) else 1)
        figure.suptitle(labels.title)
        buffer = io.BytesIO()
        # No bbox_inches="tight": it would change the pixel size.
        figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()
