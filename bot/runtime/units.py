"""Sizes as people read them, for every message that names one (backups,
the file sandbox, voice and document limits, `doctor`)."""

from __future__ import annotations

_UNITS = ("B", "KB", "MB", "GB", "TB")


def human_size(size: int) -> str:
    """``size`` bytes in the largest unit that keeps the number at 1 or more,
    binary multiples: 512 B, 1.5 KB, 20.0 MB."""
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
