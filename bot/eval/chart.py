"""Success by category as an inline SVG, drawn on the server: the results
page needs no chart library and no network (the page may be opened on a
machine without internet access, and an admin's browser loads nothing from
a third party)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from bot.storage.evals import TaskOutcome

VARIANT_COLORS = {"A": "#3867d6", "B": "#e58e26"}
_OTHER_COLOR = "#8854d0"

_LABEL_WIDTH = 170
_PLOT_WIDTH = 360
_VALUE_WIDTH = 110
_BAR_HEIGHT = 16
_BAR_GAP = 4
_GROUP_GAP = 12
_LEGEND_HEIGHT = 26


@dataclass(frozen=True)
class CategoryBar:
    category: str
    variant: str
    passed: int
    done: int

    @property
    def rate(self) -> float:
        return self.passed / self.done if self.done else 0.0


def category_bars(results: Sequence[TaskOutcome]) -> list[CategoryBar]:
    """One bar per category and variant, categories in name order."""
    tally: dict[tuple[str, str], list[int]] = {}
    for outcome in results:
        passed_done = tally.setdefault((outcome.category, outcome.variant), [0, 0])
        passed_done[0] += outcome.passed
        passed_done[1] += 1
    return [CategoryBar(c, v, passed, done) for (c, v), (passed, done) in sorted(tally.items())]


def success_by_category_svg(results: Sequence[TaskOutcome]) -> str:
    """A horizontal bar per category and variant, its length the share of
    tasks that passed; an empty string when there are no results yet."""
    bars = category_bars(results)
    if not bars:
        return ""
    variants = sorted({bar.variant for bar in bars})
    parts: list[str] = [_legend(variants)]
    y = _LEGEND_HEIGHT
    for category in sorted({bar.category for bar in bars}):
        group = [bar for bar in bars if bar.category == category]
        group_height = len(group) * (_BAR_HEIGHT + _BAR_GAP) - _BAR_GAP
        parts.append(
            f'<text class="category" x="{_LABEL_WIDTH - 8}" y="{y + group_height / 2 + 4:.0f}" '
            f'text-anchor="end">{escape(_shortened(category))}</text>'
        )
        for bar in group:
            parts.append(_bar(bar, y))
            y += _BAR_HEIGHT + _BAR_GAP
        y += _GROUP_GAP - _BAR_GAP
    width = _LABEL_WIDTH + _PLOT_WIDTH + _VALUE_WIDTH
    return (
        f'<svg class="chart" id="category-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
        f'viewBox="0 0 {width} {y}" role="img" aria-label="Success by category">'
        "<title>Success by category</title>" + "".join(parts) + "</svg>"
    )


def _bar(bar: CategoryBar, y: int) -> str:
    color = VARIANT_COLORS.get(bar.variant, _OTHER_COLOR)
    length = round(bar.rate * _PLOT_WIDTH, 1)
    value = f"{bar.passed}/{bar.done} ({bar.rate:.0%})"
    tooltip = escape(f"{bar.category} · {bar.variant}: {value}")
    return (
        # The track shows the full scale, so a 0% bar still reads as a row.
        f'<rect class="track" x="{_LABEL_WIDTH}" y="{y}" width="{_PLOT_WIDTH}" height="{_BAR_HEIGHT}" fill="#eceff4"/>'
        f'<rect class="bar" data-variant="{escape(bar.variant)}" x="{_LABEL_WIDTH}" y="{y}" width="{length}" '
        f'height="{_BAR_HEIGHT}" fill="{color}"><title>{tooltip}</title></rect>'
        f'<text class="value" x="{_LABEL_WIDTH + _PLOT_WIDTH + 6}" y="{y + _BAR_HEIGHT - 4}">'
        f"{escape(bar.variant)} {escape(value)}</text>"
    )


def _legend(variants: Sequence[str]) -> str:
    items: list[str] = []
    x = _LABEL_WIDTH
    for variant in variants:
        color = VARIANT_COLORS.get(variant, _OTHER_COLOR)
        items.append(
            f'<rect x="{x}" y="4" width="12" height="12" fill="{color}"/>'
            f'<text x="{x + 16}" y="14">variant {escape(variant)}</text>'
        )
        x += 90
    return "".join(items)


def _shortened(category: str, limit: int = 24) -> str:
    return category if len(category) <= limit else category[: limit - 1] + "…"
