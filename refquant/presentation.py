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
import time

__all__ = ["format_table", "print_rows", "progress_bar", "SweepProgress"]


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


def progress_bar(done: int, total: int, label: str, stream=None, width: int = 50) -> None:
    """Redraw a one-line progress bar ``[###...] done/total label`` on ``stream`` (stderr).

    The line ends (a newline) when ``done == total``.
    """
    stream, bar = stream or sys.stderr, 30
    filled = int(bar * done / max(total, 1))
    stream.write(f"\r[{'#' * filled}{'.' * (bar - filled)}] {done}/{total} {label[:width]:<{width}}")
    if done == total:
        stream.write("\n")
    stream.flush()


class SweepProgress:
    """Progress over a whole sweep on stderr: ``[###...] done/total rows, rate, ETA, label``.

    The rate is the rows finished over the wall time since :meth:`start` (or the first
    update): a sweep starts the clock when its tasks are submitted, so rows skipped on resume
    count in ``done`` but not in the rate. The ETA is what is left at that rate.
    ``update(done, label)`` redraws the line; ``done == total`` ends it.
    """

    def __init__(self, total: int, unit: str = "rows", stream=None, clock=time.monotonic):
        self.total, self.unit, self.stream, self.clock = total, unit, stream, clock
        self._start = self._start_done = None

    def __call__(self, done: int, total: int, label: str) -> None:
        self.total = total
        self.update(done, label)

    def start(self, done: int) -> None:
        """Start the clock with ``done`` rows already finished."""
        self._start, self._start_done = self.clock(), done

    def update(self, done: int, label: str) -> None:
        now = self.clock()
        if self._start is None:
            self._start, self._start_done = now, done
        ran, elapsed = done - self._start_done, now - self._start
        rate = ran / elapsed if ran and elapsed > 0 else None
        eta = (self.total - done) / rate if rate else None
        info = (f"{rate:.2f} {self.unit}/s ETA {_clock(eta)}" if rate else "")
        progress_bar(done, self.total, f"{info}  {label}".strip(), self.stream, width=90)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
