"""Tables: aligned text for the terminal, markdown cells and tables for reports."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: - for None, floats to `digits` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, Callable[[Any], str]]]) -> None:
    """Aligned table: (header, key, formatter) per column."""
    cells = [[show(row.get(key)) for _, key, show in columns] for row in rows]
    widths = [max(len(header), *(len(r[i]) for r in cells)) for i, (header, _, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (h, _, _), w in zip(columns, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def millions(value: Any) -> str:
    """Value in millions with 3 decimals."""
    return "-" if value is None else f"{value / 1e6:.3f}"


def markdown(rows: list[list[str]], header: list[str]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """A plain cell: floats to 4 significant digits."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)
