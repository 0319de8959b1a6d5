"""Showing results to people: plain-text tables, rows as a table or JSON, a progress bar.

Every command prints a table for people or, with ``--json``, JSON for machines; long work
(comparisons, training) shows progress on stderr. These helpers are the one place that
formatting lives, public so that plugins' commands and reports print the same way.

    >>> print(format_table([{"name": "minmax", "bits": 8}, {"name": "mse", "bits": 4}]))
    name    bits
    ------  ----
    minmax  8
    mse     4
"""

from __future__ import annotations

import json
import sys

__all__ = ["format_table", "print_rows", "progress_bar"]


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Left-aligned plain-text table of ``rows`` (dicts) with a header line.

    ``columns`` chooses and orders the columns (default: the first row's keys); floats show
    four significant digits; an empty list of rows is ``(nothing)``.
    """
    if not rows:
        return "(nothing)"
    columns = columns or list(rows[0])
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_rows(rows: list[dict], columns: list[str] | None = None, *, as_json: bool = False) -> None:
    """Print ``rows`` as JSON (``as_json``) or as :func:`format_table`'s table."""
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_table(rows, columns))


def progress_bar(done: int, total: int, label: str, stream=None) -> None:
    """Redraw a one-line progress bar ``[###...] done/total label`` on ``stream`` (stderr).

    The line ends (a newline) when ``done == total``.
    """
    stream, width = stream or sys.stderr, 30
    filled = int(width * done / max(total, 1))
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:50]:<50}")
    if done == total:
        stream.write("\n")
    stream.flush()
