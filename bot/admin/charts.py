"""The /stats chart: turns and tokens per day, drawn with matplotlib into PNG
bytes.

``render_usage_chart`` is synchronous and takes a few hundred milliseconds:
call it in a thread (``asyncio.to_thread``), never on the event loop.
matplotlib is imported on first use, so starting the bot does not pay for it.
It uses the Agg canvas directly (no pyplot and its global figure registry),
and a lock serializes renders because matplotlib is not thread-safe."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from bot.storage.admin import DayUsage

CHART_WIDTH = 1200  # pixels
CHART_HEIGHT = 700
CHART_DPI = 100

_render_lock = threading.Lock()


@dataclass(frozen=True)
class ChartLabels:
    """The chart's words, in the reader's language."""

    title: str
    turns: str
    tokens: str


def render_usage_chart(
    days: Sequence[DayUsage],
    labels: ChartLabels,
    *,
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
    dpi: int = CHART_DPI,
) -> bytes:
    """A PNG of exactly ``width`` x ``height`` pixels: turns per day (bars) above
    tokens per day (bars), one bar per entry of ``days`` (zeros included)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    with _render_lock:
        figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, sharex=True)
        positions = list(range(len(days)))
        turns, tokens = [d.turns for d in days], [d.tokens for d in days]
        top.bar(positions, turns, color="#3b7dd8")
        bottom.bar(positions, tokens, color="#e08a2c")
        top.set_title(labels.title)
        top.set_ylabel(labels.turns)
        bottom.set_ylabel(labels.tokens)
        for axes, values in ((top, turns), (bottom, tokens)):
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))
            # An empty month still gets a readable 0..1 scale.
            axes.set_ylim(0, None if any(values) else 1)
            axes.grid(axis="y", alpha=0.3)
        bottom.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _compact(value)))
        # A date label every few days keeps 30 labels from overlapping;
        # counted back from the last day, so today is always labelled.
        step = max(1, len(days) // 10)
        ticks = positions[::-1][::step][::-1]
        bottom.set_xticks(ticks, [days[i].day.strftime("%m-%d") for i in ticks], rotation=45)
        if positions:
            bottom.set_xlim(-0.6, len(days) - 0.4)
        buffer = io.BytesIO()
        # No bbox_inches="tight": it would change the pixel size.
        figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()


def _compact(value: float) -> str:
    """1500 -> 1.5k, 2000000 -> 2M: tick labels that fit."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"
